"""The error for a data card, or a column mapping, that cannot be used.

It sits below the card schema (``mmft.data.card_schema``), the column mappings (``mmft.data.columns``,
``mmft.data.column_detection``) and the card registry (``mmft.data.cards``), which all raise it.
"""

from __future__ import annotations

from ..errors import UsageError

__all__ = ["CardError"]


class CardError(UsageError):
    """A data card that cannot be used; the message names the card file and the field."""
