"""Mistral 3 (Mistral-Small-3.1 / 3.2, Magistral-Small, Ministral 3 VLMs): Pixtral vision tower, patch-merging
projector, Mistral text model.

Layout (``modeling_mistral3.py``): ``model.vision_tower`` (PixtralVisionModel), ``model.multi_modal_projector``
(RMSNorm + the learned 2x2 ``patch_merger`` + 2 linears), ``model.language_model``, ``lm_head``.

What the generic path relies on here:

- the chat template writes ``[IMG]`` once per image; ``PixtralProcessor`` expands it into rows of ``[IMG]`` tokens,
  each row closed by ``[IMG_BREAK]`` and the last by ``[IMG_END]``. ``processor.image_token`` is ``[IMG]``, so the
  default placeholder hook is right; break/end tokens exist only in the expanded ids and are never supervised;
- images keep their aspect ratio and are padded to the batch's largest; ``image_sizes`` tells the model each image's
  real size, so several images per sample, mixed sizes and text-only samples all work;
- the template ends each assistant turn with ``eos_token`` (``</s>``) and writes no generation prompt (a prompt ends
  with ``[/INST]``); prefix rendering handles both. It writes ``bos_token`` (``<s>``) itself, and the collator calls
  the processor with ``add_special_tokens=False``, so there is exactly one BOS.

``PixtralProcessor`` is also the processor of Pixtral-12B, which is a ``llava`` model: those are served by the
LLaVA family (found by model type); the processor hooks are the same either way.
"""

from . import STANDARD_PARTS, Family, register

# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
MISTRAL3 = register(
    Family(
        name="mistral3",
        model_types=("mistral3",),
        processor_classes=("PixtralProcessor",),
        **STANDARD_PARTS,
    )
)
