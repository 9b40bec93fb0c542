"""Tiny CLIP dual encoder (``mmft:tiny-clip``): transformers' ``CLIPModel`` with a real ``CLIPProcessor``, offline.

Not a generative family fixture: this module defines ``DUAL_ENCODER`` (not ``FIXTURE``), so the image-text-to-text
family matrix (``tiny_fixtures()``) never picks it up; ``mmft.contrastive.models`` resolves ``mmft:tiny-clip``.
Sizes suit a 2-core CPU: 48x48 images in 8x8 patches (36 patches + CLS), towers of width 64 and 2 layers, so a
training step on a batch of 32 takes tens of milliseconds.
"""

from __future__ import annotations

from pathlib import Path

from .dual_encoders import DualEncoderFixture, contrastive_tokenizer
from .fixture import save_tiny_model, tokenizer_ids

IMAGE_SIZE = 48  # the shapes images' size: no resize blur
PATCH_SIZE = 8
HIDDEN = 64
LAYERS = 2
MAX_TEXT_TOKENS = 32


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = contrastive_tokenizer(model_max_length=MAX_TEXT_TOKENS)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    tower = dict(hidden_size=HIDDEN, intermediate_size=HIDDEN * 4, num_hidden_layers=LAYERS, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=MAX_TEXT_TOKENS,
                         **tokenizer_ids(tokenizer), **tower),
        vision_config=dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, **tower),
        projection_dim=HIDDEN,
    )
    save_tiny_model(CLIPModel, config, processor, out_dir, generation=False)


DUAL_ENCODER = DualEncoderFixture(name="clip", build=build, module=__name__)
