"""Image sizes and completeness read from the file without decoding a pixel (cheap length estimates, the start-up
scan): :func:`image_size` through PIL's header parse, :func:`check_image_file` reading PNG and JPEG headers itself,
and the end-marker check that finds truncated PNG and JPEG files."""

from __future__ import annotations

import os
import warnings
from typing import Any

from PIL import Image

from .image_errors import ImageLoadError, _Context, _decode_error
from .image_geometry import _exif_orientation, _oriented_size
from .image_refs import _open_source, _resolve_source

__all__ = ["check_image_file", "image_size"]


# The same ref/root/allow_outside_root/record_id keywords as load_image (mmft.data.images) and check_image_file, each
# written out on purpose: they are the public signatures that help() and editors show, and a shared options object or
# **kwargs would hide them (and let a misspelt keyword through).
def image_size(
    ref: Any,
    *,
    root: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
    check_complete: bool = False,
    record_id: str | None = None,
) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only without decoding pixels (for cheap length
    estimates). Accepts the same refs as :func:`~mmft.data.images.load_image` except URLs (this never touches the
    network).

    ``check_complete`` also checks that a PNG or JPEG file is not cut short, by its end marker (PNG's ``IEND`` chunk,
    JPEG's ``EOI``), still without decoding: a few bytes read at the end of the file (see :func:`_is_complete`).
    A truncated file raises ``ImageLoadError`` of kind ``truncated_image``. Other formats are not checked."""
    ctx = _Context(record_id)
    if isinstance(ref, Image.Image):
        return _oriented_size(ref, _exif_orientation(ref))
    source, desc = _resolve_source(ref, root=root, allow_outside_root=allow_outside_root, allow_remote=False, ctx=ctx)
    try:
        with warnings.catch_warnings():
            # Only the header is read, so a huge claimed size is harmless here; PIL's warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _open_source(source) as fp, Image.open(fp) as img:
                size = _oriented_size(img, _exif_orientation(img, header_only=True))
                if check_complete and _is_complete(fp, img.format) is False:
                    raise _truncated(ctx, desc, img.format)
                return size
    except ImageLoadError:
        raise
    except Exception as exc:
        raise _decode_error(exc, desc, ctx) from exc


def check_image_file(
    ref: Any,
    *,
    root: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
    record_id: str | None = None,
) -> tuple[int, int]:
    """(width, height) as stored, after the checks training's start-up scan makes: the path rules, a readable header,
    and (PNG, JPEG) the end marker. Raises ``ImageLoadError`` like :func:`image_size` with ``check_complete``.

    PNG and JPEG headers are read here directly (PNG's IHDR, JPEG's start-of-frame): with the end marker ~15 us a
    file in the page cache, against ~100 us for ``PIL.Image.open``'s header parse, which matters on every start of
    a run over a large dataset (the path checks cost more still, and are the same as the loader's). Other formats,
    and files this reader cannot follow, go through :func:`image_size`. Sizes are as stored, not EXIF-oriented
    (orientation does not change the pixel count)."""
    if isinstance(ref, Image.Image):
        return ref.size
    ctx = _Context(record_id)
    source, desc = _resolve_source(ref, root=root, allow_outside_root=allow_outside_root, allow_remote=False, ctx=ctx)
    try:
        with _open_source(source) as fp:
            header = fp.read(32)
            size = fp.seek(0, os.SEEK_END)
            image_format, dimensions = _direct_header(fp, header, size)
            if dimensions is not None:
                if not _is_complete(fp, image_format):
                    raise _truncated(ctx, desc, image_format)
                return dimensions
    except ImageLoadError:
        raise
    except OSError as exc:
        raise _decode_error(exc, desc, ctx) from exc
    return image_size(ref, root=root, allow_outside_root=allow_outside_root, check_complete=True,
                      record_id=record_id)


def _direct_header(fp: Any, header: bytes, size: int) -> tuple[str | None, tuple[int, int] | None]:
    """``(format, (width, height))`` for a PNG or a baseline/progressive JPEG; ``(None, None)`` when not followed."""
    if header.startswith(b"\x89PNG\r\n\x1a\n") and header[12:16] == b"IHDR" and len(header) >= 24:
        return "PNG", (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big"))
    if not header.startswith(b"\xff\xd8"):
        return None, None
    position = 2
    while position + 9 <= size:
        fp.seek(position)
        segment = fp.read(9)
        if segment[0] != 0xFF:
            return None, None
        marker = segment[1]
        if marker == 0xFF:
            position += 1
        elif marker in _JPEG_START_OF_FRAME:  # FF Cn, length, precision, height, width
            return "JPEG", (int.from_bytes(segment[7:9], "big"), int.from_bytes(segment[5:7], "big"))
        elif marker == _JPEG_SOS or marker in _JPEG_STANDALONE_MARKERS:
            return None, None  # no frame header before the scan: let PIL judge
        else:
            position += 2 + int.from_bytes(segment[2:4], "big")
    return None, None


def _truncated(ctx: _Context, desc: str, image_format: str | None) -> ImageLoadError:
    marker = "IEND chunk" if image_format == "PNG" else "end-of-image (EOI) marker"
    return ctx.error(f"{desc} is truncated: the {image_format} file ends before its {marker}",
                     "Re-download or re-encode the image, or drop the record.", "truncated_image")


# --------------------------------------------------------------------------------------------------------------------
# Truncation by end marker, without decoding

# A PNG ends with an empty IEND chunk: length 0, type, CRC (always these 12 bytes). A JPEG ends with the EOI marker.
_PNG_IEND_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = 0xDA
_JPEG_STANDALONE_MARKERS = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})  # TEM, SOI, RST0-7: no length field
_JPEG_START_OF_FRAME = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_TAIL_BYTES = 64  # room for the zero padding some encoders write after EOI
_SCAN_CHUNK = 1 << 20


def _is_complete(fp: Any, image_format: str | None) -> bool | None:
    """Whether a PNG / JPEG file holds its end marker (``None``: another format, not checked). Reads bytes, never
    decodes.

    The common case costs one seek and one small read at the end of the file. Only a file whose last bytes are not
    the marker (a truncated one, or a valid one followed by extra data: a JPEG with an appended trailer such as a
    phone's motion-photo video, a PNG with bytes after IEND) takes the slow path, which finds the marker where the
    format puts it, so extra data after a complete image is never taken for truncation:

    - PNG: walk the chunks from the signature (8-byte headers, seeking over the data) to IEND, which must fit in
      the file;
    - JPEG: walk the marker segments to the first start-of-scan, then look for EOI in the entropy-coded data, where
      ``FF D9`` cannot occur otherwise (a data byte ``FF`` is always followed by ``00`` or a restart marker; the EOI
      of an embedded EXIF thumbnail sits before the scan, so it does not count).
    """
    if image_format not in ("PNG", "JPEG", "MPO"):  # MPO: PIL's name for multi-picture JPEGs (many phone photos)
        return None
    size = fp.seek(0, os.SEEK_END)
    fp.seek(max(0, size - _TAIL_BYTES))
    tail = fp.read(_TAIL_BYTES)
    if image_format == "PNG":
        return tail.endswith(_PNG_IEND_CHUNK) or _png_has_iend(fp, size)
    return tail.rstrip(b"\x00").endswith(_JPEG_EOI) or _jpeg_has_eoi(fp, size)


def _png_has_iend(fp: Any, size: int) -> bool:
    position = 8  # after the signature
    while position + 8 <= size:
        fp.seek(position)
        header = fp.read(8)
        end = position + 12 + int.from_bytes(header[:4], "big")  # length, type, data, CRC
        if header[4:8] == b"IEND":
            return end <= size
        position = end
    return False


def _jpeg_has_eoi(fp: Any, size: int) -> bool:
    position = 2  # after SOI
    while True:
        fp.seek(position)
        segment = fp.read(4)
        if len(segment) < 2 or segment[0] != 0xFF:
            return False
        marker = segment[1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker == _JPEG_SOS:
            break
        elif marker in _JPEG_STANDALONE_MARKERS:
            position += 2
        elif len(segment) < 4:
            return False
        else:
            position += 2 + int.from_bytes(segment[2:4], "big")
    fp.seek(position)
    previous = b""
    while chunk := fp.read(_SCAN_CHUNK):
        if _JPEG_EOI in previous[-1:] + chunk:
            return True
        previous = chunk
    return False
