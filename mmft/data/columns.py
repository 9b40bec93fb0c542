"""Column mappings: how the rows of one dataset become mmft records, with a data card or without one.

A :class:`ColumnMapping` is a format (``llava``, ``messages``, ``cauldron``, ``vqa``, ``caption``,
``multiple_choice``), the column for each role and a prompt template. A data card's ``columns`` and ``prompt`` make
one (``mmft.data.card_schema``); for a dataset without a card, ``mmft.data.column_detection`` recognises the common
layouts from the column names, and the ``--column_*`` flags name columns explicitly.

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

import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .card_errors import CardError
from .record_errors import RecordError

__all__ = ["DEFAULT_PROMPTS", "FORMATS", "ROLES", "ColumnMapping"]

FORMATS = ("llava", "messages", "cauldron", "vqa", "caption", "multiple_choice")

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
