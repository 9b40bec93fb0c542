"""Tiny InstructBLIP (``InstructBlipForConditionalGeneration``): BLIP-2's ViT, an instruction-aware one-layer Q-former
with 8 query tokens and a Llama language model, like ``Salesforce/instructblip-vicuna-7b``.

Sizes: 32x32 images in 8x8 patches for a vision tower of width 32; Q-former of width 32 with its own small tokenizer
(the real one is BERT's); Llama with 2 layers of width 64. As on the Hub, no chat template anywhere.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import TINY_VISION_MODEL, save_tiny_model, tokenizer_ids
from .tokenizer import SENTENCEPIECE_ROLES, train_tokenizer

IMAGE_SIZE = 32
NUM_QUERY_TOKENS = 8


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
        LlamaConfig,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(640, chat_template=None, special_tokens=["<s>", "</s>"], **SENTENCEPIECE_ROLES,
                                extra_special_tokens={})  # InstructBlipProcessor adds its own <image> AddedToken
    qformer_tokenizer = train_tokenizer(400, chat_template=None, special_tokens=["[CLS]", "[SEP]"],
                                        eos_token="[SEP]", pad_token="<pad>", bos_token="[CLS]",
                                        extra_special_tokens={})
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = InstructBlipProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                      qformer_tokenizer=qformer_tokenizer, num_query_tokens=NUM_QUERY_TOKENS)
    vision_config = InstructBlipVisionConfig(
        **TINY_VISION_MODEL, num_hidden_layers=1, image_size=IMAGE_SIZE, patch_size=8
    )
    qformer_config = InstructBlipQFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                               num_attention_heads=2, encoder_hidden_size=32,
                                               vocab_size=len(qformer_tokenizer),
                                               pad_token_id=qformer_tokenizer.pad_token_id)
    text_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, **tokenizer_ids(tokenizer),
    )
    config = InstructBlipConfig(
        vision_config=vision_config.to_dict(), qformer_config=qformer_config.to_dict(),
        text_config=text_config.to_dict(), num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    save_tiny_model(InstructBlipForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer)


FIXTURE = TinyFixture(name="instructblip", build=build, end_of_turn="</s>")
