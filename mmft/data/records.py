"""The canonical training record: mmft's central data contract.

Every dataset, whatever its on-disk format, is converted by :func:`to_canonical` into one shape, and everything
downstream (collators, chat-template rendering, loss masking, generation eval, reports) reads only that shape.
Adding an input format means adding a conversion (``mmft.data.record_conversion``), never teaching downstream code a
new shape.

The canonical record is a plain ``dict`` (JSON-serialisable apart from the image refs)::

    {
        "id": "rec-42",                       # always a str (see "Ids" below)
        "images": [ref, ...],                 # possibly empty; refs are passed through untouched
        "messages": [                         # system? (user assistant)+
            {"role": "system", "content": [{"type": "text", "text": "You are ..."}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        ],
        "references": ["A cat.", "cat"],      # optional key: alternative answers for the LAST assistant turn
    }

Invariants (checked by :func:`to_canonical`, relied upon everywhere else):

* ``messages`` is: at most one ``system`` turn, only in first position; then strictly alternating ``user`` /
  ``assistant`` turns, starting with ``user`` and ending with ``assistant``.
* ``content`` is always a list whose entries are exactly ``{"type": "image"}`` or ``{"type": "text", "text": str}``
  (no extra keys; text entries are never empty and never contain the ``"<image>"`` placeholder).
* Image entries appear only in user turns, and the k-th image entry (counting across the whole conversation, in
  order) is ``images[k]``: ``len(images) == count_image_slots(record)``. So the prompt of the last turn (see
  :func:`prompt_and_answer`) always holds every image of the record.
* Every user turn has an image or non-blank text. ``references``, when present, is a non-empty list of non-blank
  strings (input key ``references`` or ``answers``, a str or a list; an empty list counts as absent).
* Assistant turns are text only and their text is not blank. Texts are kept verbatim (no stripping): the loss is
  computed on exactly what the data says.
* Image refs are whatever the source gave (a path, URL, bytes, PIL image, ``{"bytes", "path"}`` dict ...): this
  module never opens, decodes or even imports an imaging library, so conversion stays cheap and pure Python.
  Loading is the collator's job.
* Other input keys (metadata etc.) are dropped: the record carries what training and eval need, nothing else.

Input formats accepted by :func:`to_canonical`:

1. LLaVA / CogVLM: ``{"id", "image" | "images", "conversations": [{"from": ..., "value": str}, ...]}``, roles
   ``human``/``user``, ``gpt``/``assistant``, ``system`` (case-insensitive). ``"<image>"`` in a value marks where
   an image goes; the one newline conventionally next to it is dropped (``"<image>\\nQ"`` -> image, text ``"Q"``).
2. HF chat: ``{"images" | "image", "messages": [{"role", "content": str | [typed entries]}]}``. String content is
   treated exactly like a LLaVA value. Typed entries may carry extra keys (Arrow unifies struct fields, so datasets
   give ``{"type": "image", "text": None}``); an image entry may carry its own ref under ``image``/``url``/``path``,
   used as the record's images when there are no top-level images.
3. Canonical records themselves: conversion is idempotent, so it is always safe to call it again.

If images are given but no placeholder appears anywhere, all images go to the start of the first user turn (the
LLaVA convention for single-image data that omits ``<image>``). If at least one placeholder appears, the counts must
match exactly: a mismatch is nearly always a data bug, and guessing would silently train on the wrong image.

Ids: the input's ``id`` as ``str``; when missing, ``f"{source}:{index}"`` (or ``f"#{index}"`` without a source, and
``?`` for the index when none is given), so every error message can point at the offending record.

Errors: every problem raises :class:`RecordError` (``mmft.data.record_errors``) whose message reads
``record 'rec-42' in train.jsonl: conversations[3].value: <what is wrong>. <what to do>``. Use
:func:`validate_all` to convert a whole dataset and see every bad record at once.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .record_conversion import _to_canonical_general
from .record_errors import RecordError
from .record_fast_path import _fast_llava

__all__ = [
    "ROLES",
    "count_image_slots",
    "first_user_text",
    "is_canonical",
    "prompt_and_answer",
    "reference_answers",
    "to_canonical",
    "validate_all",
]

ROLES = ("system", "user", "assistant")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a whole dataset is read or converted, then restore it.

    Reading and converting 100,000 records allocates millions of dicts and lists that all stay alive, so the
    collector runs hundreds of times for nothing (records hold no reference cycles) and each full pass also walks
    every object torch and transformers created at import: 1-2 of the ~5 CPU-s ``load_records`` took on 100,000
    LLaVA records (benchmarks/RESULTS.md, "Start-up"). Reference counting still frees everything dropped meanwhile.
    Nesting is safe: only the outermost pause re-enables a collector that was enabled.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def to_canonical(
    raw: Mapping, *, index: int | None = None, source: str | None = None, allow_text_only: bool = True
) -> dict:
    """Convert one LLaVA / HF-chat / canonical record into a new canonical record (see the module docstring).

    ``index`` (position in the dataset) and ``source`` (file or dataset name) only serve the fallback id and error
    messages. With ``allow_text_only=False`` a record without images is an error (for recipes that need an image).
    Raises :class:`RecordError` naming the record id and the offending field.
    """
    if type(raw) is dict:
        record = _fast_llava(raw, index, source, allow_text_only)
        if record is not None:
            return record
    return _to_canonical_general(raw, index, source, allow_text_only)


def is_canonical(record: Any) -> bool:
    """True if ``record`` is already exactly canonical (``to_canonical`` would return an equal record).

    Image refs are never compared (PIL images would be compared pixel by pixel): a valid record's ``images`` come
    back from conversion as the very same objects, so only their container type matters.
    """
    if not isinstance(record, dict):
        return False
    try:
        converted = to_canonical(record)
    except RecordError:
        return False
    if set(converted) != set(record) or not isinstance(record["images"], list):
        return False
    # Plain dict/list/str equality: a tuple where a list is expected, or an extra key in an entry, makes it unequal.
    return all(converted[key] == record[key] for key in ("id", "messages", "references") if key in converted)


def count_image_slots(record: Mapping) -> int:
    """Number of ``{"type": "image"}`` entries in a canonical record (equals ``len(record["images"])``)."""
    return sum(
        1
        for message in record["messages"]
        for entry in message["content"]
        if isinstance(entry, Mapping) and entry.get("type") == "image"
    )


def _text(message: Mapping) -> str:
    # Entries are concatenated as chat templates do; in canonical assistant turns there is normally one entry.
    return "".join(entry["text"] for entry in message["content"] if entry.get("type") == "text")


def _last_assistant_index(record: Mapping) -> int:
    for i in range(len(record["messages"]) - 1, -1, -1):
        if record["messages"][i]["role"] == "assistant":
            return i
    record_id = record.get("id", "?")
    raise RecordError.make(
        str(record_id), "messages", "no assistant turn", "Convert the record with to_canonical() first."
    )


def prompt_and_answer(record: Mapping) -> tuple[list[dict], str]:
    """Split a canonical record for generation eval: (messages before the last assistant turn, that turn's text).

    The prompt messages are copies, so callers may edit them (e.g. add a generation prompt) without touching the
    record. All of the record's images belong to the prompt (images only occur in user turns).
    """
    last = _last_assistant_index(record)
    prompt = [
        {"role": message["role"], "content": [dict(entry) for entry in message["content"]]}
        for message in record["messages"][:last]
    ]
    return prompt, _text(record["messages"][last])


def reference_answers(record: Mapping) -> list[str]:
    """Acceptable answers for the last assistant turn: ``references`` if present, else the answer itself."""
    if record.get("references"):
        return list(record["references"])
    return [_text(record["messages"][_last_assistant_index(record)])]


def first_user_text(record: Mapping) -> str:
    """The question for reports: text of the last user turn before the last assistant turn.

    Text pieces separated by images are joined with a space and stripped, for one-line display.
    """
    last = _last_assistant_index(record)
    for message in reversed(record["messages"][:last]):
        if message["role"] == "user":
            pieces = (entry["text"].strip() for entry in message["content"] if entry.get("type") == "text")
            return " ".join(piece for piece in pieces if piece)
    return ""


def validate_all(
    raws: Iterable[Mapping], *, source: str | None = None, max_errors: int = 20, allow_text_only: bool = True,
    transform: Callable[[Any, int], Mapping] | None = None, invalid: list | None = None,
) -> list[dict]:
    """Convert every record; if any fail, raise ONE RecordError listing them all (up to ``max_errors`` lines).

    Reporting every bad record at once lets a user fix a dataset in one pass instead of one crash at a time.
    ``transform(raw, index)`` maps a raw row into a record first (a data card's column mapping); its RecordErrors
    are listed with the others. With ``invalid`` (a list), nothing is raised: each invalid row is appended to it as
    ``(index, RecordError)`` and left out of the result (training's ``--on_bad_record``, see ``mmft.data.badrecords``).
    """
    records: list[dict] = []
    errors: list[RecordError] = []
    n_bad = 0
    total = 0
    for index, raw in enumerate(raws):
        total += 1
        try:
            row = transform(raw, index) if transform is not None else raw
            records.append(to_canonical(row, index=index, source=source, allow_text_only=allow_text_only))
        except RecordError as err:
            if invalid is not None:
                invalid.append((index, err))
                continue
            n_bad += 1
            if len(errors) < max_errors:
                errors.append(err)
    if n_bad:
        lines = [str(err) for err in errors]
        if n_bad > len(errors):
            lines.append(f"... and {n_bad - len(errors)} more")
        where = f" in {source}" if source else ""
        raise RecordError(
            f"{n_bad} of {total} records are invalid{where}; fix or drop them (all are listed, to fix in one pass):\n"
            + "\n".join(lines),
            source=source,
            errors=errors,
        )
    return records
