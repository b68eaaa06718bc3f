"""Pix2Pix (Isola et al. 2017): a conditional GAN, U-Net G and PatchGAN D on (input, output)."""

import jax
import jax.numpy as jnp

from i2i_jax import losses, metrics, parallel
from i2i_jax.state import TrainState
from i2i_jax.tasks.common import (
    GanTask,
    discriminator_loss,
    init_net,
    sample_row,
    to_model_range,
    to_uint8,
    translate,
)

_DROPOUT, _EVAL_DROPOUT, _GRADIENT_PENALTY = 0, 1, 2  # `TrainState.step_key` purposes.


class Pix2Pix(GanTask):
    """Batches are dicts of uint8 images: `A` (the input) and `B` (the target)."""

    def init_state(self, seed: int) -> TrainState:
        c = self.config
        key = jax.random.PRNGKey(seed)
        g_key, d_key = jax.random.split(jax.random.fold_in(key, 0x1417))
        image = jnp.zeros((1, c.crop_size, c.crop_size, c.input_nc), jnp.float32)
        pair = jnp.zeros((1, c.crop_size, c.crop_size, c.input_nc + c.output_nc), jnp.float32)
        nets = {
            "G": init_net(self.generator, self.tx, g_key, image, keep_average=self.ema_decay > 0),
            "D": init_net(self.discriminator, self.tx, d_key, pair),
        }
        return TrainState(
            step=jnp.zeros((), jnp.int32), rng=key, nets=nets, plateau=self.init_plateau()
        )

    def _discriminator(self, params, real_a):
        """D(a, b) on the input and a candidate output, stacked on channels."""

        def discriminate(batch_stats, b):
            return self.train_forward(
                self.discriminator, params, batch_stats, jnp.concatenate([real_a, b], axis=-1)
            )

        return discriminate

    def train_step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        """One reference iteration: G forward once, D update, then G update against the new D."""
        c = self.config
        real_a, real_b = to_model_range(batch["A"]), to_model_range(batch["B"])
        g, d = state.nets["G"], state.nets["D"]

        def generate(params):
            return self.train_forward(
                self.generator, params, g.batch_stats, real_a, dropout_key=state.step_key(_DROPOUT)
            )

        fake_b, generator_vjp, g_stats = jax.vjp(
            generate, parallel.per_device(g.params), has_aux=True
        )

        def d_loss_fn(params):
            return discriminator_loss(
                self._discriminator(params, real_a),
                d.batch_stats,
                real_b,
                jax.lax.stop_gradient(fake_b),
                c.gan_mode,
                c.lambda_gp,
                state.step_key(_GRADIENT_PENALTY),
                fake_first=True,
            )

        (_, (d_stats, d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            parallel.per_device(d.params)
        )
        new_d = self.apply_gradients(d, parallel.mean_over_devices(d_grads), d_stats, state)

        def g_loss_fn(fake):
            logits, stats = self._discriminator(new_d.params, real_a)(new_d.batch_stats, fake)
            g_gan = losses.gan_loss(logits, True, c.gan_mode)
            g_l1 = losses.l1_loss(fake, real_b)
            return g_gan + c.lambda_L1 * g_l1, (stats, g_gan, g_l1)

        (_, (d_stats, g_gan, g_l1)), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake_b)
        (g_grads,) = generator_vjp(fake_grad)
        step_metrics = {"G_GAN": g_gan, "G_L1": g_l1, "D_real": d_real, "D_fake": d_fake}
        # The step's second and last all-reduce: G's gradient, the running statistics (which
        # per-device batch norm keeps per device) and the metrics.
        g_grads, g_stats, d_stats, step_metrics = parallel.mean_over_devices(
            (g_grads, g_stats, d_stats, step_metrics)
        )
        new_g = self.apply_gradients(g, g_grads, g_stats, state)
        new_d = new_d.replace(batch_stats=d_stats)

        new_state = state.replace(step=state.step + 1, nets={"G": new_g, "D": new_d})
        return new_state, {**step_metrics, "lr": self.learning_rate(state)}

    def eval_step(self, state: TrainState, batch, direction: str = "AtoB") -> dict:
        """Per-example L1/PSNR/SSIM of the translation, and input | output | target images."""
        del direction  # Pix2Pix translates A into B only.
        fake = translate(
            self.generator,
            state.nets["G"].for_testing(),
            to_model_range(batch["A"]),
            self.config.eval_mode,
            state.step_key(_EVAL_DROPOUT),
            batch["index"],
        )
        scores = metrics.image_metrics(fake, to_model_range(batch["B"]))
        scores["images"] = sample_row(batch["A"], to_uint8(fake), batch["B"])
        return scores
