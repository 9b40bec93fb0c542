"""The canonical training record: mmft's central data contract.

Every dataset, whatever its on-disk format, is converted by :func:`to_canonical` into one shape, and everything
downstream (collators, chat-template rendering, loss masking, generation eval, reports) reads only that shape.
Adding an input format means adding a conversion here, never teaching downstream code a new shape.

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

Errors: every problem raises :class:`RecordError` whose message reads
``record 'rec-42' in train.jsonl: conversations[3].value: <what is wrong>. <what to do>``. Use
:func:`validate_all` to convert a whole dataset and see every bad record at once.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..errors import UsageError

__all__ = [
    "IMAGE_PLACEHOLDER",
    "ROLES",
    "RecordError",
    "count_image_slots",
    "first_user_text",
    "is_canonical",
    "prompt_and_answer",
    "reference_answers",
    "to_canonical",
    "validate_all",
]

IMAGE_PLACEHOLDER = "<image>"
ROLES = ("system", "user", "assistant")

# Strict on purpose: an unexpected role ("bot", "tool", "observation") usually means the data is in a format we do not
# understand, and mapping it to something by guesswork would silently corrupt the loss mask.
_ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_ACCEPTED_ROLES = ", ".join(_ROLE_ALIASES)
# Keys under which a typed image entry may carry its own ref, in order of preference.
_IMAGE_REF_KEYS = ("image", "url", "path")
_TYPED_EXAMPLE = "[{'type': 'image'}, {'type': 'text', 'text': '...'}]"


class RecordError(UsageError):
    """A record (or, from :func:`validate_all`, several records) cannot be turned into a canonical record.

    ``record_id`` and ``field`` name what is wrong (both ``None`` for the :func:`validate_all` summary, which lists
    the individual errors in its message and keeps the first ``max_errors`` of them in ``errors``).
    """

    def __init__(
        self,
        message: str,
        *,
        record_id: str | None = None,
        field: str | None = None,
        source: str | None = None,
        errors: Iterable[RecordError] = (),
    ) -> None:
        super().__init__(message)
        self.record_id = record_id
        self.field = field
        self.source = source
        self.errors = list(errors)

    @classmethod
    def make(cls, record_id: str, field: str, problem: str, hint: str, *, source: str | None = None) -> RecordError:
        """Build an error in the standard format; other modules (e.g. image loading) should use this too."""
        where = f" in {source}" if source else ""
        return cls(
            f"record {record_id!r}{where}: {field}: {problem}. {hint}", record_id=record_id, field=field, source=source
        )

    def __reduce__(self):
        # Keyword-only attributes are lost by the default exception pickling, and errors do cross process boundaries
        # (datasets.map(num_proc=...), dataloader workers): rebuild from the message, then restore the attributes.
        return (type(self), (str(self),), self.__dict__)


class _Fail:
    """Builds RecordErrors for one record, so conversion code only states the field, the problem and the fix."""

    __slots__ = ("record_id", "source")  # one is made per record converted, 100,000 at start-up

    def __init__(self, record_id: str, source: str | None) -> None:
        self.record_id = record_id
        self.source = source

    def __call__(self, field: str, problem: str, hint: str) -> RecordError:
        return RecordError.make(self.record_id, field, problem, hint, source=self.source)


def _short(value: Any) -> str:
    """A short description of a bad value for error messages (the value may be huge, e.g. a whole conversation)."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if value is None else f"{text} ({type(value).__name__})"


def _record_id(raw: Any, index: int | None, source: str | None) -> str:
    record_id = raw.get("id") if type(raw) is dict or isinstance(raw, Mapping) else None
    if record_id is not None and (record_id := str(record_id)) != "":
        return record_id
    position = "?" if index is None else index
    return f"{source}:{position}" if source else f"#{position}"


