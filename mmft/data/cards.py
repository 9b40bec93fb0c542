"""Data cards: what a known dataset is, and how its columns become mmft records.

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

``data_cards/README.md`` documents every field. The same mapping machinery (:class:`ColumnMapping`) serves datasets
without a card: :func:`detect_mapping` recognises the common layouts from the column names, and the ``--column_*``
flags name columns explicitly.

How a row becomes a record, per format (the record is the HF chat form that :func:`mmft.data.records.to_canonical`
accepts, so every record is validated by the same code whatever its source):

- ``llava`` / ``messages``: the conversation column is used as is (``conversations`` from/value turns or ``messages``
  role/content turns), images from the image column(s).
- ``cauldron``: The Cauldron's ``texts`` list of ``{user, assistant}`` pairs becomes alternating turns; the images
  open the first user turn.
- ``vqa``: one user turn (the prompt template applied to the question) and one assistant turn. Several answers
  (VQAv2's ten human answers, DocVQA's variants) are **all kept as ``references``** (duplicates too: VQA accuracy
  counts how many annotators agree); the **training target** is the ``answer`` column when the card names one
  (VQAv2's ``multiple_choice_answer``), else the **most common** answer, ties going to the one listed first.
- ``caption``: a fixed prompt; the **first** caption is the training target and all captions are references (for
  BLEU and CIDEr).
- ``multiple_choice``: the options are listed with letters (A., B., ...) under the question; the target is the
  correct option's letter and the reference is that letter with its text ("B. green", which ``mc_accuracy`` reads
  as either); the answer column may hold an index, a letter or the option text.

Images are never opened here: image column values (``{"bytes", "path"}`` dicts, paths, lists of them) pass through.
"""

from __future__ import annotations

import copy
import os
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError
from ..metrics import DEFAULT_METRICS, available_metrics
from .record_errors import RecordError

__all__ = [
    "CARDS_DIR",
    "CardError",
    "ColumnMapping",
    "DataCard",
    "card_for_hub_id",
    "cards_dirs",
    "detect_mapping",
    "find_card",
    "list_cards",
    "load_card",
    "metrics_for",
    "parse_card",
]

# Where the bundled cards live (the repository's data_cards/); MMFT_DATA_CARDS adds folders (os.pathsep-separated),
# searched first, so a team can keep its own cards without touching the package.
CARDS_DIR = Path(__file__).resolve().parents[2] / "data_cards"  # the repository's data_cards/

FORMATS = ("llava", "messages", "cauldron", "vqa", "caption", "multiple_choice")
# retrieval / zero_shot: cards for the contrastive recipe (recipes/retrieval.py); zero_shot cards add class_names
# and templates (the prompt ensemble), and unlisted_labels (error | skip: records whose answer is no class).
TASKS = ("vqa", "caption", "instruct", "multiple_choice", "retrieval", "zero_shot")
CONTRASTIVE_TASKS = ("retrieval", "zero_shot")

# Which column roles each format needs, and which it may use.
_REQUIRED = {
    "llava": ("conversations",),
    "messages": ("messages",),
    "cauldron": ("texts",),
    "vqa": ("question",),
    "caption": ("captions",),
    "multiple_choice": ("question", "options", "answer"),
}
_ALLOWED = {
    "llava": ("id", "image", "conversations", "answers"),
    "messages": ("id", "image", "messages", "answers"),
    "cauldron": ("id", "image", "texts"),
    "vqa": ("id", "image", "question", "answer", "answers"),
    "caption": ("id", "image", "captions"),
    "multiple_choice": ("id", "image", "question", "options", "answer"),
}
ROLES = ("id", "image", "question", "answer", "answers", "captions", "options", "messages", "conversations", "texts")

DEFAULT_PROMPTS = {
    "vqa": "{question}\nAnswer the question using a single word or phrase.",
    "caption": "Describe this image in one sentence.",
    "multiple_choice": "{question}\n{options}\nAnswer with the option's letter from the given choices directly.",
}

_CARD_KEYS = {
    "name", "hub_id", "builtin", "config", "configs", "data_files", "revision", "splits", "train_split",
    "eval_split", "task", "format", "columns", "prompt", "metrics", "metric", "license", "citation", "features",
    "homepage", "image_size", "class_names", "templates", "unlisted_labels", "dataset",
}
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*(?:\n|\Z)(.*)\Z", re.DOTALL)


