"""Tiny BLIP-2 (``Blip2ForConditionalGeneration``): a BLIP-2 ViT, a one-layer Q-former with 8 query tokens, the linear
language projection and an OPT language model, like ``Salesforce/blip2-opt-2.7b``.

Sizes: 32x32 images in 8x8 patches (16 patches + CLS) for the vision tower of width 32; the Q-former (width 32)
reads them with 8 query tokens, which become the 8 image tokens of every sample; OPT with 2 layers of width 64.

As on the Hub, the processor ships no chat template (``mmft.families.blip_2`` supplies the prompt layout), and OPT's
``</s>`` is both BOS and EOS.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import TINY_VISION_MODEL, save_tiny_model, tokenizer_ids
from .tokenizer import train_tokenizer

IMAGE_SIZE = 32
NUM_QUERY_TOKENS = 8


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        OPTConfig,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(640, chat_template=None, special_tokens=["</s>"], eos_token="</s>",
                                pad_token="<pad>", bos_token="</s>",
                                extra_special_tokens={})  # Blip2Processor adds its own <image> AddedToken
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer,
                               num_query_tokens=NUM_QUERY_TOKENS)
    vision_config = Blip2VisionConfig(
        **TINY_VISION_MODEL, num_hidden_layers=1, image_size=IMAGE_SIZE, patch_size=8
    )
    qformer_config = Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, encoder_hidden_size=32, vocab_size=64)
    text_config = OPTConfig(
        vocab_size=len(tokenizer), hidden_size=64, word_embed_proj_dim=64, ffn_dim=128, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=512, **tokenizer_ids(tokenizer),
    )
    config = Blip2Config(
        vision_config=vision_config.to_dict(), qformer_config=qformer_config.to_dict(),
        text_config=text_config.to_dict(), num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    save_tiny_model(Blip2ForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer)


FIXTURE = TinyFixture(name="blip-2", build=build, end_of_turn="</s>")
