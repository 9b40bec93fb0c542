"""Model families: what differs from the generic path, one small module per family.

The generic path (processor chat template + one batched processor call + ``AutoModelForImageTextToText``) serves
every family it can. A family module records only what differs, as a ``Family`` instance (or a subclass that
overrides a hook) passed to ``register``:

- where the parts live (``vision_tower`` / ``projector`` / ``language_model`` / ``lm_head``: module paths as in
  ``model.named_modules()``, the first that exists wins), so that freezing, LoRA targeting and the per-component
  parameter report never touch the wrong module;
- what its samples may hold (``max_images`` per sample, ``text_only`` samples), checked before training so an
  unsupported record fails at start, naming the record, instead of deep inside the model;
- hooks into the collator: the image placeholder token(s) the chat template writes, a fallback chat template for
  processors that ship none, the processor's own text rewrites (``rewrite_text``), extra processor-call arguments,
  and a last look at each batch (``finalize_batch``: e.g. PaliGemma's prefix/suffix ``token_type_ids``);
- a fix-up of the loaded model (``prepare_model``, run by mmft's loaders: e.g. Llama 4's pixel dtype cast);
- prompt-style models (``prompt_style``: BLIP-2, InstructBLIP, Fuyu, Kosmos-2, Florence-2) take one prompt and one
  answer, not a conversation: ``conversation`` folds a multi-turn record into one prompt (the earlier turns) and its
  last answer, the only one supervised; ``prompt_inputs`` lets a family compute extra model inputs from the prompt
  alone (InstructBLIP's Q-former instruction);
- encoder-decoder models (``encoder_decoder``: Florence-2): the processor gets the prompt only and the answer becomes
  the decoder's ``labels``.

Families are found by ``config.model_type`` (models) or processor class name (processors). Unknown model types fall
back to the generic layout discovery and say so once. Family modules are discovered, not listed: adding a family is
one new file here (plus a tiny fixture in ``mmft/testing/``).

Family modules read alike on purpose: a fallback chat template (Jinja text, the family's own markers) and one
declarative ``register(Family(...))``, spelt out in each file so a family reads in one place; the module layouts
and helpers several share are named here (``STANDARD_PARTS``, ``MERGER_PARTS``, ``CONNECTOR_PARTS``,
``MESSAGE_TEXT_TEMPLATE``, ``move_padding``).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

logger = logging.getLogger(__name__)


class UnsupportedRecordError(UsageError):
    """A record holds something its model family cannot take (too many images, no image at all)."""


MROPE_PADDING_FREE_REFUSAL = (
    "its multimodal RoPE takes 3-D position ids computed from the image grid over the padded batch"
)


@dataclass(frozen=True)
class Family:
    """What one model family does differently from the generic path. Subclass to override a hook.

    Args:
        name: short name used in messages and the fixture matrix (``"qwen2-vl"``).
        model_types: ``config.model_type`` values of this family's models.
        processor_classes: class names of its processors (for collators built from a processor alone).
        vision_tower / projector / language_model / lm_head: candidate module paths, first existing wins.
        max_images: most images one sample may hold (``None``: no limit).
        text_only: whether samples without any image work.
        chat_template: used when the processor ships no chat template (``None``: the processor must have one).
        padding_free_refusal: why padding-free batches (``mmft.train.packing``) cannot serve this family (None: they
        can).
        lora_exclude: last names of linear modules the ``--lora_target`` presets never adapt (Llama 4's ``router``,
            an ``nn.Linear`` subclass that returns a tuple, which a LoRA layer cannot wrap).
        vision_tokens_discrete: the vision tower turns images into discrete token ids (Chameleon's VQ-VAE), so no
            gradient ever reaches it: it runs, but cannot train.
        prompt_style: the model takes a prompt and an answer, not a conversation; multi-turn records are folded by
            ``conversation`` (earlier turns into the prompt, the last answer supervised).
        encoder_decoder: the language model is a seq2seq model: the processor encodes the prompt and the collator
            builds decoder ``labels`` from the answer (the model shifts them right from its own decoder start).
    """

    name: str
    model_types: tuple[str, ...] = ()
    processor_classes: tuple[str, ...] = ()
    vision_tower: tuple[str, ...] = ()
    projector: tuple[str, ...] = ()
    language_model: tuple[str, ...] = ()
    lm_head: tuple[str, ...] = ("lm_head",)
    max_images: int | None = None
    text_only: bool = True
    chat_template: str | None = None
    padding_free_refusal: str | None = None
    lora_exclude: tuple[str, ...] = ()
    vision_tokens_discrete: bool = False
    prompt_style: bool = False
    encoder_decoder: bool = False

    # ---- model hook ---------------------------------------------------------------------------------------------
    def prepare_model(self, model) -> None:
        """Fix up a freshly loaded model in place (mmft's loaders call it; e.g. Llama 4 casts its bfloat16 pixels to
        the vision tower's dtype). Must be idempotent. Default: nothing."""

    # ---- collator hooks ---------------------------------------------------------------------------------------
    def prepare_processor(self, processor) -> None:
        """Make ``processor`` ready to render conversations; raise with a clear message when it cannot be."""
        if getattr(processor, "chat_template", None) is None:
            if self.chat_template is None:
                raise UsageError(
                    f"The {type(processor).__name__} ({self.name} family) has no chat template, so conversations "
                    "cannot be rendered. Load a processor that ships one (usually the instruction-tuned checkpoint), "
                    "or set `processor.chat_template` before training."
                )
            processor.chat_template = self.chat_template

    def image_placeholders(self, processor) -> list[str]:
        """The token(s) the chat template writes where an image goes, which the processor then expands."""
        return [getattr(processor, "image_token", None) or "<image>"]

    def rewrite_text(self, processor, text: str, spans: list[tuple[int, int]]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered ``text`` as the processor will tokenise it, with the assistant character ``spans`` moved along.

        For processors that rewrite text beyond expanding image placeholders (Idefics2 inserts a space after an
        image): the family makes the same rewrite here, before labels are built, so the label builder and the
        processor tokenise the same text. The rewrite must be one the processor then leaves as it is, and must not
        touch the assistant spans' text. Default: unchanged.
        """
        return text, spans

    def processor_kwargs(self, mode: str) -> dict[str, Any]:
        """Extra keyword arguments for the batched processor call (``mode`` is ``"train"`` or ``"generate"``)."""
        return {}

    def conversation(self, messages: list[dict]) -> list[dict]:
        """The messages as this family renders them (a prompt-style family folds them to one prompt + answer).

        ``messages`` is a whole training conversation (ending with an assistant turn) or a generation prompt (ending
        with a user turn). Prompt-style: see ``fold_to_prompt``.
        """
        if not self.prompt_style:
            return messages
        return fold_to_prompt(messages, self.name)

    def prompt_inputs(self, processor, prompts: list[str], mode: str) -> dict[str, Any]:
        """Extra model inputs computed from each sample's prompt text alone (the rendered text before its
        supervised answer; the whole text in generation), merged into the batch. Default: none."""
        return {}

    def finalize_batch(self, batch: dict, mode: str) -> dict:
        """A last look at a collated batch (labels already built in training)."""
        return batch

    def check_record(self, record: dict) -> None:
        """Raise ``UnsupportedRecordError`` for a record this family cannot take."""
        n_images = len(record.get("images") or [])
        if self.max_images is not None and n_images > self.max_images:
            raise UnsupportedRecordError(
                f"record {record.get('id')!r} has {n_images} images; {self.name} models take at most "
                f"{self.max_images} per sample. Split the record or filter such records out."
            )
        if n_images == 0 and not self.text_only:
            raise UnsupportedRecordError(
                f"record {record.get('id')!r} has no image; {self.name} models need an image in every sample. "
                "Filter text-only records out or train a family that supports them."
            )


def _text_of(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return " ".join(item["text"] for item in content if item.get("type") == "text" and item.get("text"))


_folded_warned: set[str] = set()


def fold_to_prompt(messages: list[dict], family_name: str) -> list[dict]:
    """One user turn (every turn before the last answer) and, in training, that last answer.

    The user turn holds all images of the folded turns first (prompt-style models read the image before the prompt)
    and the texts of the system, user and earlier assistant turns in order, one per line. Only the last answer is
    then supervised: a prompt-style model was trained to answer one prompt, and its earlier answers are context
    here. Said once per family in the log, since it changes what multi-turn data teaches.
    """
    last = len(messages) - 1 if messages and messages[-1]["role"] == "assistant" else len(messages)
    head, tail = messages[:last], messages[last:]
    if len(head) == 1 and head[0]["role"] == "user":
        return messages  # already one prompt (and its answer)
    if sum(m["role"] == "user" for m in head) > 1 and family_name not in _folded_warned:
        _folded_warned.add(family_name)
        logger.warning(
            "%s models take one prompt, not a conversation: the earlier turns of multi-turn records go into the "
            "prompt (one line each) and only the last answer is supervised.", family_name,
        )
    images = [item for m in head if not isinstance(m["content"], str) for item in m["content"]
              if item.get("type") == "image"]
    text = "\n".join(t for t in (_text_of(m) for m in head) if t)
    content = [*images, *([{"type": "text", "text": text}] if text else [])]
    return [{"role": "user", "content": content}, *tail]


# The Jinja lines that set ``text`` to a message's text, whether its content is a string or typed entries (image
# entries dropped: these processors place the image themselves): shared by the templates mmft writes for the
# prompt-style families (BLIP-2, Florence-2, Fuyu, Kosmos-2), which only differ in how they lay the texts out.
MESSAGE_TEXT_TEMPLATE = (
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}"
    "{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -%}"
    "{%- endif -%}"
)

# Where the parts live in the module layouts several families' transformers classes share (``Family`` fields, to
# pass as ``**STANDARD_PARTS``); a family with its own layout spells its paths out.
# LlavaForConditionalGeneration's layout, which most VLM classes since follow.
STANDARD_PARTS = {
    "vision_tower": ("model.vision_tower",),
    "projector": ("model.multi_modal_projector",),
    "language_model": ("model.language_model",),
}
# Qwen2-VL's and its successors' (GLM-4V too): the projector is the patch merger inside the vision tower.
MERGER_PARTS = {
    "vision_tower": ("model.visual",),
    "projector": ("model.visual.merger",),
    "language_model": ("model.language_model",),
}
# Idefics2's and its successors' (Idefics3, SmolVLM): a connector between the vision model and the text model.
CONNECTOR_PARTS = {
    "vision_tower": ("model.vision_model",),
    "projector": ("model.connector",),
    "language_model": ("model.text_model",),
}

REGISTRY: dict[str, Family] = {}  # model_type -> family
BY_PROCESSOR: dict[str, Family] = {}  # processor class name -> family


def move_padding(batch: dict, keys, *, to: str) -> dict:
    """Roll each row of ``batch[key]`` (the ``keys`` the batch holds) so that its padding ends up on side ``to``.

    For processors that pad on the side the model does not want (Fuyu's left padding in training, Kosmos-2's right
    padding for generation). A row's real tokens are its attention mask's ones; every key rolls by the same amount
    per row, so tokens, labels and masks stay aligned and no value changes. Lengths come from the mask before any
    key (the mask included) is rolled.
    """
    import torch

    if to not in ("left", "right"):
        raise ValueError(f"to must be 'left' or 'right', got {to!r}")
    mask = batch["attention_mask"]
    pads = [int(mask.shape[1] - n) for n in mask.sum(dim=1)]  # per row
    sign = 1 if to == "left" else -1
    for key in keys:
        if key in batch:
            batch[key] = torch.stack([row.roll(sign * pad) for row, pad in zip(batch[key], pads)])
    return batch


def register(family: Family) -> Family:
    for model_type in family.model_types:
        REGISTRY[model_type] = family
    for processor_class in family.processor_classes:
        BY_PROCESSOR[processor_class] = family
    return family


# Attribute names used across transformers' VLM implementations, most specific first.
GENERIC = Family(
    name="generic",
    vision_tower=("model.vision_tower", "model.vision_model", "model.visual", "vision_tower", "vision_model"),
    projector=("model.multi_modal_projector", "model.connector", "model.visual.merger", "multi_modal_projector"),
    language_model=("model.language_model", "model.text_model", "language_model"),
)

_warned: set[str] = set()


def family_for(model) -> Family:
    """The family of ``model`` (by ``config.model_type``), or the generic fallback with a one-time notice."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in REGISTRY:
        return REGISTRY[model_type]
    if model_type not in _warned:
        _warned.add(model_type)
        logger.warning(
            "Model type %r has no family module in mmft.families; using the generic layout discovery. "
            "Check the parameter report below: LoRA must land on the language model only.", model_type,
        )
    return GENERIC


def family_for_processor(processor) -> Family:
    """The family of ``processor`` by its class name (generic for unknown processors)."""
    return BY_PROCESSOR.get(type(processor).__name__, GENERIC)


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")  # each module registers itself


_discover()


def check_records_fit_family(dataset, family: Family, max_problems: int = 5) -> None:
    """Fail at start, naming records, when the data holds what this model family cannot take.

    Checks in-memory record lists (local files, lists); lazy datasets are checked per batch by the collator.
    """
    for part in getattr(dataset, "parts", ()):  # a replay mixture: its new and old records
        check_records_fit_family(part, family, max_problems)
    canonical = getattr(dataset, "_canonical", None)
    if canonical is None:
        return
    problems = []
    for record in canonical:
        try:
            family.check_record(record)
        except UnsupportedRecordError as error:
            problems.append(str(error))
    if problems:
        more = f"\n... and {len(problems) - max_problems} more" if len(problems) > max_problems else ""
        raise UnsupportedRecordError(
            f"{len(problems)} record(s) of {getattr(dataset, 'source', 'the dataset')} cannot be used with this "
            f"{family.name} model:\n" + "\n".join(problems[:max_problems]) + more
        )
