"""Aya Vision (``CohereLabs/aya-vision-8b`` / ``-32b``): SigLIP vision tower, pixel-shuffle projector, Cohere2 LM.

Image tokens: the chat template writes one ``<image>`` per image; ``AyaVisionProcessor`` replaces it with
``<|START_OF_IMG|>`` + per tile ``TILE_<k>`` and ``(img_size // (patch_size * downsample_factor))**2`` copies of
``<|IMG_PATCH|>`` + ``TILE_GLOBAL`` and the thumbnail's patches + ``<|END_OF_IMG|>``. The model's ``image_token_id``
is ``<|IMG_PATCH|>``, not the ``<image>`` the template writes, so the placeholders are both: ``<image>`` (what the
label builder splits the unexpanded text on) and ``<|IMG_PATCH|>`` (what stands for the image in the model's ids).

Several images per sample and text-only samples work (tiles of all images are concatenated in ``pixel_values``).
The processor pads on the left by default; the collator always passes ``padding_side``, so training still pads right.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import STANDARD_PARTS, Family, register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AyaVisionFamily(Family):
    def image_placeholders(self, processor) -> list[str]:
        return [getattr(processor, "image_token", None) or "<image>",
                getattr(processor, "img_patch_token", None) or "<|IMG_PATCH|>"]

    def prepare_processor(self, processor) -> None:
        super().prepare_processor(processor)
        # The label builder finds image slots as single token ids in the unexpanded text. Should a tokenizer split
        # the template's "<image>" into several ordinary tokens, register it as one (it never reaches the model:
        # the processor replaces it by the image tokens before tokenizing).
        tokenizer = getattr(processor, "tokenizer", None)
        token = getattr(processor, "image_token", None) or "<image>"
        if tokenizer is not None and len(tokenizer(token, add_special_tokens=False)["input_ids"]) != 1:
            tokenizer.add_tokens([token], special_tokens=True)
            logger.info("Registered the image placeholder %r as a single token for label building.", token)


# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
AYA_VISION = register(
    AyaVisionFamily(
        name="aya-vision",
        model_types=("aya_vision",),
        processor_classes=("AyaVisionProcessor",),
        **STANDARD_PARTS,
    )
)
