"""The PyTorch baseline's networks: the reference's generators and discriminators, written anew.

The benchmark (`python -m i2i_jax.benchmark --compare_torch`) times i2i_jax against the training
iterations built from them (`torch_iterations.py`), and the converter's tests check converted
weights against them. It rebuilds the generators
and discriminators of junyanz/pytorch-CycleGAN-and-pix2pix (models/networks.py) with the same
module tree, so that `state_dict()` has the reference's keys: nn.Sequential indices under
`model.` (the U-Net nests one `model.model.` per level), resnet blocks' layers under
`conv_block.`, a parameter-free Identity in every norm slot for norm `none`, and the reference's
bias rule (inner convs have a bias only with instance norm). The U-Net's skip concatenates its
input after the in-place LeakyReLU that starts the level has overwritten it, as in the
reference.
"""

import torch
from torch import nn

from i2i_jax.generator_names import parse_generator_name


class Identity(nn.Module):
    """The norm slot of norm `none`: keeps the Sequential indices of the other norms."""

    def forward(self, x):
        return x


def norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels)  # No affine parameters, no running statistics.
    if norm == "none":
        return Identity()
    raise ValueError(norm)


def inner_bias(norm: str) -> bool:
    """The reference's `use_bias`: only instance norm, which has no shift of its own."""
    return norm == "instance"


class UnetLevel(nn.Module):
    """One level of the U-Net, holding the next level inside its Sequential."""

    def __init__(
        self,
        outer: int,
        inner: int,
        norm: str,
        child: nn.Module | None = None,
        in_channels: int | None = None,
        dropout: bool = False,
    ):
        super().__init__()
        self.outermost = in_channels is not None
        bias = inner_bias(norm)
        down = nn.Conv2d(in_channels or outer, inner, 4, 2, 1, bias=bias)
        if self.outermost:
            layers = [
                down,
                child,
                nn.ReLU(True),
                nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1),
                nn.Tanh(),
            ]
        elif child is None:  # Innermost: no norm after its down-conv, no skip below it.
            layers = [
                nn.LeakyReLU(0.2, True),
                down,
                nn.ReLU(True),
                nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=bias),
                norm_layer(norm, outer),
            ]
        else:
            layers = [
                nn.LeakyReLU(0.2, True),
                down,
                norm_layer(norm, inner),
                child,
                nn.ReLU(True),
                nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1, bias=bias),
                norm_layer(norm, outer),
            ]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        y = self.model(x)  # Its in-place LeakyReLU has overwritten x.
        return torch.cat([x, y], 1)


class UnetGenerator(nn.Module):
    def __init__(
        self, input_nc: int, output_nc: int, num_downs: int, ngf: int, norm: str, use_dropout: bool
    ):
        super().__init__()
        widths = [ngf * min(2**i, 8) for i in range(num_downs)]
        level = None
        for i in range(num_downs - 1, 0, -1):  # Innermost first.
            level = UnetLevel(
                widths[i - 1],
                widths[i],
                norm,
                level,
                dropout=use_dropout and 4 <= i < num_downs - 1,
            )
        self.model = UnetLevel(output_nc, ngf, norm, level, in_channels=input_nc)

    def forward(self, x):
        return self.model(x)


class ResnetBlock(nn.Module):
    def __init__(self, width: int, norm: str, use_dropout: bool):
        super().__init__()
        bias = inner_bias(norm)
        layers = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(width, width, 3, bias=bias),
            norm_layer(norm, width),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(width, width, 3, bias=bias),
            norm_layer(norm, width),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(
        self, input_nc: int, output_nc: int, ngf: int, n_blocks: int, norm: str, use_dropout: bool
    ):
        super().__init__()
        bias = inner_bias(norm)
        layers = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, 7, bias=bias),
            norm_layer(norm, ngf),
            nn.ReLU(True),
        ]
        for width in (2 * ngf, 4 * ngf):
            layers += [
                nn.Conv2d(width // 2, width, 3, 2, 1, bias=bias),
                norm_layer(norm, width),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(4 * ngf, norm, use_dropout) for _ in range(n_blocks)]
        for width in (2 * ngf, ngf):
            layers += [
                nn.ConvTranspose2d(2 * width, width, 3, 2, 1, output_padding=1, bias=bias),
                norm_layer(norm, width),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    def __init__(self, input_nc: int, ndf: int, n_layers: int, norm: str):
        super().__init__()
        layers = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            new_width = ndf * min(2**n, 8)
            layers += [
                nn.Conv2d(width, new_width, 4, 2 if n < n_layers else 1, 1, bias=inner_bias(norm)),
                norm_layer(norm, new_width),
                nn.LeakyReLU(0.2, True),
            ]
            width = new_width
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class PixelDiscriminator(nn.Module):
    def __init__(self, input_nc: int, ndf: int, norm: str):
        super().__init__()
        bias = inner_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, 2 * ndf, 1, bias=bias),
            norm_layer(norm, 2 * ndf),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * ndf, 1, 1, bias=bias),
        )

    def forward(self, x):
        return self.net(x)


def define_G(
    netG: str,
    input_nc: int = 3,
    output_nc: int = 3,
    ngf: int = 64,
    norm: str = "batch",
    use_dropout: bool = False,
) -> nn.Module:
    """`unet_<2**k>` or `resnet_<n>blocks`, as the reference's `define_G` (without init)."""
    name = parse_generator_name(netG)
    if name.kind == "unet":
        return UnetGenerator(input_nc, output_nc, name.num_downs, ngf, norm, use_dropout)
    return ResnetGenerator(input_nc, output_nc, ngf, name.n_blocks, norm, use_dropout)


def define_D(
    netD: str, input_nc: int = 6, ndf: int = 64, norm: str = "batch", n_layers_D: int = 3
) -> nn.Module:
    if netD == "pixel":
        return PixelDiscriminator(input_nc, ndf, norm)
    return NLayerDiscriminator(input_nc, ndf, 3 if netD == "basic" else n_layers_D, norm)


def randomize(net: nn.Module, seed: int, weight_std: float | None = None) -> nn.Module:
    """Random weights and non-trivial running statistics, then eval mode.

    Conv weights get std `weight_std` (default: 1 / sqrt(fan in), which keeps activations near
    unit scale through deep nets), biases and batch-norm shifts small random values, and
    batch-norm running means and variances random values around 0 and 1.
    """
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return mean + std * torch.randn(shape, generator=generator)

    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                weight = module.weight
                fan_in = (
                    weight[0].numel()
                    if isinstance(module, nn.Conv2d)
                    else (weight.shape[0] * weight.shape[2] * weight.shape[3] // 4)
                )
                weight.copy_(normal(weight.shape, weight_std or fan_in**-0.5))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.1))
            elif isinstance(module, nn.BatchNorm2d):
                shape = module.weight.shape
                module.weight.copy_(normal(shape, 0.2, 1.0))
                module.bias.copy_(normal(shape, 0.1))
                module.running_mean.copy_(normal(shape, 0.3))
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.num_batches_tracked.fill_(7)
    return net.eval()


def init_weights(net: nn.Module, gain: float = 0.02, seed: int = 0) -> nn.Module:
    """The reference's `normal` init: conv weights N(0, gain), batch-norm scales N(1, gain),
    biases 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                module.weight.copy_(gain * torch.randn(module.weight.shape, generator=generator))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(
                    1 + gain * torch.randn(module.weight.shape, generator=generator)
                )
                module.bias.zero_()
    return net
