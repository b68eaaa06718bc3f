"""PatchGAN discriminators: the 70x70 `basic` (n_layers=3), any `n_layers`, and `pixel`."""

import flax.linen as nn
import jax.numpy as jnp

from i2i_jax.models import layers


class NLayerDiscriminator(layers.ConvNet):
    """C64 - C128 - ... (stride 2) - C(stride 1) - conv to 1 channel; returns a map of logits.

    With n_layers=3 each output sees a 70x70 patch and a 256x256 input gives 30x30 logits.
    """

    ndf: int = 64
    n_layers: int = 3

    @nn.compact
    def __call__(self, x, train: bool):
        bias = self.inner_conv_bias()

        h = self.conv(self.ndf, 4, 2, 1, True, "conv0")(x.astype(self.dtype))
        h = nn.leaky_relu(h, 0.2)
        for n in range(1, self.n_layers + 1):
            stride = 2 if n < self.n_layers else 1
            width = self.ndf * min(2**n, 8)
            h = self.conv(width, 4, stride, 1, bias, f"conv{n}")(h)
            h = self.normalize(h, train)
            h = nn.leaky_relu(h, 0.2)
        h = self.conv(1, 4, 1, 1, True, "logits")(h)
        return h.astype(jnp.float32)


class PixelDiscriminator(layers.ConvNet):
    """1x1 PatchGAN (PixelGAN): classifies every pixel independently."""

    ndf: int = 64

    @nn.compact
    def __call__(self, x, train: bool):
        bias = self.inner_conv_bias()
        h = self.conv(self.ndf, 1, 1, 0, True, "conv0")(x.astype(self.dtype))
        h = nn.leaky_relu(h, 0.2)
        h = self.conv(2 * self.ndf, 1, 1, 0, bias, "conv1")(h)
        h = self.normalize(h, train)
        h = nn.leaky_relu(h, 0.2)
        h = self.conv(1, 1, 1, 0, bias, "logits")(h)
        return h.astype(jnp.float32)
