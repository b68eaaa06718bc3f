"""CycleGAN (Zhu et al. 2017): two generators and two discriminators trained on unpaired data.

G_A translates A into B and G_B translates B into A; D_A judges domain B (real B against
G_A's fakes), D_B judges domain A, as in the reference.
"""

import jax
import jax.numpy as jnp

from i2i_jax import image_pool, losses, metrics, parallel
from i2i_jax.state import TrainState
from i2i_jax.tasks.common import (
    GanTask,
    Generator,
    discriminator_loss,
    init_net,
    sample_row,
    to_model_range,
    to_uint8,
    translate,
)

# `TrainState.step_key` purposes.
_POOL_A, _POOL_B, _GP_A, _GP_B, _EVAL_DROPOUT = range(2, 7)
# Each generator call of a step draws its own dropout masks, as each forward pass of the
# reference's networks does: the call's output name -> its purpose.
DROPOUT_PURPOSES = {"fake_B": 7, "rec_A": 8, "fake_A": 9, "rec_B": 10, "idt_A": 11, "idt_B": 12}
_GENERATORS = ("G_A", "G_B")
_GENERATOR_OF = {"AtoB": ("A", "B", "G_A", "G_B"), "BtoA": ("B", "A", "G_B", "G_A")}


class CycleGAN(GanTask):
    """Batches are dicts of uint8 images: `A` and `B`, drawn independently from each domain."""

    def __init__(self, config, steps_per_epoch: int):
        super().__init__(config, steps_per_epoch)
        # G_B maps B (output_nc channels) back to A (input_nc channels).
        self.generator_b = self.generator.clone(output_nc=config.input_nc)

    def generators(self) -> dict[str, Generator]:
        """G_A takes A images (input_nc channels), G_B takes B images (output_nc)."""
        channels = {"A": self.config.input_nc, "B": self.config.output_nc}
        return {
            direction: Generator(generator, self._module(generator), channels[source])
            for direction, (source, _, generator, _) in _GENERATOR_OF.items()
        }

    def _module(self, name: str):
        return {"G_A": self.generator, "G_B": self.generator_b}.get(name, self.discriminator)

    def init_state(self, seed: int) -> TrainState:
        c = self.config
        key = jax.random.PRNGKey(seed)
        keys = jax.random.split(jax.random.fold_in(key, 0xC1C1E), 4)
        shape_a = (c.crop_size, c.crop_size, c.input_nc)
        shape_b = (c.crop_size, c.crop_size, c.output_nc)
        inputs = {"G_A": shape_a, "G_B": shape_b, "D_A": shape_b, "D_B": shape_a}
        nets = {
            name: init_net(
                self._module(name),
                self.tx,
                k,
                jnp.zeros((1, *shape)),
                keep_average=self.ema_decay > 0 and name in _GENERATORS,
            )
            for k, (name, shape) in zip(keys, inputs.items(), strict=True)
        }
        pools = {
            "fake_B": image_pool.empty_pool(c.pool_size, shape_b),
            "fake_A": image_pool.empty_pool(c.pool_size, shape_a),
        }
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            rng=key,
            nets=nets,
            pools=pools,
            plateau=self.init_plateau(),
        )

    def train_step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        """The reference's `optimize_parameters`: both generators, then both discriminators
        (on fakes drawn through the image pools)."""
        c = self.config
        nets = state.nets
        real_a, real_b = to_model_range(batch["A"]), to_model_range(batch["B"])

        def g_loss_fn(g_params):
            stats = {name: nets[name].batch_stats for name in nets}

            def run(name, images, output=None):
                """A network in training mode; discriminators keep their current params.
                A generator call draws the dropout masks of its `output`."""
                params = g_params[name] if name in g_params else nets[name].params
                key = state.step_key(DROPOUT_PURPOSES[output]) if output else None
                out, stats[name] = self.train_forward(
                    self._module(name), params, stats[name], images, dropout_key=key
                )
                return out

            fake_b = run("G_A", real_a, "fake_B")
            rec_a = run("G_B", fake_b, "rec_A")
            fake_a = run("G_B", real_b, "fake_A")
            rec_b = run("G_A", fake_a, "rec_B")
            terms = {}
            if c.lambda_identity > 0:
                terms["idt_A"] = losses.l1_loss(run("G_A", real_b, "idt_A"), real_b) * (
                    c.lambda_B * c.lambda_identity
                )
                terms["idt_B"] = losses.l1_loss(run("G_B", real_a, "idt_B"), real_a) * (
                    c.lambda_A * c.lambda_identity
                )
            terms["G_A"] = losses.gan_loss(run("D_A", fake_b), True, c.gan_mode)
            terms["G_B"] = losses.gan_loss(run("D_B", fake_a), True, c.gan_mode)
            terms["cycle_A"] = losses.l1_loss(rec_a, real_a) * c.lambda_A
            terms["cycle_B"] = losses.l1_loss(rec_b, real_b) * c.lambda_B
            return sum(terms.values()), (stats, terms, fake_a, fake_b)

        (_, (stats, terms, fake_a, fake_b)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
            parallel.per_device({n: nets[n].params for n in _GENERATORS})
        )

        # The pools hold the global batch's fakes, as on one device: every device gathers them,
        # runs the same query and keeps its own share of what the pools return.
        fakes = parallel.gather_batch({"fake_B": fake_b, "fake_A": fake_a})
        pool_b, pooled_fake_b = image_pool.query(
            state.pools["fake_B"], fakes["fake_B"], state.step_key(_POOL_A)
        )
        pool_a, pooled_fake_a = image_pool.query(
            state.pools["fake_A"], fakes["fake_A"], state.step_key(_POOL_B)
        )
        pooled_fake_b, pooled_fake_a = parallel.local_share(
            (pooled_fake_b, pooled_fake_a), real_a.shape[0]
        )
        d_inputs = {"D_A": (real_b, pooled_fake_b, _GP_A), "D_B": (real_a, pooled_fake_a, _GP_B)}

        def d_loss_fn(d_params):
            total, aux = 0.0, {}
            for name, (real, fake, gp_purpose) in d_inputs.items():

                def discriminate(batch_stats, images, name=name):
                    return self.train_forward(
                        self.discriminator, d_params[name], batch_stats, images
                    )

                loss, (d_stats, _, _) = discriminator_loss(
                    discriminate,
                    stats[name],
                    real,
                    jax.lax.stop_gradient(fake),
                    c.gan_mode,
                    c.lambda_gp,
                    state.step_key(gp_purpose),
                    fake_first=False,
                )
                total += loss
                aux[name] = (loss, d_stats)
            return total, aux

        (_, d_aux), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            parallel.per_device({name: nets[name].params for name in d_inputs})
        )
        step_metrics = {**terms}
        for name, (loss, d_stats) in d_aux.items():
            step_metrics[name], stats[name] = loss, d_stats
        # The discriminators train on fakes of the old generators, so every update can wait
        # for the step's one all-reduce: all gradients, the running statistics (which
        # per-device batch norm keeps per device) and the metrics.
        grads, stats, step_metrics = parallel.mean_over_devices(
            ({**g_grads, **d_grads}, stats, step_metrics)
        )
        new_nets = {
            name: self.apply_gradients(nets[name], grads[name], stats[name], state) for name in nets
        }
        new_state = state.replace(
            step=state.step + 1, nets=new_nets, pools={"fake_B": pool_b, "fake_A": pool_a}
        )
        return new_state, {**step_metrics, "lr": self.learning_rate(state)}

    def eval_step(self, state: TrainState, batch, direction: str) -> dict:
        """Translates the batch's `direction[0]` images and back: the cycle-reconstruction L1,
        and L1/PSNR/SSIM against the true counterpart where the batch has one. The images are
        real | fake | reconstructed."""
        source, target, forward, backward = _GENERATOR_OF[direction]
        key = state.step_key(_EVAL_DROPOUT)
        real = to_model_range(batch[source])
        fake = translate(
            self._module(forward),
            state.nets[forward].for_testing(),
            real,
            self.config.eval_mode,
            key,
            batch["index"],
        )
        rec = translate(
            self._module(backward),
            state.nets[backward].for_testing(),
            fake,
            self.config.eval_mode,
            key,
            batch["index"],
        )
        scores = {f"cycle_l1_{source}": metrics.l1(rec, real)}
        if target in batch:
            scores.update(
                {
                    f"{k}_{direction}": v
                    for k, v in metrics.image_metrics(fake, to_model_range(batch[target])).items()
                }
            )
        scores["images"] = sample_row(batch[source], to_uint8(fake), to_uint8(rec))
        return scores
