"""The image pool follows the reference's policy and resumes exactly from a checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax import image_pool
from i2i_jax.checkpointing import Checkpointer

query = jax.jit(image_pool.query)


def numbered_images(first: int, count: int) -> jnp.ndarray:
    """Images whose every pixel is their serial number, so returns can be traced."""
    return jnp.broadcast_to(
        jnp.arange(first, first + count, dtype=jnp.float32)[:, None, None, None], (count, 2, 2, 1)
    )


def ids(images) -> list[int]:
    return [int(v) for v in np.asarray(images)[:, 0, 0, 0]]


def test_fills_first_then_returns_new_or_stored_half_the_time():
    pool = image_pool.empty_pool(10, (2, 2, 1))
    pool, returned = query(pool, numbered_images(0, 10), jax.random.key(0))
    assert ids(returned) == list(range(10)) and int(pool.count) == 10
    assert sorted(ids(pool.images)) == list(range(10))

    own, swapped, previous = 0, 0, set(range(10))
    for step in range(200):
        batch = numbered_images(100 + 4 * step, 4)
        pool, returned = query(pool, batch, jax.random.key(step + 1))
        for new, out in zip(ids(batch), ids(returned), strict=True):
            if out == new:
                own += 1
            else:  # A stored image (perhaps stored earlier in this batch), never a future one.
                assert out in previous
                swapped += 1
                previous.add(new)
        assert len(set(ids(pool.images))) == 10  # Swaps replace, never duplicate.
    # 800 coin flips with p = 1/2: 400 +- 14 (one standard deviation).
    assert 330 < own < 470 and own + swapped == 800


def test_swapped_slots_are_uniform():
    """Every slot is chosen: after enough swaps no initial image is left."""
    pool = image_pool.empty_pool(5, (2, 2, 1))
    pool, _ = query(pool, numbered_images(0, 5), jax.random.key(0))
    for step in range(60):
        pool, _ = query(pool, numbered_images(10 + step, 1), jax.random.key(step + 1))
    assert not set(ids(pool.images)) & set(range(5))


def test_size_zero_passes_fakes_through():
    pool = image_pool.empty_pool(0, (2, 2, 1))
    fakes = numbered_images(0, 3)
    new_pool, returned = query(pool, fakes, jax.random.key(0))
    np.testing.assert_array_equal(returned, fakes)
    assert new_pool.images.shape == (0, 2, 2, 1)


def test_a_pool_restored_from_a_checkpoint_continues_exactly(tmp_path):
    pool = image_pool.empty_pool(6, (2, 2, 1))
    for step in range(3):
        pool, _ = query(pool, numbered_images(4 * step, 4), jax.random.key(step))
    checkpointer = Checkpointer(str(tmp_path), every_steps=1, keep=1)
    checkpointer.maybe_save(3, {"pool": pool}, force=True)
    checkpointer.close()
    restored = Checkpointer(str(tmp_path), 1, 1).restore_latest(
        {"pool": image_pool.empty_pool(6, (2, 2, 1))}
    )["pool"]
    for step in range(3, 8):
        batch = numbered_images(4 * step, 4)
        pool, expected = query(pool, batch, jax.random.key(step))
        restored, actual = query(restored, batch, jax.random.key(step))
        np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(restored.images, pool.images)
