"""Bad records in training: found at start-up or by the data loader, dropped and counted, or the run stopped.

A record is *bad* when it cannot become a training sample through no fault of the code: its structure is invalid
(``RecordError``), or its image is missing, outside the image root, over the decompression-bomb cap, truncated or
unreadable (``ImageLoadError``, sorted by its ``kind``). Two places find them:

1. **The start-up scan** (:func:`scan_dataset`, from ``mmft.workflow.load_datasets``, before the model loads): every
   in-memory record's structure (validated as it was loaded) and every image's header and, for PNG and JPEG, its end
   marker (``IEND`` / ``EOI``, a few bytes at the end of the file: ``mmft.data.image_headers.check_image_file``).
   Nothing is decoded, and PNG and JPEG headers are read directly rather than through PIL: 10,000 images (224x300, page
   cache) scan in 2.2 s against 3.2 s through ``PIL.Image.open`` on the 2-core CI machine, most of it the path checks
   (resolving symlinks and ``..`` against the image root, ~160 us an image there), which the loader makes again. It
   runs on a thread pool (which helps on network storage, where reads wait; on a local disk the GIL bounds it) and
   under several processes each process scans an equal share.
2. **The data loader** (``VLMCollator`` with ``on_bad_record``): a record whose image passed the scan but fails to
   decode (corrupt pixel data, a file changed or removed after the scan, a streamed dataset, which has no scan).

``--on_bad_record error`` stops the run: before the first step, naming every record the scan found, or at the
first one the loader meets. ``--on_bad_record drop`` (the default) leaves them out, logs each with its id and
reason, and counts them by reason (``train_bad_records*`` in ``train_results.json``, and the model card), until
more than ``--max_bad_fraction`` of the records are bad: then the run stops with a report (:class:`BadRecordError`).
The fraction is judged separately for the scan (bad / records scanned) and for the loader (bad / samples seen),
and never over fewer than ``MIN_SAMPLES_FOR_FRACTION`` samples, so one bad sample in the first batch does not stop
a run at the default 1%.

Counts made in DataLoader workers reach the trainer inside the batch (``BAD_RECORDS_KEY``, like the over-length
count), are added up per process, and summed across processes (an all-reduce per optimizer step, so every process
takes the same decision to stop, and once more for the final counts).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import UsageError

logger = logging.getLogger(__name__)

BAD_RECORD_POLICIES = ("drop", "error")
BAD_RECORDS_KEY = "mmft_bad_records"  # popped by VLMTrainer before the forward pass: {"seen": n, "bad": [...]}
INVALID_RECORD = "invalid_record"
# Every reason a record is left out, in report order (ImageLoadError kinds, then the structural one).
REASONS = ("missing_image", "image_outside_root", "image_too_large", "truncated_image", "unreadable_image",
           INVALID_RECORD)
REASON_TEXT = {
    "missing_image": "image file missing",
    "image_outside_root": "image path outside the image root",
    "image_too_large": "image over --max_image_pixels",
    "truncated_image": "image file truncated (no PNG IEND / JPEG EOI end marker)",
    "unreadable_image": "image unreadable (corrupt, truncated pixel data, or not an image)",
    INVALID_RECORD: "invalid record structure",
}
# At the default 1%, one bad sample is within the allowance until 200 samples are seen: a fraction measured on a
# handful of samples says nothing about the data.
MIN_SAMPLES_FOR_FRACTION = 100
MAX_REPORTED = 50  # records named in a stop report (all are counted)
MAX_KEPT_PER_PROCESS = 200  # bad records kept with their messages per process (all are counted)
SCAN_THREADS = 8  # header reads wait on storage more than on the CPU; more threads help little on local disks


class BadRecordError(UsageError):
    """Training stopped because of bad records (``--on_bad_record error``, or more than ``--max_bad_fraction``);
    the message is the report: each record's id, what is wrong with it (the file) and what to do."""


@dataclass
class BadRecord:
    record_id: str
    reason: str  # one of REASONS
    message: str  # names the record, the file and what is wrong (the ImageLoadError / RecordError message)
    where: str = "data loader"  # or "start-up scan"

    def line(self) -> str:
        return f"- [{self.reason}] {self.message}"


def check_policy(on_bad_record: str, max_bad_fraction: float) -> None:
    if on_bad_record not in BAD_RECORD_POLICIES:
        raise UsageError(f"--on_bad_record must be one of {', '.join(BAD_RECORD_POLICIES)}, got {on_bad_record!r}.")
    if not 0 <= max_bad_fraction <= 1:
        raise UsageError(f"--max_bad_fraction must be between 0 and 1 (a share of the records), got "
                         f"{max_bad_fraction!r}.")


def too_many(bad: int, seen: int, max_bad_fraction: float) -> bool:
    """More than ``max_bad_fraction`` of ``seen`` samples bad, the share taken over at least
    ``MIN_SAMPLES_FOR_FRACTION`` samples (``max_bad_fraction=0``: any bad sample is too many)."""
    return bad > max_bad_fraction * max(seen, MIN_SAMPLES_FOR_FRACTION)


