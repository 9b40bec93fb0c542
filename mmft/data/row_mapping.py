"""The row transform of a source: the rows a source reads mapped into records by the data card's columns or by the
layout detected from the column names (``mmft.data.columns``, ``mmft.data.column_detection``); None when the rows are
records already."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from .card_errors import CardError
from .card_schema import DataCard
from .column_detection import detect_mapping
from .record_datasets import Transform
from .source_errors import SourceError

__all__ = ["DetectOnFirstRow"]

# Logged under mmft.data.sources, the name all of the sources' messages share (one logger to configure).
logger = logging.getLogger("mmft.data.sources")


def _mapping(column_names, *, features=None, card: DataCard | None = None, columns=None, prompt_template=None,
             source: str) -> Transform | None:
    """The row transform for a source: the card's mapping, or the detected one; None when rows are records already."""
    if card is not None:
        mapping = card.mapping(columns, prompt_template)
    else:
        try:
            mapping = detect_mapping(column_names, features=features, overrides=columns,
                                     prompt_template=prompt_template, source=source)
        except CardError as error:
            raise SourceError(str(error)) from None
    if mapping.is_passthrough():
        if prompt_template:
            logger.warning("%s holds conversations; --prompt_template is not used for it.", source)
        return None
    mapping.source = source
    logger.info("%s: %s rows mapped with columns %s", source, mapping.format, mapping.columns)
    return mapping.to_record


class DetectOnFirstRow:
    """For streams whose columns are unknown until read: detect the mapping from the first row's keys.

    Keyword arguments are ``_mapping``'s (``source``, ``card``, ``columns``, ``prompt_template``). When detection
    fails (SourceError), nothing is resolved, so the next row is tried again (``mmft data check`` reports the row and
    goes on; training stops at the error).
    """

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.transform: Transform | None = None
        self.resolved = False

    def __call__(self, row, index: int):
        if not self.resolved:
            keys = list(row) if isinstance(row, Mapping) else []
            self.transform = _mapping(keys, **self.kwargs)
            self.resolved = True
        return self.transform(row, index) if self.transform is not None else row


def _relative_images(transform: Transform | None, root: str) -> Transform:
    """Image-folder rows carry absolute paths under the folder; make them relative to it (the image root)."""
    root_path = Path(root)

    def relativise(ref):
        if isinstance(ref, Mapping) and not ref.get("bytes") and isinstance(ref.get("path"), str):
            path = Path(ref["path"])
            if path.is_absolute():
                resolved = path.resolve()
                if resolved.is_relative_to(root_path):
                    return {"bytes": None, "path": str(resolved.relative_to(root_path))}
        return ref

    def apply(row, index: int):
        record = transform(row, index) if transform is not None else row
        if not isinstance(record, Mapping):
            return record
        record = dict(record)
        for key in ("images", "image"):
            if isinstance(record.get(key), list):
                record[key] = [relativise(ref) for ref in record[key]]
            elif record.get(key) is not None:
                record[key] = relativise(record[key])
        return record

    return apply


def _row_keys(rows: list) -> list[str]:
    keys: dict[str, None] = {}
    shapes = set()  # rows of a file mostly share one key order: each distinct one is merged once
    for row in rows:
        if type(row) is dict or isinstance(row, Mapping):
            shape = tuple(row)
            if shape not in shapes:
                shapes.add(shape)
                keys.update(dict.fromkeys(shape))
    return list(keys)
