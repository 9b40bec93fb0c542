"""``mmft data check``: find every bad record of a dataset before training, in one streaming pass.

Hours of GPU time are lost when a bad record surfaces mid-run (a missing image at step 40,000, a conversation
that starts with the answer, a sample longer than ``max_length`` once its images are expanded). This command
reads the whole dataset once, in constant memory, and reports every problem by kind with the record ids, plus
the shape of the data (turns, images per record, a token-length histogram, image sizes). It exits 1 when it
found an error, so it can gate a training job: ``mmft data check train.jsonl --model M --max_length 2048 &&
accelerate launch recipes/instruct.py ...``.

How each check is made, and why:

- **Records** go through :func:`mmft.records.to_canonical`, the very conversion training uses, so "valid here"
  means "valid in training". Its :class:`~mmft.records.RecordError` is sorted into a kind (bad roles, empty turn,
  placeholder/image mismatch, malformed record) by what it says.
- **Images** are checked with :func:`mmft.images.image_size`: the same path rules as training (relative to the
  image root, nothing escaping it) and a header-only read, so no pixel is decoded and memory stays flat however
  large the images are. A truncated PNG or JPEG is caught too, by its missing end marker (``IEND`` / ``EOI``:
  a few bytes read at the end of the file). A file cut elsewhere, or corrupt inside its pixel data, passes;
  ``--decode_images`` (or ``--model``, which runs the real collator) decodes every image to catch those too.
- **Lengths** with ``--model`` come from the real :class:`~mmft.collator.VLMCollator` in train mode: the same
  chat template, image expansion and label construction as training, so the count is the collator's own (its
  ``attention_mask`` sum) rather than an estimate, and label problems (nothing to supervise, a template the label
  builder cannot follow) surface here too. Over-long samples are judged by the ``--overlength_policy`` training
  will use: errors under ``error``; warnings under ``drop`` (training skips them); under ``shrink`` the collator
  itself shrinks each one's images, so only samples that cannot fit are errors. Without ``--model`` there is no
  tokenizer: the histogram then counts whitespace-separated words of the text, which is only a rough guide.
- **Sources**: a local ``.jsonl`` is read here, line by line, so an invalid line is reported and the pass goes on;
  everything else (built-in names, data cards, Parquet/CSV files, saved or plain folders, Hub ids) is opened with
  :func:`mmft.sources.load_records` in streaming mode. Rows that are not LLaVA/chat records (question/answer,
  caption ... columns) go through the same column mapping as in training (the card's, or the detected one), with
  the training loader's ``--column_*`` and ``--prompt_template`` flags, which both commands accept.
- **Memory**: nothing is loaded whole except a ``.json`` file (one JSON document: convert big ones to ``.jsonl``).
  Per record only a few numbers are kept (an 8-byte hash of the id for the duplicate check, the length, the image
  sizes: about 20 bytes), so a million records add about 20 MB; the ids listed per problem kind are capped
  (``--max_listed``) while every problem is counted.

``mmft data show`` (one processed sample as the model sees it) lives in :mod:`mmft.datashow`; both share the
source streaming in this module.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import sys
from array import array
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MissingPathError, UsageError
from .records import RecordError, _record_id, to_canonical

__all__ = ["PROBLEM_KINDS", "CheckOptions", "DataChecker", "add_data_commands", "check_source", "open_source"]

# Every kind of problem the check reports, with the one-line explanation printed above its examples. All are
# errors: each of them would stop training (or, for duplicates, silently weight a record twice).
PROBLEM_KINDS = {
    "invalid_json": "lines that are not valid JSON (file:line)",
    "bad_roles": "conversations whose roles are unknown or out of order (system? (user assistant)+ expected)",
    "empty_turn": "empty conversations, questions or answers",
    "placeholder_mismatch": "<image> placeholders that do not match the record's images",
    "malformed_record": "records with a missing or wrongly typed field",
    "duplicate_id": "ids used by more than one record (the later records are listed)",
    "missing_image": "image files that do not exist (relative paths resolve against the image root)",
    "image_outside_root": "image paths that are absolute or lead outside the image root (refused in training)",
    "unreadable_image": "image files that are not a readable image (corrupt, truncated or not an image)",
    "truncated_image": "PNG / JPEG files cut short: no end marker (IEND / EOI), found without decoding",
    "image_too_large": "images over the decompression-bomb pixel cap (--max_image_pixels)",
    "remote_image": "http(s) image URLs, refused without --allow_remote_images",
    "over_length": "samples longer than --max_length tokens after image expansion",
    "over_length_dropped": "samples over --max_length that training skips (--overlength_policy drop)",
    "shrunk_to_fit": "samples over --max_length whose images training shrinks to fit (--overlength_policy shrink)",
    "unsupported_by_model": "records the model family cannot take (e.g. too many images, or none)",
    "label_error": "samples whose supervised (assistant) tokens cannot be built",
    "processor_error": "samples the model's processor failed on",
}

_IMAGE_CACHE_SIZE = 16384  # header reads remembered per (root, path): datasets often reuse images


# Kinds that do not stop training under the chosen --overlength_policy: listed, but the check still passes.
WARNING_KINDS = frozenset({"over_length_dropped", "shrunk_to_fit"})

# --------------------------------------------------------------------------------------------------------------------
# Streaming a source: raw rows, one at a time, with where each came from


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
    invalid line is reported and the pass goes on), or anything :func:`mmft.sources.load_records` takes (built-in
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
    """Training's first-row column detection (``mmft.sources.DetectOnFirstRow``), except that a row whose columns fit
    no layout is reported as that record's problem and the next row is tried (a broken first record must not hide
    the rest of the file). ``mmft.sources`` (and torch) load on the first row, keeping ``mmft --help`` fast."""

    def __init__(self, source: str, columns: Mapping[str, str] | None = None, prompt_template: str | None = None):
        self.source = source
        self.options = dict(source=source, columns=columns, prompt_template=prompt_template)
        self.detector = None

    def __call__(self, row, index: int):
        from .sources import DetectOnFirstRow, SourceError

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
    from .sources import load_records

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


# --------------------------------------------------------------------------------------------------------------------
# Bookkeeping in constant memory


class _SeenIds:
    """Which explicit record ids were seen, at 8 bytes per id: a sorted int64 array plus a small recent buffer.

    A Python ``set`` of the id strings would cost ~100 bytes per record; 64-bit hashes make a false "duplicate"
    a ~1e-8 event even at a million records, and the reported id is always the record's own (real) id.
    """

    _BUFFER = 16384

    def __init__(self):
        import numpy as np

        self._np = np
        self._sorted = np.empty(0, dtype=np.int64)
        self._recent: set[int] = set()

    def add(self, record_id: str) -> bool:
        """Remember ``record_id``; return True if it was seen before."""
        digest = int.from_bytes(
            hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest(), "little", signed=True
        )
        if digest in self._recent:
            return True
        position = int(self._np.searchsorted(self._sorted, digest))
        if position < len(self._sorted) and self._sorted[position] == digest:
            return True
        self._recent.add(digest)
        if len(self._recent) >= self._BUFFER:
            merged = self._np.concatenate([self._sorted, self._np.fromiter(self._recent, dtype=self._np.int64)])
            merged.sort()
            self._sorted, self._recent = merged, set()
        return False


@dataclass
class _Problems:
    """Counts per kind, and the first ``max_listed`` examples of each (id, where, message)."""

    max_listed: int
    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    bad_records: int = 0

    def add(self, kind: str, record_id: str | None, where: str, message: str) -> None:
        self.counts[kind] += 1
        listed = self.examples.setdefault(kind, [])
        if len(listed) < self.max_listed:
            listed.append({"id": record_id, "where": where, "message": message})


# --------------------------------------------------------------------------------------------------------------------
# The checker


@dataclass
class _Pending:
    """A valid record waiting for the batched model pass; ``bad`` once any problem was found for it."""

    record: dict
    where: str
    bad: bool


@dataclass
class CheckOptions:
    """What ``mmft data check`` checks; the fields mirror its flags (and the training flags of the same names)."""

    max_image_pixels: int | None = None  # None: mmft.images.DEFAULT_MAX_IMAGE_PIXELS
    allow_images_outside_root: bool = False
    allow_remote_images: bool = False
    decode_images: bool = False
    max_length: int | None = None
    overlength_policy: str = "error"  # as in training: error, drop or shrink (then shrink_min_pixels applies)
    shrink_min_pixels: int | None = None  # None: the collator's default floor
    max_listed: int = 20
    batch_size: int = 16


def classify_record_error(error: RecordError) -> str:
    """The problem kind of a :func:`to_canonical` error, from the problem it states (its field and wording)."""
    message = str(error)
    problem = message.split(f"{error.field}: ", 1)[-1] if error.field else message
    if "placeholder" in problem or "images given" in problem:
        return "placeholder_mismatch"
    if any(
        phrase in problem
        for phrase in (
            "unknown role",
            "turns in a row",
            "starts with an",
            "system turn at position",
            "system turn only",
            "ends with a user turn",
        )
    ):
        return "bad_roles"
    if any(phrase in problem for phrase in ("empty assistant answer", "empty user turn", "empty list", "no answer")):
        return "empty_turn"
    return "malformed_record"


class DataChecker:
    """Checks raw rows one at a time (:meth:`check_row`) and builds the report (:meth:`report`).

    ``collator`` (a train-mode :class:`~mmft.collator.VLMCollator` with no length limit) switches on the model
    checks: every valid record is run through it, in small batches, and its real token count compared with
    ``options.max_length``.
    """

    def __init__(self, options: CheckOptions, *, collator=None, model_name: str | None = None):
        from . import images as images_lib

        self.options = options
        self.collator = collator
        self.model_name = model_name
        self._images = images_lib
        self.max_image_pixels = (
            images_lib.DEFAULT_MAX_IMAGE_PIXELS if options.max_image_pixels is None else options.max_image_pixels
        )
        self.problems = _Problems(options.max_listed)
        self.ids = _SeenIds()
        self.records = 0
        self._row_bad = False  # whether the row being checked already has a problem
        self.turns = Counter()
        self.images_per_record = Counter()
        self.remote_unchecked = 0
        self.lengths = array("i")  # tokens (with a model) or words (without), one per measured record
        self.supervised = array("i")
        self.widths = array("i")
        self.heights = array("i")
        self._image_cache: OrderedDict = OrderedDict()
        self._pending: list[tuple[dict, str]] = []

    # ---- rows ----------------------------------------------------------------------------------------------
    def check_row(self, row: RawRow, source: Source) -> None:
        self.records += 1
        self._row_bad = False
        if row.raw is None:
            self._problem("invalid_json", None, row.where, row.error or f"{row.where}: unreadable row")
        else:
            self._check_raw(row, source)

    def _problem(self, kind: str, record_id: str | None, where: str, message: str) -> None:
        self.problems.add(kind, record_id, where, message)
        if not self._row_bad:
            self._row_bad = True
            self.problems.bad_records += 1

    def _check_raw(self, row: RawRow, source: Source) -> None:
        image_root = source.image_root
        raw = row.raw
        if source.transform is not None:
            try:
                raw = source.transform(raw, row.index)
            except RecordError as error:
                self._problem(classify_record_error(error), error.record_id, row.where, str(error))
                return
            except Exception as error:  # noqa: BLE001 - a row the mapping cannot read is reported, not fatal
                self._problem(
                    "malformed_record",
                    None,
                    row.where,
                    f"{row.where}: the column mapping failed on this row ({type(error).__name__}: {error})",
                )
                return
        if isinstance(raw, Mapping) and raw.get("id") is not None and str(raw["id"]) != "":
            record_id = str(raw["id"])
            if self.ids.add(record_id):
                self._problem(
                    "duplicate_id",
                    record_id,
                    row.where,
                    f"record id {record_id!r} ({row.where}) was already used by an earlier record",
                )
        try:
            record = to_canonical(raw, index=row.index, source=source.name)
        except RecordError as error:
            self._problem(classify_record_error(error), error.record_id, row.where, str(error))
            return
        record["image_root"] = image_root
        self.turns[sum(message["role"] == "assistant" for message in record["messages"])] += 1
        self.images_per_record[len(record["images"])] += 1
        image_ok = all([self._check_image(ref, record["id"], row.where, image_root) for ref in record["images"]])
        if not image_ok:
            return
        if self.collator is None:
            words = sum(
                len(entry["text"].split())
                for message in record["messages"]
                for entry in message["content"]
                if entry["type"] == "text"
            )
            self.lengths.append(words)
        else:
            self._pending.append(_Pending(record, row.where, self._row_bad))
            if len(self._pending) >= self.options.batch_size:
                self.flush()

    # ---- images --------------------------------------------------------------------------------------------
    def _check_image(self, ref, record_id: str, where: str, image_root: str | None) -> bool:
        if isinstance(ref, str) and self._images._URL_SCHEME.match(ref):
            if self.options.allow_remote_images:
                self.remote_unchecked += 1  # never fetched by a check: training fetches it
                return True
            self._problem(
                "remote_image",
                record_id,
                where,
                f"record {record_id!r}: image URL {ref.split('?')[0]!r} is refused without "
                "--allow_remote_images. Download the images and use local paths, or allow them.",
            )
            return False
        key = (image_root, ref) if isinstance(ref, str) else None
        result = self._image_cache.get(key) if key is not None else None
        if result is None:
            result = self._read_image(ref, image_root)
            if key is not None:
                self._image_cache[key] = result
                if len(self._image_cache) > _IMAGE_CACHE_SIZE:
                    self._image_cache.popitem(last=False)
        else:
            self._image_cache.move_to_end(key)
        if result[0] == "ok":
            _, width, height = result
            self.widths.append(width)
            self.heights.append(height)
            return True
        _, kind, message = result
        self._problem(kind, record_id, where, f"record {record_id!r}: {message}")
        return False

    def _read_image(self, ref, image_root: str | None) -> tuple:
        """("ok", width, height) or ("error", kind, message); only the header is read unless decode_images."""
        images = self._images
        outside = self.options.allow_images_outside_root
        try:
            if self.options.decode_images:
                image = images.load_image(
                    ref, root=image_root, allow_outside_root=outside, max_image_pixels=self.max_image_pixels
                )
                width, height = image.size
                image.close()
            else:
                # The header, and the end marker of a PNG / JPEG (truncated files): a few bytes, nothing decoded.
                width, height = images.image_size(ref, root=image_root, allow_outside_root=outside,
                                                  check_complete=True)
        except images.ImageLoadError as error:
            return ("error", error.kind, str(error))
        if self.max_image_pixels is not None and width * height > self.max_image_pixels:
            return (
                "error",
                "image_too_large",
                f"image {_describe_ref(ref)} is {width}x{height} = {width * height:,} pixels, over the cap of "
                f"{self.max_image_pixels:,} (--max_image_pixels). Downscale it, or raise the cap if it is "
                "legitimate.",
            )
        return ("ok", width, height)

    # ---- the model pass ------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Run the pending records through the collator: one batched call, or one by one if the batch fails (so
        the failing record is named and the others still get measured)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self._measure(pending)
        except Exception:  # noqa: BLE001 - the per-record pass below says what failed, and for which record
            for item in pending:
                try:
                    self._measure([item])
                except Exception as error:  # noqa: BLE001 - every failure is reported, none stops the pass
                    self._model_problem(item, error)

    def _measure(self, items: list[_Pending]) -> None:
        from .collator import IGNORE_INDEX

        batch = self.collator([item.record for item in items])
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        supervised = (batch["labels"] != IGNORE_INDEX).sum(dim=1).tolist()
        max_length = self.options.max_length
        for item, length, n_supervised in zip(items, lengths, supervised):
            self.lengths.append(int(length))
            self.supervised.append(int(n_supervised))
            if max_length is not None and length > max_length:
                self._over_length(item, int(length))

    def _over_length(self, item: _Pending, length: int) -> None:
        """An over-long sample, judged by the training policy: an error, a drop (warning), or a shrink that the
        collator itself tries (warning when it fits, error with the collator's reason when it cannot)."""
        from .collator import OverlengthError

        record_id, max_length = item.record["id"], self.options.max_length
        over = f"record {record_id!r} is {length} tokens after image expansion, over max_length={max_length}"
        policy = self.options.overlength_policy
        if policy == "drop":
            self._late_problem(item, "over_length_dropped", f"{over}; training skips it (--overlength_policy drop).")
            return
        if policy == "shrink":
            shrinking = copy.copy(self.collator)  # the same collator, with the budget and policy training would use
            shrinking.max_length, shrinking.overlength_policy = max_length, "shrink"
            if self.options.shrink_min_pixels is not None:
                shrinking.shrink_min_pixels = self.options.shrink_min_pixels
            try:
                fitted = int(shrinking([item.record])["attention_mask"].sum())
            except OverlengthError as error:
                self._late_problem(item, "over_length", f"{over}, and shrinking cannot fix it: {error}")
            else:
                self._late_problem(item, "shrunk_to_fit", f"{over}; its images shrink to fit ({fitted} tokens).")
            return
        self._late_problem(
            item,
            "over_length",
            f"{over}. Image tokens are never truncated: raise --max_length, lower --max_pixels, shorten the "
            "conversation, or train with --overlength_policy drop (or shrink).",
        )

    def _model_problem(self, item: _Pending, error: Exception) -> None:
        from .collator import LabelAlignmentError
        from .families import UnsupportedRecordError

        if isinstance(error, self._images.ImageLoadError):
            kind = "unreadable_image"  # header fine, pixels not: only a full decode finds these
        elif isinstance(error, UnsupportedRecordError):
            kind = "unsupported_by_model"
        elif isinstance(error, LabelAlignmentError):
            kind = "label_error"
        else:
            kind = "processor_error"
        text = str(error)
        if kind == "processor_error":
            text = f"{type(error).__name__}: {text}"
        if not text.startswith("record "):
            text = f"record {item.record['id']!r}: {text}"
        self._late_problem(item, kind, text)

    def _late_problem(self, item: _Pending, kind: str, message: str) -> None:
        """A problem found by the (batched, hence later) model pass."""
        self.problems.add(kind, item.record["id"], item.where, message)
        if kind not in WARNING_KINDS and not item.bad:
            item.bad = True
            self.problems.bad_records += 1

    # ---- the report ----------------------------------------------------------------------------------------
    def report(self, source: Source) -> dict:
        """Everything found, as one JSON-serialisable dict (what ``--json`` prints)."""
        self.flush()
        import numpy as np

        errors = sum(count for kind, count in self.problems.counts.items() if kind not in WARNING_KINDS)
        warnings = sum(count for kind, count in self.problems.counts.items() if kind in WARNING_KINDS)
        length_unit = "tokens" if self.collator is not None else "words"
        lengths = np.frombuffer(self.lengths, dtype=self.lengths.typecode) if len(self.lengths) else None
        report: dict[str, Any] = {
            "source": source.name,
            "image_root": source.image_root,
            "model": self.model_name,
            "max_length": self.options.max_length,
            "records": self.records,
            "valid_records": self.records - self.problems.bad_records,
            "records_with_problems": self.problems.bad_records,
            "errors": errors,
            "warnings": warnings,
            "ok": errors == 0,
            "problems": {
                kind: {
                    "count": self.problems.counts[kind],
                    "severity": "warning" if kind in WARNING_KINDS else "error",
                    "description": PROBLEM_KINDS[kind],
                    "examples": self.problems.examples[kind],
                }
                for kind in PROBLEM_KINDS
                if self.problems.counts[kind]
            },
            "turns_per_record": _counter_summary(self.turns),
            "images_per_record": _counter_summary(self.images_per_record),
            "lengths": {
                "unit": length_unit,
                "measured": 0 if lengths is None else int(lengths.size),
                **(_distribution(lengths) if lengths is not None else {}),
                "histogram": _histogram(lengths) if lengths is not None else [],
            },
            "images": _image_summary(np, self.widths, self.heights),
        }
        if self.supervised:
            supervised = np.frombuffer(self.supervised, dtype=self.supervised.typecode)
            report["supervised_tokens"] = _distribution(supervised)
        if self.remote_unchecked:
            report["images"]["remote_unchecked"] = self.remote_unchecked
        return report


def _describe_ref(ref) -> str:
    if isinstance(ref, str):
        return repr(ref)
    if isinstance(ref, Mapping) and ref.get("path") and not ref.get("bytes"):
        return repr(ref["path"])
    return f"<{type(ref).__name__}>"


def _counter_summary(counter: Counter) -> dict:
    return {str(key): counter[key] for key in sorted(counter)}


def _distribution(values) -> dict:
    import numpy as np

    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "mean": round(float(values.mean()), 2),
        "p95": float(np.percentile(values, 95)),
        "max": int(values.max()),
    }


