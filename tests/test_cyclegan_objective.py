"""The CycleGAN objective written out by hand from the paper and the reference's
`backward_G` / `backward_D_basic`, against the task's train step: the losses of one step and
the gradients of every network.

The hand-written side calls the networks through flax's own `apply`, built with XLA's native
convolutions (the step uses the CPU forms), and writes each loss term as a formula; only the
networks' definitions and the step's keys are shared. The task's gradients are read by
replacing the optimizer update with one that returns the gradient as the new parameters.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2i_jax import models, parallel, tasks
from i2i_jax.state import NetState
from i2i_jax.tasks import common, cyclegan

from helpers import fixed_batches


def hand_written_objective(config, state, batch):
    """(G loss terms, D losses, d G_loss / d G params, d D_loss / d D params) of one step, with
    an empty-pool (pool_size 0) CycleGAN and LSGAN."""
    native = config.copy_and_resolve_references()
    native.conv_lowering = "native"
    g_a = models.build_generator(native)
    g_b = g_a.clone(output_nc=config.input_nc)
    d = models.build_discriminator(native)
    real_a = batch["A"].astype(np.float32) / 127.5 - 1
    real_b = batch["B"].astype(np.float32) / 127.5 - 1
    params = {name: net.params for name, net in state.nets.items()}

    def generate(module, p, x, output):
        key = state.step_key(cyclegan.DROPOUT_PURPOSES[output])
        return module.apply({"params": p}, x, train=True, rngs={"dropout": key})

    def discriminate(p, x):
        return d.apply({"params": p}, x, train=True)

    lambda_a, lambda_b, lambda_idt = config.lambda_A, config.lambda_B, config.lambda_identity

    def g_objective(g_params):
        fake_b = generate(g_a, g_params["G_A"], real_a, "fake_B")
        rec_a = generate(g_b, g_params["G_B"], fake_b, "rec_A")
        fake_a = generate(g_b, g_params["G_B"], real_b, "fake_A")
        rec_b = generate(g_a, g_params["G_A"], fake_a, "rec_B")
        idt_a = generate(g_a, g_params["G_A"], real_b, "idt_A")
        idt_b = generate(g_b, g_params["G_B"], real_a, "idt_B")
        terms = {
            "G_A": jnp.mean((discriminate(params["D_A"], fake_b) - 1) ** 2),
            "G_B": jnp.mean((discriminate(params["D_B"], fake_a) - 1) ** 2),
            "cycle_A": jnp.mean(jnp.abs(rec_a - real_a)) * lambda_a,
            "cycle_B": jnp.mean(jnp.abs(rec_b - real_b)) * lambda_b,
            "idt_A": jnp.mean(jnp.abs(idt_a - real_b)) * lambda_b * lambda_idt,
            "idt_B": jnp.mean(jnp.abs(idt_b - real_a)) * lambda_a * lambda_idt,
        }
        return sum(terms.values()), (terms, fake_a, fake_b)

    g_params = {name: params[name] for name in ("G_A", "G_B")}
    (_, (terms, fake_a, fake_b)), g_grads = jax.value_and_grad(g_objective, has_aux=True)(g_params)

    def d_losses(d_params):
        # D_A tells real B from G_A's fakes, D_B real A from G_B's; each half of
        # (real is real) + (fake is fake), on fakes that carry no gradient.
        return {
            "D_A": 0.5
            * (
                jnp.mean((discriminate(d_params["D_A"], real_b) - 1) ** 2)
                + jnp.mean(discriminate(d_params["D_A"], fake_b) ** 2)
            ),
            "D_B": 0.5
            * (
                jnp.mean((discriminate(d_params["D_B"], real_a) - 1) ** 2)
                + jnp.mean(discriminate(d_params["D_B"], fake_a) ** 2)
            ),
        }

    d_params = {name: params[name] for name in ("D_A", "D_B")}
    d_grads = jax.grad(lambda p: sum(d_losses(p).values()))(d_params)
    return terms, d_losses(d_params), g_grads, d_grads


def task_step_gradients(config, state, batch, monkeypatch):
    """The step's metrics, and its gradient of each network (the update is replaced by one
    that returns the gradient in place of the parameters)."""

    def gradient_as_parameters(task, net, grads, batch_stats, state):
        return NetState(params=grads, batch_stats=batch_stats, opt_state=net.opt_state)

    monkeypatch.setattr(common.GanTask, "apply_gradients", gradient_as_parameters)
    mesh = parallel.make_mesh(jax.devices()[:1])
    task = tasks.build_task(config, steps_per_epoch=4)
    step = parallel.jit_train_step(task.train_step, mesh)
    new_state, step_metrics = step(
        jax.device_put(state, parallel.replicated(mesh)), parallel.to_global(batch, mesh)
    )
    grads = {name: net.params for name, net in jax.device_get(new_state.nets).items()}
    return jax.device_get(step_metrics), grads


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["instance", "none"])
def test_one_step_has_the_papers_losses_and_gradients(tiny_cycle_config, norm, monkeypatch):
    config = tiny_cycle_config
    config.norm, config.gan_mode, config.pool_size = norm, "lsgan", 0
    config.lambda_A, config.lambda_B, config.lambda_identity = 10.0, 3.0, 0.5
    config.no_dropout = False  # Every generator call draws its own masks.
    task = tasks.build_task(config, steps_per_epoch=4)
    state = jax.device_get(jax.jit(task.init_state, static_argnums=0)(config.seed))
    batch = fixed_batches(config, 1)[0]

    terms, d_losses, g_grads, d_grads = jax.jit(functools.partial(hand_written_objective, config))(
        state, batch
    )
    step_metrics, grads = task_step_gradients(config, state, batch, monkeypatch)

    for name, value in {**terms, **d_losses}.items():
        np.testing.assert_allclose(step_metrics[name], value, rtol=1e-5, err_msg=name)
    for name, expected in {**g_grads, **d_grads}.items():
        leaves = jax.tree_util.tree_flatten_with_path(expected)[0]
        scale = max(float(np.abs(leaf).max()) for _, leaf in leaves)
        actual = jax.tree_util.tree_leaves(grads[name])
        for (path, leaf), got in zip(leaves, actual, strict=True):
            np.testing.assert_allclose(
                got,
                leaf,
                rtol=1e-3,
                atol=1e-5 * scale,
                err_msg=f"{name}{jax.tree_util.keystr(path)}",
            )


def test_every_generator_call_of_a_step_draws_its_own_dropout_masks():
    purposes = cyclegan.DROPOUT_PURPOSES
    assert len(set(purposes.values())) == len(purposes) == 6
