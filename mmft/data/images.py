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

:func:`~mmft.data.image_headers.image_size` reads only the header, for cheap sequence-length estimates (e.g.
length-grouped sampling). The pieces: ``image_refs`` (paths, bytes, URLs), ``image_headers`` (sizes and truncation
without decoding), ``image_geometry`` (orientation, pixel budgets, resizing), ``image_errors``.

Error messages name the record id, the reference (path or kind, never the file's contents) and what to do.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .image_errors import ImageLoadError, _Context, _decode_error
from .image_geometry import _SWAPPING_ORIENTATIONS, _exif_orientation, fit_to_pixels, resize
from .image_refs import _resolve_source

# ImageLoadError, fit_to_pixels and resize are named here too: callers reach them as attributes of this module
# (mmft.train.collator's images_lib.ImageLoadError, .fit_to_pixels, .resize).
__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "ImageLoadError", "fit_to_pixels", "load_image", "resize"]

# Decompression-bomb cap: 64 megapixels (e.g. 8000x8000). That is above what real training images are (phone and
# most camera photos are 12-50 MP, and every VLM processor downsizes to ~0.2-4 MP anyway) yet bounds the worst case
# per image at ~192 MB of decoded RGB, which a DataLoader worker holding a few of them survives. A tiny, highly
# compressed PNG or GIF can otherwise claim e.g. 100000x100000 pixels and make the decoder allocate tens of GB.
# It is also below PIL's own warning threshold (~89.5 MP), so our clear error fires before PIL's generic one.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000

_WHITE = (255, 255, 255, 255)


# The same ref/root/allow_outside_root/record_id keywords as image_size and check_image_file (mmft.data.image_headers),
# written out on purpose there and here: see the note at image_size.
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


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


# --------------------------------------------------------------------------------------------------------------------
# Decoding


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
