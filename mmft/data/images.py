"""Safe image loading for data collators.

Every image a recipe trains on goes through :func:`load_image`, usually inside a ``DataLoader`` worker, where a
bad record must fail with a message a person can act on rather than a bare PIL traceback (or, worse, silently
feed the model a black square). The loader therefore:

- accepts every form a Hugging Face dataset hands us: a path (relative to the dataset's image root), raw bytes,
  an already-decoded ``PIL.Image``, the ``{"bytes": ..., "path": ...}`` dict that ``datasets.Image(decode=False)``
  yields, and (only when asked) an ``http(s)://`` URL;
- refuses paths outside the image root (absolute paths, ``..``, symlinks leading out) unless told otherwise, so a
  dataset downloaded from the internet cannot make training read ``/etc/passwd`` or ``~/.ssh``;
- refuses decompression bombs by reading the size from the header *before* any pixel is decoded;
- applies the EXIF orientation (phone photos are stored sideways and carry a "rotate me" tag);
- converts every PIL mode to RGB correctly (transparency onto white, 16-bit and float images rescaled rather than
  clipped), because vision processors assume 8-bit RGB;
- optionally downscales to a pixel budget, decoding JPEGs at reduced resolution when that is much cheaper.

:func:`image_size` reads only the header, for cheap sequence-length estimates (e.g. length-grouped sampling).

Error messages name the record id, the reference (path or kind, never the file's contents) and what to do.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import UsageError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS", "ImageLoadError", "check_image_file", "fit_to_pixels", "image_size", "load_image",
    "resize",
]

# Decompression-bomb cap: 64 megapixels (e.g. 8000x8000). That is above what real training images are (phone and
# most camera photos are 12-50 MP, and every VLM processor downsizes to ~0.2-4 MP anyway) yet bounds the worst case
# per image at ~192 MB of decoded RGB, which a DataLoader worker holding a few of them survives. A tiny, highly
# compressed PNG or GIF can otherwise claim e.g. 100000x100000 pixels and make the decoder allocate tens of GB.
# It is also below PIL's own warning threshold (~89.5 MP), so our clear error fires before PIL's generic one.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000

# Remote images (only with allow_remote=True): a slow or hostile server must not stall a worker forever or make it
# buffer an unbounded response.
REMOTE_TIMEOUT_S = 30
MAX_REMOTE_BYTES = 64 * 1024 * 1024

# EXIF orientations 5-8 include a 90-degree turn, so the displayed width/height are the stored ones swapped.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_WHITE = (255, 255, 255, 255)


class ImageLoadError(UsageError):
    """Raised for any image that cannot be used; the message names the record id (when given), the ref (path/kind)
    and what to do. ``kind`` sorts it for reports (``mmft data check``, the training drop counts): ``missing_image``,
    ``image_outside_root``, ``image_too_large``, ``truncated_image`` (no end marker, found without decoding) or
    ``unreadable_image``."""

    def __init__(self, message: str, kind: str = "unreadable_image"):
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------------------------------------------------
# Public API


def load_image(
    ref: Any,
    *,
    root: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
    allow_remote: bool = False,
    max_pixels: int | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    record_id: str | None = None,
) -> Image.Image:
    """Load one image reference as a fully decoded RGB ``PIL.Image``.

    Args:
        ref: a path (``str`` / ``os.PathLike``, relative to ``root``), ``bytes``, a ``PIL.Image.Image``, a
            ``datasets`` Image dict ``{"bytes": ..., "path": ...}`` (bytes preferred), or an ``http(s)://`` URL.
        root: the dataset's image root; relative paths resolve against it (the current directory when ``None``).
        allow_outside_root: allow absolute paths and paths that resolve outside ``root`` (``..``, symlinks).
        allow_remote: allow fetching ``http(s)://`` URLs (timeout 30 s, at most ``MAX_REMOTE_BYTES``).
        max_pixels: if set, downscale (never upscale) so that ``width * height <= max_pixels``, keeping the aspect
            ratio (each side at least 1 px).
        max_image_pixels: refuse images whose header claims more pixels than this, before decoding; ``None``
            disables our check (PIL's own process-wide ``PIL.Image.MAX_IMAGE_PIXELS`` guard still applies).
        record_id: the dataset record's id, used only in error messages.

    Returns:
        A new ``"RGB"`` image, fully loaded (no open file handle). A ``PIL.Image`` ref is never mutated.

    Raises:
        ImageLoadError: for anything that cannot be used (refused, missing, corrupt, too large, ...).
    """
    _check_positive("max_pixels", max_pixels)
    _check_positive("max_image_pixels", max_image_pixels)
    ctx = _Context(record_id)

    if isinstance(ref, Image.Image):
        # An already-opened image skips the root rules (there is no path to check) but still gets the bomb check:
        # datasets can hand us a lazily-opened image whose pixels have not been decoded yet.
        try:
            with _bomb_warnings(max_image_pixels):
                return _finish(
                    ref, "<PIL image>", ctx, max_pixels=max_pixels, max_image_pixels=max_image_pixels, owned=False
                )
        except ImageLoadError:
            raise
        except Exception as exc:  # e.g. a lazily-opened image whose file turns out truncated
            raise _decode_error(exc, "<PIL image>", ctx) from exc

    source, desc = _resolve_source(
        ref, root=root, allow_outside_root=allow_outside_root, allow_remote=allow_remote, ctx=ctx
    )
    if isinstance(source, Path):
        try:
            fp = open(source, "rb")  # noqa: SIM115 - closed below, after the pixels are loaded
        except OSError as exc:
            raise ctx.error(
                f"cannot open {desc}: {exc.strerror or type(exc).__name__}", "Check file permissions."
            ) from exc
        with fp:
            return _decode(fp, desc, ctx, max_pixels=max_pixels, max_image_pixels=max_image_pixels)
    return _decode(io.BytesIO(source), desc, ctx, max_pixels=max_pixels, max_image_pixels=max_image_pixels)


def image_size(
    ref: Any,
    *,
    root: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
    check_complete: bool = False,
    record_id: str | None = None,
) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only without decoding pixels (for cheap length
    estimates). Accepts the same refs as :func:`load_image` except URLs (this never touches the network).

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


# --------------------------------------------------------------------------------------------------------------------
# Resolving a ref to a file path or to bytes


class _Context:
    """Carries the record id so every error message can name it."""

    def __init__(self, record_id: str | None) -> None:
        self.record_id = record_id

    def error(self, what: str, todo: str, kind: str = "unreadable_image") -> ImageLoadError:
        prefix = f"record {self.record_id!r}: " if self.record_id is not None else ""
        return ImageLoadError(f"{prefix}{what}. {todo}", kind)


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def _resolve_source(
    ref: Any, *, root: str | os.PathLike | None, allow_outside_root: bool, allow_remote: bool, ctx: _Context
) -> tuple[Path | bytes, str]:
    """Return ``(source, description)``: a checked, existing file path or the image's bytes."""
    if isinstance(ref, dict):
        # datasets.Image(decode=False) yields {"bytes": b or None, "path": str or None}. The bytes are the image
        # itself (e.g. from a parquet shard), so they win; "path" is then just the original file name.
        data, path = ref.get("bytes"), ref.get("path")
        if data:
            return _as_bytes(data), f"datasets Image dict bytes ({len(data)} bytes, path={path!r})"
        if path:
            source, desc = _resolve_source(
                path, root=root, allow_outside_root=allow_outside_root, allow_remote=allow_remote, ctx=ctx
            )
            return source, f"datasets Image dict {desc}"
        raise ctx.error(
            "datasets Image dict has neither 'bytes' nor 'path'", "The record has no image; fix or drop it."
        )
    if isinstance(ref, os.PathLike):
        ref = os.fsdecode(os.fspath(ref))
    if isinstance(ref, (bytes, bytearray, memoryview)):
        # Describe bytes by their length only: error messages must never carry file contents.
        return _as_bytes(ref), f"<image bytes, {len(ref)} bytes>"
    if not isinstance(ref, str):
        raise ctx.error(
            f"unsupported image reference of type {type(ref).__name__}",
            "Use a path, bytes, a PIL image, a datasets Image dict or an http(s) URL.",
        )
    if not ref:
        raise ctx.error("empty image path", "The record has no image; fix or drop it.")
    if _URL_SCHEME.match(ref):
        return _fetch_url(ref, allow_remote=allow_remote, ctx=ctx)
    return _resolve_path(ref, root=root, allow_outside_root=allow_outside_root, ctx=ctx)


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


def _resolve_path(
    ref: str, *, root: str | os.PathLike | None, allow_outside_root: bool, ctx: _Context
) -> tuple[Path, str]:
    root_path = Path(root) if root is not None else Path.cwd()
    root_resolved = root_path.resolve()
    given = Path(ref)
    # resolve() follows every symlink and collapses "..", so the containment check below sees the real target.
    try:
        resolved = (given if given.is_absolute() else root_resolved / given).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # embedded NUL, symlink loop, ...
        raise ctx.error(f"invalid image path {ref!r}: {exc}", "Fix the record's image path.") from exc
    desc = f"image path {ref!r} (resolved to {str(resolved)!r}, image root {str(root_resolved)!r})"
    outside_hint = (
        "Image paths must be relative to the image root; if reading outside it is intended, pass "
        "--allow_images_outside_root (allow_outside_root=True)."
    )
    if not allow_outside_root:
        if given.is_absolute():
            raise ctx.error(f"refused absolute {desc}", outside_hint, "image_outside_root")
        if not resolved.is_relative_to(root_resolved):
            raise ctx.error(
                f"refused {desc}: it resolves outside the image root (via '..' or a symlink)", outside_hint,
                "image_outside_root",
            )
    if not resolved.is_file():
        what = "is not a file" if resolved.exists() else "does not exist"
        raise ctx.error(
            f"{desc} {what}",
            "Check --image_root (relative image paths resolve against it) and that the dataset's images are present.",
            "missing_image",
        )
    return resolved, desc


def _redact_url(url: str) -> str:
    """The URL without credentials or query string (which often carries signed tokens)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "?..." if parts.query else "", ""))


def _fetch_url(url: str, *, allow_remote: bool, ctx: _Context) -> tuple[bytes, str]:
    shown = _redact_url(url)
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise ctx.error(
            f"unsupported URL scheme {scheme!r} in image reference {shown!r}",
            "Use a path relative to the image root, or an http(s) URL with allow_remote=True.",
        )
    desc = f"image URL {shown!r}"
    if not allow_remote:
        raise ctx.error(
            f"refused remote {desc}: fetching images over the network is off by default",
            "Download the images and use local paths, or enable remote images (allow_remote=True) if intended.",
        )
    request = urllib.request.Request(url, headers={"User-Agent": "mmft-image-loader"})
    try:
        with urllib.request.urlopen(request, timeout=REMOTE_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length") if response.headers is not None else None
            if length is not None and length.isdigit() and int(length) > MAX_REMOTE_BYTES:
                raise ctx.error(
                    f"{desc} is {int(length)} bytes, over the {MAX_REMOTE_BYTES}-byte cap", "Use a smaller image."
                )
            # Read one byte past the cap so an over-long body (or a lying Content-Length) is detected.
            data = response.read(MAX_REMOTE_BYTES + 1)
    except ImageLoadError:
        raise
    except Exception as exc:  # URLError, HTTPError, timeouts, connection resets, ...
        raise ctx.error(
            f"could not fetch {desc}: {type(exc).__name__}: {_safe_message(exc)}",
            "Check the URL and the network, or download the images and use local paths.",
        ) from exc
    if len(data) > MAX_REMOTE_BYTES:
        raise ctx.error(f"{desc} is over the {MAX_REMOTE_BYTES}-byte cap", "Use a smaller image.")
    return data, desc


def _open_source(source: Path | bytes):
    return open(source, "rb") if isinstance(source, Path) else io.BytesIO(source)


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


# --------------------------------------------------------------------------------------------------------------------
# Decoding


def _safe_message(exc: BaseException, limit: int = 200) -> str:
    """An exception's message, short and without byte-string reprs (which could echo file contents)."""
    msg = str(exc)
    if "b'" in msg or 'b"' in msg or "\\x" in msg:
        return "(details omitted)"
    return msg if len(msg) <= limit else msg[:limit] + "..."


def _decode_error(exc: BaseException, desc: str, ctx: _Context) -> ImageLoadError:
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return ctx.error(
            f"refused {desc} as a likely decompression bomb: {_safe_message(exc)}",
            "If the image is legitimate, raise max_image_pixels (None disables our cap) and, for images over "
            f"{2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 0} pixels, PIL's process-wide "
            "PIL.Image.MAX_IMAGE_PIXELS.",
            "image_too_large",
        )
    if isinstance(exc, UnidentifiedImageError):
        return ctx.error(f"{desc} is not a recognised image file", "Check the file; re-download or re-encode it.")
    return ctx.error(
        f"{desc} is corrupt or truncated ({type(exc).__name__}: {_safe_message(exc)})",
        "Re-download or re-encode the image, or drop the record.",
    )


def _decode(fp: Any, desc: str, ctx: _Context, *, max_pixels: int | None, max_image_pixels: int | None) -> Image.Image:
    try:
        with _bomb_warnings(max_image_pixels):
            img = Image.open(fp)
            with img:
                return _finish(img, desc, ctx, max_pixels=max_pixels, max_image_pixels=max_image_pixels, owned=True)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise _decode_error(exc, desc, ctx) from exc


@contextlib.contextmanager
def _bomb_warnings(max_image_pixels: int | None) -> Iterator[None]:
    """Scope PIL's ``DecompressionBombWarning`` handling to one load, without touching ``Image.MAX_IMAGE_PIXELS``
    (a process-wide setting other code may rely on).

    If our cap is at least as strict as PIL's, a PIL warning means the image is over our cap too: turn it into an
    error (this also covers sizes PIL only discovers after the header, e.g. GIF frames). If the caller chose a looser
    cap (or none), they have explicitly allowed such images, so PIL's warning is silenced rather than printed per
    image. PIL still raises ``DecompressionBombError`` above twice its limit; callers turn that into ImageLoadError.

    ``warnings.catch_warnings`` swaps the process's filter list, so threads loading concurrently may briefly share
    this filter; it only concerns this one warning category, and DataLoader workers are separate processes.
    """
    pil_limit = Image.MAX_IMAGE_PIXELS
    strict = max_image_pixels is not None and (pil_limit is None or max_image_pixels <= pil_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error" if strict else "ignore", Image.DecompressionBombWarning)
        yield


def _finish(
    img: Image.Image,
    desc: str,
    ctx: _Context,
    *,
    max_pixels: int | None,
    max_image_pixels: int | None,
    owned: bool,
) -> Image.Image:
    """Bomb check on the (lazy) header, then decode, orient, convert to RGB and downscale. Always returns a new
    image; ``owned=False`` (a caller's image) also rules out ``draft()``, which would change the caller's image."""
    width, height = img.size
    if max_image_pixels is not None and width * height > max_image_pixels:
        raise ctx.error(
            f"refused {desc}: its header says {width}x{height} = {width * height:,} pixels, over the "
            f"decompression-bomb cap of {max_image_pixels:,} pixels (max_image_pixels)",
            "If the image is legitimate, raise max_image_pixels (None disables the cap); otherwise drop the record.",
            "image_too_large",
        )

    target = None
    if max_pixels is not None and width * height > max_pixels:
        # Target computed in the stored orientation; max_pixels and the aspect ratio are symmetric under the
        # 90-degree turns of EXIF orientations 5-8, so we swap it afterwards if needed.
        target = fit_to_pixels(width, height, max_pixels)
        if owned and img.format == "JPEG" and isinstance(img, ImageFile.ImageFile) and not _is_loaded(img):
            # libjpeg can decode directly at 1/2, 1/4 or 1/8 scale (DCT scaling): far less work and memory than
            # decoding full size and resizing. draft() picks the largest reduction that stays >= target on both
            # sides, so the exact resize below is still a pure downscale.
            img.draft("RGB", target)

    img.load()
    orientation = _exif_orientation(img)
    try:
        oriented = ImageOps.exif_transpose(img)  # returns a new image; also strips the tag so it is not re-applied
    except Exception:  # noqa: BLE001 - PIL's EXIF parser raises many types on malformed data
        # A malformed EXIF block should not cost us an otherwise good image: keep the stored orientation.
        oriented, orientation = img.copy(), 1
    rgb = _to_rgb(oriented)

    if target is not None:
        if orientation in _SWAPPING_ORIENTATIONS:
            target = (target[1], target[0])
        if rgb.size != target:
            rgb = resize(rgb, target)
    if rgb is img:  # defensive: a caller's PIL image must never be returned (and later mutated) as-is
        rgb = rgb.copy()
    return rgb


def _is_loaded(img: Image.Image) -> bool:
    # ImageFile keeps a non-empty tile list until its pixels have been decoded.
    return not getattr(img, "tile", None)


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


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, doing the right thing where a plain ``convert("RGB")`` does not."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I;16") or mode == "I":
        # 16-bit (and 32-bit int) grayscale: convert("L") would clip everything above 255 to white. Scale the 16-bit
        # range down (65535 / 257 = 255). "I" is usually a 16-bit PNG/TIFF opened by older code paths; values outside
        # 0..65535 mean it is not, so fall back to min/max scaling.
        arr = np.asarray(img).astype(np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            return _to_rgb(Image.fromarray(_minmax_to_uint8(arr)))
        return Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        # Float images have no standard range (depth maps, 0..1, HDR): stretch their own min..max to 0..255.
        return Image.fromarray(_minmax_to_uint8(np.asarray(img).astype(np.float64))).convert("RGB")
    if mode in ("La", "RGBa"):  # premultiplied alpha: un-premultiply first
        img = img.convert("LA" if mode == "La" else "RGBA")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        # Anything with alpha (including palette / grey / RGB images with a tRNS transparent colour) is composited
        # onto WHITE: a plain convert("RGB") drops alpha and exposes whatever colour the transparent pixels happen
        # to store, usually black, which turns e.g. black-on-transparent diagrams and logos into solid black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, P (no transparency), CMYK, YCbCr, HSV, LAB, ...: PIL's conversions are right for these.
    return img.convert("RGB")


def _minmax_to_uint8(arr: np.ndarray) -> np.ndarray:
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if hi <= lo:  # constant image: no contrast to stretch
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.rint((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
