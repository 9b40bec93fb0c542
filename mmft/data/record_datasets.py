"""The torch datasets every source becomes: canonical records, validated up front (map-style) or as they arrive
(streaming), each carrying its ``image_root`` (see ``mmft.data.sources``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from .record_errors import RecordError
from .records import gc_paused, to_canonical, validate_all

__all__ = ["RecordDataset", "RecordIterableDataset", "Transform", "materialise"]

Transform = Callable[[Any, int], Any]


def _convert(raw, index: int, source: str, transform: Transform | None) -> dict:
    return to_canonical(transform(raw, index) if transform is not None else raw, index=index, source=source)


def _consumed(rows: list) -> Iterator:
    """Yield the rows of a list, setting each slot to None once taken (the list is used up)."""
    for index in range(len(rows)):
        row, rows[index] = rows[index], None
        yield row


class RecordDataset(torch.utils.data.Dataset):
    """A map-style dataset of canonical records over any indexable collection of raw records.

    Every record is validated at construction. Records read from files (a Python list: text and image paths)
    are kept in canonical form, so each access is a dict copy; rows of a ``datasets.Dataset`` are converted on
    access instead, because keeping them would hold every embedded image's bytes in memory. ``transform`` maps a
    raw row (and its index) into a record first (a data card's column mapping).
    """

    def __init__(self, rows: Sequence[Mapping] | Any, *, source: str, image_root: str | None = None,
                 validate: bool = True, transform: Transform | None = None, consume_rows: bool = False,
                 drop_invalid: bool = False):
        self.rows = rows
        self.source = source
        self.image_root = image_root
        self.transform = transform
        self._canonical = None
        self._positions = None  # rows kept, when invalid rows of a `datasets` object were left out
        # drop_invalid: invalid rows are left out instead of raising, and kept here as (row index, RecordError) for
        # training's start-up report (mmft.data.badrecords.scan_dataset), which decides whether the run may go on.
        self.invalid: list[tuple[int, RecordError]] = []
        if validate:
            # consume_rows (a list read from a file, owned here): each raw row is released as soon as it is converted,
            # so raw rows and canonical records never both fill memory (100,000 LLaVA records: peak RSS +290 MB over
            # 1,000 records with both held, see benchmarks/RESULTS.md). Never for a caller's list.
            owned = consume_rows and isinstance(rows, list)
            # Plain Python rows (a file's, or a caller's list) hold no reference cycles: see gc_paused. Rows of a
            # `datasets` object are built by its formatting code, so the collector stays on for those.
            with gc_paused() if isinstance(rows, list) else contextlib.nullcontext():
                records = validate_all(_consumed(rows) if owned else rows, source=source, transform=transform,
                                       invalid=self.invalid if drop_invalid else None)
            if isinstance(rows, list):
                self.rows = self._canonical = records  # the canonical records only
            elif self.invalid:
                left_out = {index for index, _ in self.invalid}
                self._positions = [index for index in range(len(rows)) if index not in left_out]

    def drop_records(self, positions) -> None:
        """Leave out the in-memory records at these positions (the start-up scan's bad records under
        ``--on_bad_record drop``)."""
        if self._canonical is None:
            raise TypeError("drop_records needs in-memory records (a file or a list), not rows converted on access")
        positions = set(positions)
        self.rows = self._canonical = [record for i, record in enumerate(self._canonical) if i not in positions]

    def __len__(self) -> int:
        return len(self._positions) if self._positions is not None else len(self.rows)

    def __getitem__(self, index: int) -> dict:
        if self._canonical is not None:
            record = dict(self._canonical[index])  # a copy: callers may set keys without touching the cache
        else:
            row = self._positions[index] if self._positions is not None else index
            record = _convert(self.rows[row], row, self.source, self.transform)
        record["image_root"] = self.image_root
        return record

    def __repr__(self) -> str:
        return f"RecordDataset(source={self.source!r}, records={len(self)}, image_root={self.image_root!r})"


class RecordIterableDataset(torch.utils.data.IterableDataset):
    """A streaming dataset of canonical records; each record is validated as it arrives.

    Iterating a ``datasets.IterableDataset`` inside DataLoader workers shards it across workers (``datasets``
    does this itself), and so do mmft's own local-file streams, so no record is seen twice per pass.
    """

    def __init__(self, rows, *, source: str, image_root: str | None = None, transform: Transform | None = None):
        self.rows = rows
        self.source = source
        self.image_root = image_root
        self.transform = transform

    def __iter__(self) -> Iterator[dict]:
        for index, raw in enumerate(self.rows):
            record = _convert(raw, index, self.source, self.transform)
            record["image_root"] = self.image_root
            yield record

    def set_epoch(self, epoch: int):  # Trainer calls this on iterable datasets to reshuffle per epoch
        if hasattr(self.rows, "set_epoch"):
            self.rows.set_epoch(epoch)

    def __repr__(self) -> str:
        return f"RecordIterableDataset(source={self.source!r}, image_root={self.image_root!r})"


def materialise(dataset, *, source: str | None = None) -> RecordDataset:
    """A map-style copy of a streamed dataset's records (for evaluation, which needs ``len`` and indexing)."""
    if isinstance(dataset, RecordDataset):
        return dataset
    records = list(dataset)
    image_root = getattr(dataset, "image_root", None)
    rows = [{key: value for key, value in record.items() if key != "image_root"} for record in records]
    return RecordDataset(rows, source=source or getattr(dataset, "source", "stream"), image_root=image_root)
