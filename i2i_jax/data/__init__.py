"""Input: dataset sources (synthetic, folder, TFDS) and the tf.data pipeline."""
