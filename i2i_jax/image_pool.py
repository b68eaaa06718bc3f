"""CycleGAN's history of generated images (Shrivastava et al. 2017), as a pure function.

The pool lives in the train state (so it is checkpointed and resumes exactly) and is driven by
a key derived from the state's RNG. Its policy is the reference's `ImagePool.query`: while the
pool is filling, each new fake is stored and returned; once full, each new fake is returned
with probability 1/2, otherwise it replaces a uniformly chosen stored fake, which is returned.
"""

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class ImagePool:
    images: jax.Array  # [pool_size, H, W, C], float32 in [-1, 1].
    count: jax.Array  # int32: how many slots are filled.

    @property
    def size(self) -> int:
        return self.images.shape[0]


def empty_pool(pool_size: int, image_shape: tuple[int, ...]) -> ImagePool:
    """`pool_size` 0 makes a pool that returns every fake as it is."""
    return ImagePool(
        images=jnp.zeros((pool_size, *image_shape), jnp.float32), count=jnp.zeros((), jnp.int32)
    )


def query(pool: ImagePool, fakes: jax.Array, key: jax.Array) -> tuple[ImagePool, jax.Array]:
    """Feeds a batch of fakes through the pool, one image after the other as the reference
    does; returns the new pool and the images for the discriminator."""
    if pool.size == 0:
        return pool, fakes

    def one_image(carry, inputs):
        images, count = carry
        fake, image_key = inputs
        coin_key, slot_key = jax.random.split(image_key)
        filling = count < pool.size
        swap = jax.random.uniform(coin_key) > 0.5
        slot = jnp.where(filling, count, jax.random.randint(slot_key, (), 0, pool.size))
        stored = images[slot]
        images = images.at[slot].set(jnp.where(filling | swap, fake, stored))
        returned = jnp.where(~filling & swap, stored, fake)
        return (images, count + filling.astype(jnp.int32)), returned

    (images, count), returned = jax.lax.scan(
        one_image,
        (pool.images, pool.count),
        (fakes.astype(jnp.float32), jax.random.split(key, fakes.shape[0])),
    )
    return ImagePool(images=images, count=count), returned.astype(fakes.dtype)
