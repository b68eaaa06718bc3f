"""i2i_jax: Pix2Pix and CycleGAN image-to-image translation in JAX/Flax."""

__version__ = "0.1.0"
