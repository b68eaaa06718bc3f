"""`generator_names`: the one parser of generator names, which imports neither jax nor flax."""

import subprocess
import sys

import pytest

from i2i_jax.generator_names import GeneratorName, parse_generator_name


@pytest.mark.parametrize(
    "netG, expected, size",
    [
        ("unet_256", GeneratorName("unet", num_downs=8), 256),
        ("unet_128", GeneratorName("unet", num_downs=7), 128),
        ("unet_4", GeneratorName("unet", num_downs=2), 4),
        ("resnet_9blocks", GeneratorName("resnet", n_blocks=9), None),
        ("resnet_2blocks", GeneratorName("resnet", n_blocks=2), None),
    ],
)
def test_valid_names_parse(netG, expected, size):
    name = parse_generator_name(netG)
    assert name == expected and name.size == size


@pytest.mark.parametrize(
    "netG", ["unet_100", "unet_2", "unet_0", "resnet_blocks", "resnet_9", "unet256", "garbage", ""]
)
def test_other_names_are_refused_with_the_valid_ones(netG):
    with pytest.raises(
        ValueError,
        match=r"is not one of .*unet_<2\*\*k>.*resnet_<n>blocks.* "
        r"\(unet sizes are powers of two >= 4\)",
    ):
        parse_generator_name(netG)


@pytest.mark.slow
def test_the_parser_loads_without_jax_or_flax():
    """The PyTorch baseline imports it, in a process of its own that should hold no jax."""
    code = (
        "import sys, i2i_jax.generator_names; "
        "print(sorted(m for m in ('jax', 'flax') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"
