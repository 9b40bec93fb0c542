"""Where records come from: local JSON/JSONL files, `datasets` objects, Hub ids, and the built-in demo data.

Every source becomes a torch dataset of *canonical records* (see ``mmft.records``) that the collator turns
into batches. Two promises hold for all of them:

- **Nothing decodes an image here.** Image refs stay paths, bytes or ``{"bytes", "path"}`` dicts until the
  collator needs the pixels (``datasets`` Image columns are read with ``decode=False``).
- **Bad records surface before training.** Map-style sources validate every record's text structure up
  front and report all problems at once, naming the record ids and the file; streaming sources validate
  each record as it arrives, with the same message.

Each record carries ``image_root``: relative image paths resolve against it (the folder of a local file,
or ``--image_root`` when given), and the image loader refuses paths that escape it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .records import RecordError, to_canonical, validate_all

logger = logging.getLogger(__name__)

LOCAL_SUFFIXES = (".json", ".jsonl")
BUILTIN_DATASETS = ("shapes",)


class SourceError(ValueError):
    """A dataset that cannot be read at all (missing file, malformed JSON, unknown name)."""


class RecordDataset(torch.utils.data.Dataset):
    """A map-style dataset of canonical records over any indexable collection of raw records.

    Every record is validated at construction. Records read from files (a Python list: text and image paths)
    are kept in canonical form, so each access is a dict copy; rows of a ``datasets.Dataset`` are converted on
    access instead, because keeping them would hold every embedded image's bytes in memory.
    """

    def __init__(self, rows: Sequence[Mapping] | Any, *, source: str, image_root: str | None = None,
                 validate: bool = True):
        self.rows = rows
        self.source = source
        self.image_root = image_root
        self._canonical = None
        if validate:
            records = validate_all(iter(rows), source=source)
            if isinstance(rows, list):
                self._canonical = records

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        if self._canonical is not None:
            record = dict(self._canonical[index])  # a copy: callers may set keys without touching the cache
        else:
            record = to_canonical(self.rows[index], index=index, source=self.source)
        record["image_root"] = self.image_root
        return record

    def __repr__(self) -> str:
        return f"RecordDataset(source={self.source!r}, records={len(self)}, image_root={self.image_root!r})"


class RecordIterableDataset(torch.utils.data.IterableDataset):
    """A streaming dataset of canonical records; each record is validated as it arrives.

    Iterating a ``datasets.IterableDataset`` inside DataLoader workers shards it across workers (``datasets``
    does this itself), so no record is seen twice per pass.
    """

    def __init__(self, rows, *, source: str, image_root: str | None = None):
        self.rows = rows
        self.source = source
        self.image_root = image_root

    def __iter__(self) -> Iterator[dict]:
        for index, raw in enumerate(self.rows):
            record = to_canonical(raw, index=index, source=self.source)
            record["image_root"] = self.image_root
            yield record

    def set_epoch(self, epoch: int):  # Trainer calls this on iterable datasets to reshuffle per epoch
        if hasattr(self.rows, "set_epoch"):
            self.rows.set_epoch(epoch)


# ---- local files -----------------------------------------------------------------------------------
def read_json_records(path: str | os.PathLike) -> list[dict]:
    """Read a ``.json`` (a list of records, or ``{"data": [...]}``) or ``.jsonl`` (one record per line) file."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"Dataset file {str(path)!r} does not exist.")
    if path.suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise SourceError(
                        f"{path}:{line_number}: not valid JSON ({error.msg} at column {error.colno}). "
                        "Each line of a .jsonl file must be one complete JSON record."
                    ) from None
        return rows
    try:
        with open(path, encoding="utf-8") as f:
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


# ---- datasets objects ----------------------------------------------------------------------------
def _undecoded(dataset):
    """The same dataset with every Image feature set to ``decode=False`` (refs, not pixels)."""
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        # Unknown features (e.g. ``IterableDataset.from_generator``): nothing is decoded, and decode() would raise.
        return dataset if dataset.features is None else dataset.decode(False)

    def undecode(feature):
        if isinstance(feature, datasets.Image):
            return datasets.Image(decode=False)
        if isinstance(feature, dict):
            return {key: undecode(value) for key, value in feature.items()}
        if isinstance(feature, datasets.List):
            return datasets.List(undecode(feature.feature), length=feature.length)
        if isinstance(feature, datasets.LargeList):
            return datasets.LargeList(undecode(feature.feature))
        return feature

    features = dataset.features
    if features is None:
        return dataset
    new = datasets.Features({key: undecode(value) for key, value in features.items()})
    return dataset.cast(new) if new != features else dataset