def _split_placeholders(text: str) -> list[dict]:
    """Split a string on ``<image>`` into typed entries, dropping the layout newline next to each placeholder."""
    parts = text.split(IMAGE_PLACEHOLDER)
    if len(parts) == 1:
        return [{"type": "text", "text": text}] if text else []
    content: list[dict] = []
    last = len(parts) - 1
    for k, part in enumerate(parts):
        # "<image>\nQ" and "Q\n<image>" are the LLaVA conventions: that one newline is layout, not content (the chat
        # template separates entries itself). Only one is removed so deliberate blank lines survive.
        if k > 0 and part.startswith("\n"):
            part = part[1:]
        if k < last and part.endswith("\n"):
            part = part[:-1]
        # Whitespace left between/around placeholders is layout too; a text entry of "  " would only add noise tokens.
        if part.strip():
            content.append({"type": "text", "text": part})
        if k < last:
            content.append({"type": "image"})
    return content


def _convert_typed(entries: list | tuple, field: str, fail: _Fail) -> tuple[list[dict], list[tuple[str, Any]]]:
    """Typed content list -> (canonical entries, [(field, inline image ref)] for image entries that carry one)."""
    content: list[dict] = []
    inline_refs: list[tuple[str, Any]] = []
    hint = f"Typed content entries look like {_TYPED_EXAMPLE}."
    for j, entry in enumerate(entries):
        entry_field = f"{field}[{j}]"
        if not isinstance(entry, Mapping):
            raise fail(entry_field, f"content entry is {_short(entry)}, not a mapping", hint)
        entry_type = entry.get("type")
        if entry_type == "image":
            content.append({"type": "image"})
            for key in _IMAGE_REF_KEYS:
                if entry.get(key) is not None:
                    inline_refs.append((f"{entry_field}.{key}", entry[key]))
                    break
        elif entry_type == "text":
            text = entry.get("text")
            if not isinstance(text, str):
                raise fail(
                    f"{entry_field}.text",
                    f"text entry's text is {_short(text)}, not a string",
                    "Give the text as a string, or drop the entry if there is no text.",
                )
            # A literal "<image>" inside typed text is still an image slot: processors of LLaVA-style models expand
            # that string into image tokens, so leaving it as text would desynchronise images and tokens.
            content.extend(_split_placeholders(text))
        else:
            raise fail(
                f"{entry_field}.type",
                f"unknown content entry type {entry_type!r}",
                f"Accepted types: 'image', 'text'. {hint}",
            )
    return content, inline_refs


def _convert_turns(turns: list | tuple, key: str, fail: _Fail) -> tuple[list[dict], list[tuple[str, Any]]]:
    """Convert and check every turn on its own; conversation-level checks come after."""
    llava = key == "conversations"
    role_key, value_key = ("from", "value") if llava else ("role", "content")
    if llava:
        shape_hint = "LLaVA 'conversations' turns need 'from' and 'value'; put role/content turns under 'messages'."
    else:
        shape_hint = "'messages' turns need 'role' and 'content'; put from/value (LLaVA) turns under 'conversations'."
    messages: list[dict] = []
    inline_refs: list[tuple[str, Any]] = []
    for i, turn in enumerate(turns):
        turn_field = f"{key}[{i}]"
        if not isinstance(turn, Mapping):
            raise fail(turn_field, f"turn is {_short(turn)}, not a mapping", shape_hint)
        for needed in (role_key, value_key):
            if needed not in turn:
                raise fail(turn_field, f"turn lacks {needed!r} (it has keys {list(turn)})", shape_hint)

        raw_role = turn[role_key]
        role = _ROLE_ALIASES.get(raw_role.strip().lower()) if isinstance(raw_role, str) else None
        if role is None:
            raise fail(
                f"{turn_field}.{role_key}",
                f"unknown role {raw_role!r}",
                f"Accepted roles (case-insensitive): {_ACCEPTED_ROLES}; rename it to one of them.",
            )

        value = turn[value_key]
        value_field = f"{turn_field}.{value_key}"
        if isinstance(value, str):
            content = _split_placeholders(value)
        elif not llava and isinstance(value, (list, tuple)):
            content, refs = _convert_typed(value, value_field, fail)
            inline_refs.extend(refs)
        elif llava:
            raise fail(
                value_field,
                f"value is {_short(value)}, not a string",
                f"Give the turn's text as a string with {IMAGE_PLACEHOLDER!r} where an image goes "
                "(typed content lists are only accepted in the 'messages' form).",
            )
        else:
            raise fail(
                value_field,
                f"content is {_short(value)}",
                f"Give a string or a typed content list like {_TYPED_EXAMPLE}.",
            )

        n_images = sum(entry["type"] == "image" for entry in content)
        if n_images and role != "user":
            raise fail(
                value_field,
                f"{role} turn contains {n_images} image placeholder(s)",
                "Images belong to user turns: move the placeholder/image entry into the user turn that asks about it.",
            )
        if role == "assistant" and not "".join(entry["text"] for entry in content).strip():
            raise fail(
                value_field,
                "empty assistant answer",
                "Fill in the answer, or drop this turn together with the user turn it answers.",
            )
        messages.append({"role": role, "content": content})
    return messages, inline_refs


