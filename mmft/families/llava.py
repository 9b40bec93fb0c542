"""LLaVA (1.5) and the tiny demo model: CLIP-style vision tower, MLP projector, Llama-style language model.

Nothing to override: the processor expands each ``<image>`` into the image tokens, several images and text-only
samples work, and the parts sit where the generic discovery would look.
"""

from . import STANDARD_PARTS, Family, register

# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
LLAVA = register(
    Family(
        name="llava",
        model_types=("llava",),
        processor_classes=("LlavaProcessor",),
        **STANDARD_PARTS,
    )
)
