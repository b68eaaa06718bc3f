"""The train state: one explicit pytree that every step takes and returns."""

import dataclasses
from typing import Any

import jax


def _register_with_optional_last_field(cls):
    """Registers the frozen dataclass `cls` as a pytree whose last field is a child only where
    it is not None, so that a state without it has the tree it had before the field existed
    and checkpoints written then still restore (orbax compares the trees' structures)."""
    names = tuple(field.name for field in dataclasses.fields(cls))

    def children(value):
        present = names if getattr(value, names[-1]) is not None else names[:-1]
        return [(jax.tree_util.GetAttrKey(name), getattr(value, name)) for name in present], None

    jax.tree_util.register_pytree_with_keys(cls, children, lambda _, values: cls(*values))
    return cls


@_register_with_optional_last_field
@dataclasses.dataclass(frozen=True)
class NetState:
    """One network: its parameters, normalisation statistics and optimizer state; for a
    generator trained with `ema_decay` > 0, also their exponential moving average, a dict
    {"params", "batch_stats"}, which evaluation, sample grids and exports use."""

    params: Any
    batch_stats: Any
    opt_state: Any
    average: Any = None

    def replace(self, **changes) -> "NetState":
        return dataclasses.replace(self, **changes)

    def for_testing(self) -> "NetState":
        """The network as test time uses it: its moving average where it keeps one. A GAN's
        generator oscillates from step to step; the average of its recent weights is a better
        generator than the last of them (Yazici et al. 2019)."""
        if self.average is None:
            return self
        return self.replace(params=self.average["params"], batch_stats=self.average["batch_stats"])


@_register_with_optional_last_field
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that shapes the rest of a run.

    `rng` is a raw uint32 key that never changes: each step derives its randomness with
    `fold_in(rng, step)`, so a resumed run draws the same dropout masks as an uninterrupted one.
    `plateau` is `lr_policy=plateau`'s state (`optim.initial_plateau`), None otherwise.
    """

    step: jax.Array
    rng: jax.Array
    nets: dict[str, NetState]
    pools: dict[str, Any] = dataclasses.field(default_factory=dict)  # CycleGAN's image pools.
    plateau: dict[str, jax.Array] | None = None

    def replace(self, **changes) -> "TrainState":
        return dataclasses.replace(self, **changes)

    def step_key(self, purpose: int) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(self.rng, self.step), purpose)

    def lr_scale(self):
        """What the plateau policy has multiplied the learning rate by so far (1 without it)."""
        return 1.0 if self.plateau is None else self.plateau["scale"]