def _check_structure(messages: list[dict], key: str, fail: _Fail) -> None:
    """system? (user assistant)+ -- the shape every chat template and the loss masking assume."""
    start = 1 if messages[0]["role"] == "system" else 0
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system":
            if i == 0:
                continue
            raise fail(
                f"{key}[{i}]",
                f"system turn at position {i}; a system turn is only allowed as the first turn",
                "Move it to the front (at most one system turn), or merge it into the first system turn.",
            )
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if role == expected:
            continue
        if i == start:
            raise fail(
                f"{key}[{i}]",
                f"the conversation starts with an {role} turn; it must start with a user turn "
                "(optionally after one system turn)",
                "Remove the leading assistant turn, or add the user turn it answers before it.",
            )
        raise fail(
            f"{key}[{i}]",
            f"two {role} turns in a row (positions {i - 1} and {i}); user and assistant turns must alternate",
            "Merge consecutive turns of the same role into one, or add the missing turn between them.",
        )
    if len(messages) == start:
        raise fail(
            key, "the conversation has a system turn only", "Add at least one user turn and its assistant answer."
        )
    if messages[-1]["role"] == "user":
        raise fail(
            f"{key}[{len(messages) - 1}]",
            "the conversation ends with a user turn that has no answer",
            "Remove it or add the answer (a final assistant turn).",
        )


def _check_image_ref(ref: Any, field: str, fail: _Fail) -> None:
    ref_hint = "(a path, URL, bytes, PIL image or {'bytes', 'path'} dict)"
    if ref is None:
        raise fail(field, "image ref is None", f"Remove the entry or give the image {ref_hint}.")
    if isinstance(ref, (str, bytes)) and not ref.strip():
        raise fail(
            field,
            "image ref is empty",
            f"Give the image {ref_hint}; for a text-only record use None or drop the key.",
        )
    # The HF `Image` feature's undecoded form; both empty means the image was lost on the way.
    if isinstance(ref, Mapping) and ("bytes" in ref or "path" in ref) and not ref.get("bytes") and not ref.get("path"):
        raise fail(field, "image dict has neither 'bytes' nor 'path'", "Give the image bytes or its path.")


def _attach_images(
    raw: Mapping,
    messages: list[dict],
    n_slots: int,
    key: str,
    fail: _Fail,
    allow_text_only: bool,
    inline_refs: list[tuple[str, Any]] = (),
    check_user_turns: bool = True,
) -> dict:
    """The tail both conversion paths share: images to their slots, the per-turn checks that need them, the record.

    ``messages`` have passed :func:`_check_structure` and hold ``n_slots`` image entries; ``inline_refs`` are the
    image refs carried by typed content entries (HF chat form only). ``check_user_turns=False`` skips the empty
    user turn check for a caller that let no blank user turn through (the fast path looks at every value anyway;
    the check is ~10% of its time). Raises RecordError like the general path.
    """
    images, images_key = _top_level_images(raw, fail)
    if not images and inline_refs:
        # HF chat style {"type": "image", "image": ref}: the refs live in the content, in order.
        for ref_field, ref in inline_refs:
            _check_image_ref(ref, ref_field, fail)
        images = [ref for _, ref in inline_refs]

    if n_slots == 0 and images:
        # LLaVA convention for data that omits "<image>": all images open the first user turn.
        first_user = next(message for message in messages if message["role"] == "user")
        first_user["content"][:0] = [{"type": "image"} for _ in images]
    elif n_slots != len(images):
        if n_slots > len(images):
            problem = f"{n_slots} image placeholder(s) in the conversation but {len(images)} image(s) given"
            hint = (
                f"Give one image per {IMAGE_PLACEHOLDER!r} placeholder (in order), or remove the extra placeholders."
            )
        else:
            problem = f"{len(images)} images given but only {n_slots} image placeholder(s) in the conversation"
            hint = (
                f"Add a {IMAGE_PLACEHOLDER!r} placeholder where each image belongs, or drop the extra images "
                "(with no placeholder at all, the images are put at the start of the first user turn)."
            )
        raise fail(images_key, problem, hint)

    if check_user_turns:  # only now: a user turn with neither text nor placeholder is fine if the images went in
        _check_user_turns(messages, key, fail)

    if not images and not allow_text_only:
        raise fail(
            images_key,
            "the record has no images but this recipe needs at least one (allow_text_only=False)",
            "Add the image, or filter text-only records out of this dataset.",
        )

    record: dict = {"id": fail.record_id, "images": images, "messages": messages}
    references = _references(raw, fail)
    if references is not None:
        record["references"] = references
    return record


