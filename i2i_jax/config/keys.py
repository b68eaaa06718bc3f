"""Every config key, declared once: its default per task, its meaning for --help, its rule.

The defaults (`defaults.py`), the help text, the checks (`check.py`) and what may change on
resume (`workdir.py`) all read `KEYS`, so a key cannot have a default without a meaning or a
rule that names a key no config has. Names are the reference's options: `--netG unet_128
--lambda_L1 50` becomes `--config.netG=unet_128 --config.lambda_L1=50`.
"""

import dataclasses
from typing import Any

from i2i_jax import data, losses, models, optim, tasks
from i2i_jax.models import conv_forms, layers
from i2i_jax.tasks import common

TASK_NAMES = ("pix2pix", "cycle_gan")  # The order --help shows the defaults in.
ON_BAD_IMAGE = ("error", "skip")
CHANNELS = (1, 3)  # What image files decode to: grayscale or RGB.
DTYPES = ("float32", "bfloat16")
SAME = object()  # `Key.cycle_gan` when CycleGAN's default is Pix2Pix's.


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key. `name` is dotted as overrides write it (`data.source`); `default` is
    Pix2Pix's value and `cycle_gan` CycleGAN's where it differs; `only` names the one task that
    has the key (its `default` is then that task's). A value must be one of `choices`, or at
    least `minimum`, which `minimum_means` names ("a filter count"). `may_change_on_resume`:
    the key changes what a run reports, how often it saves or evaluates, or how it computes the
    same sums, never the parameters it reaches (beyond float rounding), so a resume may change
    it without --allow_config_change."""

    name: str
    default: Any
    meaning: str
    choices: tuple | None = None
    minimum: int | None = None
    minimum_means: str = ""
    cycle_gan: Any = SAME
    only: str | None = None
    may_change_on_resume: bool = False

    def __post_init__(self):
        assert (self.minimum is None) == (not self.minimum_means), self.name
        assert self.only in (None, *TASK_NAMES), self.name
        assert self.only is None or self.cycle_gan is SAME, self.name

    def default_for(self, task: str) -> Any:
        """This key's default in `task`'s config; `SAME` when that task has no such key."""
        if self.only not in (None, task):
            return SAME
        return self.default if task != "cycle_gan" or self.cycle_gan is SAME else self.cycle_gan


def _filters(name, meaning):
    return Key(name, 64, meaning, minimum=1, minimum_means="a filter count")


def _weight(name, default, meaning, **kwargs):
    return Key(name, default, meaning, minimum=0, minimum_means="a loss weight", **kwargs)


def _count(name, default, meaning, minimum, means, **kwargs):
    return Key(name, default, meaning, minimum=minimum, minimum_means=means, **kwargs)


KEYS = (
    Key(
        "model",
        "pix2pix",
        "the task: pix2pix (paired A -> B) or cycle_gan (unpaired A <-> B)",
        choices=tuple(sorted(tasks.TASKS)),
        cycle_gan="cycle_gan",
    ),
    Key("seed", 0, "seed of the initial parameters, the data order, jitter, dropout and the pool"),
    Key(
        "init_from",
        "",
        "WORKDIR[:STEP]: fine-tune, starting every network from that run's checkpoint (latest, "
        "or STEP's; a convert_torch workdir too) with a fresh optimizer at step 0; used only "
        "while this workdir has no checkpoint; '': initialise from the seed",
        may_change_on_resume=True,
    ),
    # Networks.
    Key(
        "netG",
        "unet_256",
        "generator: unet_<2**k> (U-Net with k downsamplings) or resnet_<n>blocks",
        cycle_gan="resnet_9blocks",
    ),  # Rule: check.py asks models.
    Key(
        "netD",
        "basic",
        "discriminator: basic (70x70 PatchGAN), n_layers (with n_layers_D) or pixel",
        choices=models.DISCRIMINATORS,
    ),
    _count("n_layers_D", 3, "conv layers of netD=n_layers", 1, "a layer count"),
    _filters("ngf", "filters of the generator's first layer"),
    _filters("ndf", "filters of the discriminator's first layer"),
    Key("norm", "batch", "batch, instance or none", choices=layers.NORMS, cycle_gan="instance"),
    Key("no_dropout", False, "no dropout in the generator", cycle_gan=True),
    Key(
        "init_type",
        "normal",
        "weight init: normal, xavier, kaiming or orthogonal",
        choices=layers.INIT_TYPES,
    ),
    Key("init_gain", 0.02, "scale of the weight init"),
    Key("input_nc", 3, "channels of domain A images: 3 (RGB) or 1 (grayscale)", choices=CHANNELS),
    Key("output_nc", 3, "channels of domain B images: 3 (RGB) or 1 (grayscale)", choices=CHANNELS),
    Key(
        "dtype",
        "float32",
        "compute dtype, float32 or bfloat16 (parameters and optimizer stay float32)",
        choices=DTYPES,
    ),
    Key("sync_batch_stats", True, "batch-norm statistics over the global batch (else per device)"),
    # auto: on CPU the CPU forms of the convolutions, Winograd where it pays (the ResNet blocks
    # and the PatchGAN's widest conv at 256 px); XLA's own elsewhere. cpu: the direct CPU forms
    # (the reference's FLOPs) on every platform; winograd: auto's CPU forms on every platform.
    Key(
        "conv_lowering",
        "auto",
        "how convolutions are computed: auto, native, cpu or winograd (same results to 1e-5)",
        choices=conv_forms.LOWERINGS,
        may_change_on_resume=True,
    ),
    # conv_outputs: less memory at high resolution, a little more compute.
    Key(
        "remat",
        "none",
        "none, or conv_outputs: recompute all but conv outputs in the backward pass",
        choices=common.REMATS,
        may_change_on_resume=True,
    ),
    # Objective and optimizer.
    Key(
        "gan_mode",
        "vanilla",
        "adversarial loss: vanilla (BCE), lsgan or wgangp",
        choices=losses.GAN_MODES,
        cycle_gan="lsgan",
    ),
    _weight("lambda_gp", 10.0, "gradient-penalty weight (gan_mode=wgangp)"),
    _weight("lambda_L1", 100.0, "weight of Pix2Pix's L1 loss", only="pix2pix"),
    _weight("lambda_A", 10.0, "weight of the cycle loss A -> B -> A", only="cycle_gan"),
    _weight("lambda_B", 10.0, "weight of the cycle loss B -> A -> B", only="cycle_gan"),
    _weight(
        "lambda_identity",
        0.5,
        "identity-loss weight relative to lambda_A/B (0 turns it off)",
        only="cycle_gan",
    ),
    _count(
        "pool_size",
        50,
        "CycleGAN's image history for the discriminators (0 turns it off)",
        0,
        "an image count (0 turns the pool off)",
        only="cycle_gan",
    ),
    Key("lr", 2e-4, "Adam's learning rate"),  # Rule: positive and finite (check.py).
    Key("beta1", 0.5, "Adam's beta1 (beta2 is 0.999)"),  # Rule: in [0, 1) (check.py).
    Key(
        "fid_weights",
        "",
        "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or its converted .npz): every "
        "evaluation adds FID and KID of each translation against its domain's real images; '': "
        "none",
        may_change_on_resume=True,
    ),
    Key(
        "ema_decay",
        0.0,
        "> 0: keep an exponential moving average of the generators' weights with this decay "
        "per step (0.999: about the last 1000 steps) and evaluate, sample and export it; 0: the "
        "last weights",
    ),  # Rule: in [0, 1) (check.py).
    Key(
        "lr_policy",
        "linear",
        "learning-rate policy, as the reference's --lr_policy: linear (constant for n_epochs, "
        "then linear to 0 over n_epochs_decay), step (x0.1 every lr_decay_iters epochs), plateau "
        "(x0.2 after more than plateau_patience evaluations without a 1% better "
        "plateau_metric) or cosine (T_max = n_epochs, rising again after them as PyTorch's)",
        choices=optim.LR_POLICIES,
    ),
    Key(
        "plateau_metric",
        "l1",
        "lr_policy=plateau: the evaluation metric it watches, lower being better (an "
        "eval_metrics.jsonl key)",
        cycle_gan="cycle_l1_A",
    ),
    _count(
        "plateau_patience",
        5,
        "lr_policy=plateau: evaluations without improvement it tolerates before cutting the rate",
        0,
        "an evaluation count",
    ),
    _count(
        "lr_decay_iters",
        50,
        "lr_policy=step: epochs between the x0.1 steps (the reference steps it per epoch)",
        1,
        "an epoch count",
    ),
    _count("n_epochs", 100, "epochs at the initial learning rate", 0, "an epoch count"),
    _count("n_epochs_decay", 100, "epochs of linear decay to 0 after those", 0, "an epoch count"),
    Key(
        "num_train_steps", -1, "> 0: train this many steps instead of the epoch counts; -1: epochs"
    ),
    Key("batch_size", 1, "global batch, over every device of every process"),
    # Input: resize to load_size, random crop to crop_size, random flip.
    Key(
        "direction",
        "BtoA",
        "AtoB or BtoA: which side of the data is the input",
        choices=data.DIRECTIONS,
        cycle_gan="AtoB",
    ),
    Key(
        "preprocess",
        "resize_and_crop",
        "resize_and_crop (to load_size, then crop), crop or none",
        choices=data.PREPROCESS,
    ),
    _count(
        "load_size", 286, "side the images are resized to before cropping", 1, "a size in pixels"
    ),
    _count(
        "crop_size",
        256,
        "side of the training crops, which the generator must accept",
        1,
        "a size in pixels",
    ),
    Key("no_flip", False, "no random horizontal flips"),
    Key(
        "data.source",
        "tfds",
        "synthetic (embedded, offline), folder (data.dataroot) or tfds",
        choices=data.SOURCES,
    ),
    Key(
        "data.name",
        "facades",
        "the TFDS dataset, e.g. facades or horse2zebra",
        cycle_gan="horse2zebra",
    ),
    Key(
        "data.dataroot",
        "",
        "source=folder: directory with train/, test/ (or trainA/, trainB/, ...)",
    ),
    Key("data.data_dir", "", "source=tfds: where prepared datasets live ('' = TFDS's default)"),
    Key("data.manual_dir", "", "source=tfds: where the downloaded archive is when offline"),
    # CycleGAN reads the domains from <split>A and <split>B.
    Key("data.train_split", "train", "split to train on"),
    Key("data.eval_split", "test", "split to evaluate on", may_change_on_resume=True),
    _count(
        "data.num_parallel_calls",
        2,
        "input-pipeline threads",
        1,
        "a thread count",
        may_change_on_resume=True,
    ),
    # Broken: corrupt, truncated, not an image, too small; error lists every such file.
    Key(
        "data.on_bad_image",
        "error",
        "a broken image file: error (stop before training) or skip it",
        choices=ON_BAD_IMAGE,
    ),
    _count(
        "data.synthetic_train_size",
        400,
        "source=synthetic: training examples",
        1,
        "an example count",
    ),
    _count(
        "data.synthetic_test_size", 100, "source=synthetic: test examples", 1, "an example count"
    ),
    # Loop, evaluation and checkpoints.
    _count(
        "log_every_steps",
        100,
        "steps between progress lines (and loss checks)",
        1,
        "a step interval",
        may_change_on_resume=True,
    ),
    _count(
        "eval_every_steps",
        2000,
        "steps between evaluations (0: never)",
        0,
        "a step interval (0 turns evaluation off)",
        may_change_on_resume=True,
    ),
    _count(
        "checkpoint_every_steps",
        2000,
        "steps between checkpoints (0: only at the end)",
        0,
        "a step interval (0 saves at the end only)",
        may_change_on_resume=True,
    ),
    _count(
        "keep_checkpoints",
        3,
        "checkpoints kept",
        1,
        "a checkpoint count",
        may_change_on_resume=True,
    ),
    Key(
        "eval_mode",
        "train_like",
        "test-time generator: train_like (the paper's) or eval (running statistics)",
        choices=common.TEST_MODES,
        may_change_on_resume=True,
    ),
    Key(
        "eval_batch_size",
        8,
        "global batch of evaluation",  # Rule: check.check_batch_size.
        may_change_on_resume=True,
    ),
    Key(
        "compilation_cache_dir",
        "~/.cache/i2i_jax/compilation_cache",
        "XLA's compiled programs, kept between runs so that a resume loads its step instead "
        "of compiling it ('': off; $JAX_COMPILATION_CACHE_DIR, where set, wins)",
        may_change_on_resume=True,
    ),
    _count(
        "num_sample_images",
        8,
        "test images in each sample grid (0: no grids)",
        0,
        "an image count",
        may_change_on_resume=True,
    ),
)
BY_NAME = {key.name: key for key in KEYS}
assert len(BY_NAME) == len(KEYS), "a key is declared twice"
