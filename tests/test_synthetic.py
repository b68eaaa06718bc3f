"""The embedded synthetic facades: deterministic, disjoint splits, CMP palette, any size."""

import numpy as np
import pytest

from i2i_jax.data import synthetic


def test_a_seed_always_renders_the_same_building():
    photo1, labels1 = synthetic.render_facade(7, 64)
    photo2, labels2 = synthetic.render_facade(7, 64)
    np.testing.assert_array_equal(photo1, photo2)
    np.testing.assert_array_equal(labels1, labels2)
    other_photo, _ = synthetic.render_facade(8, 64)
    assert not np.array_equal(photo1, other_photo)


def test_train_and_test_seeds_are_disjoint():
    train = set(synthetic.split_seeds("train", 5000))
    test = set(synthetic.split_seeds("test", 5000))
    assert not train & test


@pytest.mark.parametrize("size", [32, 100, 256])
def test_any_resolution_and_labels_use_only_the_palette(size):
    photo, labels = synthetic.render_facade(3, size)
    assert photo.shape == labels.shape == (size, size, 3)
    assert photo.dtype == labels.dtype == np.uint8
    colours = {tuple(c) for c in labels.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in synthetic.PALETTE}
    assert {
        tuple(synthetic.PALETTE[synthetic.CLASSES.index(name)])
        for name in ("facade", "window", "sill", "cornice")
    } <= colours


def test_photos_follow_the_labels():
    """Glass is darker than wall on average: the structure a model can learn."""
    photos, labels = synthetic.render_split("train", 20, 64)
    window = np.all(labels == synthetic.PALETTE[synthetic.CLASSES.index("window")], axis=-1)
    wall = np.all(labels == synthetic.PALETTE[synthetic.CLASSES.index("facade")], axis=-1)
    brightness = photos.astype(np.float32).mean(-1)
    assert brightness[window].mean() < brightness[wall].mean() - 30
