"""LLaVA (1.5) and the tiny demo model: CLIP-style vision tower, MLP projector, Llama-style language model.

Nothing to override: the processor expands each ``<image>`` into the image tokens, several images and text-only
samples work, and the parts sit where the generic discovery would look.
"""

from . import Family, register

# Declarative on purpose: the whole Family is spelt out here, fields another family shares too (module paths,
# template flags), so that each family reads in one file (DESIGN.md, "Model families").
LLAVA = register(
    Family(
        name="llava",
        model_types=("llava",),
        processor_classes=("LlavaProcessor",),
        vision_tower=("model.vision_tower",),
        projector=("model.multi_modal_projector",),
        language_model=("model.language_model",),
    )
)
