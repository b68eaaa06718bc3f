"""Input: dataset sources (synthetic, folder, TFDS) and the tf.data pipeline.

The names configs choose from live here, free of TensorFlow, so that checking a config does
not load it.
"""

SOURCES = ("synthetic", "folder", "tfds")
DIRECTIONS = ("AtoB", "BtoA")
PREPROCESS = ("resize_and_crop", "crop", "none")