def _nice_width(span: int, bins: int) -> int:
    raw = max(1, -(-span // bins))
    magnitude = 10 ** (len(str(raw)) - 1)
    for step in (1, 2, 5, 10):
        if step * magnitude >= raw:
            return step * magnitude
    return raw


def _histogram(values, bins: int = 12) -> list[dict]:
    """Equal-width bins with round edges: [{"low", "high" (inclusive), "count"}]."""
    import numpy as np

    low, high = int(values.min()), int(values.max())
    width = _nice_width(high - low + 1, bins)
    start = (low // width) * width
    n_bins = (high - start) // width + 1
    counts = np.bincount((values - start) // width, minlength=n_bins)
    return [
        {"low": start + i * width, "high": start + (i + 1) * width - 1, "count": int(count)}
        for i, count in enumerate(counts)
    ]


def _image_summary(np, widths: array, heights: array) -> dict:
    if not widths:
        return {"count": 0}
    w = np.frombuffer(widths, dtype=widths.typecode).astype(np.int64)
    h = np.frombuffer(heights, dtype=heights.typecode).astype(np.int64)
    megapixels = w * h / 1e6

    def stats(values, digits=0):
        result = [float(values.min()), float(np.median(values)), float(values.max())]
        return dict(zip(("min", "median", "max"), [round(v, digits) if digits else int(v) for v in result]))

    return {"count": int(w.size), "width": stats(w), "height": stats(h), "megapixels": stats(megapixels, 3)}


# --------------------------------------------------------------------------------------------------------------------
# Running a check and printing the report


def check_source(
    source: Source, options: CheckOptions, *, collator=None, model_name: str | None = None, progress: bool = True
) -> dict:
    """Check every row of ``source`` and return the report dict."""
    from tqdm.auto import tqdm

    checker = DataChecker(options, collator=collator, model_name=model_name)
    by_bytes = source.unit == "B"
    bar = tqdm(
        total=source.total,
        unit=source.unit,
        unit_scale=by_bytes,
        desc=f"checking {source.name}",
        disable=not progress,
        file=sys.stderr,
        mininterval=0.5,
    )
    last = 0
    with bar:
        for row in source.rows:
            checker.check_row(row, source)
            if by_bytes:
                done = source.rows.bytes_read
                if done - last >= 1 << 20 or done == source.total:
                    bar.update(done - last)
                    last = done
                    bar.set_postfix(records=checker.records, refresh=False)
            else:
                bar.update(1)
    return checker.report(source)


def format_report(report: dict, *, bar_char: str = "#") -> str:
    """The human-readable report."""
    lines = [f"mmft data check: {report['source']}  (images relative to {report['image_root']})"]
    lines.append(
        f"records            {report['records']:,}  ({report['valid_records']:,} valid, "
        f"{report['records_with_problems']:,} with problems)"
    )
    for key, label in (("turns_per_record", "answers/record"), ("images_per_record", "images/record")):
        counts = report[key]
        lines.append(f"{label:<19}" + ("  ".join(f"{k}: {v:,}" for k, v in counts.items()) or "-"))
    images = report["images"]
    if images["count"]:
        w, h, mp = images["width"], images["height"], images["megapixels"]
        lines.append(
            f"image sizes        {images['count']:,} images (min / median / max): width {w['min']} / "
            f"{w['median']} / {w['max']}, height {h['min']} / {h['median']} / {h['max']}, megapixels "
            f"{mp['min']} / {mp['median']} / {mp['max']}"
        )
    if images.get("remote_unchecked"):
        lines.append(f"                   {images['remote_unchecked']:,} remote images not checked (URLs)")
    lengths = report["lengths"]
    if lengths["measured"]:
        if lengths["unit"] == "tokens":
            title = f"token lengths ({report['model']}, after image expansion)"
        else:
            title = "text lengths in words (no --model: a rough guide; image tokens not counted)"
        lines.append(
            f"{title}: min {lengths['min']}, median {lengths['median']:g}, p95 {lengths['p95']:g}, "
            f"max {lengths['max']}"
        )
        lines.extend(
            _bar_chart(lengths["histogram"], report["max_length"] if lengths["unit"] == "tokens" else None, bar_char)
        )
    if "supervised_tokens" in report:
        s = report["supervised_tokens"]
        lines.append(f"supervised tokens  min {s['min']}, median {s['median']:g}, max {s['max']} per sample")
    if report["problems"]:
        lines.append("")
        lines.append(
            f"PROBLEMS: {report['errors']:,} errors in {report['records_with_problems']:,} records"
            + (f", {report['warnings']:,} warnings" if report["warnings"] else "")
        )
        for kind, entry in report["problems"].items():
            severity = " [warning]" if entry["severity"] == "warning" else ""
            lines.append(f"  {kind} ({entry['count']:,}){severity}: {entry['description']}")
            for example in entry["examples"]:
                if example["id"] is None and example["message"].startswith(example["where"]):
                    lines.append(f"    - {_one_line(example['message'])}")  # it names its file:line itself
                else:
                    ident = example["id"] if example["id"] is not None else example["where"]
                    lines.append(f"    - {ident}: {_one_line(example['message'])}")
            hidden = entry["count"] - len(entry["examples"])
            if hidden > 0:
                lines.append(f"    ... and {hidden:,} more (raise --max_listed, or use --json)")
        lines.append("")
        if report["ok"]:
            lines.append(f"OK: {report['records']:,} records, no errors (the warnings above do not stop training).")
        else:
            plural = "s" if report["errors"] != 1 else ""
            lines.append(f"FAILED: {report['errors']:,} error{plural}. Fix or drop these records before training.")
    else:
        lines.append("")
        lines.append(f"OK: {report['records']:,} records, no problems found.")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bar_chart(histogram: list[dict], max_length: int | None, bar_char: str, width: int = 40) -> list[str]:
    peak = max((entry["count"] for entry in histogram), default=0) or 1
    digits = len(str(histogram[-1]["high"])) if histogram else 1
    lines = []
    for entry in histogram:
        bar = bar_char * max(1 if entry["count"] else 0, round(width * entry["count"] / peak))
        over = "  > max_length" if max_length is not None and entry["high"] > max_length else ""
        if entry["low"] == entry["high"]:
            label = f"{entry['low']:>{2 * digits + 3}}"
        else:
            label = f"{entry['low']:>{digits}} - {entry['high']:>{digits}}"
        lines.append(f"  {label} | {bar:<{width}} {entry['count']:,}{over}")
    return lines


def _bar_char(stream) -> str:
    encoding = (getattr(stream, "encoding", None) or "").lower()
    return "\u2588" if encoding.replace("-", "") in ("utf8", "utf16") else "#"


# --------------------------------------------------------------------------------------------------------------------
# The command line (registered by mmft.cli; heavy imports stay inside the handlers)


def load_collator(
    model: str,
    *,
    trust_remote_code: bool = False,
    max_pixels: int | None = None,
    max_image_pixels: int | None = None,
    allow_images_outside_root: bool = False,
    allow_remote_images: bool = False,
):
    """A train-mode collator for ``model`` with no length limit (the caller compares lengths itself)."""
    from .collator import VLMCollator
    from .config import ModelArguments
    from .images import DEFAULT_MAX_IMAGE_PIXELS
    from .modeling import load_processor

    processor = load_processor(ModelArguments(model_name_or_path=model, trust_remote_code=trust_remote_code))
    return VLMCollator(
        processor,
        mode="train",
        max_length=None,
        max_pixels=max_pixels,
        max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS if max_image_pixels is None else max_image_pixels,
        allow_images_outside_root=allow_images_outside_root,
        allow_remote_images=allow_remote_images,
    )


def collator_for_args(args):
    """``load_collator`` with the model and image flags of ``data check`` / ``data show``."""
    return load_collator(args.model, trust_remote_code=args.trust_remote_code, max_pixels=args.max_pixels,
                         max_image_pixels=args.max_image_pixels,
                         allow_images_outside_root=args.allow_images_outside_root,
                         allow_remote_images=args.allow_remote_images)


def _open_or_exit(args, command: str) -> Source:
    try:
        return open_source(
            args.source,
            split=args.split,
            config=args.config,
            image_root=args.image_root,
            columns=column_overrides(args),
            prompt_template=args.prompt_template,
        )
    except (OSError, ValueError) as error:  # missing file, SourceError/CardError, Hub unreachable ...
        sys.exit(f"mmft data {command}: {error}")


def _check_command(args) -> None:
    options = CheckOptions(
        max_image_pixels=args.max_image_pixels,
        allow_images_outside_root=args.allow_images_outside_root,
        allow_remote_images=args.allow_remote_images,
        decode_images=args.decode_images,
        max_length=args.max_length,
        overlength_policy=args.overlength_policy,
        shrink_min_pixels=args.shrink_min_pixels,
        max_listed=args.max_listed,
        batch_size=args.batch_size,
    )
    source = _open_or_exit(args, "check")
    collator = None
    if args.model:
        collator = collator_for_args(args)
    elif args.max_length is not None:
        print(
            "mmft data check: --max_length needs --model (token counts come from the model's processor); "
            "lengths are not checked.",
            file=sys.stderr,
        )
    with _single_threaded(collator is not None):
        report = check_source(source, options, collator=collator, model_name=args.model, progress=not args.no_progress)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report, bar_char=_bar_char(sys.stdout)))
    if not report["ok"]:
        sys.exit(1)


@contextlib.contextmanager
def _single_threaded(active: bool):
    """Run torch on one thread, as in a DataLoader worker: the per-sample tensor work of the collator is small and
    intra-op threads only contend (3x slower with 2 threads on a 2-core machine). The setting is restored after,
    since ``main([...])`` may run inside a longer-lived process."""
    if not active:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _data_argument_help(name: str) -> str:
    """The help text of a ``DataArguments`` field, so the flag says here exactly what it says for training."""
    from dataclasses import fields

    from .config import DataArguments

    return next(f.metadata.get("help", "") for f in fields(DataArguments) if f.name == name)


def _column_flags() -> list[str]:
    """The training loader's ``--column_*`` flags: every ``column_*`` field of ``DataArguments``."""
    from dataclasses import fields

    from .config import DataArguments

    return [f.name for f in fields(DataArguments) if f.name.startswith("column_")]


def column_overrides(args) -> dict[str, str | None]:
    """The ``--column_*`` flags of a parsed ``data check``/``data show`` command as ``{role: column}``, through
    ``DataArguments.column_overrides()`` itself, so the flags reach the same roles as in training."""
    from .config import DataArguments

    return DataArguments(**{flag: getattr(args, flag, None) for flag in _column_flags()}).column_overrides()


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        help="A local .jsonl/.json file (LLaVA or messages format), 'shapes', a folder "
        "saved with save_to_disk, a Parquet file or folder, or a Hub dataset id.",
    )
    parser.add_argument(
        "--split",
        default="train",
        help="Split to read (Hub datasets and saved folders; default: train). A single file is one split.",
    )
    parser.add_argument(
        "--config", default=None, help="Configuration name of a Hub dataset (load_dataset's second argument)."
    )
    parser.add_argument(
        "--image_root",
        default=None,
        help="Folder that relative image paths resolve against (default: the data file's folder).",
    )
    parser.add_argument(
        "--allow_images_outside_root",
        action="store_true",
        help="Accept absolute image paths and paths leading outside the image root.",
    )
    parser.add_argument(
        "--allow_remote_images",
        action="store_true",
        help="Accept http(s) image URLs (they are not fetched by the check).",
    )
    parser.add_argument(
        "--max_pixels",
        type=int,
        default=None,
        help="Downscale images to at most this many pixels before the processor sees them, as in "
        "training (fewer image tokens for some models). Used with --model.",
    )
    parser.add_argument(
        "--max_image_pixels",
        type=int,
        default=None,
        help="Decompression-bomb cap: images whose header claims more pixels are errors (default: "
        "64,000,000, as in training).",
    )
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="Allow code shipped with the model's repository (off by default).",
    )
    mapping = parser.add_argument_group(
        "column mapping",
        "The training loader's flags, with the same meaning: give the ones you train with, so rows are mapped "
        "into records exactly as in training.",
    )
    for flag in (*_column_flags(), "prompt_template"):
        mapping.add_argument(f"--{flag}", default=None, help=_data_argument_help(flag))


