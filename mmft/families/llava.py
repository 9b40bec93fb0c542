"""LLaVA (1.5) and the tiny test model: CLIP-style vision tower, MLP projector, Llama-style language model."""

from . import Family, register

LLAVA = register(
    Family(
        name="llava",
        model_types=("llava",),
        vision_tower=("model.vision_tower",),
        projector=("model.multi_modal_projector",),
        language_model=("model.language_model",),
    )
)
