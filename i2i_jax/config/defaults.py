"""Each task's default config, and the --help text, built from the key declarations.

Config files start from `pix2pix()` or `cyclegan()` and change values, never the set of keys,
so an override of a key that is not declared fails.
"""

import ml_collections

from i2i_jax.config.keys import KEYS, SAME, TASK_NAMES


def for_task(task: str) -> ml_collections.ConfigDict:
    """The config of `task` (one of `TASK_NAMES`): every key it has, at its default."""
    config = ml_collections.ConfigDict()
    for key in KEYS:
        if (value := key.default_for(task)) is SAME:
            continue
        *parents, leaf = key.name.split(".")
        node = config
        for parent in parents:
            if parent not in node:
                node[parent] = ml_collections.ConfigDict()
            node = node[parent]
        node[leaf] = value
    return config


def pix2pix() -> ml_collections.ConfigDict:
    """The paper's Pix2Pix on facades (labels -> photo), as the reference trains it."""
    return for_task("pix2pix")


def cyclegan() -> ml_collections.ConfigDict:
    """The paper's CycleGAN on horse2zebra, as the reference trains it (`--model cycle_gan`)."""
    return for_task("cycle_gan")


def describe_keys() -> str:
    """Every config key with its Pix2Pix / CycleGAN default and meaning, one per line."""
    lines = []
    for key in KEYS:
        values = [key.default_for(task) for task in TASK_NAMES]
        shown = (
            repr(values[0])
            if values[0] == values[1]
            else (" / ".join("-" if v is SAME else repr(v) for v in values))
        )
        lines.append(f"  {key.name} = {shown}: {key.meaning}")
    return "\n".join(lines)


def flatten(tree: dict, prefix: str = "") -> dict:
    """`{"data": {"source": x}}` -> `{"data.source": x}`: config keys as overrides name them."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
