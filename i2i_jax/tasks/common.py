"""Helpers every task uses to run a network and apply its optimizer."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from i2i_jax import losses, models, optim, parallel
from i2i_jax.models import layers
from i2i_jax.state import NetState, TrainState

TEST_MODES = ("train_like", "eval")
# What the backward pass keeps from a training forward pass: everything (`none`), or only
# each convolution's output, recomputing norms, activations, dropout and padding from it.
REMATS = ("none", "conv_outputs")


class Generator(NamedTuple):
    """One translation direction of a task: the network's name in the state, its module, and
    the channels of the images it takes."""

    name: str
    module: Any
    input_channels: int


class GanTask:
    """What every task builds from its config: the networks, the optimizer and its schedule.

    `train_step` is the per-device body of the data-parallel step (`parallel.jit_train_step`):
    it sees this device's share of the batch and reduces gradients, running statistics and
    metrics over devices explicitly. `eval_step` is an ordinary function of whole batches.
    """

    def __init__(self, config, steps_per_epoch: int):
        self.config = config
        self.generator = models.build_generator(config, parallel.DATA_AXIS)
        self.discriminator = models.build_discriminator(config, parallel.DATA_AXIS)
        self.lr_schedule = optim.learning_rate_schedule(config, steps_per_epoch)
        self.ema_decay = config.get("ema_decay", 0.0)  # Configs before it had none.
        self.tx = optim.adam(config, steps_per_epoch)

    def generators(self) -> dict[str, Generator]:
        """Translation direction -> its generator."""
        return {"AtoB": Generator("G", self.generator, self.config.input_nc)}

    def init_plateau(self):
        """The train state's `plateau` field: its initial state under `lr_policy=plateau`."""
        plateau = self.config.get("lr_policy") == "plateau"  # Configs before it had none.
        return optim.initial_plateau() if plateau else None

    def learning_rate(self, state: TrainState):
        """The rate of `state`'s step: the policy's schedule times the plateau's scale."""
        return self.lr_schedule(state.step) * state.lr_scale()

    def apply_gradients(self, net: NetState, grads, batch_stats, state: TrainState) -> NetState:
        """`net` after the optimizer update of `state`'s step, scaled by the plateau policy's
        scale (Adam's update is proportional to its rate). A network that keeps a moving
        average moves it toward the new weights, keeping `optim.average_decay` of it."""
        updates, opt_state = self.tx.update(grads, net.opt_state, net.params)
        if state.plateau is not None:
            updates = jax.tree.map(lambda u: u * state.lr_scale(), updates)
        params = optax.apply_updates(net.params, updates)
        average = net.average
        if average is not None:
            keep = optim.average_decay(self.ema_decay, state.step)
            average = jax.tree.map(
                lambda old, new: old + (1.0 - keep) * (new - old),
                average,
                {"params": params, "batch_stats": batch_stats},
            )
        return NetState(
            params=params, batch_stats=batch_stats, opt_state=opt_state, average=average
        )

    def train_forward(self, module, params, batch_stats, inputs, dropout_key=None):
        """A network in training mode, rematerialised per `config.remat` (configs written
        before it existed have none)."""
        return apply_net(
            module,
            params,
            batch_stats,
            inputs,
            train=True,
            dropout_key=dropout_key,
            remat=self.config.get("remat", "none"),
        )


def sample_row(*images: jax.Array) -> jax.Array:
    """uint8 images side by side (e.g. input | output | target) as RGB: their first 3
    channels, a 1-channel image as gray."""
    return jnp.concatenate(
        [jnp.broadcast_to(image[..., :3], (*image.shape[:-1], 3)) for image in images], axis=2
    )


def to_model_range(images_uint8: jax.Array) -> jax.Array:
    """uint8 [0, 255] from the input pipeline to float32 [-1, 1], on the device."""
    return images_uint8.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images: jax.Array) -> jax.Array:
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def init_net(
    module,
    tx: optax.GradientTransformation,
    key: jax.Array,
    sample_input: jax.Array,
    keep_average: bool = False,
) -> NetState:
    """A freshly initialised network; `keep_average` starts its moving average at its weights."""
    variables = module.init({"params": key}, sample_input, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    average = None
    if keep_average:  # A copy: the step donates the state's buffers, each once.
        average = jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats})
    return NetState(
        params=params, batch_stats=batch_stats, opt_state=tx.init(params), average=average
    )


def apply_net(
    module, params, batch_stats, inputs, train: bool, dropout_key=None, remat: str = "none"
):
    """Runs a network; returns its output and its (possibly updated) batch statistics.
    `remat` (one of REMATS) trades memory for recomputation in the backward pass."""
    if remat not in REMATS:
        raise ValueError(f"remat={remat!r} is not one of {REMATS}")
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    rngs = {"dropout": dropout_key} if dropout_key is not None else {}
    mutable = ["batch_stats"] if train and batch_stats else False

    def forward(variables, inputs, rngs):
        return module.apply(variables, inputs, train=train, rngs=rngs, mutable=mutable)

    if remat == "conv_outputs":
        forward = jax.checkpoint(
            forward, policy=jax.checkpoint_policies.save_only_these_names(layers.CONV_OUTPUT)
        )
    if not mutable:
        return forward(variables, inputs, rngs), batch_stats
    outputs, updates = forward(variables, inputs, rngs)
    return outputs, updates["batch_stats"]


def translate(
    module, net: NetState, images: jax.Array, eval_mode: str, key: jax.Array, example_ids: jax.Array
) -> jax.Array:
    """A generator at test time, in one of two explicit modes.

    `train_like` is the paper's (and the reference's test.py without --eval): dropout on and
    batch statistics, taken per image as the reference's test batch of 1 does, so an image's
    output does not depend on what else is in the batch; dropout masks derive from `key` and
    the example's id. `eval` uses running statistics and no dropout.
    """
    if eval_mode == "eval":
        return apply_net(module, net.params, net.batch_stats, images, train=False)[0]
    if eval_mode != "train_like":
        raise ValueError(f"eval_mode={eval_mode!r} is not one of {TEST_MODES}")

    def one_image(image, example_id):
        output, _ = apply_net(
            module,
            net.params,
            net.batch_stats,
            image[None],
            train=True,
            dropout_key=jax.random.fold_in(key, example_id),
        )
        return output[0]

    return jax.vmap(one_image)(images, example_ids)


def discriminator_loss(
    discriminate, batch_stats, real, fake, gan_mode: str, lambda_gp: float, gp_key, fake_first: bool
):
    """The reference's D objective: 1/2 [GAN(D(real), real) + GAN(D(fake), fake)], plus the
    gradient penalty (weight `lambda_gp`) for `wgangp`. `discriminate(stats, images) ->
    (logits, stats)` closes over the parameters being differentiated; the order of the two
    passes only matters for batch norm's running statistics (Pix2Pix runs the fake first,
    CycleGAN the real)."""
    passes = {}
    stats = batch_stats
    for name, images in (
        (("fake", fake), ("real", real)) if fake_first else (("real", real), ("fake", fake))
    ):
        logits, stats = discriminate(stats, images)
        passes[name] = losses.gan_loss(logits, name == "real", gan_mode)
    total = 0.5 * (passes["real"] + passes["fake"])
    if gan_mode == "wgangp":
        total += losses.gradient_penalty(
            lambda x: discriminate(stats, x)[0], real, fake, gp_key, lambda_gp
        )
    return total, (stats, passes["real"], passes["fake"])
