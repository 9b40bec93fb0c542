"""LLaVA-OneVision (``llava-hf/llava-onevision-qwen2-*-hf``): SigLIP vision tower, MLP projector, Qwen2 LM.

The processor does the family's work: a sample with ONE image is tiled (anyres, up to ``anyres_max_9``) and expands
into base + tile features + row newlines; in a sample with SEVERAL images each image is a single base view plus one
newline token. Which case applies is decided per sample from ``batch_num_images``, which the processor returns next to
``pixel_values`` and ``image_sizes`` and the model reads back, so the generic one-call collator path is right as long
as that key reaches the model (it is a tensor, so it does). Several images per sample and text-only samples work.

Layout quirk: the learned ``image_newline`` is a bare parameter ``model.image_newline`` outside the projector, so it
is reported as "other" and stays frozen under LoRA (also with ``freeze_projector=False``).
"""

from . import STANDARD_PARTS, Family, register

# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
LLAVA_ONEVISION = register(
    Family(
        name="llava-onevision",
        model_types=("llava_onevision",),
        processor_classes=("LlavaOnevisionProcessor",),
        **STANDARD_PARTS,
    )
)
