"""The Pix2Pix U-Net generator (`unet_256`, `unet_128`, any depth and width)."""

import flax.linen as nn
import jax.numpy as jnp

from i2i_jax.models import layers


class UNetGenerator(layers.ConvNet):
    """Encoder-decoder with skip connections, the reference's UnetGenerator.

    Level i (0 = outermost) has a 4x4 stride-2 conv to `ngf * min(2**i, 8)` channels. Norm follows
    every down-conv but the first and the innermost, and every up-conv but the outermost. Dropout
    (0.5) follows the up-convs of the 512-wide levels between level 4 and the innermost, as in the
    reference. A skip connection concatenates the LeakyReLU-activated encoder feature, as the
    reference's in-place LeakyReLU leaves it; the concatenation only ever feeds a ReLU, for
    which the activated and the raw feature are the same.
    """

    output_nc: int = 3
    num_downs: int = 8
    ngf: int = 64
    use_dropout: bool = True

    @nn.compact
    def __call__(self, x, train: bool):
        if self.num_downs < 2:
            raise ValueError(f"a U-Net needs num_downs >= 2, got {self.num_downs}")
        if x.shape[1] % 2**self.num_downs or x.shape[2] % 2**self.num_downs:
            raise ValueError(
                f"U-Net with {self.num_downs} downsamplings needs height and width "
                f"divisible by {2**self.num_downs}; got {x.shape[1:3]}"
            )
        inner_bias = self.inner_conv_bias()
        widths = [self.ngf * min(2**i, 8) for i in range(self.num_downs)]
        innermost = self.num_downs - 1

        h = x.astype(self.dtype)
        skips = []
        for i, width in enumerate(widths):
            if i > 0:
                h = nn.leaky_relu(h, 0.2)
                skips.append(h)
            h = self.conv(width, 4, 2, 1, inner_bias, f"down{i}")(h)
            if 0 < i < innermost:
                h = self.normalize(h, train)

        for i in range(innermost, 0, -1):
            h = self.up_conv(widths[i - 1], inner_bias, f"up{i}")(nn.relu(h))
            h = self.normalize(h, train)
            if self.use_dropout and 4 <= i < innermost:
                h = self.dropout(h, train)
            h = jnp.concatenate([skips[i - 1], h], axis=-1)

        h = self.up_conv(self.output_nc, True, "up0")(nn.relu(h))
        return jnp.tanh(h).astype(jnp.float32)
