"""Tiny Florence-2 (``Florence2ForConditionalGeneration``): a DaViT vision tower, Florence-2's projector (a linear
layer over spatial + temporal pooled features) and a BART encoder-decoder, like ``microsoft/Florence-2-base``.

Sizes: 64x64 images; four DaViT stages of widths 16/32/32/32 with strides 4/2/2/2 leave a 2x2 map, so an image is
2*2 spatial + 1 temporal = 5 image tokens (``image_seq_length``; the real 768x768 model has 577); BART with one
encoder and one decoder layer of width 64.

As on the Hub, the processor ships no chat template: ``mmft.families.florence2`` supplies the task-prompt layout.
BART's ids: ``<s>`` BOS, ``</s>`` EOS and decoder start, ``<pad>``.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import save_tiny_model
from .tokenizer import SENTENCEPIECE_ROLES, train_tokenizer

IMAGE_SIZE = 64
IMAGE_TOKENS = (IMAGE_SIZE // 32) ** 2 + 1


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        BartConfig,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        Florence2VisionConfig,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(640, chat_template=None, special_tokens=["<s>", "</s>"], **SENTENCEPIECE_ROLES)
    image_processor = CLIPImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False, image_seq_length=IMAGE_TOKENS,
    )
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    hidden = 64
    vision_config = Florence2VisionConfig(
        depths=[1, 1, 1, 1], embed_dim=[16, 32, 32, 32], num_heads=[1, 2, 2, 2], num_groups=[1, 2, 2, 2],
        window_size=2, drop_path_rate=0.0, projection_dim=hidden, max_position_embeddings=8,
    )
    text_config = BartConfig(
        vocab_size=len(tokenizer), d_model=hidden, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=None, dropout=0.0, attention_dropout=0.0,
    )
    config = Florence2Config(vision_config=vision_config.to_dict(), text_config=text_config.to_dict(),
                             image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    save_tiny_model(
        Florence2ForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer,
        decoder_start_token_id=tokenizer.eos_token_id,
    )


FIXTURE = TinyFixture(name="florence2", build=build, end_of_turn="</s>")
