"""Qwen2-VL (Qwen/Qwen2-VL-2B/7B/72B-Instruct, model type ``qwen2_vl``).

Layout (transformers' ``Qwen2VLForConditionalGeneration``): the vision tower is ``model.visual``
(``Qwen2VisionTransformerPretrainedModel``) and the projector, the ``PatchMerger`` that folds 2x2 patches into one
language-model token, lives *inside* it as ``model.visual.merger``. Its parameters must count as projector, not
vision tower: ``mmft.train.modeling.component_of`` matches the longest path first, so naming both is enough.

Nothing else to override: the chat template writes ``<|vision_start|><|image_pad|><|vision_end|>`` per image and
the processor expands ``<|image_pad|>`` (``processor.image_token``, the default placeholder) into one token per
merged patch; the wrapper tokens are ordinary text on both sides of the expansion. The processor also returns
``mm_token_type_ids``, which the model needs for its multimodal RoPE positions (it raises without them when images
are present); the collator passes every processor output through. Several images per sample and text-only samples
work, also mixed in one batch.
"""

from . import MERGER_PARTS, MROPE_PADDING_FREE_REFUSAL, Family, register

# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
QWEN2_VL = register(
    Family(
        name="qwen2-vl",
        model_types=("qwen2_vl",),
        padding_free_refusal=MROPE_PADDING_FREE_REFUSAL,
        processor_classes=("Qwen2VLProcessor",),
        **MERGER_PARTS,
        lm_head=("lm_head",),
    )
)
