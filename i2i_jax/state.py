"""The train state: one explicit pytree that every step takes and returns."""

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class NetState:
    """One network: its parameters, normalisation statistics and optimizer state."""

    params: Any
    batch_stats: Any
    opt_state: Any


@flax.struct.dataclass
class TrainState:
    """Everything that shapes the rest of a run.

    `rng` is a raw uint32 key that never changes: each step derives its randomness with
    `fold_in(rng, step)`, so a resumed run draws the same dropout masks as an uninterrupted one.
    """

    step: jax.Array
    rng: jax.Array
    nets: dict[str, NetState]
    pools: dict[str, Any] = flax.struct.field(default_factory=dict)  # CycleGAN's image pools.

    def step_key(self, purpose: int) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(self.rng, self.step), purpose)
