"""Labels that supervise the assistant and nothing else: the label-building functions of ``VLMCollator``.

``assistant_char_spans`` finds the assistant spans in the rendered text by *rendering prefixes and diffing*: the
text of turn i is what ``messages[:i+1]`` adds to ``messages[:i]`` + generation prompt, for any chat template and
with the end-of-turn token the template writes. ``map_labels`` carries the supervised text tokens onto the ids the
processor expanded (image placeholders become the model's image tokens); everything else is ``IGNORE_INDEX``.
"""

from __future__ import annotations

IGNORE_INDEX = -100


class LabelAlignmentError(RuntimeError):
    """The chat template or processor does something the label builder cannot follow; never guessed around."""


def render(processor, messages, add_generation_prompt: bool = False) -> str:
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_char_spans(processor, messages, record_id: str = "?",
                         include_turn_suffix: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages``; return the text and the [start, end) character spans of each assistant turn.

    A span runs from the end of the generation prompt to the end of the turn, minus trailing whitespace
    (the newline ChatML writes after ``<|im_end|>`` belongs to the next turn's layout, not to the answer).
    ``include_turn_suffix`` keeps that whitespace (``--label_turn_suffix``: TRL's completion labels do).
    """
    full = render(processor, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(processor, messages[:i], add_generation_prompt=True)
        through = full if i == len(messages) - 1 else render(processor, messages[: i + 1])
        if not (through.startswith(before) and full.startswith(through)):
            raise LabelAlignmentError(
                f"record {record_id!r}: the chat template renders earlier turns differently once later turns are "
                f"added (turn {i}), so assistant spans cannot be found by prefix rendering. This family needs a "
                "label rule in mmft/families/; please report the model name."
            )
        end = len(through) if include_turn_suffix else len(through.rstrip())
        if end > len(before):
            spans.append((len(before), end))
    return full, spans


def _token_mask(offsets, spans) -> list[bool]:
    """True for each token whose character range overlaps an assistant span."""
    mask = []
    for start, end in offsets:
        mask.append(any(start < span_end and end > span_start for span_start, span_end in spans))
    return mask


def _find(haystack: list[int], needle: list[int], start: int) -> int:
    first = needle[0]
    for pos in range(start, len(haystack) - len(needle) + 1):
        if haystack[pos] == first and haystack[pos : pos + len(needle)] == needle:
            return pos
    return -1


def map_labels(text_ids: list[int], text_mask: list[bool], placeholder_ids: set[int], expanded_ids: list[int],
               record_id: str = "?") -> list[int]:
    """Carry the supervision mask from the unexpanded tokenisation onto the processor's expanded ids.

    The processor only replaces image placeholders with runs of image (and wrapper) tokens; the text
    between placeholders is tokenised identically in both. So each text segment is located in the
    expanded ids in order, and its mask copied across. Image tokens therefore never get a label.
    """
    labels = [IGNORE_INDEX] * len(expanded_ids)
    segments, current = [], []
    for position, token in enumerate(text_ids):
        if token in placeholder_ids:
            segments.append(current)
            current = []
        else:
            current.append(position)
    segments.append(current)
    cursor = 0
    for segment in segments:
        if not segment:
            continue
        if not any(text_mask[p] for p in segment):
            # Still advance the cursor so later segments are searched after this one.
            found = _find(expanded_ids, [text_ids[p] for p in segment], cursor)
            cursor = found + len(segment) if found >= 0 else cursor
            continue
        found = _find(expanded_ids, [text_ids[p] for p in segment], cursor)
        if found < 0:
            raise LabelAlignmentError(
                f"record {record_id!r}: could not find the text around an assistant turn in the processor's "
                "output (the processor rewrote text, not only image placeholders). Labels would be wrong, so "
                "the sample is refused; please report the model name."
            )
        for offset, p in enumerate(segment):
            if text_mask[p]:
                labels[found + offset] = expanded_ids[found + offset]
        cursor = found + len(segment)
    return labels
