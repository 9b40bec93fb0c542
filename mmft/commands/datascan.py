"""The checks of ``mmft data check``: each raw row of a source, in constant memory (see
:mod:`mmft.commands.datacheck`).

:class:`DataChecker` takes rows one at a time (:meth:`DataChecker.check_row`): conversion through the training
path's :func:`mmft.data.records.to_canonical`, duplicate ids, image headers (and end markers) read without decoding,
and, with a collator, the real token count of every valid record in small batches, judged by the training
``--overlength_policy``. :meth:`DataChecker.report` is the report (:mod:`mmft.commands.datareport`).
"""

from __future__ import annotations

import copy
import hashlib
from array import array
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..data.record_errors import RecordError
from ..data.records import to_canonical
from .datareport import WARNING_KINDS, build_report
from .datastream import RawRow, Source

__all__ = ["CheckOptions", "DataChecker", "classify_record_error"]

_IMAGE_CACHE_SIZE = 16384  # header reads remembered per (root, path): datasets often reuse images


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

    max_image_pixels: int | None = None  # None: mmft.data.images.DEFAULT_MAX_IMAGE_PIXELS
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

    ``collator`` (a train-mode :class:`~mmft.train.collator.VLMCollator` with no length limit) switches on the model
    checks: every valid record is run through it, in small batches, and its real token count compared with
    ``options.max_length``.
    """

    def __init__(self, options: CheckOptions, *, collator=None, model_name: str | None = None):
        from ..data import image_headers, image_refs
        from ..data import images as images_lib

        self.options = options
        self.collator = collator
        self.model_name = model_name
        self._images = images_lib
        self._image_headers = image_headers
        self._image_refs = image_refs
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
        if isinstance(ref, str) and self._image_refs._URL_SCHEME.match(ref):
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
                width, height = self._image_headers.image_size(ref, root=image_root, allow_outside_root=outside,
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
        from ..train.labels import IGNORE_INDEX

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
        from ..train.overlength import OverlengthError

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
        from ..families import UnsupportedRecordError
        from ..train.labels import LabelAlignmentError

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
        """Everything found, as one JSON-serialisable dict (what ``--json`` prints): :func:`build_report`."""
        self.flush()
        return build_report(self, source)


def _describe_ref(ref) -> str:
    if isinstance(ref, str):
        return repr(ref)
    if isinstance(ref, Mapping) and ref.get("path") and not ref.get("bytes"):
        return repr(ref["path"])
    return f"<{type(ref).__name__}>"