def from_datasets(dataset, *, source: str, image_root: str | None = None, split: str | None = None,
                  max_samples: int | None = None):
    """Wrap a ``datasets.Dataset`` / ``IterableDataset`` / ``DatasetDict`` (the notebook path)."""
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in dataset:
            raise SourceError(f"{source}: no split {split!r}; available splits: {', '.join(dataset)}.")
        dataset = dataset[split]
    dataset = _undecoded(dataset)
    if isinstance(dataset, datasets.IterableDataset):
        if max_samples is not None:
            dataset = dataset.take(max_samples)
        return RecordIterableDataset(dataset, source=source, image_root=image_root)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    return RecordDataset(dataset, source=source, image_root=image_root)


# ---- the one entry point -------------------------------------------------------------------------
def load_records(
    name_or_path,
    *,
    split: str = "train",
    config: str | None = None,
    image_root: str | os.PathLike | None = None,
    max_samples: int | None = None,
    streaming: bool = False,
):
    """Load records from a built-in name, a local file or folder, a ``datasets`` object, or a Hub id.

    Args:
        name_or_path: ``"shapes"`` (the embedded demo), a list of records, a ``.json``/``.jsonl`` file, a folder
            written by ``Dataset.save_to_disk``, any other local folder or Hub id ``datasets.load_dataset``
            understands, or an in-memory ``datasets`` object.
        split: which split to read (for files, ignored: a file is one split).
        config: the dataset configuration (``load_dataset``'s second argument) for Hub datasets.
        image_root: folder that relative image paths resolve against. Defaults to the file's folder for local
            files and to the current directory for Hub datasets (whose images are usually embedded bytes).
        max_samples: keep only the first N records (quick experiments, tests).
        streaming: stream a Hub dataset instead of downloading it (an ``IterableDataset``; use ``max_steps``).
    """
    root = str(Path(image_root).resolve()) if image_root is not None else None
    if isinstance(name_or_path, list):  # records built in Python (the notebook path)
        return RecordDataset(name_or_path[:max_samples], source="records", image_root=root)
    if not isinstance(name_or_path, (str, os.PathLike)):
        return from_datasets(name_or_path, source=type(name_or_path).__name__, image_root=root, split=split,
                             max_samples=max_samples)
    name = str(name_or_path)
    if name in BUILTIN_DATASETS:
        from .shapes import shapes_split_path

        path = shapes_split_path(split)
        return _from_local_file(path, image_root=root, max_samples=max_samples)
    path = Path(name).expanduser()
    if path.suffix in LOCAL_SUFFIXES:
        return _from_local_file(path, image_root=root, max_samples=max_samples)
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        import datasets

        dataset = datasets.load_from_disk(str(path))
        return from_datasets(dataset, source=str(path), image_root=root or str(path.resolve()), split=split,
                             max_samples=max_samples)
    return _from_load_dataset(name, config=config, split=split, image_root=root, max_samples=max_samples,
                              streaming=streaming)


def _from_local_file(path: Path, *, image_root: str | None, max_samples: int | None) -> RecordDataset:
    rows = read_json_records(path)
    if max_samples is not None:
        rows = rows[:max_samples]
    root = image_root or str(path.resolve().parent)
    logger.info("Loaded %d records from %s (images relative to %s)", len(rows), path, root)
    return RecordDataset(rows, source=path.name, image_root=root)


def _from_load_dataset(name: str, *, config, split, image_root, max_samples, streaming):
    """The Hub path (also serves local folders of Parquet/JSON/CSV files and image folders)."""
    import datasets

    try:
        dataset = datasets.load_dataset(name, config, split=split, streaming=streaming)
    except FileNotFoundError as error:
        raise SourceError(
            f"Could not find dataset {name!r}: it is not a local .json/.jsonl file, a saved dataset folder, or a "
            f"dataset on the Hugging Face Hub ({error}). Check the name, or the network if it is a Hub id."
        ) from error
    except ValueError as error:
        if "split" in str(error).lower():
            raise SourceError(f"Dataset {name!r} has no split {split!r}: {error}") from error
        raise
    return from_datasets(dataset, source=name, image_root=image_root, split=split, max_samples=max_samples)


__all__ = [
    "RecordDataset",
    "RecordIterableDataset",
    "RecordError",
    "SourceError",
    "load_records",
    "from_datasets",
    "read_json_records",
]
