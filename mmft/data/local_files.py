"""Local ``.json`` / ``.jsonl`` files of records: read whole, or streamed line by line (see ``mmft.data.sources``)."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from .records import gc_paused
from .source_errors import SourceError

__all__ = ["LocalFileStream", "iter_jsonl", "read_json_records"]


class LocalFileStream:
    """Rows of a local ``.jsonl`` (read line by line, constant memory) or ``.json`` file, re-iterable per epoch.

    In DataLoader workers each worker reads every ``num_workers``-th row, so a pass sees each row once. Rows without
    an ``id`` get ``<file>:<line index>`` (global, so ids stay unique across workers).
    """

    def __init__(self, path: str | os.PathLike, max_samples: int | None = None):
        self.path = Path(path)
        self.max_samples = max_samples
        if not self.path.is_file():
            raise SourceError(f"Dataset file {str(self.path)!r} does not exist.")

    def _rows(self) -> Iterator[dict]:
        if self.path.suffix != ".jsonl":
            yield from read_json_records(self.path)
            return
        yield from iter_jsonl(self.path)

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rows = itertools.islice(self._rows(), self.max_samples)
        for index, row in enumerate(rows):
            if index % n_workers != worker:
                continue
            if isinstance(row, dict) and row.get("id") in (None, ""):
                row = {**row, "id": f"{self.path.name}:{index}"}
            yield row


def iter_jsonl(path: Path) -> Iterator[dict]:
    """The records of a ``.jsonl`` file, one per non-blank line, read lazily; a bad line raises SourceError."""
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise SourceError(
                    f"{path}:{line_number}: not valid JSON ({error.msg} at column {error.colno}). "
                    "Each line of a .jsonl file must be one complete JSON record."
                ) from None


def read_json_records(path: str | os.PathLike) -> list[dict]:
    """Read a ``.json`` (a list of records, or ``{"data": [...]}``) or ``.jsonl`` (one record per line) file."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"Dataset file {str(path)!r} does not exist.")
    if path.suffix == ".jsonl":
        with gc_paused():  # millions of new objects, none in a cycle (see gc_paused)
            return list(iter_jsonl(path))
    try:
        with open(path, encoding="utf-8") as f, gc_paused():
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise SourceError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg} at column {error.colno})."
        ) from None
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise SourceError(
            f"{path}: expected a JSON list of records (or an object with a 'data' list), got {type(data).__name__}."
        )
    return data
