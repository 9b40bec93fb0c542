"""LLaVA-NeXT (1.6, ``llava-hf/llava-v1.6-*``): CLIP vision tower, MLP projector, Mistral/Vicuna/Llama-3/Yi LM.

Anyres tiling is handled entirely by ``LlavaNextProcessor``: it returns ``pixel_values`` (images x views x C x H x W,
padded to the most views in the batch) plus ``image_sizes``, and expands each ``<image>`` into as many image tokens as
the model's ``pack_image_features`` will produce, so the generic collator path works; several images per sample and
text-only samples (no ``pixel_values`` at all, or only for the samples that have images) both work.

Layout quirk: the learned ``image_newline`` vector (appended after each row of tile features) is a bare parameter on
``model`` (``model.image_newline``), not inside ``model.multi_modal_projector``, so it is reported as "other"; it is
frozen under LoRA like every base weight and is not part of ``freeze_projector=False``.
"""

from . import STANDARD_PARTS, Family, register

# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
LLAVA_NEXT = register(
    Family(
        name="llava-next",
        model_types=("llava_next",),
        processor_classes=("LlavaNextProcessor",),
        **STANDARD_PARTS,
    )
)
