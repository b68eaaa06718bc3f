"""Helpers every task uses to run a network and apply its optimizer."""

import jax
import jax.numpy as jnp
import optax

from i2i_jax.state import NetState


def to_model_range(images_uint8: jax.Array) -> jax.Array:
    """uint8 [0, 255] from the input pipeline to float32 [-1, 1], on the device."""
    return images_uint8.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images: jax.Array) -> jax.Array:
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def init_net(module, tx: optax.GradientTransformation, key: jax.Array,
             sample_input: jax.Array) -> NetState:
    variables = module.init({"params": key}, sample_input, train=False)
    params = variables["params"]
    return NetState(params=params, batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params))


def apply_net(module, params, batch_stats, inputs, train: bool, dropout_key=None):
    """Runs a network; returns its output and its (possibly updated) batch statistics."""
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    rngs = {"dropout": dropout_key} if dropout_key is not None else {}
    if not (train and batch_stats):
        return module.apply(variables, inputs, train=train, rngs=rngs), batch_stats
    outputs, updates = module.apply(variables, inputs, train=True, rngs=rngs,
                                    mutable=["batch_stats"])
    return outputs, updates["batch_stats"]


def apply_gradients(tx: optax.GradientTransformation, net: NetState, grads,
                    batch_stats) -> NetState:
    updates, opt_state = tx.update(grads, net.opt_state, net.params)
    return NetState(params=optax.apply_updates(net.params, updates), batch_stats=batch_stats,
                    opt_state=opt_state)
