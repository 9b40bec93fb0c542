"""The error every record problem raises, and the record ids it names (see ``mmft.data.records``, "Ids" and "Errors").

A message reads ``record 'rec-42' in train.jsonl: conversations[3].value: <what is wrong>. <what to do>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import UsageError

__all__ = ["RecordError"]


class RecordError(UsageError):
    """A record (or, from :func:`validate_all`, several records) cannot be turned into a canonical record.

    ``record_id`` and ``field`` name what is wrong (both ``None`` for the :func:`validate_all` summary, which lists
    the individual errors in its message and keeps the first ``max_errors`` of them in ``errors``).
    """

    def __init__(
        self,
        message: str,
        *,
        record_id: str | None = None,
        field: str | None = None,
        source: str | None = None,
        errors: Iterable[RecordError] = (),
    ) -> None:
        super().__init__(message)
        self.record_id = record_id
        self.field = field
        self.source = source
        self.errors = list(errors)

    @classmethod
    def make(cls, record_id: str, field: str, problem: str, hint: str, *, source: str | None = None) -> RecordError:
        """Build an error in the standard format; other modules (e.g. image loading) should use this too."""
        where = f" in {source}" if source else ""
        return cls(
            f"record {record_id!r}{where}: {field}: {problem}. {hint}", record_id=record_id, field=field, source=source
        )

    def __reduce__(self):
        # Keyword-only attributes are lost by the default exception pickling, and errors do cross process boundaries
        # (datasets.map(num_proc=...), dataloader workers): rebuild from the message, then restore the attributes.
        return (type(self), (str(self),), self.__dict__)


class _Fail:
    """Builds RecordErrors for one record, so conversion code only states the field, the problem and the fix."""

    __slots__ = ("record_id", "source")  # one is made per record converted, 100,000 at start-up

    def __init__(self, record_id: str, source: str | None) -> None:
        self.record_id = record_id
        self.source = source

    def __call__(self, field: str, problem: str, hint: str) -> RecordError:
        return RecordError.make(self.record_id, field, problem, hint, source=self.source)


def _short(value: Any) -> str:
    """A short description of a bad value for error messages (the value may be huge, e.g. a whole conversation)."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if value is None else f"{text} ({type(value).__name__})"


def _record_id(raw: Any, index: int | None, source: str | None) -> str:
    record_id = raw.get("id") if type(raw) is dict or isinstance(raw, Mapping) else None
    if record_id is not None and (record_id := str(record_id)) != "":
        return record_id
    position = "?" if index is None else index
    return f"{source}:{position}" if source else f"#{position}"
