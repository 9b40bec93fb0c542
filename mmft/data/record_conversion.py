"""The general conversion path of :func:`mmft.data.records.to_canonical`: every input form and every check.

Turns are converted one by one (LLaVA ``from``/``value`` or HF chat ``role``/``content``, ``<image>`` placeholders
split into typed entries), then the conversation's structure is checked, then :func:`_attach_images` (the tail the
fast LLaVA path in ``mmft.data.record_fast_path`` shares) puts the images in their slots and builds the record. The
rules are the invariants listed in ``mmft.data.records``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .record_errors import _Fail, _record_id, _short

__all__ = ["IMAGE_PLACEHOLDER"]

IMAGE_PLACEHOLDER = "<image>"

# Strict on purpose: an unexpected role ("bot", "tool", "observation") usually means the data is in a format we do not
# understand, and mapping it to something by guesswork would silently corrupt the loss mask.
_ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_ACCEPTED_ROLES = ", ".join(_ROLE_ALIASES)
# Keys under which a typed image entry may carry its own ref, in order of preference.
_IMAGE_REF_KEYS = ("image", "url", "path")
_TYPED_EXAMPLE = "[{'type': 'image'}, {'type': 'text', 'text': '...'}]"


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
