"""The CycleGAN ResNet generator (`resnet_9blocks`, `resnet_6blocks`, any block count)."""

import flax.linen as nn
import jax.numpy as jnp

from i2i_jax.models import layers


def reflect_pad(x, pad: int):
    """Reflection padding of height and width (torch.nn.ReflectionPad2d)."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


class ResnetBlock(layers.ConvNet):
    """Two reflection-padded 3x3 convs with norm; the block's input is **added** to its output."""

    use_dropout: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        bias = self.inner_conv_bias()
        width = x.shape[-1]
        h = self.conv(width, 3, 1, 0, bias, "conv1")(reflect_pad(x, 1))
        h = nn.relu(self.normalize(h, train))
        if self.use_dropout:
            h = self.dropout(h, train)
        h = self.conv(width, 3, 1, 0, bias, "conv2")(reflect_pad(h, 1))
        return x + self.normalize(h, train)


class ResnetGenerator(layers.ConvNet):
    """c7s1-ngf, d(2 ngf), d(4 ngf), n_blocks x R(4 ngf), u(2 ngf), u(ngf), c7s1-output_nc, tanh.

    Reflection padding around the 7x7 and 3x3 convs; stride-2 3x3 convs down; 3x3 transposed
    convs (stride 2, padding 1, output padding 1) up; no norm after the last conv.
    """

    output_nc: int = 3
    ngf: int = 64
    n_blocks: int = 9
    use_dropout: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        if x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(
                f"the ResNet generator needs height and width divisible by 4; got {x.shape[1:3]}"
            )
        bias = self.inner_conv_bias()

        def norm_relu(h):
            return nn.relu(self.normalize(h, train))

        h = x.astype(self.dtype)
        h = norm_relu(self.conv(self.ngf, 7, 1, 0, bias, "in")(reflect_pad(h, 3)))
        for i in range(2):
            h = norm_relu(self.conv(self.ngf * 2 ** (i + 1), 3, 2, 1, bias, f"downsample{i}")(h))
        for i in range(self.n_blocks):
            h = ResnetBlock(
                norm=self.norm,
                init_type=self.init_type,
                init_gain=self.init_gain,
                sync_batch_stats=self.sync_batch_stats,
                batch_axis=self.batch_axis,
                dtype=self.dtype,
                conv_lowering=self.conv_lowering,
                use_dropout=self.use_dropout,
                name=f"block{i}",
            )(h, train)
        for i in range(2):
            h = norm_relu(self.up_conv3(self.ngf * 2 ** (1 - i), bias, f"upsample{i}")(h))
        h = self.conv(self.output_nc, 7, 1, 0, True, "out")(reflect_pad(h, 3))
        return jnp.tanh(h).astype(jnp.float32)