def _check_user_turns(messages: list[dict], key: str, fail: _Fail) -> None:
    for position, message in enumerate(messages):
        if message["role"] != "user":
            continue
        for entry in message["content"]:
            if entry["type"] == "image" or entry["text"].strip():
                break
        else:
            raise fail(
                f"{key}[{position}]",
                "empty user turn (no text and no image)",
                "Fill in the question, or drop this turn together with its answer.",
            )


def _top_level_images(raw: Mapping, fail: _Fail) -> tuple[list, str]:
    """The record's ``image``/``images`` value as a list of refs, plus the key it came from (for messages)."""
    # Plain gets rather than a loop over the keys: this runs once per record, 100,000 times at start-up.
    value, key = raw.get("images"), "images"
    if value is None:
        value, key = raw.get("image"), "image"
        if value is None:
            return [], "images"
    elif raw.get("image") is not None:
        raise fail("images", "both 'image' and 'images' are given", "Keep only one of them ('images', a list).")
    # A path (a non-blank str) is the usual ref and needs no further check: tested first, inline.
    if type(value) is str and value.strip():
        return [value], key
    if isinstance(value, (list, tuple)):
        for j, ref in enumerate(value):
            if type(ref) is not str or not ref.strip():
                _check_image_ref(ref, f"{key}[{j}]", fail)
        return list(value), key
    # A single ref (str, bytes, PIL image, dict ...), the usual LLaVA single-image form.
    _check_image_ref(value, key, fail)
    return [value], key


def _references(raw: Mapping, fail: _Fail) -> list[str] | None:
    value, key = raw.get("references"), "references"
    if value is None:
        value, key = raw.get("answers"), "answers"
        if value is None:
            return None
    elif raw.get("answers") is not None:
        raise fail("references", "both 'references' and 'answers' are given", "Keep only one of them.")
    hint = "Give a string or a list of strings (alternative acceptable answers for the last assistant turn)."
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise fail(key, f"value is {_short(value)}", hint)
    for j, answer in enumerate(value):
        if type(answer) is str and answer.strip():  # the usual answer, first
            continue
        if not isinstance(answer, str):
            raise fail(f"{key}[{j}]", f"reference answer is {_short(answer)}, not a string", hint)
        if not answer.strip():
            raise fail(
                f"{key}[{j}]", "reference answer is empty", "Remove it; an empty reference would reward empty output."
            )
    # An empty list (e.g. a split with hidden answers) carries no information: fall back to the assistant text.
    return list(value) or None


_IMAGE_LEAD = IMAGE_PLACEHOLDER + "\n"


