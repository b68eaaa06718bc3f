"""Image files on disk: which names count as images, a folder's images in name order, and how
one is opened.

A leaf module (no imports from this package), shared by the folder sources, their scan and the
TFDS builders, so that none of them has to import another.
"""

import os

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# The only formats Pillow may open an image file as, whatever its name says: a `.png` that is
# really EPS must never reach Pillow's EPS plugin, which runs Ghostscript on it.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")


class BadImageError(Exception):
    """Why a file cannot be used as an image; the caller names the file."""


def list_images(directory: str) -> list[str]:
    """The paths of the images in `directory` (by extension, case-insensitive), sorted."""
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )


def load_image(path: str) -> Image.Image:
    """The image at `path`, decoded (its file closed), opened only as one of `IMAGE_FORMATS`;
    `BadImageError` saying why when it cannot be."""
    try:
        size = os.path.getsize(path)  # Follows links: a dangling one or a loop fails here.
    except OSError as error:
        what = "broken symbolic link" if os.path.islink(path) else "cannot be read"
        raise BadImageError(f"{what} ({error.strerror})") from None
    if size == 0:
        raise BadImageError("empty file (0 bytes)")
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            image.load()  # Decodes every pixel: a truncated file fails here.
        return image
    except UnidentifiedImageError:
        raise BadImageError(
            "not an image (no image format recognised); accepted formats: "
            + ", ".join(IMAGE_FORMATS)
        ) from None
    except Image.DecompressionBombError as error:  # A plain Exception, not an OSError.
        raise BadImageError(f"too many pixels to decode safely ({error})") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise BadImageError(f"truncated or corrupt ({str(error).splitlines()[0][:120]})") from None