def count_by_reason(bad: Iterable[BadRecord]) -> Counter:
    return Counter(record.reason for record in bad)


def describe_counts(counts: Counter) -> str:
    return ", ".join(f"{counts[reason]} {reason}" for reason in REASONS if counts.get(reason))


def report(bad: Sequence[BadRecord], total: int, headline: str, advice: str) -> str:
    """The stop report: the headline, the counts by reason, every bad record (up to MAX_REPORTED), what to do."""
    counts = count_by_reason(bad)
    lines = [f"{headline} ({describe_counts(counts)}):"]
    lines += [record.line() for record in bad[:MAX_REPORTED]]
    if total > len(bad[:MAX_REPORTED]):
        lines.append(f"... and {total - len(bad[:MAX_REPORTED])} more (`mmft data check` lists them all).")
    lines.append(advice)
    return "\n".join(lines)


# ---- the start-up scan ---------------------------------------------------------------------------------------
@dataclass
class ScanResult:
    """What the start-up scan found in one dataset (kept on the dataset as ``bad_record_scan``)."""

    scanned: int
    bad: list[BadRecord] = field(default_factory=list)


def _image_problem(ref, image_root, *, allow_outside_root: bool, allow_remote: bool,
                   max_image_pixels: int | None) -> tuple[str, str] | None:
    """``(reason, message)`` for an image the loader would refuse or fail on, by header and end marker; else None."""
    from .image_errors import ImageLoadError
    from .image_headers import check_image_file
    from .image_refs import _URL_SCHEME

    if isinstance(ref, str) and _URL_SCHEME.match(ref) and allow_remote:
        return None  # never fetched at start-up: the loader fetches it (and drops it if it fails)
    try:
        width, height = check_image_file(ref, root=image_root, allow_outside_root=allow_outside_root)
    except ImageLoadError as error:
        return error.kind, str(error)
    if max_image_pixels is not None and width * height > max_image_pixels:
        shown = repr(ref) if isinstance(ref, str) else f"<{type(ref).__name__}>"
        return "image_too_large", (
            f"image {shown} is {width}x{height} = {width * height:,} pixels, over the decompression-bomb cap of "
            f"{max_image_pixels:,} (--max_image_pixels). Downscale it, or raise the cap if it is legitimate.")
    return None


