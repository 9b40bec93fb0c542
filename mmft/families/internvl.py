"""InternVL 3 / 3.5 (the transformers-native ``-hf`` checkpoints): InternViT tower, pixel-shuffle MLP projector,
Qwen2 (or Llama, InternVL3-9B) language model.

Layout (``modeling_internvl.py``): ``model.vision_tower`` (InternVLVisionModel), ``model.multi_modal_projector``
(LayerNorm + 2 linears over the pixel-shuffled features), ``model.language_model``, ``lm_head``.

What the generic path relies on here:

- the chat template writes ``<IMG_CONTEXT>`` once per image and ``InternVLProcessor`` expands it into
  ``<img>`` + ``<IMG_CONTEXT>`` * (``image_seq_length`` x tiles) + ``</img>``; ``processor.image_token`` *is*
  ``<IMG_CONTEXT>`` (``tokenizer.context_image_token``), so the default placeholder hook is right. The ``<img>`` /
  ``</img>`` wrappers exist only in the expanded ids and are never supervised;
- several images per sample and text-only samples work: the processor concatenates every image's tiles into one
  ``pixel_values`` in placeholder order, and the model only looks at images when ``pixel_values`` is given.

Only ``model_type == "internvl"`` is covered: the original remote-code checkpoints (``internvl_chat``) are not
loadable by ``AutoModelForImageTextToText`` without ``trust_remote_code``.
"""

from . import STANDARD_PARTS, Family, register

# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
INTERNVL = register(
    Family(
        name="internvl",
        model_types=("internvl",),
        processor_classes=("InternVLProcessor",),
        **STANDARD_PARTS,
    )
)
