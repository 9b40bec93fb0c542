"""Model families: what differs from the generic path, one small module per family.

The generic path (processor chat template + processor call + ``AutoModelForImageTextToText``) serves every
family it can. A family only records where its parts live, so that freezing, LoRA targeting and the
per-component parameter report never touch the wrong module:

- ``vision_tower`` / ``projector`` / ``language_model``: module paths (as in ``model.named_modules()``), the
  first that exists wins. The LM head counts as language model.

Unknown model types fall back to discovering these parts by the attribute names common across families, and
say so once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    vision_tower: tuple[str, ...]
    projector: tuple[str, ...]
    language_model: tuple[str, ...]
    lm_head: tuple[str, ...] = ("lm_head",)


REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    for model_type in family.model_types:
        REGISTRY[model_type] = family
    return family


# Attribute names used across transformers' VLM implementations, most specific first.
GENERIC = Family(
    name="generic",
    model_types=(),
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


from . import llava  # noqa: E402,F401  (registers itself)
