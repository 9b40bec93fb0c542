"""Resolving an image ref to a checked file path or to the image's bytes, for ``mmft.data.images``.

A path must stay inside the image root (absolute paths, ``..`` and symlinks leading out are refused unless allowed),
and an ``http(s)://`` URL is fetched only when asked, with a timeout and a size cap.
"""

from __future__ import annotations

import io
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .image_errors import ImageLoadError, _Context, _safe_message

# Remote images (only with allow_remote=True): a slow or hostile server must not stall a worker forever or make it
# buffer an unbounded response.
REMOTE_TIMEOUT_S = 30
MAX_REMOTE_BYTES = 64 * 1024 * 1024

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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
