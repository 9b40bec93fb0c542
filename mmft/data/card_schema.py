"""A data card's fields, and reading and validating a card's text.

A card is ``data_cards/<name>.md``: YAML front matter that this module reads, then prose for people (what the
dataset is, its size, an example record, its quirks). The front matter says where the data lives (Hub id, config,
splits), which task and metric it serves, and how its columns map into a record::

    ---
    name: chartqa
    hub_id: HuggingFaceM4/ChartQA
    task: vqa
    format: vqa                 # llava | messages | cauldron | vqa | caption | multiple_choice
    splits: {train: 28299, val: 1920, test: 2500}
    columns: {image: image, question: query, answers: label}
    prompt: "{question}\\nAnswer with a single number or phrase."
    metrics: [relaxed_accuracy]
    license: GPL-3.0
    features: [...]             # the Hub dataset's features, in its README's dataset_info form
    ---

``data_cards/README.md`` documents every field. This module holds a card's fields (:class:`DataCard`) and reads and
validates a card's text (:func:`parse_card`); ``mmft.data.cards`` finds the card files and looks cards up, and
``mmft.data.columns`` turns a card's columns into records.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..metrics import available_metrics
from .card_errors import CardError
from .columns import FORMATS, ColumnMapping

__all__ = ["DataCard", "parse_card"]

# retrieval / zero_shot: cards for the contrastive recipe (recipes/retrieval.py); zero_shot cards add class_names
# and templates (the prompt ensemble), and unlisted_labels (error | skip: records whose answer is no class).
TASKS = ("vqa", "caption", "instruct", "multiple_choice", "retrieval", "zero_shot")
CONTRASTIVE_TASKS = ("retrieval", "zero_shot")

_CARD_KEYS = {
    "name", "hub_id", "builtin", "config", "configs", "data_files", "revision", "splits", "train_split",
    "eval_split", "task", "format", "columns", "prompt", "metrics", "metric", "license", "citation", "features",
    "homepage", "image_size", "class_names", "templates", "unlisted_labels", "dataset",
}
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*(?:\n|\Z)(.*)\Z", re.DOTALL)


# ---- the card ------------------------------------------------------------------------------------------------------
@dataclass
class DataCard:
    """One data card's machine-read front matter (see ``data_cards/README.md`` for every field)."""

    name: str
    task: str
    format: str
    license: str
    hub_id: str | None = None
    builtin: bool = False
    config: str | None = None  # the config used when --dataset_config is not given
    configs: list[str] = field(default_factory=list)  # every config (subset) the dataset has, when it has several
    data_files: Any = None  # passed to load_dataset (repos holding several files of different schemas)
    revision: str | None = None
    splits: dict[str, int | None] = field(default_factory=dict)
    train_split: str | None = None
    eval_split: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    metrics: list[str] = field(default_factory=list)
    citation: str | None = None
    homepage: str | None = None
    features: list | None = None  # the dataset_info ``features`` list, as in the Hub README
    class_names: list[str] = field(default_factory=list)  # zero_shot cards: the classes, in label-index order
    templates: list[str] = field(default_factory=list)  # zero_shot cards: prompts with {} for the class name
    unlisted_labels: str = "error"  # zero_shot cards: a record whose answer is no class: error | skip
    dataset: str | None = None  # builtin cards: the built-in dataset they read (e.g. shapes); default: their name
    prose: str = ""
    path: Path | None = None

    def datasets_features(self):
        """The card's ``features`` as a ``datasets.Features`` (None when the card lists none)."""
        if not self.features:
            return None
        import datasets

        return datasets.Features._from_yaml_list(self.features)

    def feature_names(self) -> list[str]:
        return [entry["name"] for entry in self.features or []]

    def mapping(self, overrides: Mapping[str, str | None] | None = None,
                prompt_template: str | None = None) -> ColumnMapping:
        """The card's column mapping, with explicit ``--column_*`` overrides and ``--prompt_template`` applied."""
        columns = dict(self.columns)
        for role, column in (overrides or {}).items():
            if column:
                # --column_answer names the answer column; multiple-choice cards call that role 'answer'.
                columns["answer" if role == "answers" and self.format == "multiple_choice" else role] = column
        return ColumnMapping(self.format, columns, prompt_template or self.prompt, source=self.name)

    def resolve_config(self, config: str | None) -> str | None:
        """The config to load: the one asked for (checked against the card's list) or the card's default."""
        chosen = config or self.config
        if self.configs and chosen is None:
            raise CardError(
                f"{self.where}: {self.hub_id} has one config per subset and no default; pass --dataset_config with "
                f"one of: {', '.join(self.configs)}."
            )
        if self.configs and chosen not in self.configs:
            raise CardError(
                f"{self.where}: {self.hub_id} has no config {chosen!r}; its configs are: {', '.join(self.configs)}."
            )
        return chosen

    def check_split(self, split: str, flag: str = "--train_split") -> None:
        """Fail before any download when the card knows the splits and ``split`` is not one of them."""
        if self.splits and split not in self.splits:
            raise CardError(
                f"{self.where}: {self.hub_id or self.name} has no split {split!r}; its splits are: "
                f"{', '.join(self.splits)}. Pass {flag} with one of them."
            )

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else f"data card {self.name!r}"


def _fail(where: str, field_name: str, problem: str) -> CardError:
    return CardError(f"{where}: {field_name}: {problem}")


