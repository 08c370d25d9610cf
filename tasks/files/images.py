"""What a client needs to show an image inline: its size in pixels, and a thumbnail. Pure.

Element lays out an `m.image` from `info.w`/`info.h` before the image loads, and
shows a large image through `info.thumbnail_url` instead of fetching it whole.
Pillow reads the header (and, for a thumbnail, the pixels); an image it cannot read,
or one so large in pixels that decoding it would be a decompression bomb, is no
inline image: the caller sends it as a plain `m.file`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

# Larger than this (either side) or this heavy, an image gets a thumbnail.
THUMBNAIL_BOX = (800, 600)
THUMBNAIL_OVER_BYTES = 512 * 1024
# More pixels than this is not decoded (Pillow's own bomb limit is about 89 million).
MAX_PIXELS = 50_000_000
# EXIF orientations that turn the picture by 90 degrees (width and height swap).
_TURNED = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True, slots=True)
class ImageFacts:
    width: int
    height: int  # as shown (EXIF rotation applied)


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    mimetype: str
    width: int
    height: int


def image_facts(data: bytes) -> ImageFacts | None:
    """The image's size as a client shows it; None if it is not an image Pillow can read."""
    with _opened(data) as image:
        if image is None:
            return None
        width, height = image.size
        if image.getexif().get(_EXIF_ORIENTATION) in _TURNED:
            width, height = height, width
        return ImageFacts(width, height)


def needs_thumbnail(facts: ImageFacts, size: int) -> bool:
    box_w, box_h = THUMBNAIL_BOX
    return facts.width > box_w or facts.height > box_h or size > THUMBNAIL_OVER_BYTES


def make_thumbnail(data: bytes) -> Thumbnail | None:
    """A JPEG (PNG when the image has transparency) within THUMBNAIL_BOX; None if unreadable."""
    with _opened(data) as image:
        if image is None:
            return None
        try:
            image.seek(0)  # the first frame of an animation
            shown = ImageOps.exif_transpose(image)
            shown.thumbnail(THUMBNAIL_BOX)
            transparent = shown.mode in ("RGBA", "LA") or "transparency" in shown.info
            out = io.BytesIO()
            if transparent:
                shown.convert("RGBA").save(out, format="PNG", optimize=True)
                mimetype = "image/png"
            else:
                shown.convert("RGB").save(out, format="JPEG", quality=80)
                mimetype = "image/jpeg"
        except (OSError, ValueError, SyntaxError):
            return None  # a truncated or corrupt image: its header read, its pixels do not
        return Thumbnail(out.getvalue(), mimetype, shown.width, shown.height)


@contextmanager
def _opened(data: bytes) -> Iterator[Image.Image | None]:
    """The image (closed after), or None when Pillow cannot or must not decode it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (
        UnidentifiedImageError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
        OSError,
        ValueError,
        SyntaxError,
    ):
        image = None
    if image is None:
        yield None
        return
    with image:
        width, height = image.size
        yield image if 0 < width * height <= MAX_PIXELS else None
