"""The train state: one explicit pytree that every step takes and returns."""

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class NetState:
    """One network: its parameters, normalisation statistics and optimizer state; for a
    generator trained with `ema_decay` > 0, also their exponential moving average, a dict
    {"params", "batch_stats"}, which evaluation, sample grids and exports use."""

    params: Any
    batch_stats: Any
    opt_state: Any
    average: Any = None

    def for_testing(self) -> "NetState":
        """The network as test time uses it: its moving average where it keeps one. A GAN's
        generator oscillates from step to step; the average of its recent weights is a better
        generator than the last of them (Yazici et al. 2019)."""
        if self.average is None:
            return self
        return self.replace(params=self.average["params"], batch_stats=self.average["batch_stats"])


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
