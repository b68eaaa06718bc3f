"""Image files on disk: which names count as images, and a folder's images in name order.

A leaf module (no imports from this package), shared by the folder sources and the TFDS
builders, so that neither has to import the other.
"""

import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_images(directory: str) -> list[str]:
    """The paths of the images in `directory` (by extension, case-insensitive), sorted."""
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
