"""Defaults shared by every config file: the reference's option names, mapped to config fields.

A reference command line translates key by key: `--netG unet_128 --lambda_L1 50` becomes
`--config.netG=unet_128 --config.lambda_L1=50`.
"""

import ml_collections


def _common() -> ml_collections.ConfigDict:
    """Keys every task has, set to Pix2Pix's values; the task functions below adjust them."""
    c = ml_collections.ConfigDict()
    c.model = "pix2pix"
    c.seed = 0

    # Networks (reference names).
    c.netG = "unet_256"
    c.netD = "basic"
    c.n_layers_D = 3
    c.ngf = 64
    c.ndf = 64
    c.norm = "batch"
    c.no_dropout = False
    c.init_type = "normal"
    c.init_gain = 0.02
    c.input_nc = 3
    c.output_nc = 3
    c.dtype = "float32"  # Compute dtype; parameters and optimizer state stay float32.
    # Batch-norm statistics over the global batch (True) or per device, as pmap gave (False).
    c.sync_batch_stats = True
    # How convolutions are computed: auto (the CPU forms of models/layers.py on CPU, XLA's own
    # elsewhere), native or cpu. The same parameters and outputs either way; only speed differs.
    c.conv_lowering = "auto"
    # Rematerialisation: none, or conv_outputs (keep only convolution outputs for the backward
    # pass and recompute the rest: less memory at high resolution, a little more compute).
    c.remat = "none"

    # Objective and optimizer.
    c.gan_mode = "vanilla"
    c.lambda_gp = 10.0  # Gradient-penalty weight, used with gan_mode=wgangp.
    c.lr = 2e-4
    c.beta1 = 0.5
    c.n_epochs = 100
    c.n_epochs_decay = 100
    c.num_train_steps = -1  # > 0 overrides the epoch counts.
    c.batch_size = 1  # Global, over all devices and processes.

    # Input: resize to load_size, random crop to crop_size, random flip.
    c.direction = "BtoA"
    c.preprocess = "resize_and_crop"
    c.load_size = 286
    c.crop_size = 256
    c.no_flip = False
    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"  # tfds | folder | synthetic
    c.data.name = "facades"
    c.data.dataroot = ""  # source=folder: a directory with train/ val/ test/ of A|B images.
    c.data.data_dir = ""  # source=tfds: where prepared datasets live ('' = TFDS default).
    c.data.manual_dir = ""  # source=tfds: where to find the downloaded archive when offline.
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.num_parallel_calls = 2
    # A folder image that cannot be trained on (corrupt, truncated, not an image, too small):
    # error (stop before training, listing every such file) or skip (train without them).
    c.data.on_bad_image = "error"
    c.data.synthetic_train_size = 400
    c.data.synthetic_test_size = 100

    # Loop, evaluation and checkpoints.
    c.log_every_steps = 100
    c.eval_every_steps = 2000
    c.checkpoint_every_steps = 2000
    c.keep_checkpoints = 3
    c.eval_mode = "train_like"  # train_like (the paper) | eval (running stats, no dropout).
    c.eval_batch_size = 8
    c.num_sample_images = 8
    return c


def pix2pix() -> ml_collections.ConfigDict:
    """The paper's Pix2Pix on facades (labels -> photo), as the reference trains it."""
    c = _common()
    c.lambda_L1 = 100.0
    return c


def cyclegan() -> ml_collections.ConfigDict:
    """The paper's CycleGAN on horse2zebra, as the reference trains it (`--model cycle_gan`)."""
    c = _common()
    c.model = "cycle_gan"
    c.netG = "resnet_9blocks"
    c.norm = "instance"
    c.no_dropout = True
    c.gan_mode = "lsgan"
    c.lambda_A = 10.0  # Cycle loss A -> B -> A.
    c.lambda_B = 10.0  # Cycle loss B -> A -> B.
    c.lambda_identity = 0.5  # Identity loss weight relative to lambda_A/B; 0 turns it off.
    c.pool_size = 50  # Image history for the discriminators; 0 turns it off.
    c.direction = "AtoB"
    c.data.name = "horse2zebra"
    c.data.train_split = "train"  # Domains are read from <split>A and <split>B.
    c.data.eval_split = "test"
    return c


