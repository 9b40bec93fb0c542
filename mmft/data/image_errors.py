"""The image loader's error, and the messages it carries: the record id, the ref (path or kind, never the file's
contents) and what to do (see ``mmft.data.images``)."""

from __future__ import annotations

from PIL import Image, UnidentifiedImageError

from ..errors import UsageError

__all__ = ["ImageLoadError"]


class ImageLoadError(UsageError):
    """Raised for any image that cannot be used; the message names the record id (when given), the ref (path/kind)
    and what to do. ``kind`` sorts it for reports (``mmft data check``, the training drop counts): ``missing_image``,
    ``image_outside_root``, ``image_too_large``, ``truncated_image`` (no end marker, found without decoding) or
    ``unreadable_image``."""

    def __init__(self, message: str, kind: str = "unreadable_image"):
        super().__init__(message)
        self.kind = kind


class _Context:
    """Carries the record id so every error message can name it."""

    def __init__(self, record_id: str | None) -> None:
        self.record_id = record_id

    def error(self, what: str, todo: str, kind: str = "unreadable_image") -> ImageLoadError:
        prefix = f"record {self.record_id!r}: " if self.record_id is not None else ""
        return ImageLoadError(f"{prefix}{what}. {todo}", kind)


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
