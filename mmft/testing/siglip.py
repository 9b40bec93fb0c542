"""Tiny SigLIP dual encoder (``mmft:tiny-siglip``): transformers' ``SiglipModel`` with a real ``SiglipProcessor``.

Like ``mmft.testing.clip``, a dual encoder, not a generative family fixture (``DUAL_ENCODER``, not ``FIXTURE``).
SigLIP's text tower pools its *last* position, so texts are always padded to the fixed length
(``padding="max_length"``, as the released checkpoints are used); the adapter in ``mmft.contrastive.models`` does
that.
"""

from __future__ import annotations

import math
from pathlib import Path

from .dual_encoders import DualEncoderFixture, contrastive_tokenizer
from .fixture import save_tiny_model, tokenizer_ids

IMAGE_SIZE = 48
PATCH_SIZE = 8
HIDDEN = 64
LAYERS = 2
MAX_TEXT_TOKENS = 16  # SigLIP pads every text to this length (the released models use 64)


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir: Path) -> None:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tokenizer = contrastive_tokenizer(model_max_length=MAX_TEXT_TOKENS)
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    tower = dict(hidden_size=HIDDEN, intermediate_size=HIDDEN * 4, num_hidden_layers=LAYERS, num_attention_heads=4)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=MAX_TEXT_TOKENS,
                         **tokenizer_ids(tokenizer), **tower),
        vision_config=dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, **tower),
    )
    def init(model):  # the paper's initialisation (t' = log 10, b = -10), which SiglipModel(config) leaves at 0
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)

    save_tiny_model(SiglipModel, config, processor, out_dir, init=init, generation=False)


DUAL_ENCODER = DualEncoderFixture(name="siglip", build=build, module=__name__)
