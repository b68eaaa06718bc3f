"""The train state: one explicit pytree that every step takes and returns."""

import dataclasses
from typing import Any

import flax.struct
import jax


@dataclasses.dataclass(frozen=True)
class NetState:
    """One network: its parameters, normalisation statistics and optimizer state; for a
    generator trained with `ema_decay` > 0, also their exponential moving average, a dict
    {"params", "batch_stats"}, which evaluation, sample grids and exports use.

    A pytree whose `average` is a child only where it is kept, so that a network without one
    has the tree it had before `average` existed and their checkpoints still restore."""

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


def _net_children(net: NetState):
    names = _NET_FIELDS if net.average is None else (*_NET_FIELDS, "average")
    return [(jax.tree_util.GetAttrKey(name), getattr(net, name)) for name in names], None


_NET_FIELDS = ("params", "batch_stats", "opt_state")
jax.tree_util.register_pytree_with_keys(
    NetState, _net_children, lambda _, children: NetState(*children)
)


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
