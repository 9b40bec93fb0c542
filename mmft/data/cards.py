"""The data cards mmft knows: where the card files live, loading one, and looking a card up by name or Hub id.

A card is ``data_cards/<name>.md`` (its fields: ``mmft.data.card_schema``, ``data_cards/README.md``). Cards tell
training and ``mmft eval`` which metrics a dataset's task is scored with (:func:`default_metrics`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from ..metrics import DEFAULT_METRICS
from .card_errors import CardError
from .card_schema import DataCard, parse_card

__all__ = [
    "CARDS_DIR",
    "card_for_hub_id",
    "cards_dirs",
    "default_metrics",
    "find_card",
    "list_cards",
    "load_card",
    "metrics_for",
]

# Where the bundled cards live (the repository's data_cards/); MMFT_DATA_CARDS adds folders (os.pathsep-separated),
# searched first, so a team can keep its own cards without touching the package.
CARDS_DIR = Path(__file__).resolve().parents[2] / "data_cards"  # the repository's data_cards/


def load_card(path: str | os.PathLike) -> DataCard:
    """Parse the card file at ``path`` (cached until the file changes)."""
    path = Path(path)
    if not path.is_file():
        raise CardError(f"Data card {str(path)!r} does not exist.")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        _CACHE[key] = parse_card(path.read_text(encoding="utf-8"), path)
    return copy.deepcopy(_CACHE[key])  # callers may edit their card


_CACHE: dict[tuple, DataCard] = {}


def cards_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("MMFT_DATA_CARDS", "").split(os.pathsep) if p]
    return [*extra, CARDS_DIR]


def list_cards() -> list[DataCard]:
    """Every card found (``MMFT_DATA_CARDS`` folders first; a name found twice keeps the first)."""
    cards: dict[str, DataCard] = {}
    for folder in cards_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.md")):
            if path.name.lower() == "readme.md" or path.stem in cards:
                continue
            cards[path.stem] = load_card(path)
    return list(cards.values())


def find_card(name: str) -> DataCard | None:
    """The card named ``name`` (case-insensitive), a card file path, or the card whose Hub id is ``name``."""
    if name.endswith(".md") and Path(name).expanduser().is_file():
        return load_card(Path(name).expanduser())
    for folder in cards_dirs():
        path = folder / f"{name}.md"
        if path.is_file() and name.lower() != "readme":
            return load_card(path)
    lowered = name.lower()
    for card in list_cards():
        if card.name.lower() == lowered:
            return card
    return card_for_hub_id(name)


def card_for_hub_id(hub_id: str) -> DataCard | None:
    """The card describing the Hub dataset ``hub_id`` (case-insensitive), if there is one."""
    lowered = hub_id.lower()
    for card in list_cards():
        if card.hub_id and card.hub_id.lower() == lowered:
            return card
    return None


def metrics_for(dataset_name: str | None) -> list[str] | None:
    """The metric names of the card behind ``dataset_name`` (a card name, Hub id or card path), or None when no card
    describes it. An empty list is a card that names none (instruction sets). See ``default_metrics``."""
    if not isinstance(dataset_name, str) or not dataset_name:
        return None
    try:
        card = find_card(dataset_name)
    except CardError:
        return None
    return list(card.metrics) if card is not None else None


def default_metrics(dataset_name: str | None) -> tuple[list[str], bool]:
    """``(metrics, from_card)``: the task's own metrics as the dataset's data card names them (``anls`` for docvqa,
    ``cider bleu`` for coco-karpathy, none for instruction sets), else ``DEFAULT_METRICS``. Training and ``mmft eval``
    both use this rule, so eval scores what the run reported."""
    card_metrics = metrics_for(dataset_name)
    return (list(DEFAULT_METRICS), False) if card_metrics is None else (card_metrics, True)