# What each key means, for `python -m i2i_jax.main --help` (tests check that every key has one).
KEY_MEANINGS = {
    "model": "the task: pix2pix (paired A -> B) or cycle_gan (unpaired A <-> B)",
    "seed": "seed of the initial parameters, the data order, jitter, dropout and the pool",
    "netG": "generator: unet_<2**k> (U-Net with k downsamplings) or resnet_<n>blocks",
    "netD": "discriminator: basic (70x70 PatchGAN), n_layers (with n_layers_D) or pixel",
    "n_layers_D": "conv layers of netD=n_layers",
    "ngf": "filters of the generator's first layer",
    "ndf": "filters of the discriminator's first layer",
    "norm": "batch, instance or none",
    "no_dropout": "no dropout in the generator",
    "init_type": "weight init: normal, xavier, kaiming or orthogonal",
    "init_gain": "scale of the weight init",
    "input_nc": "channels of domain A images: 3 (RGB) or 1 (grayscale)",
    "output_nc": "channels of domain B images: 3 (RGB) or 1 (grayscale)",
    "dtype": "compute dtype, float32 or bfloat16 (parameters and optimizer stay float32)",
    "sync_batch_stats": "batch-norm statistics over the global batch (else per device)",
    "conv_lowering": "how convolutions are computed: auto, native or cpu (same results)",
    "remat": "none, or conv_outputs: recompute all but conv outputs in the backward pass",
    "gan_mode": "adversarial loss: vanilla (BCE), lsgan or wgangp",
    "lambda_gp": "gradient-penalty weight (gan_mode=wgangp)",
    "lambda_L1": "weight of Pix2Pix's L1 loss",
    "lambda_A": "weight of the cycle loss A -> B -> A",
    "lambda_B": "weight of the cycle loss B -> A -> B",
    "lambda_identity": "identity-loss weight relative to lambda_A/B (0 turns it off)",
    "pool_size": "CycleGAN's image history for the discriminators (0 turns it off)",
    "lr": "Adam's learning rate",
    "beta1": "Adam's beta1 (beta2 is 0.999)",
    "n_epochs": "epochs at the initial learning rate",
    "n_epochs_decay": "epochs of linear decay to 0 after those",
    "num_train_steps": "> 0: train this many steps instead of the epoch counts; -1: epochs",
    "batch_size": "global batch, over every device of every process",
    "direction": "AtoB or BtoA: which side of the data is the input",
    "preprocess": "resize_and_crop (to load_size, then crop), crop or none",
    "load_size": "side the images are resized to before cropping",
    "crop_size": "side of the training crops, which the generator must accept",
    "no_flip": "no random horizontal flips",
    "data.source": "synthetic (embedded, offline), folder (data.dataroot) or tfds",
    "data.name": "the TFDS dataset, e.g. facades or horse2zebra",
    "data.dataroot": "source=folder: directory with train/, test/ (or trainA/, trainB/, ...)",
    "data.data_dir": "source=tfds: where prepared datasets live ('' = TFDS's default)",
    "data.manual_dir": "source=tfds: where the downloaded archive is when offline",
    "data.train_split": "split to train on",
    "data.eval_split": "split to evaluate on",
    "data.num_parallel_calls": "input-pipeline threads",
    "data.on_bad_image": "a broken image file: error (stop before training) or skip it",
    "data.synthetic_train_size": "source=synthetic: training examples",
    "data.synthetic_test_size": "source=synthetic: test examples",
    "log_every_steps": "steps between progress lines (and loss checks)",
    "eval_every_steps": "steps between evaluations (0: never)",
    "checkpoint_every_steps": "steps between checkpoints (0: only at the end)",
    "keep_checkpoints": "checkpoints kept",
    "eval_mode": "test-time generator: train_like (the paper's) or eval (running statistics)",
    "eval_batch_size": "global batch of evaluation",
    "num_sample_images": "test images in each sample grid",
}


def describe_keys() -> str:
    """Every config key with its Pix2Pix / CycleGAN default and meaning, one per line."""
    defaults = {"pix2pix": flatten(pix2pix().to_dict()),
                "cycle_gan": flatten(cyclegan().to_dict())}
    lines = []
    for key, meaning in KEY_MEANINGS.items():
        values = [defaults[task].get(key) for task in defaults]
        shown = repr(values[0]) if values[0] == values[1] else (
            " / ".join("-" if v is None else repr(v) for v in values))
        lines.append(f"  {key} = {shown}: {meaning}")
    return "\n".join(lines)


def flatten(tree: dict, prefix: str = "") -> dict:
    """`{"data": {"source": x}}` -> `{"data.source": x}`: config keys as overrides name them."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