def parse_card(text: str, path: str | os.PathLike | None = None) -> DataCard:
    """Parse and validate one card's text; errors name the card file and the field."""
    where = str(path) if path is not None else "data card"
    match = _FRONT_MATTER.match(text)
    if not match:
        raise CardError(f"{where}: no YAML front matter (the file must start with a '---' line and close it with "
                        "another '---' line).")
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as error:
        raise CardError(f"{where}: the front matter is not valid YAML ({error}).") from None
    if not isinstance(meta, dict):
        raise CardError(f"{where}: the front matter must be a YAML mapping of fields, got {type(meta).__name__}.")
    unknown = sorted(set(meta) - _CARD_KEYS)
    if unknown:
        raise _fail(where, unknown[0], f"unknown field (known fields: {', '.join(sorted(_CARD_KEYS))}); "
                                       "see data_cards/README.md")

    def need(key: str, kind=str):
        if meta.get(key) in (None, ""):
            raise _fail(where, key, "missing; every card needs it (see data_cards/README.md)")
        if not isinstance(meta[key], kind):
            raise _fail(where, key, f"must be a {kind.__name__}, got {meta[key]!r}")
        return meta[key]

    name = need("name")
    if path is not None and Path(path).stem != name:
        raise _fail(where, "name", f"{name!r} differs from the file name {Path(path).stem!r}; make them equal")
    task = need("task")
    if task not in TASKS:
        raise _fail(where, "task", f"{task!r} is not one of {', '.join(TASKS)}")
    fmt = need("format")
    if fmt not in FORMATS:
        raise _fail(where, "format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    license_ = str(need("license", (str, int, float)))
    builtin = bool(meta.get("builtin", False))
    hub_id = meta.get("hub_id")
    if not builtin and not hub_id:
        raise _fail(where, "hub_id", "missing; a card needs the dataset's Hub id (or builtin: true)")

    metrics = meta.get("metrics", meta.get("metric"))
    if metrics is None:
        raise _fail(where, "metrics", "missing; name the metric(s) the task is scored with")
    metrics = [metrics] if isinstance(metrics, str) else metrics
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise _fail(where, "metrics", f"must be a metric name or a list of them, got {metrics!r}")
    if not metrics and task not in ("instruct", *CONTRASTIVE_TASKS):
        raise _fail(where, "metrics", f"empty; a {task} card names the metric(s) its task is scored with (only "
                                      "instruct cards may give [] when no answer metric fits)")
    bundled = available_metrics()
    for metric in metrics:
        if metric not in bundled and not (metric.endswith(".py") or "/" in metric):
            raise _fail(where, "metrics", f"unknown metric {metric!r}; bundled metrics: {', '.join(bundled)} "
                                          "(or give the path of an evaluate metric script)")

    splits = meta.get("splits") or {}
    if isinstance(splits, list):
        splits = {str(s): None for s in splits}
    if not isinstance(splits, dict):
        raise _fail(where, "splits", f"must map split names to record counts (or list split names), got {splits!r}")
    splits = {str(k): v for k, v in splits.items()}
    for key in ("train_split", "eval_split"):
        if meta.get(key) is not None and splits and meta[key] not in splits:
            raise _fail(where, key, f"{meta[key]!r} is not one of the card's splits ({', '.join(splits)})")

    configs = meta.get("configs") or []
    if not isinstance(configs, list) or not all(isinstance(c, str) for c in configs):
        raise _fail(where, "configs", f"must be a list of config names, got {configs!r}")
    config = meta.get("config")
    if config is not None and configs and config not in configs:
        raise _fail(where, "config", f"{config!r} is not one of the card's configs")

    features = meta.get("features")
    if features is not None:
        if not isinstance(features, list) or not all(isinstance(f, dict) and "name" in f for f in features):
            raise _fail(where, "features", "must be the dataset_info features list ([{name: ..., dtype: ...}, ...])")
        try:
            import datasets

            datasets.Features._from_yaml_list(features)
        except Exception as error:  # noqa: BLE001 - datasets raises several types for bad feature YAML
            raise _fail(where, "features", f"not valid dataset_info features ({error})") from None

    columns = meta.get("columns") or {}
    if not isinstance(columns, dict):
        raise _fail(where, "columns", f"must map roles to column names, got {columns!r}")
    prompt = meta.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise _fail(where, "prompt", f"must be a string template, got {prompt!r}")
    class_names, templates = meta.get("class_names") or [], meta.get("templates") or []
    for key, value in (("class_names", class_names), ("templates", templates)):
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise _fail(where, key, f"must be a list of non-blank strings, got {value!r}")
    if task == "zero_shot" and not class_names:
        raise _fail(where, "class_names", "missing; a zero_shot card lists its classes (in label-index order)")
    if any("{}" not in t for t in templates):
        raise _fail(where, "templates", "every template needs a {} where the class name goes")
    unlisted = meta.get("unlisted_labels", "error")
    if unlisted not in ("error", "skip"):
        raise _fail(where, "unlisted_labels", f"must be 'error' or 'skip', got {unlisted!r}")
    dataset = meta.get("dataset")
    if dataset is not None and (not builtin or not isinstance(dataset, str)):
        raise _fail(where, "dataset", "only a builtin card names a built-in dataset (a string, e.g. shapes)")
    card = DataCard(
        class_names=class_names, templates=templates, unlisted_labels=unlisted, dataset=dataset,
        name=name, task=task, format=fmt, license=license_, hub_id=hub_id, builtin=builtin, config=config,
        configs=configs, data_files=meta.get("data_files"), revision=meta.get("revision"), splits=splits,
        train_split=meta.get("train_split"), eval_split=meta.get("eval_split"), columns=columns, prompt=prompt,
        metrics=metrics, citation=meta.get("citation"), homepage=meta.get("homepage"), features=features,
        prose=match.group(2), path=Path(path) if path is not None else None,
    )
    if not builtin:
        try:
            ColumnMapping(fmt, columns, prompt, source=name, feature_names=card.feature_names() or None)
        except CardError as error:
            raise CardError(f"{where}: {error}") from None
    return card
