"""Image facts and thumbnails for inline images (tasks/files/images.py)."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tasks.files.images import (
    MAX_PIXELS,
    ImageFacts,
    image_facts,
    make_thumbnail,
    needs_thumbnail,
)


def encoded(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def test_facts_are_the_size_in_pixels() -> None:
    assert image_facts(encoded(Image.new("RGB", (640, 480)))) == ImageFacts(640, 480)


def test_an_exif_rotated_photo_reports_its_shown_size() -> None:
    photo = Image.new("RGB", (640, 480))
    exif = photo.getexif()
    exif[0x0112] = 6  # turned 90 degrees clockwise
    data = encoded(photo, "JPEG", exif=exif.tobytes())

    assert image_facts(data) == ImageFacts(480, 640)
    thumb = make_thumbnail(data)
    assert thumb is not None and (thumb.width, thumb.height) == (450, 600)


def test_a_decompression_bomb_is_not_decoded() -> None:
    side = int(MAX_PIXELS**0.5) + 10
    header_only = encoded(Image.new("1", (side, side)))  # small file, huge picture

    assert image_facts(header_only) is None
    assert make_thumbnail(header_only) is None


def test_only_large_or_heavy_images_need_a_thumbnail() -> None:
    assert not needs_thumbnail(ImageFacts(800, 600), 10_000)
    assert needs_thumbnail(ImageFacts(801, 10), 10_000)
    assert needs_thumbnail(ImageFacts(10, 601), 10_000)
    assert needs_thumbnail(ImageFacts(100, 100), 600_000)


def test_an_animation_thumbnails_its_first_frame() -> None:
    frames = [Image.new("P", (900, 900), color) for color in (1, 2)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])

    thumb = make_thumbnail(data)

    assert thumb is not None and (thumb.width, thumb.height) == (600, 600)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_are_facts_or_none_never_an_exception(data: bytes) -> None:
    facts = image_facts(data)
    assert facts is None or (facts.width > 0 and facts.height > 0)
    make_thumbnail(data)
