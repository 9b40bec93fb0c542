"""LFM2-VL (and LFM2.5-VL, also ``model_type: lfm2_vl``): a SigLIP2 NaFlex vision tower, a pixel-unshuffle MLP
projector and an LFM2 hybrid (short convolution + attention) language model.

Where the parts live (``modeling_lfm2_vl.py``): ``model.vision_tower`` (``Siglip2VisionModel``),
``model.multi_modal_projector`` (``Lfm2VlMultiModalProjector``), ``model.language_model`` (``Lfm2Model``) and the
top-level ``lm_head`` (tied to the input embeddings in the real checkpoints).

Nothing in the collator path needs overriding: the ChatML template writes ``<image>``, which the processor expands
into ``<|image_start|>`` [``<|img_row_i_col_j|>`` + tile tokens ...  ``<|img_thumbnail|>``] ``<image>``*n
``<|image_end|>``; pixels are flattened NaFlex patches, one row per tile (``pixel_values``, ``pixel_attention_mask``,
``spatial_shapes``), concatenated over the batch, so several images per sample and text-only samples mixed with
image samples both work. The short-convolution layers zero padded positions (``apply_mask_to_padding_states``),
so left-padded batched generation matches one-at-a-time generation.

Chat template: the checkpoints ship ChatML behind ``{{ bos_token }}`` (``<|startoftext|><|im_start|>user\n<image>
question<|im_end|>\n<|im_start|>assistant\nanswer<|im_end|>\n``), so no fallback is set. LFM2.5-VL's template drops
the ``...</think>`` part of *earlier* assistant turns; a record with such a turn renders differently once later turns
are added, and the collator refuses it (LabelAlignmentError) rather than mislabel it.
"""

from . import STANDARD_PARTS, Family, register

# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
LFM2_VL = register(
    Family(
        name="lfm2-vl",
        model_types=("lfm2_vl",),
        processor_classes=("Lfm2VlProcessor",),
        **STANDARD_PARTS,
        lm_head=("lm_head",),
    )
)
