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