class CardError(UsageError):
    """A data card that cannot be used; the message names the card file and the field."""


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


# ---- rows -> records -----------------------------------------------------------------------------------------------
def _template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


class _RowFields(dict):
    """Template fields: the computed ones (question, options) plus every scalar column of the row."""

    def __init__(self, row: Mapping, computed: Mapping, fail):
        super().__init__()
        self.row = row
        self.update(computed)
        self.fail = fail

    def __missing__(self, key):
        if key not in self.row:
            raise self.fail(f"prompt template field {{{key}}}", "no such column in the row",
                            "Use {question}, {options} or a column name of the dataset in the template.")
        value = self.row[key]
        return "" if value is None else str(value)


@dataclass
class ColumnMapping:
    """How rows of one dataset become records: a format, the column for each role, and a prompt template.

    ``columns`` maps roles (``image``, ``id``, ``question``, ``answer``, ``answers``, ``captions``, ``options``,
    ``messages``, ``conversations``, ``texts``) to column names. ``image`` may also be a list of columns, or a
    path template over columns such as ``"{filepath}/{filename}"`` (images stored beside the data).
    """

    format: str
    columns: dict[str, Any]
    prompt: str | None = None
    source: str | None = None
    feature_names: Sequence[str] | None = None

    def __post_init__(self):
        if self.format not in FORMATS:
            raise CardError(f"format: {self.format!r} is not one of {', '.join(FORMATS)}")
        self.columns = {role: column for role, column in self.columns.items() if column is not None}
        for role in self.columns:
            if role not in ROLES:
                raise CardError(f"columns.{role}: unknown role; roles are {', '.join(ROLES)}")
            if role not in _ALLOWED[self.format]:
                raise CardError(f"columns.{role}: not used by format {self.format!r} (it uses "
                                f"{', '.join(_ALLOWED[self.format])})")
        for role in _REQUIRED[self.format]:
            if role not in self.columns and role not in ("conversations", "messages", "texts"):
                raise CardError(f"columns.{role}: required for format {self.format!r}")
        if self.format == "vqa" and not ({"answer", "answers"} & set(self.columns)):
            raise CardError("columns.answers: format 'vqa' needs an 'answers' (references) or 'answer' column")
        if self.feature_names is not None:
            names = set(self.feature_names)
            for role, column in self.columns.items():
                for name in self._column_names(role, column):
                    if name not in names:
                        raise CardError(f"columns.{role}: column {name!r} is not among the features "
                                        f"({', '.join(self.feature_names)})")
        if self.prompt is not None and self.format not in ("vqa", "caption", "multiple_choice"):
            raise CardError(f"prompt: format {self.format!r} takes its prompts from the conversation; remove it")
        if self.prompt is not None and self.feature_names is not None:
            allowed = {"question", "options", *self.feature_names}
            for name in _template_fields(self.prompt):
                if name not in allowed:
                    raise CardError(f"prompt: field {{{name}}} is neither {{question}}, {{options}} nor a column")

    @staticmethod
    def _column_names(role: str, column: Any) -> list[str]:
        if role == "image" and isinstance(column, list):
            return [str(c) for c in column]
        if role == "image" and isinstance(column, str) and "{" in column:
            return _template_fields(column)
        return [str(column)]

    @property
    def template(self) -> str | None:
        return self.prompt or DEFAULT_PROMPTS.get(self.format)

    def is_passthrough(self) -> bool:
        """True when rows are already LLaVA / chat records under the standard names (nothing to rename)."""
        if self.format == "llava":
            standard = {"conversations": "conversations"}
        elif self.format == "messages":
            standard = {"messages": "messages"}
        else:
            return False
        image = self.columns.get("image")
        return (all(self.columns.get(k, v) == v for k, v in standard.items())
                and image in (None, "image", "images") and set(self.columns) <= {"image", "id", *standard}
                and self.columns.get("id", "id") == "id")

    # -- per row --
    def to_record(self, row: Mapping, index: int | None = None) -> dict:
        """Map one raw row into a record that ``to_canonical`` accepts; RecordError naming the column if it can't."""
        record_id = self._id(row, index)

        def fail(column: str, problem: str, hint: str) -> RecordError:
            return RecordError.make(record_id, str(column), problem, hint, source=self.source)

        if not isinstance(row, Mapping):
            raise fail("record", f"row is {type(row).__name__}, not a mapping", "Each row must be a dict of columns.")
        images = self._images(row, fail)
        record: dict[str, Any] = {"id": record_id}
        if self.format in ("llava", "messages"):
            role = "conversations" if self.format == "llava" else "messages"
            column = self.columns.get(role, role)
            turns = self._get(row, column, fail)
            key = role
            if isinstance(turns, list) and turns and isinstance(turns[0], Mapping):
                key = "conversations" if "from" in turns[0] else "messages"  # --column_messages takes either form
            record[key] = turns
            if "answers" in self.columns:
                record["references"] = self._answer_list(row, self.columns["answers"], fail)
        elif self.format == "cauldron":
            record["messages"] = self._cauldron(row, fail)
        elif self.format == "caption":
            record["messages"] = self._caption(row, fail, record)
        else:
            record["messages"] = self._question(row, fail, record)
        record["images"] = images
        return record

    def _id(self, row: Mapping, index: int | None) -> str:
        column = self.columns.get("id", "id")
        if isinstance(row, Mapping) and row.get(column) not in (None, ""):
            return str(row[column])
        position = "?" if index is None else index
        return f"{self.source}:{position}" if self.source else f"#{position}"

    @staticmethod
    def _get(row: Mapping, column: str, fail, *, required: bool = True):
        if column not in row:
            raise fail(column, f"no column {column!r} in the row (columns: {', '.join(map(str, row))})",
                       "Check the column mapping (--column_* flags or the data card's columns).")
        value = row[column]
        if value is None and required:
            raise fail(column, "value is None", "Fill it in, or filter such rows out of the dataset.")
        return value

    def _images(self, row: Mapping, fail) -> list:
        spec = self.columns.get("image")
        if spec is None:
            value = row.get("images", row.get("image"))
            specs = []
        elif isinstance(spec, list):
            specs = spec
        elif "{" in spec:
            try:
                return [spec.format_map({k: "" if v is None else v for k, v in row.items()})]
            except KeyError as error:
                raise fail(f"image template {spec!r}", f"no column {error.args[0]!r} in the row",
                           "Fix the image path template.") from None
        else:
            specs = [spec]
        images: list = []
        if not specs:
            if value is not None:
                images.extend(value if isinstance(value, list) else [value])
            return images
        for column in specs:
            value = self._get(row, column, fail, required=False)
            if value is None:
                continue
            images.extend(value if isinstance(value, list) else [value])
        return images

    def _prompt(self, row: Mapping, computed: Mapping, fail) -> str:
        """Apply the template line by line; a line whose fields are all empty (e.g. no hint) is dropped."""
        fields = _RowFields(row, computed, fail)
        lines = []
        for line in self.template.split("\n"):
            names = _template_fields(line)
            text = line.format_map(fields)
            if names and not any(fields[n].strip() for n in names):
                continue
            lines.append(text)
        return "\n".join(lines).strip()

    @staticmethod
    def _answer_list(row: Mapping, column: str, fail) -> list[str]:
        """A str, a list of str, or a list of ``{"answer": ...}`` dicts -> non-blank answer strings, in order."""
        value = ColumnMapping._get(row, column, fail, required=False)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        answers = []
        for j, item in enumerate(items):
            if isinstance(item, Mapping):
                item = next((item[k] for k in ("answer", "raw", "caption", "text") if item.get(k) is not None), None)
            if item is None:
                continue
            if not isinstance(item, (str, int, float)):
                raise fail(f"{column}[{j}]", f"answer is {type(item).__name__}", "Answers must be strings.")
            text = str(item)
            if text.strip():
                answers.append(text)
        return answers

    def _question(self, row: Mapping, fail, record: dict) -> list[dict]:
        question = self._get(row, self.columns["question"], fail)
        if not isinstance(question, str):
            question = str(question)
        computed = {"question": question}
        if self.format == "multiple_choice":
            options_column = self.columns["options"]
            options = self._get(row, options_column, fail)
            if not isinstance(options, list) or not options:
                raise fail(options_column, f"options are {options!r}", "Give a non-empty list of option strings.")
            letters = _letters(len(options))
            computed["options"] = "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options))
            answer_column = self.columns["answer"]
            answer = self._get(row, answer_column, fail)
            if isinstance(answer, bool) or not isinstance(answer, (int, str)):
                raise fail(answer_column, f"answer is {answer!r}", "Give the option index, letter or text.")
            if isinstance(answer, int):
                position = answer
            elif answer.strip().upper() in letters and len(answer.strip()) == 1:
                position = letters.index(answer.strip().upper())
            elif answer in options:
                position = options.index(answer)
            elif answer.strip().isdigit():
                position = int(answer.strip())
            else:
                position = -1
            if not 0 <= position < len(options):
                raise fail(answer_column, f"answer {answer!r} does not pick one of the {len(options)} options",
                           "Give a 0-based index, a letter or the text of one of the options.")
            # The reference carries the option's text too, so mc_accuracy can score an answer given by text.
            target, references = letters[position], [f"{letters[position]}. {options[position]}"]
        else:
            references = self._answer_list(row, self.columns["answers"], fail) if "answers" in self.columns else []
            target = None
            if "answer" in self.columns:
                value = self._get(row, self.columns["answer"], fail, required=False)
                if isinstance(value, list):
                    references = references or self._answer_list(row, self.columns["answer"], fail)
                elif value is not None and str(value).strip():
                    target = str(value)
            if target is None and references:
                counts = Counter(references)
                target = max(references, key=lambda a: (counts[a], -references.index(a)))
            if target is None:
                column = self.columns.get("answers", self.columns.get("answer"))
                raise fail(column, "no answer (empty or missing)",
                           "Test splits of many benchmarks hide their answers: train and evaluate on a split that "
                           "has them, or filter unanswered rows out.")
        if references:
            record["references"] = references
        prompt = self._prompt(row, computed, fail)
        return [{"role": "user", "content": [{"type": "text", "text": prompt}]},
                {"role": "assistant", "content": [{"type": "text", "text": target}]}]

    def _caption(self, row: Mapping, fail, record: dict) -> list[dict]:
        column = self.columns["captions"]
        captions = self._answer_list(row, column, fail)
        if not captions:
            raise fail(column, "no caption (empty or missing)", "Fill it in, or filter such rows out.")
        record["references"] = captions
        prompt = self._prompt(row, {}, fail)
        return [{"role": "user", "content": [{"type": "text", "text": prompt}]},
                {"role": "assistant", "content": [{"type": "text", "text": captions[0]}]}]

    def _cauldron(self, row: Mapping, fail) -> list[dict]:
        column = self.columns.get("texts", "texts")
        texts = self._get(row, column, fail)
        if not isinstance(texts, list) or not texts:
            raise fail(column, f"value is {type(texts).__name__}, not a non-empty list of {{user, assistant}}",
                       "Each row needs at least one user/assistant pair.")
        messages = []
        for j, pair in enumerate(texts):
            if not isinstance(pair, Mapping) or "user" not in pair or "assistant" not in pair:
                raise fail(f"{column}[{j}]", "not a {user, assistant} pair",
                           "Each entry needs 'user' and 'assistant'.")
            messages.append({"role": "user", "content": pair["user"] or ""})
            messages.append({"role": "assistant", "content": pair["assistant"] or ""})
        return messages


