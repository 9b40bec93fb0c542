"""Tiny Llama 4: a ViT with 2-D rotary positions and a pixel-shuffle adapter, a linear projector, and a Llama 4 text
model (interleaved mixture-of-experts layers, chunked and no-RoPE attention).

Built with the real ``Llama4ForConditionalGeneration`` / ``Llama4Processor`` / ``Llama4ImageProcessor``, and the real
chat template (``processing_llama4.chat_template``, the one the processor defaults to). Tiles are 56x56 in 14x14
patches (16 patches, pixel-shuffled by 0.5 into 4 tokens); ``max_patches=1`` keeps one tile per image, so each
``<|image|>`` becomes ``<|image_start|><|image|><|patch|>*4<|image_end|>``. Vision width 32 (1 layer), text width 64
(2 layers: one dense, one with 2 experts + a shared expert).
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import save_tiny_model
from .tokenizer import train_tokenizer

SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|header_start|>", "<|header_end|>", "<|eot|>", "<|eom|>",
    "<|image_start|>", "<|image_end|>", "<|image|>", "<|patch|>", "<|tile_x_separator|>", "<|tile_y_separator|>",
]
TILE = 56
PATCH = 14


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        Llama4Config,
        Llama4ForConditionalGeneration,
        Llama4ImageProcessor,
        Llama4Processor,
    )
    from transformers.models.llama4.configuration_llama4 import Llama4TextConfig, Llama4VisionConfig
    from transformers.models.llama4.processing_llama4 import chat_template

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        700,
        chat_template=chat_template,
        special_tokens=SPECIAL_TOKENS,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot|>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<|image|>"},
    )
    image_processor = Llama4ImageProcessor(size={"height": TILE, "width": TILE}, max_patches=1)
    processor = Llama4Processor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                                pixel_shuffle_ratio=0.5, chat_template=chat_template)
    ids = tokenizer.convert_tokens_to_ids
    vision_config = Llama4VisionConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,  # 4x32: pixel shuffle
        vision_output_dim=64, image_size=TILE, patch_size=PATCH, projector_input_dim=64, projector_output_dim=64,
        pixel_shuffle_ratio=0.5,
    )
    text_config = Llama4TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=64, intermediate_size_mlp=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=2,
        moe_layers=[1], max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, attention_chunk_size=1024,
    )
    config = Llama4Config(
        vision_config=vision_config, text_config=text_config, boi_token_index=ids("<|image_start|>"),
        eoi_token_index=ids("<|image_end|>"), image_token_index=ids("<|patch|>"), pad_token_id=tokenizer.pad_token_id,
    )
    save_tiny_model(
        Llama4ForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer,
        eos_token_id=[tokenizer.eos_token_id, ids("<|eom|>"), ids("<|end_of_text|>")],
    )


FIXTURE = TinyFixture(name="llama4", build=build, end_of_turn="<|eot|>")
