"""Per-record token lengths computed cheaply up front, and a sampler that batches records of similar length.

Padding is wasted compute: a batch costs as much as its longest sample times its size. VLM datasets mix one-word
answers with paragraphs and one small image with three large ones, so random batches are mostly padding (see
``benchmarks/padding.py``). Grouping records of similar length removes most of it, but needs each record's length
*before* training, without running the collator (which decodes every image) over the whole dataset.

:func:`record_lengths` gets the exact length the collator will produce (tokens after image expansion) from

- the text: the conversation rendered with the processor's chat template, exactly as the collator renders it, and
  tokenised (in batches: the fast tokenizer is quick; the chat template render dominates);
- the images: each image's size from its *header* (``mmft.data.image_headers.image_size``: no pixel is decoded),
  capped by ``max_pixels`` as the collator caps it, and turned into a token count by the processor's own rules
  (:class:`ImageTokenCounter`).

:class:`LengthGroupedSampler` then groups by length while keeping randomness (the "megabatch" recipe): shuffle,
cut into chunks of ~50 global batches, sort each chunk by length, cut it into global batches, shuffle the order of
the global batches. It works with several processes: it orders indices globally (every process builds the same
order from the same seed and epoch); Accelerate's batch-sampler shard then hands consecutive batches to the
processes in turn, so each process gets a disjoint set of batches, the same number of them, and the processes of
one step get batches of similar length (no process waits on another's long batch).

:func:`plan_length_grouping` decides, from the lengths alone, how tightly to group: not at all on near-uniform
data (grouping there buys little and correlates batches with content), else the widest length bucket whose batches
reach the real-token target (``--length_grouping_target``, 0.95).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .image_headers import image_size
from .imagetokens import ImageTokenCounter, counter_for

logger = logging.getLogger(__name__)

__all__ = [
    "ImageTokenCounter",
    "LengthGroupedSampler",
    "estimated_real_token_fraction",
    "length_sorted_order",
    "lengths_cached",
    "plan_length_grouping",
    "record_lengths",
    "sampled_lengths",
]

PROGRESS_BAR_MIN_RECORDS = 2000  # below this, computing lengths takes well under a second: no bar
TOKENIZE_CHUNK = 512


def _cache_key(collator) -> tuple:
    processor = collator.processor
    name = getattr(getattr(processor, "tokenizer", processor), "name_or_path", None) or id(processor)
    return (type(processor).__name__, name, collator.max_pixels)


def record_lengths(dataset, collator, *, progress: bool = True, process_index: int = 0, num_processes: int = 1,
                   gather=None, disk_cache: bool = True) -> list[int]:
    """The token length (after image expansion, before any ``max_length`` policy) of each record of ``dataset``.

    Equal to what ``collator`` (a training ``VLMCollator``) produces for each record: the same chat-template render,
    the same tokenisation, image tokens by the processor's rules from each image's header size. No pixel is decoded.
    A record whose image cannot be read (or is remote) counts its text alone; the collator reports a bad image when
    it meets the record.

    Computed once per dataset and collator settings, then kept on the dataset (``_mmft_lengths``), so each epoch and
    each ``train()`` reuses them. Records held in memory (local files, lists) are also cached on disk under
    ``$MMFT_CACHE/lengths``, keyed by a hash of the records, the processor and ``max_pixels``, so the next run over
    the same data starts without measuring (an image replaced by one of another size under the same name is not
    noticed: clear the folder). Under several processes (``num_processes > 1``), each measures every
    ``num_processes``-th record from ``process_index`` and ``gather`` (``accelerate.utils.gather_object``) joins the
    shares, so the work does not grow with the number of processes.
    """
    key = _cache_key(collator)
    cache = getattr(dataset, "_mmft_lengths", None)
    if isinstance(cache, dict) and key in cache:
        return list(cache[key])
    path = _disk_cache_path(dataset, collator) if disk_cache else None
    lengths = _read_disk_cache(path, len(dataset))
    if lengths is None:
        positions = range(len(dataset))
        if num_processes > 1:
            positions = range(process_index, len(dataset), num_processes)
        lengths = _measure(dataset, collator, positions, progress)
        if num_processes > 1:
            pairs = sorted(gather(list(zip(positions, lengths))))
            lengths = [n for _, n in pairs]
            if [i for i, _ in pairs] != list(range(len(dataset))):
                raise RuntimeError("record_lengths: the gathered shares do not cover the dataset exactly once.")
        if path is not None and process_index == 0:
            _write_disk_cache(path, lengths)
    if not isinstance(cache, dict):
        cache = {}
        try:
            dataset._mmft_lengths = cache
        except AttributeError:  # a dataset type that takes no attributes: no cache
            pass
    cache[key] = list(lengths)
    return lengths


# ``--train_sampling_strategy auto`` on a larger dataset first decides from this many records' lengths; it
# measures them all only when that sample says to group (uniform data then starts as fast as in random order).
AUTO_SAMPLE_RECORDS = 4096


def lengths_cached(dataset, collator) -> bool:
    """Whether ``record_lengths`` would answer from a cache (on the dataset or on disk) without measuring."""
    cache = getattr(dataset, "_mmft_lengths", None)
    if isinstance(cache, dict) and _cache_key(collator) in cache:
        return True
    path = _disk_cache_path(dataset, collator)
    return path is not None and path.is_file()


def sampled_lengths(dataset, collator, size: int = AUTO_SAMPLE_RECORDS, seed: int = 0) -> list[int]:
    """The lengths of ``size`` records drawn at random (the same draw on every process: seeded)."""
    positions = np.random.default_rng([seed, 2]).choice(len(dataset), size=min(size, len(dataset)), replace=False)
    return _measure(dataset, collator, sorted(positions.tolist()), progress=False)


LENGTHS_CACHE_VERSION = 1


def _disk_cache_path(dataset, collator):
    """``$MMFT_CACHE/lengths/<hash>.json`` for in-memory record lists; None for lazy datasets (hashing them would
    mean reading them all)."""
    import hashlib
    import json

    from ..testing import cache_dir

    records = getattr(dataset, "_canonical", None)
    if records is None:
        return None
    if any(not isinstance(ref, str) for record in records for ref in record["images"]):
        # Only paths hash to the same key in every process: str() of an in-memory image holds its memory address
        # (a new key, and cache file, each run; a stale hit when an address is reused). Such datasets keep the
        # in-memory cache only.
        return None
    processor = collator.processor
    tokenizer = collator.tokenizer
    digest = hashlib.sha1()
    image_processor = getattr(processor, "image_processor", None)
    header = [LENGTHS_CACHE_VERSION, type(processor).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer),
              getattr(processor, "chat_template", None), collator.max_pixels, getattr(dataset, "image_root", None),
              image_processor.to_dict() if hasattr(image_processor, "to_dict") else None]
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for record in records:
        digest.update(json.dumps([record["messages"], record["images"]], default=str).encode())
    return cache_dir() / "lengths" / f"{digest.hexdigest()}.json"


def _read_disk_cache(path, size: int) -> list[int] | None:
    import json

    if path is None or not path.is_file():
        return None
    try:
        lengths = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return lengths if isinstance(lengths, list) and len(lengths) == size else None


def _write_disk_cache(path, lengths: list[int]) -> None:
    import json
    import os
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(lengths, f)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError as error:  # a read-only cache folder must not stop training
        logger.info("Could not cache record lengths in %s: %s", path, error)


def _measure(dataset, collator, positions, progress: bool) -> list[int]:
    from ..train.labels import render

    counter = counter_for(collator)
    tokenizer = collator.tokenizer
    positions = list(positions)
    lengths: list[int] = []
    sizes: dict = {}  # (root, path) -> size: datasets often reuse an image across records (several questions)
    show = progress and len(positions) >= PROGRESS_BAR_MIN_RECORDS
    bar = tqdm(total=len(positions), desc="Measuring record lengths", disable=not show, leave=False)
    for start in range(0, len(positions), TOKENIZE_CHUNK):
        texts, image_tokens = [], []
        for position in positions[start:start + TOKENIZE_CHUNK]:
            record = dataset[position]
            texts.append(render(collator.processor, record["messages"]))
            extra = 0
            for ref in record["images"]:
                size = _image_size(ref, record.get("image_root"), collator.allow_images_outside_root, sizes)
                if size is not None:
                    extra += counter(*size)
            image_tokens.append(extra)
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        lengths.extend(len(ids) + extra for ids, extra in zip(encoded, image_tokens))
        bar.update(len(texts))
    bar.close()
    return lengths


def _image_size(ref, root, allow_outside_root: bool, sizes: dict) -> tuple[int, int] | None:
    key = (root, ref) if isinstance(ref, str) else None
    if key is not None and key in sizes:
        return sizes[key]
    try:
        size = image_size(ref, root=root, allow_outside_root=allow_outside_root)
    except Exception:  # noqa: BLE001 - remote or broken images: the collator reports them
        size = None
    if key is not None:
        sizes[key] = size
    return size


# Bucket widths tried by ``plan_length_grouping``, most random first (exact sorting last).
GROUPING_TOLERANCES = (0.2, 0.1, 0.05, 0.02, 0.0)


# ``--train_sampling_strategy auto`` keeps random order below this many global batches of records: a grouped order
# over a few batches fixes which records share a batch for every epoch (one sorted megabatch), and the padding saved
# on so small a dataset is seconds.
MIN_GROUPING_BATCHES = 8


@dataclass(frozen=True)
class GroupingPlan:
    """What length grouping does on this data (chosen by ``plan_length_grouping``).

    Attributes:
        tolerance: bucket width for ``LengthGroupedSampler``; ``None``: keep random order.
        random_fraction: estimated real-token fraction of batches in random order.
        fraction: estimated real-token fraction of the chosen order.
        exact_fraction: the most grouping can reach (exact-length sorting).
        reason: why random order was kept (``"near-uniform lengths"``, ``"too few records"``); empty when grouped.
        measured: how many records' lengths the decision was made from (a sample of a large dataset when random
            order was kept on it).
    """

    tolerance: float | None
    random_fraction: float
    fraction: float
    exact_fraction: float
    reason: str = ""
    measured: int | None = None

    @property
    def decision(self) -> str:
        """``random``, ``exact`` or ``buckets_<width>`` (``buckets_0.05``): ``train_length_grouping``."""
        if self.tolerance is None:
            return "random"
        return "exact" if self.tolerance == 0 else f"buckets_{self.tolerance:g}"

    def describe(self) -> str:
        sample = f" (from a sample of {self.measured} records)" if self.measured else ""
        if self.tolerance is None and self.reason == "too few records":
            return (f"kept random order: too few records to group (under {MIN_GROUPING_BATCHES} steps); batches "
                    f"{self.random_fraction:.3f} real tokens, grouping could reach {self.exact_fraction:.3f}")
        if self.tolerance is None:
            return (f"kept random order: its batches are already {self.random_fraction:.3f} real tokens and grouping "
                    f"could reach {self.exact_fraction:.3f}{sample}, too little to pay for batches that correlate "
                    f"with what fixes a record's length (see --length_grouping_min_gain)")
        how = "exact lengths" if self.tolerance == 0 else f"{self.tolerance:.0%} length buckets"
        return (f"{how}: batches {self.fraction:.3f} real tokens vs {self.random_fraction:.3f} in random order "
                f"(about {self.fraction / self.random_fraction:.2f}x fewer tokens per epoch)")


def plan_length_grouping(lengths: Sequence[int], batch_size: int, *, num_replicas: int = 1, seed: int = 0,
                         target: float = 0.95, min_gain: float = 1.1, epochs: int = 2,
                         min_batches: int = 0) -> GroupingPlan:
    """Choose how to group: the most random order that still removes the padding worth removing.

    Grouping has a price besides speed: a batch of records of one length is often a batch of one *kind* of record
    (one question phrasing, one answer length), and such batches train worse (on the shapes data exact sorting left
    held-out accuracy at chance where random batches reached 0.63-0.74; benchmarks/RESULTS.md). So:

    0. with fewer than ``min_batches`` global batches of records (``--train_sampling_strategy auto`` passes
       ``MIN_GROUPING_BATCHES``), keep random order;
    1. if even exact sorting would make batches at most ``min_gain`` times denser than random order (near-uniform
       lengths: shapes is 0.948 random vs 0.999 sorted), keep random order;
    2. else use the widest bucket of ``GROUPING_TOLERANCES`` whose batches reach ``target`` real tokens, or exact
       sorting when none does (mixed data at batch 16: 10% buckets give 0.935, 5% give 0.951).

    Fractions are estimated from ``lengths`` over ``epochs`` sampler epochs (cheap: 100,000 records take well under
    a second per setting).
    """
    if not 0 < target <= 1:
        raise ValueError(f"The real-token target must be in (0, 1], got {target}.")
    if min_gain < 1:
        raise ValueError(f"The minimum gain must be at least 1, got {min_gain}.")
    lengths = np.asarray(lengths, dtype=np.int64)

    def grouped(tolerance: float) -> float:
        sampler = LengthGroupedSampler(lengths, batch_size, num_replicas=num_replicas, tolerance=tolerance, seed=seed)
        fractions = []
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            fractions.append(estimated_real_token_fraction(lengths, np.concatenate(sampler.global_batches()),
                                                           batch_size))
        return float(np.mean(fractions))

    rng = np.random.default_rng([seed, 1])
    random_fraction = float(np.mean([estimated_real_token_fraction(lengths, rng.permutation(len(lengths)), batch_size)
                                     for _ in range(epochs)]))
    exact = grouped(0.0)
    if len(lengths) < min_batches * batch_size * num_replicas:
        return GroupingPlan(None, random_fraction, random_fraction, exact, reason="too few records")
    if exact < min_gain * random_fraction:
        return GroupingPlan(None, random_fraction, random_fraction, exact, reason="near-uniform lengths")
    for tolerance in GROUPING_TOLERANCES[:-1]:
        fraction = grouped(tolerance)
        if fraction >= target:
            return GroupingPlan(tolerance, random_fraction, fraction, exact)
    return GroupingPlan(0.0, random_fraction, exact, exact)


def length_sorted_order(lengths: Sequence[int]) -> list[int]:
    """Indices longest first, ties in record order: evaluation batches of similar length (no training effect, so
    exact sorting costs nothing there); the longest batch runs first, so a memory problem shows at once."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable").tolist()


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Indices in an order where consecutive batches hold records of similar length, still random.

    Per epoch: shuffle all indices; cut them into megabatches of ``megabatch_batches`` global batches (a global
    batch is ``batch_size * num_replicas`` indices: what all processes take in one step); sort each megabatch by
    a *noisy* length key, longest first, and cut it into global batches; shuffle the order of the global batches, then
    move the one holding the longest record to the front (a memory problem shows at the first step, not hours in).
    At most one global batch is short (the dataset's remainder); it stays last, so every other batch boundary falls
    where the DataLoader cuts.

    Noisy keys, not exact lengths: each record's key is its log length plus fresh uniform noise of up to
    ``log(1 + tolerance)`` per epoch, so records within ``tolerance`` (10%) of each other come in random order.
    Sorting by exact length would put records whose *content* fixes their length together (the same question
    phrasing with answers of the same token count: a batch of "What colour...? red"), and such batches train badly:
    on the shapes data, exact sorting left held-out accuracy at chance where random batches reached 0.74
    (benchmarks/RESULTS.md). Fixed length buckets (the first version) did the same at every bucket edge that fell
    inside a cluster of near-equal lengths. The noise bounds the padding (about ``tolerance``) while keeping
    batches mixed (``tests/test_auto_grouping.py``).

    The order depends only on ``seed`` and the epoch (``set_epoch``, which Accelerate's data loader calls), so
    every process computes the same one; Accelerate then deals the batches to the processes in turn.

    Args:
        lengths: token length of each record (``record_lengths``).
        batch_size: the per-process batch size.
        num_replicas: number of processes (data-parallel world size).
        megabatch_batches: global batches per sorted chunk: larger groups more tightly, smaller is more random.
        tolerance: relative width of the sort-key noise, the "bucket" (0 sorts by exact length).
        seed: base seed; the epoch is added.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, num_replicas: int = 1, megabatch_batches: int = 50,
                 tolerance: float = 0.1, seed: int = 0):
        if batch_size < 1 or num_replicas < 1 or megabatch_batches < 1:
            raise ValueError("batch_size, num_replicas and megabatch_batches must be at least 1.")
        if tolerance < 0:
            raise ValueError("tolerance must be >= 0.")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.log_lengths = np.log(np.maximum(self.lengths, 1))
        self.tolerance = tolerance
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.megabatch_batches = megabatch_batches
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        """This epoch's global batches, in order (each ``batch_size * num_replicas`` indices but maybe the last)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.lengths)
        step = self.batch_size * self.num_replicas
        mega = step * self.megabatch_batches
        permutation = rng.permutation(n)
        # Sort keys: log length plus fresh noise of up to log(1 + tolerance) each epoch. Records within ``tolerance``
        # of each other land in random order, wherever their lengths sit; fixed bucket edges (the first version)
        # split a cluster of near-equal lengths at an edge, so the records on each side (often one question
        # phrasing each) were batched apart: 5.0 of 9 phrasings per shapes batch at 20% buckets vs 7.8 in random
        # order (tests/test_auto_grouping.py).
        keys = self.log_lengths + (rng.uniform(0, np.log1p(self.tolerance), n) if self.tolerance > 0 else 0)
        full, short = [], []
        for start in range(0, n, mega):
            chunk = permutation[start:start + mega]
            chunk = chunk[np.argsort(-keys[chunk], kind="stable")]  # stable: exact ties stay in random order
            for i in range(0, len(chunk), step):
                (full if len(chunk[i:i + step]) == step else short).append(chunk[i:i + step])
        full = [full[i] for i in rng.permutation(len(full))]
        if full:
            longest = max(range(len(full)), key=lambda i: self.lengths[full[i]].max())
            full[0], full[longest] = full[longest], full[0]
        return full + short

    def __iter__(self):
        batches = self.global_batches()
        if not batches:
            return iter(())
        return iter(np.concatenate(batches).tolist())


def estimated_real_token_fraction(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> float:
    """Real-token fraction of ``order`` cut into consecutive batches of ``batch_size`` (the DataLoader's cut)."""
    ordered = np.asarray(lengths, dtype=np.int64)[np.asarray(order, dtype=np.int64)]
    if not len(ordered):
        return 1.0
    full = len(ordered) // batch_size * batch_size
    padded = int(ordered[:full].reshape(-1, batch_size).max(axis=1).sum()) * batch_size
    if full < len(ordered):  # the short last batch
        padded += int(ordered[full:].max()) * (len(ordered) - full)
    return int(ordered.sum()) / padded
