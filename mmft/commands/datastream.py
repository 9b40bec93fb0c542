"""Streaming a dataset for ``mmft data check`` and ``mmft data show``: raw rows, one at a time, with their places.

A local ``.jsonl`` is read here, line by line, so an invalid line is a reported row and the pass goes on; a ``.json``
file is parsed whole (one JSON document); everything else (built-in names, data cards, Parquet/CSV files, saved or
plain folders, Hub ids) is opened with :func:`mmft.data.sources.load_records` in streaming mode. Rows that are not
LLaVA/chat records go through the training loader's column mapping (``Source.transform``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.record_errors import RecordError, _record_id
from ..errors import MissingPathError, UsageError

__all__ = ["RawRow", "Source", "open_source"]


@dataclass
class RawRow:
    """One raw record as read from the source, before conversion.

    ``raw`` is ``None`` when the row could not even be parsed; ``error`` then says why. ``where`` points at the row
    in the source (``train.jsonl:12`` for files), for messages about rows that have no usable id.
    """

    index: int
    raw: Any
    where: str
    error: str | None = None


@dataclass
class Source:
    """A dataset opened for streaming: its display name, image root, rows and a progress total when known."""

    name: str
    image_root: str | None
    rows: Iterable[RawRow]
    total: int | None = None  # for the progress bar: bytes for .jsonl files, records when the length is known
    unit: str = "records"
    # Maps a raw row (and its index) into a LLaVA/chat record before conversion: a data card's or the detected
    # column mapping (question/answer, caption ... layouts), exactly as training applies it. None: rows are records.
    transform: Callable[[Any, int], Any] | None = None


def open_source(
    source: str,
    *,
    split: str = "train",
    config: str | None = None,
    image_root: str | None = None,
    columns: Mapping[str, str | None] | None = None,
    prompt_template: str | None = None,
) -> Source:
    """Open ``source`` for one streaming pass over its raw rows: a local .jsonl/.json file (read here, so that an
    invalid line is reported and the pass goes on), or anything :func:`mmft.data.sources.load_records` takes (built-in
    names, data cards, Parquet/CSV files, saved or plain folders, Hub ids), streamed.

    ``columns`` (``{role: column}``, as ``DataArguments.column_overrides()`` gives the ``--column_*`` flags) and
    ``prompt_template`` are the training loader's: they reach the same column mapping, so a file with non-standard
    column names is checked exactly as training will map it."""
    root = str(Path(image_root).resolve()) if image_root is not None else None
    columns = {role: column for role, column in (columns or {}).items() if column} or None
    path = Path(source).expanduser()
    if path.suffix == ".jsonl":
        _require_file(path)
        return _jsonl_source(path, root or str(path.resolve().parent), columns, prompt_template)
    if path.suffix == ".json":
        _require_file(path)
        return _json_source(path, root or str(path.resolve().parent), columns, prompt_template)
    return _streamed_source(
        source, split=split, config=config, image_root=root, columns=columns, prompt_template=prompt_template
    )


class _DetectFromFirstRow:
    """Training's first-row column detection (``mmft.data.row_mapping.DetectOnFirstRow``), except that a row whose
    columns fit no layout is reported as that record's problem and the next row is tried (a broken first record must
    not hide the rest of the file). ``mmft.data.row_mapping`` (and torch) load on the first row, keeping
    ``mmft --help`` fast."""

    def __init__(self, source: str, columns: Mapping[str, str] | None = None, prompt_template: str | None = None):
        self.source = source
        self.options = dict(source=source, columns=columns, prompt_template=prompt_template)
        self.detector = None

    def __call__(self, row, index: int):
        from ..data.row_mapping import DetectOnFirstRow
        from ..data.source_errors import SourceError

        if not isinstance(row, Mapping):
            return row  # to_canonical names what is wrong with it
        if self.detector is None:
            self.detector = DetectOnFirstRow(**self.options)
        try:
            return self.detector(row, index)
        except SourceError as error:
            record_id = _record_id(row, index, self.source)
            raise RecordError(f"record {record_id!r} in {self.source}: {error}", record_id=record_id,
                              source=self.source) from None


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise MissingPathError(f"Dataset file {str(path)!r} does not exist.")


class _JsonlRows:
    """The rows of a .jsonl file, read line by line in binary mode; ``bytes_read`` drives the progress bar.
    Nothing is kept between lines."""

    def __init__(self, path: Path):
        self.path = path
        self.bytes_read = 0

    def __iter__(self) -> Iterator[RawRow]:
        index = 0
        with open(self.path, "rb") as f:
            for line_number, line in enumerate(f, start=1):
                self.bytes_read += len(line)
                if not line.strip():
                    continue
                where = f"{self.path.name}:{line_number}"
                try:
                    raw = json.loads(line)
                except UnicodeDecodeError:
                    yield RawRow(index, None, where, f"{where}: not valid UTF-8 text")
                except json.JSONDecodeError as error:
                    yield RawRow(index, None, where, f"{where}: not valid JSON ({error.msg} at column {error.colno})")
                else:
                    yield RawRow(index, raw, where)
                index += 1


def _jsonl_source(path: Path, image_root: str, columns=None, prompt_template: str | None = None) -> Source:
    return Source(
        path.name,
        image_root,
        _JsonlRows(path),
        total=path.stat().st_size,
        unit="B",
        transform=_DetectFromFirstRow(path.name, columns, prompt_template),
    )


def _json_source(path: Path, image_root: str, columns=None, prompt_template: str | None = None) -> Source:
    """A .json file is one JSON document, so it is parsed whole (the one non-streaming case; use .jsonl for big
    data). A file that is not valid JSON is a single problem: nothing in it can be read."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        where = f"{path.name}:{error.lineno}" if isinstance(error, json.JSONDecodeError) else path.name
        return Source(path.name, image_root, [RawRow(0, None, where, f"{where}: not valid JSON ({error})")], total=1)
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]  # the {"data": [...]} layout training accepts too
    if not isinstance(data, list):
        raise UsageError(
            f"{path}: expected a JSON list of records (or an object with a 'data' list), got {type(data).__name__}."
        )

    def rows() -> Iterator[RawRow]:
        for index in range(len(data)):
            yield RawRow(index, data[index], f"{path.name}[{index}]")
            data[index] = None  # let each record go once checked

    transform = _DetectFromFirstRow(path.name, columns, prompt_template)
    return Source(path.name, image_root, rows(), total=len(data), transform=transform)


def _rows_of(records_dataset, name: str) -> Iterator[RawRow]:
    for index, raw in enumerate(records_dataset):
        yield RawRow(index, raw, f"{name}[{index}]")


def _streamed_source(
    name: str,
    *,
    split: str,
    config: str | None,
    image_root: str | None,
    columns: Mapping[str, str] | None = None,
    prompt_template: str | None = None,
) -> Source:
    """Everything but local JSON files: ``load_records(streaming=True)`` finds the data (card, file, folder, Hub id)
    and its column mapping; its raw rows are then mapped and converted here, one by one, so a bad record is reported
    and the pass goes on instead of stopping at the first."""
    from ..data.sources import load_records

    records = load_records(
        name,
        split=split,
        config=config,
        image_root=image_root,
        streaming=True,
        columns=columns,
        prompt_template=prompt_template,
    )
    # Streamed, load_records always gives a RecordIterableDataset: raw rows (a file stream or a datasets
    # IterableDataset, neither with a length) plus the transform that maps them into records.
    label = str(records.source)
    return Source(label, records.image_root, _rows_of(records.rows, Path(label).name or label), total=None,
                  transform=records.transform)
