"""Tiny GOT-OCR2: a SAM-style windowed ViT, a two-conv projector and a Qwen2 text model.

Built with the real ``GotOcr2ForConditionalGeneration`` / ``GotOcr2Processor`` / ``GotOcr2ImageProcessor``.
``GotOcr2Processor`` writes a fixed 256 ``<imgpad>`` tokens per image (its ``num_image_tokens``, a class default that
``save_pretrained`` does not keep), so the tiny model must make exactly 256 image features, like the real one
(1024 px / 16 px patches = 64x64, two stride-2 convs -> 16x16). Here: 64x64 pixel images in 1-pixel patches
(64x64 patches), vision width 16, one layer of 8x8 windowed attention, neck width 16; the projector's two stride-2
convs give the same 16x16 = 256 tokens. Text width 64, 2 layers.

The chat template is the family's (``mmft.families.got_ocr2``): the layout the processor builds for plain OCR.
"""

from __future__ import annotations

from pathlib import Path

from ..families.got_ocr2 import CHAT_TEMPLATE
from . import TinyFixture
from .fixture import TINY_TEXT_MODEL, save_tiny_model
from .tokenizer import train_tokenizer

SPECIAL_TOKENS = ["<img>", "</img>", "<imgpad>"]
IMAGE_SIZE = 64


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        GotOcr2Config,
        GotOcr2ForConditionalGeneration,
        GotOcr2ImageProcessor,
        GotOcr2Processor,
        Qwen2Config,
    )
    from transformers.models.got_ocr2.configuration_got_ocr2 import GotOcr2VisionConfig

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        700,
        chat_template=CHAT_TEMPLATE,
        special_tokens=SPECIAL_TOKENS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<imgpad>"},
    )
    image_processor = GotOcr2ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = GotOcr2Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    vision_config = GotOcr2VisionConfig(
        hidden_size=16, output_channels=16, num_hidden_layers=1, num_attention_heads=2, image_size=IMAGE_SIZE,
        patch_size=1, window_size=8, global_attn_indexes=[], mlp_dim=32,
    )
    text_config = Qwen2Config(
        vocab_size=len(tokenizer), **TINY_TEXT_MODEL, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    config = GotOcr2Config(
        vision_config=vision_config, text_config=text_config, image_token_index=ids("<imgpad>"),
        image_seq_length=processor.num_image_tokens, tie_word_embeddings=False,
    )
    save_tiny_model(
        GotOcr2ForConditionalGeneration, config, processor, out_dir,
        eos_token_id=[tokenizer.eos_token_id, ids("<|endoftext|>")], pad_token_id=tokenizer.pad_token_id,
    )


FIXTURE = TinyFixture(name="got-ocr2", build=build, end_of_turn="<|im_end|>")