def add_data_commands(commands) -> None:
    """Add ``mmft data check`` and ``mmft data show`` to the ``mmft`` subcommands."""
    data = commands.add_parser("data", help="Check a dataset before training, or show a sample as the model sees it.")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    check = data_commands.add_parser(
        "check",
        help="Stream a whole dataset and report every bad record by kind, with ids; exit 1 if any.",
        description="Stream a whole dataset in constant memory and report every problem by kind with the record ids "
        "(invalid JSON, bad roles, empty turns, <image> placeholder/image mismatch, missing, unreadable "
        "or oversized images, paths outside the image root, duplicate ids; with --model also samples over "
        "--max_length after image expansion), plus turns, images per record, a length histogram and "
        "image sizes. Exits 1 when it found an error, 0 when the data is clean.",
    )
    _add_source_arguments(check)
    check.add_argument(
        "--model",
        default=None,
        help="Model (Hub id, local folder or mmft: name) whose processor counts each sample's tokens "
        "after image expansion, through the training collator.",
    )
    check.add_argument(
        "--max_length",
        type=int,
        default=None,
        help="Token budget per sample after image expansion; longer samples are errors (needs --model).",
    )
    check.add_argument(
        "--overlength_policy",
        choices=["error", "drop", "shrink"],
        default="error",
        help="The policy you will train with: 'error' (default) makes over-long samples errors; under 'drop' they "
        "are listed as warnings (training skips them); under 'shrink' the collator shrinks each one's images as "
        "training would, and only samples that still do not fit are errors.",
    )
    check.add_argument(
        "--shrink_min_pixels",
        type=int,
        default=None,
        help="With --overlength_policy shrink: no image smaller than this many pixels (default: as in training).",
    )
    check.add_argument(
        "--decode_images",
        action="store_true",
        help="Decode every image fully (slower) to catch files whose header is fine but whose pixel "
        "data is truncated; by default only headers are read.",
    )
    check.add_argument("--json", action="store_true", help="Print one machine-readable JSON object instead.")
    check.add_argument(
        "--max_listed", type=int, default=20, help="Record ids listed per problem kind (all are counted; default: 20)."
    )
    check.add_argument(
        "--batch_size", type=int, default=16, help="Records per collator call with --model (default: 16)."
    )
    check.add_argument("--no_progress", action="store_true", help="No progress bar (it goes to stderr).")
    check.set_defaults(func=_check_command)

    show = data_commands.add_parser(
        "show",
        help="Print one processed sample as the model sees it, supervised tokens highlighted.",
        description="Run one record through the training collator and print its token sequence: supervised "
        "(assistant) tokens highlighted (colour on a terminal, [[...]] markers otherwise; NO_COLOR "
        "respected), image tokens collapsed to <image xN>, with image-token counts and label statistics.",
    )
    _add_source_arguments(show)
    show.add_argument(
        "--model",
        required=True,
        help="Model (Hub id, local folder or mmft: name) whose processor and chat template are used.",
    )
    show.add_argument("--index", type=int, default=0, help="Which record (0-based position in the source).")
    show.add_argument(
        "--max_length",
        type=int,
        default=None,
        help="Say whether the sample fits this token budget (the sample is shown either way).",
    )
    show.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="Highlight with ANSI colour: auto (on a terminal, unless NO_COLOR is set), always, never.",
    )

    def _show(args):
        from .datashow import show_command

        show_command(args)

    show.set_defaults(func=_show)
