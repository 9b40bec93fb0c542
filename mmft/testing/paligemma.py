"""Tiny PaliGemma 2 (``PaliGemmaForConditionalGeneration``): a SigLIP vision tower, PaliGemma's one-layer linear
projector and a Gemma 2 text model (sliding-window and global layers, logit soft-capping), like
``google/paligemma2-*``.

Sizes: 32x32 images in 8x8 patches give (32 / 8)^2 = 16 image tokens (``image_seq_length``); text model 2 layers of
width 64, 2 heads of 32, one KV head.

Like the real checkpoints, the processor ships NO chat template (PaliGemma is a prefix/suffix model, not a chat
model): ``mmft.families.paligemma`` supplies the template that writes its layout. The processor also adds its
1,024 ``<locXXXX>`` and 128 ``<segXXX>`` tokens to the tokenizer, so the vocabulary is ~1,800 here.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import TINY_VISION_MODEL, save_tiny_model, tokenizer_ids
from .tokenizer import train_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8
# The tiny Gemma decoder (Gemma 2's config fields; Gemma 3's fixture uses it too): 2 layers of width 64, 2 heads of
# head_dim 32 sharing 1 KV head, local attention over 64 tokens.
GEMMA_TEXT_MODEL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "query_pre_attn_scalar": 32,
    "sliding_window": 64,
    "max_position_embeddings": 1024,
}


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        Gemma2Config,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        640,
        chat_template=None,  # as on the Hub: no chat template anywhere
        special_tokens=["<eos>", "<bos>"],
        eos_token="<eos>",
        pad_token="<pad>",
        bos_token="<bos>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,  # read by PaliGemmaProcessor
    )
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # adds <loc>/<seg> tokens
    hidden = GEMMA_TEXT_MODEL["hidden_size"]
    vision_config = SiglipVisionConfig(
        **TINY_VISION_MODEL, num_hidden_layers=1, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False
    )
    text_config = Gemma2Config(vocab_size=len(tokenizer), **GEMMA_TEXT_MODEL, **tokenizer_ids(tokenizer))
    config = PaliGemmaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vocab_size=len(tokenizer),
        projection_dim=hidden,
        hidden_size=hidden,
    )
    save_tiny_model(PaliGemmaForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer)


FIXTURE = TinyFixture(name="paligemma", build=build, end_of_turn="<eos>")
