"""Image sizes: the EXIF orientation, fitting a size to a pixel budget, and the one way mmft resizes."""

from __future__ import annotations

import math

from PIL import ExifTags, Image

__all__ = ["fit_to_pixels", "resize"]

# EXIF orientations 5-8 include a 90-degree turn, so the displayed width/height are the stored ones swapped.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


def fit_to_pixels(width: int, height: int, pixels: float, *, rounding: str = "down") -> tuple[int, int]:
    """The size, aspect kept, of a ``width`` x ``height`` image scaled to about ``pixels`` pixels; never larger.

    One computation, two roundings, because the two callers bound the pixel count from opposite sides:

    - ``"down"`` (a cap: ``max_pixels``): the largest size with ``w * h <= pixels`` (sides rounded to nearest, then
      floored if that overshoots; an extremely elongated image, one side clamped to 1 px, has its long side cut);
    - ``"up"`` (a floor: the shrink policy's ``--shrink_min_pixels``): both sides rounded up, so ``w * h >= pixels``
      and a size computed at the floor is never below it.

    An image already at or under ``pixels`` keeps its size either way. Sides are >= 1.
    """
    if rounding not in ("down", "up"):
        raise ValueError(f"fit_to_pixels: rounding is 'down' or 'up', not {rounding!r}")
    if width * height <= pixels:
        return width, height
    scale = math.sqrt(pixels / (width * height))
    if rounding == "up":
        return min(width, max(1, math.ceil(width * scale))), min(height, max(1, math.ceil(height * scale)))
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if new_w * new_h > pixels:
        new_w, new_h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    # Only extremely elongated images get here (a side clamped to 1 px): shorten the long side to fit the budget.
    while new_w * new_h > pixels:
        if new_w >= new_h:
            new_w = max(1, int(pixels // new_h))
        else:
            new_h = max(1, int(pixels // new_w))
    return min(new_w, width), min(new_h, height)


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` resampled to ``size`` the way mmft always downscales (a new image)."""
    # LANCZOS for quality; reducing_gap first shrinks by an integer factor with a box filter, which is much faster on
    # big reductions and visually indistinguishable at a gap of 3.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _exif_orientation(img: Image.Image, *, header_only: bool = False) -> int:
    """The EXIF (or XMP) orientation tag, 1 when absent or unreadable."""
    try:
        if header_only and img.format == "PNG":
            # PngImageFile.getexif() decodes the whole image to look for an eXIf chunk after the pixel data; the
            # base implementation only looks at chunks before it (where PIL and most tools write eXIf).
            exif = Image.Image.getexif(img)
        else:
            exif = img.getexif()
        orientation = int(exif.get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF just means "no usable orientation"
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _oriented_size(img: Image.Image, orientation: int) -> tuple[int, int]:
    width, height = img.size
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)
