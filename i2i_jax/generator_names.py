"""The grammar of generator names (the reference's `netG`), parsed in one place.

`unet_<size>`: a U-Net with log2(size) downsamplings, size a power of two >= 4 (unet_256 has 8,
unet_128 has 7); `resnet_<n>blocks`: the ResNet generator with n residual blocks. Imports
nothing but the standard library: the PyTorch baseline (`i2i_jax.torch_reference`) uses it too.
"""

import re
from typing import NamedTuple

GENERATORS = (
    "unet_256",
    "unet_128",
    "unet_<2**k>",
    "resnet_9blocks",
    "resnet_6blocks",
    "resnet_<n>blocks",
)


class GeneratorName(NamedTuple):
    """A parsed `netG`: kind `unet` with `num_downs` downsamplings, or kind `resnet` with
    `n_blocks` residual blocks (the other count is None)."""

    kind: str
    num_downs: int | None = None
    n_blocks: int | None = None

    @property
    def size(self) -> int | None:
        """A U-Net's size, the one in its name (`unet_256`: 256), the smallest image it takes;
        None for the ResNet generator."""
        return 2**self.num_downs if self.kind == "unet" else None


def parse_generator_name(netG: str) -> GeneratorName:
    """`netG` parsed; a ValueError naming the valid names when it is none of them."""
    if match := re.fullmatch(r"unet_(\d+)", netG):
        size = int(match.group(1))
        if size >= 4 and not size & (size - 1):
            return GeneratorName("unet", num_downs=size.bit_length() - 1)
    elif match := re.fullmatch(r"resnet_(\d+)blocks", netG):
        return GeneratorName("resnet", n_blocks=int(match.group(1)))
    raise ValueError(
        f"netG={netG!r} is not one of {GENERATORS} (unet sizes are powers of two >= 4)"
    )
