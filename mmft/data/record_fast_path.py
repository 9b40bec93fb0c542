"""The fast path of :func:`mmft.data.records.to_canonical` for the common LLaVA record (see :func:`_fast_llava`)."""

from __future__ import annotations

from .record_conversion import _ROLE_ALIASES, IMAGE_PLACEHOLDER, _attach_images, _split_placeholders
from .record_errors import RecordError, _Fail, _record_id

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