def _fast_llava(raw: dict, index: int | None, source: str | None, allow_text_only: bool) -> dict | None:
    """The common LLaVA record's turns (plain JSON types, lower-case roles) converted and checked in one pass.

    Only the turns have a fast form here; images, references and the id go through :func:`_attach_images`, the
    general path's own tail. Returns exactly what the general path (:func:`_to_canonical_general`) returns, or None
    as soon as anything is unusual (another shape, a value that may be invalid): that record then takes the general
    path, which makes every check again and raises the error. So this path never raises a RecordError and rejects
    nothing on its own; it only skips the general path's generality for well-formed records (100,000 of them: ~37 us
    each there, ~7 us here; benchmarks/RESULTS.md, "Start-up"). tests/test_records_fast_path.py compares both on
    generated records.
    """
    turns = raw.get("conversations")
    if type(turns) is not list or not turns or raw.get("messages") is not None:
        return None
    messages = []
    n_slots = 0
    start = 0
    for i, turn in enumerate(turns):
        if type(turn) is not dict:
            return None
        raw_role = turn.get("from")
        value = turn.get("value")
        if type(raw_role) is not str or type(value) is not str:
            return None
        role = _ROLE_ALIASES.get(raw_role)  # exact lower-case spellings only; others take the general path
        if role is None:
            return None
        # Structure (see _check_structure): system? then user, assistant, user, ... alternating.
        if role == "system":
            if i:
                return None
            start = 1
        elif role != ("user" if (i - start) % 2 == 0 else "assistant"):
            return None
        if IMAGE_PLACEHOLDER not in value:
            if not value.strip():  # a blank user or assistant turn is an error (a blank system turn is not)
                if role != "system":
                    return None  # (a blank user turn is not when images go into it: the general path sorts that out)
                content = [{"type": "text", "text": value}] if value else []
            else:
                content = [{"type": "text", "text": value}]
        elif role != "user":
            return None
        elif value.startswith(_IMAGE_LEAD) and value.count(IMAGE_PLACEHOLDER) == 1:
            # "<image>\nQ", the usual LLaVA form: what _split_placeholders gives for it.
            text = value[len(_IMAGE_LEAD):]
            content = [{"type": "image"}, {"type": "text", "text": text}] if text.strip() else [{"type": "image"}]
            n_slots += 1
        else:
            content = _split_placeholders(value)
            n_images = sum(entry["type"] == "image" for entry in content)
            if not n_images:  # only possible with odd layouts; let the general path judge
                return None
            n_slots += n_images
        messages.append({"role": role, "content": content})
    if len(messages) == start or messages[-1]["role"] != "assistant":
        return None
    try:
        fail = _Fail(_record_id(raw, index, source), source)
        return _attach_images(raw, messages, n_slots, "conversations", fail, allow_text_only,
                              check_user_turns=False)  # no blank user turn came this far
    except RecordError:
        return None  # the general path reaches the same tail with the same messages and raises this error itself


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


def _to_canonical_general(raw: Any, index: int | None, source: str | None, allow_text_only: bool) -> dict:
    """Every input form and every check, one step at a time; the only path that raises RecordError."""
    record_id = _record_id(raw, index, source)
    fail = _Fail(record_id, source)
    if not isinstance(raw, Mapping):
        raise fail(
            "record",
            f"got {_short(raw)}, not a mapping",
            "Each record must be a dict with 'conversations' (LLaVA) or 'messages' (HF chat).",
        )

    present = [key for key in ("conversations", "messages") if raw.get(key) is not None]
    if len(present) == 2:
        raise fail("conversations", "both 'conversations' and 'messages' are given", "Keep only one of them.")
    if not present:
        raise fail(
            "conversations",
            f"no conversations: the record has neither 'conversations' nor 'messages' (keys: {list(raw)})",
            "Put the dialogue under 'conversations' (LLaVA from/value turns) or 'messages' (role/content turns).",
        )
    key = present[0]
    turns = raw[key]
    if not isinstance(turns, (list, tuple)):
        raise fail(
            key,
            f"value is {_short(turns)}, not a list of turns",
            "Give a list of turns (if it is a JSON string, json.loads it first).",
        )
    if not turns:
        raise fail(key, "no conversations (empty list)", "Add the user/assistant turns or drop the record.")

    messages, inline_refs = _convert_turns(turns, key, fail)
    _check_structure(messages, key, fail)

    n_slots = sum(entry["type"] == "image" for message in messages for entry in message["content"])
    return _attach_images(raw, messages, n_slots, key, fail, allow_text_only, inline_refs)


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
