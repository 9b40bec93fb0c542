"""Tiny Kosmos-2 (``Kosmos2ForConditionalGeneration``): a CLIP-style vision tower, Kosmos-2's image-to-text projection
(64 latent queries attending over the patches) and its text decoder, like ``microsoft/kosmos-2-patch14-224``.

Sizes: 32x32 images in 8x8 patches for a vision tower of width 32; 64 latent queries (the real number: the
processor writes 64 image positions); a 2-layer text decoder of width 64. The processor adds Kosmos-2's tag tokens
(``<image>``, ``</image>``, ``<grounding>``, ``<phrase>``...) and 1,024 patch-index tokens, so the vocabulary is
~1,700. As on the Hub, no chat template.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import save_tiny_model
from .tokenizer import BASE_SPECIAL_TOKENS, SENTENCEPIECE_ROLES, train_tokenizer

IMAGE_SIZE = 32


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        CLIPImageProcessor,
        Kosmos2Config,
        Kosmos2ForConditionalGeneration,
        Kosmos2Processor,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(640, chat_template=None, special_tokens=["<s>", "</s>", "<unk>"],
                                **SENTENCEPIECE_ROLES, extra_special_tokens={})
    tokenizer.unk_token = "<unk>"  # Kosmos2Processor numbers the image positions from unk_token_id + 1
    assert "<image>" in BASE_SPECIAL_TOKENS  # re-added by the processor with lstrip, as Kosmos-2's tokenizer has it
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Kosmos2Processor(image_processor=image_processor, tokenizer=tokenizer)
    tokenizer = processor.tokenizer
    config = Kosmos2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": 8},
        text_config={"vocab_size": len(tokenizer), "embed_dim": 64, "layers": 2, "attention_heads": 2,
                     "ffn_dim": 128, "max_position_embeddings": 512, "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "layerdrop": 0.0},
        latent_query_num=64,
    )
    save_tiny_model(Kosmos2ForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer)


FIXTURE = TinyFixture(name="kosmos2", build=build, end_of_turn="</s>")