# ---- detection for datasets without a card -------------------------------------------------------------------------
IMAGE_COLUMNS = ("images", "image", "image_path", "img")
QUESTION_COLUMNS = ("question", "query")
ANSWER_COLUMNS = ("answers", "answer", "label")
CAPTION_COLUMNS = ("captions", "caption", "sentences", "text")
OPTION_COLUMNS = ("options", "choices")
_FLAGS = {"image": "--column_image", "question": "--column_question", "answers": "--column_answer",
          "captions": "--column_caption", "options": "--column_options", "messages": "--column_messages",
          "id": "--column_id"}


def _image_feature_columns(features) -> list[str]:
    if features is None:
        return []
    import datasets

    def is_image(feature) -> bool:
        if isinstance(feature, datasets.Image):
            return True
        if isinstance(feature, (datasets.List, datasets.LargeList)):
            return is_image(feature.feature)
        return False

    return [name for name, feature in features.items() if is_image(feature)]


def detect_mapping(columns: Iterable[str], *, features=None, overrides: Mapping[str, str | None] | None = None,
                   prompt_template: str | None = None, source: str | None = None) -> ColumnMapping:
    """Recognise a dataset's layout from its column names (and Image features), honouring ``--column_*`` overrides.

    Layouts: ``messages`` (+ ``images``), ``conversations`` (+ ``image``), The Cauldron's ``texts`` (+ ``images``),
    question + answer(s) (+ options/choices: multiple choice), caption(s). When two layouts or two columns for one
    role fit, the error says which ``--column_*`` flag settles it.
    """
    names = list(columns)
    present = set(names)
    given = {role: column for role, column in (overrides or {}).items() if column}
    where = f"Dataset {source!r}" if source else "The dataset"
    for role, column in given.items():
        if column not in present and not (role == "image" and "{" in column):
            raise CardError(f"{where} has no column {column!r} ({_FLAGS.get(role, role)}); its columns are: "
                            f"{', '.join(names)}.")

    def unique(role: str, candidates: Sequence[str]) -> str | None:
        if role in given:
            return given[role]
        found = [c for c in candidates if c in present]
        if len(found) > 1:
            raise CardError(f"{where}: several columns could hold the {role} ({', '.join(found)}); pass "
                            f"{_FLAGS[role]} with the one to use.")
        return found[0] if found else None

    image_features = _image_feature_columns(features)
    if "image" in given:
        image = given["image"]
    elif len(image_features) > 1:
        raise CardError(f"{where}: several image columns ({', '.join(image_features)}); pass --column_image with the "
                        "one to use.")
    elif image_features:
        image = image_features[0]
    else:
        image = unique("image", IMAGE_COLUMNS)
    base = {"image": image}
    if "id" in given:
        base["id"] = given["id"]

    if "messages" in given or ("messages" in present and not {"question", "captions"} & set(given)):
        column = given.get("messages", "messages")
        return ColumnMapping("messages", {**base, "messages": column}, source=source)
    if "conversations" in present and not {"question", "captions"} & set(given):
        return ColumnMapping("llava", {**base, "conversations": "conversations"}, source=source)
    if "texts" in present and image and not {"question", "captions", "answers"} & set(given):
        return ColumnMapping("cauldron", {**base, "texts": "texts"}, source=source)

    question = unique("question", QUESTION_COLUMNS)
    options = unique("options", OPTION_COLUMNS) if question else given.get("options")
    answer_candidates = ANSWER_COLUMNS if question else ()
    answers = unique("answers", answer_candidates)
    caption = unique("captions", CAPTION_COLUMNS) if "question" not in given and "answers" not in given else None
    if "captions" in given:
        question = answers = None
    qa = question is not None and answers is not None
    if qa and caption is not None:
        raise CardError(
            f"{where} fits two layouts: question answering (question: {question!r}, answer: {answers!r}) and "
            f"captioning (caption: {caption!r}). Pass --column_caption to train captioning, or --column_question "
            "and --column_answer to train question answering."
        )
    if qa and options is not None:
        return ColumnMapping("multiple_choice", {**base, "question": question, "options": options, "answer": answers},
                             prompt_template, source=source)
    if qa:
        return ColumnMapping("vqa", {**base, "question": question, "answers": answers}, prompt_template, source=source)
    if caption is not None:
        return ColumnMapping("caption", {**base, "captions": caption}, prompt_template, source=source)
    if question is not None:
        raise CardError(f"{where} has a question column ({question!r}) but no answer column; pass --column_answer "
                        f"with the column holding the answer(s). Columns: {', '.join(names)}.")
    raise CardError(
        f"{where}: cannot tell how its columns map into records (columns: {', '.join(names)}). Expected "
        "'messages' (+ 'images'), 'conversations' (+ 'image'), 'question' + 'answer(s)', or 'caption(s)'; name the "
        "columns with --column_messages, --column_question and --column_answer, or --column_caption (and "
        "--column_image), or write a data card (data_cards/README.md)."
    )
