"""The error for a dataset that cannot be read at all; every source module (``mmft.data.sources``,
``mmft.data.local_files``, ``mmft.data.row_mapping``) raises it."""

from __future__ import annotations

from ..errors import UsageError

__all__ = ["SourceError"]


class SourceError(UsageError):
    """A dataset that cannot be read at all (missing file, malformed JSON, unknown name, unknown layout)."""
