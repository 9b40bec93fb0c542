"""``mmft data show``: one processed sample, exactly as the model sees it in training.

The fastest way to see that the loss masking is right: the record goes through the real train-mode
:class:`~mmft.train.collator.VLMCollator` (chat template, image expansion, labels), and the resulting token sequence is
printed with the supervised tokens (``labels != -100``) highlighted, so a user checks at a glance that every
assistant answer, with its end-of-turn token, is supervised and that nothing else is. Runs of image tokens are
collapsed to ``<image xN>`` (one run per image for most families) so the text stays readable.

Highlighting is ANSI colour on a terminal and ``[[...]]`` markers otherwise (pipes, files, logs), and honours the
``NO_COLOR`` convention (https://no-color.org): set to anything non-empty, it turns colour off unless
``--color always`` asks for it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

__all__ = ["Segment", "image_token_ids", "render_segments", "segments", "show_command", "use_colour"]

SUPERVISED_OPEN, SUPERVISED_CLOSE = "[[", "]]"
_GREEN, _CYAN, _RESET = "\x1b[1;32m", "\x1b[36m", "\x1b[0m"


@dataclass
class Segment:
    """A run of tokens of one kind: ``"text"`` (context: system, user, template), ``"supervised"`` or ``"image"``."""

    kind: str
    ids: list[int]


def use_colour(choice: str = "auto", stream=None) -> bool:
    """Whether to print ANSI colour: ``always``/``never`` as asked; ``auto`` on a terminal unless ``NO_COLOR``."""
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    stream = sys.stdout if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def image_token_ids(processor, family=None) -> set[int]:
    """The id(s) a processor expands each image into: its ``image_token`` (or ``image_token_id``), falling back to
    the family's placeholder tokens for processors that name neither."""
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = set()
    if isinstance(getattr(processor, "image_token_id", None), int):
        ids.add(processor.image_token_id)
    token = getattr(processor, "image_token", None)
    if isinstance(token, str):
        ids.add(tokenizer.convert_tokens_to_ids(token))
    if not ids and family is not None:
        ids.update(tokenizer.convert_tokens_to_ids(token) for token in family.image_placeholders(processor))
    ids.discard(None)
    ids.discard(tokenizer.unk_token_id)
    return ids


def segments(input_ids: list[int], labels: list[int], image_ids: set[int]) -> list[Segment]:
    """Split one sample into runs: each maximal run of one image token id is one ``image`` segment; the other
    tokens group into ``supervised`` (label set) and ``text`` runs."""
    from ..train.labels import IGNORE_INDEX

    result: list[Segment] = []
    for token, label in zip(input_ids, labels):
        if token in image_ids:
            kind = "image"
        else:
            kind = "supervised" if label != IGNORE_INDEX else "text"
        last = result[-1] if result else None
        if last is not None and last.kind == kind and (kind != "image" or last.ids[-1] == token):
            last.ids.append(token)
        else:
            result.append(Segment(kind, [token]))
    return result


def render_segments(parts: list[Segment], tokenizer, *, colour: bool) -> str:
    """The sample as text: supervised runs in ``[[...]]`` (or green), image runs as ``<image xN>`` (cyan)."""
    out = []
    for part in parts:
        if part.kind == "image":
            text = f"<image x{len(part.ids)}>"
            out.append(f"{_CYAN}{text}{_RESET}" if colour else text)
            continue
        # Decoded per run, not per token: byte-level BPE pieces of one character only make sense together.
        text = tokenizer.decode(part.ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if part.kind == "supervised":
            out.append(f"{_GREEN}{text}{_RESET}" if colour else f"{SUPERVISED_OPEN}{text}{SUPERVISED_CLOSE}")
        else:
            out.append(text)
    return "".join(out)


def _find_record(source, index: int):
    """The raw row at ``index`` (streamed up to it), converted; exits with the record's error if it is invalid."""
    from ..data.record_datasets import _convert
    from ..data.record_errors import RecordError

    if index < 0:
        sys.exit(f"mmft data show: --index must be >= 0, got {index}.")
    seen = 0
    for row in source.rows:
        seen += 1
        if row.index < index:
            continue
        if row.raw is None:
            sys.exit(f"mmft data show: {row.error}")
        try:
            record = _convert(row.raw, row.index, source.name, source.transform)
        except RecordError as error:
            sys.exit(f"mmft data show: {error}\n(`mmft data check` lists every such problem.)")
        record["image_root"] = source.image_root
        return record, row.where
    sys.exit(f"mmft data show: {source.name} has no record at index {index}: it has {seen} records.")


def show_command(args) -> None:
    from .dataargs import collator_for_args, open_or_exit

    source = open_or_exit(args, "show")
    record, where = _find_record(source, args.index)
    collator = collator_for_args(args)
    try:
        batch = collator([record])
    except Exception as error:  # noqa: BLE001 - shown with its record, as training would fail on it
        sys.exit(f"mmft data show: {type(error).__name__}: {error}")
    print(
        format_sample(
            record, where, batch, collator, model=args.model, max_length=args.max_length, colour=use_colour(args.color)
        )
    )


def format_sample(
    record: dict, where: str, batch, collator, *, model: str, max_length: int | None, colour: bool
) -> str:
    """The header (ids, image-token counts, label statistics) and the highlighted token sequence."""
    from ..train.labels import IGNORE_INDEX

    length = int(batch["attention_mask"][0].sum())
    input_ids = batch["input_ids"][0, :length].tolist()
    labels = batch["labels"][0, :length].tolist()
    parts = segments(input_ids, labels, image_token_ids(collator.processor, collator.family))
    image_runs = [len(part.ids) for part in parts if part.kind == "image"]
    supervised = sum(label != IGNORE_INDEX for label in labels)
    n_images = len(record["images"])
    lines = [
        f"record {record['id']!r} ({where}) as {model} sees it in training",
        f"images: {n_images}; image tokens per image: {', '.join(map(str, image_runs)) or '-'}"
        + (
            f" (note: {len(image_runs)} image-token runs for {n_images} images)" if len(image_runs) != n_images else ""
        ),
        f"tokens: {length} total, {sum(image_runs)} image, {supervised} supervised "
        f"({supervised / length:.1%} of all, {supervised / max(1, length - sum(image_runs)):.1%} of text tokens)",
    ]
    if max_length is not None:
        verdict = "fits" if length <= max_length else f"OVER by {length - max_length} tokens"
        lines.append(f"max_length {max_length}: {verdict}")
    legend = (
        f"{_GREEN}supervised (labels != -100){_RESET}, {_CYAN}<image xN>{_RESET} = N image tokens"
        if colour
        else f"{SUPERVISED_OPEN}supervised (labels != -100){SUPERVISED_CLOSE}, <image xN> = N image tokens"
    )
    lines.append(f"legend: {legend}")
    lines.append("-" * 80)
    lines.append(render_segments(parts, collator.tokenizer, colour=colour))
    return "\n".join(lines)