def scan_records(records: Sequence[dict], image_root, *, allow_outside_root: bool = False,
                 allow_remote: bool = False, max_image_pixels: int | None = None,
                 threads: int = SCAN_THREADS) -> list[tuple[int, BadRecord]]:
    """``(position, BadRecord)`` for every record of ``records`` with an image the loader would refuse or fail on.

    An image path used by several records (VQA sets ask several questions per image) is read once."""
    cache: dict = {}

    def check(ref):
        key = ref if isinstance(ref, str) else None
        if key is not None and key in cache:
            return cache[key]
        found = _image_problem(ref, image_root, allow_outside_root=allow_outside_root, allow_remote=allow_remote,
                               max_image_pixels=max_image_pixels)
        if key is not None:
            cache[key] = found
        return found

    def check_record(item):
        position, record = item
        for ref in record.get("images") or ():
            found = check(ref)
            if found is not None:
                reason, message = found
                return position, BadRecord(str(record["id"]), reason, f"record {record['id']!r}: {message}",
                                           where="start-up scan")
        return None

    with_images = [(i, r) for i, r in enumerate(records) if r.get("images")]
    if not with_images:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(with_images)))) as pool:
        chunk = max(1, len(with_images) // (threads * 8))
        return [found for found in pool.map(check_record, with_images, chunksize=chunk) if found is not None]


def scan_dataset(dataset, data_args, *, what: str = "training", process_index: int = 0, num_processes: int = 1,
                 gather: Callable | None = None) -> ScanResult | None:
    """Scan an in-memory record dataset (``mmft.data.record_datasets.RecordDataset`` built from a file or a list) for
    bad records: those its loading set aside as invalid, and those whose images fail :func:`scan_records`.

    Under ``drop`` they are taken out of ``dataset`` (and logged); too many of them, or any under ``error``, raise
    :class:`BadRecordError` naming them. Streamed datasets and rows of a ``datasets`` object (converted on access:
    a scan would read every embedded image) are not scanned (``None``): the loader handles their bad records.
    Under several processes each scans ``1/num_processes`` of the records and ``gather`` (accelerate's
    ``gather_object``) collects what all found.
    """
    records = getattr(dataset, "_canonical", None)
    invalid = list(getattr(dataset, "invalid", None) or ())
    if records is None and not invalid:
        return None
    records = records or []
    share = range(process_index, len(records), num_processes)
    found = scan_records([records[i] for i in share], getattr(dataset, "image_root", None),
                         allow_outside_root=data_args.allow_images_outside_root,
                         allow_remote=data_args.allow_remote_images, max_image_pixels=data_args.max_image_pixels)
    found = [(share[position], bad) for position, bad in found]
    if gather is not None and num_processes > 1:
        found = sorted(gather(found), key=lambda item: item[0])
    structural = [BadRecord(str(error.record_id), INVALID_RECORD, str(error), where="start-up scan")
                  for _, error in invalid]
    bad = structural + [record for _, record in found]
    total = len(records) + len(invalid)
    result = ScanResult(scanned=total, bad=bad)
    if not bad:
        return result
    source = getattr(dataset, "source", "the dataset")
    if data_args.on_bad_record == "error":
        raise BadRecordError(report(
            bad, len(bad), f"{len(bad)} of {total} {what} records of {source} are bad; training stopped before the "
            "first step (--on_bad_record error)",
            "Fix or remove these records (`mmft data check` reports the same problems), or pass --on_bad_record "
            "drop to train without them."))
    if too_many(len(bad), total, data_args.max_bad_fraction):
        raise BadRecordError(report(
            bad, len(bad), f"{len(bad)} of {total} {what} records of {source} ({100 * len(bad) / total:.1f}%) are "
            f"bad, more than --max_bad_fraction={data_args.max_bad_fraction} allows; training stopped before the "
            "first step",
            "A share this large is usually one cause (a wrong --image_root, images not downloaded, a column mapped "
            "wrongly): fix that, or raise --max_bad_fraction to train without these records."))
    if found:
        dataset.drop_records({position for position, _ in found})
    for record in bad[:MAX_REPORTED]:
        logger.warning("Leaving out %s record %r (%s): %s", what, record.record_id, record.reason, record.message)
    logger.warning("Left out %d of %d %s records of %s at start-up (%s; --on_bad_record drop).", len(bad), total,
                   what, source, describe_counts(count_by_reason(bad)))
    return result


# ---- counting in training ---------------------------------------------------------------------------------------
class BadRecordLedger:
    """The bad records of one training run on this process: the start-up scan's, and the data loader's."""

    def __init__(self, on_bad_record: str = "drop", max_bad_fraction: float = 0.01):
        check_policy(on_bad_record, max_bad_fraction)
        self.on_bad_record = on_bad_record
        self.max_bad_fraction = max_bad_fraction
        self.startup: ScanResult | None = None
        self.eval_startup: ScanResult | None = None
        self.seen = 0  # training samples the loader was given (this process)
        self.bad = Counter()  # by reason (this process, loader)
        self.kept: list[BadRecord] = []  # the first MAX_KEPT_PER_PROCESS, with their messages

    @property
    def num_bad(self) -> int:
        return sum(self.bad.values())

    def add_batch(self, entry: dict) -> None:
        """Count one batch's ``BAD_RECORDS_KEY`` entry (from the collator)."""
        self.seen += int(entry.get("seen", 0))
        for record_id, reason, message in entry.get("bad", ()):
            self.bad[reason] += 1
            if len(self.kept) < MAX_KEPT_PER_PROCESS:
                self.kept.append(BadRecord(record_id, reason, message))

    def loader_report(self, bad: int, seen: int, kept: Sequence[BadRecord]) -> str:
        return report(
            kept, bad, f"{bad} of the {seen} training samples the data loader has seen are bad, more than "
            f"--max_bad_fraction={self.max_bad_fraction} allows; training stopped",
            "These records passed the start-up scan (headers and end markers) but failed when decoded: fix or "
            "remove them (`mmft data check --decode_images` finds them all), or raise --max_bad_fraction.")

    def metrics(self, loader_counts: Counter, prefix: str = "train") -> dict[str, int]:
        """Flat counts for ``train_results.json``: the total, the start-up scan's share, and one per reason."""
        startup = count_by_reason(self.startup.bad) if self.startup is not None else Counter()
        total = startup + loader_counts
        metrics = {f"{prefix}_bad_records": sum(total.values()),
                   f"{prefix}_bad_records_at_startup": sum(startup.values())}
        for reason in REASONS:
            if total.get(reason):
                metrics[f"{prefix}_bad_records_{reason}"] = total[reason]
        return metrics


def summary_for_card(ledger: BadRecordLedger, loader_counts: Counter, loader_kept: Sequence[BadRecord],
                     seen: int) -> dict:
    """What the model card says about the records left out (ids only: messages hold local paths)."""
    startup = ledger.startup.bad if ledger.startup is not None else []
    by_reason: dict[str, list[str]] = {}
    for record in [*startup, *loader_kept]:
        by_reason.setdefault(record.reason, []).append(record.record_id)
    counts = count_by_reason(startup) + loader_counts
    return {
        "policy": ledger.on_bad_record,
        "scanned": ledger.startup.scanned if ledger.startup is not None else None,
        "at_startup": len(startup),
        "seen": seen,
        "counts": {reason: counts[reason] for reason in REASONS if counts.get(reason)},
        "ids": by_reason,
        "eval_at_startup": len(ledger.eval_startup.bad) if ledger.eval_startup is not None else 0,
    }

