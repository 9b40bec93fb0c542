"""Tiny InternVL (3 / 3.5, the ``-hf`` checkpoints): InternViT tower, pixel-shuffle MLP projector, Qwen2 text model.

Built with the real classes (``InternVLForConditionalGeneration``, ``InternVLProcessor`` with the GotOcr2 image
processor that crops images into tiles plus a thumbnail). Sizes: 32x32 tiles in 8x8 patches give 4x4 = 16 patches,
pixel shuffle with ``downsample_ratio`` 0.5 folds them into 2x2 = 4 image tokens per tile (``image_seq_length`` 4);
with at most 4 tiles (+ thumbnail) an image becomes 4-20 ``<IMG_CONTEXT>`` tokens between ``<img>`` and ``</img>``.
Vision width 32 (1 layer), text width 64 (2 layers, 4 heads, 2 KV heads).

The chat template is the one the InternVL3 ``-hf`` checkpoints ship (ChatML; each image written as
``<IMG_CONTEXT>\\n``, which the processor expands to ``<img><IMG_CONTEXT>*N</img>``); no default system prompt.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import TINY_TEXT_MODEL, TINY_VISION_MODEL, save_tiny_model
from .tokenizer import train_tokenizer

# The InternVL3-hf chat template (ChatML), video entries kept for fidelity.
INTERNVL_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}"
    "{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{'<|im_start|>assistant\n' }}"
    "{% endif %}"
)

TILE = 32  # vision image_size: one tile
PATCH = 8
DOWNSAMPLE = 0.5
IMAGE_SEQ_LENGTH = int((TILE // PATCH) ** 2 * DOWNSAMPLE**2)  # 4 tokens per tile


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        640,
        chat_template=INTERNVL_TEMPLATE,
        special_tokens=["<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",  # as the Qwen2 tokenizer of the real checkpoints
        extra_special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    image_processor = GotOcr2ImageProcessor(
        size={"height": TILE, "width": TILE},
        crop_to_patches=True,
        min_patches=1,
        max_patches=4,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    # The processor requires a video processor (the real checkpoints ship one); frames are single tiles.
    video_processor = InternVLVideoProcessor(
        size={"height": TILE, "width": TILE},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=IMAGE_SEQ_LENGTH,
        chat_template=INTERNVL_TEMPLATE,
    )
    vision_config = InternVLVisionConfig(**TINY_VISION_MODEL, num_hidden_layers=1, image_size=TILE, patch_size=PATCH)
    text_config = Qwen2Config(
        vocab_size=len(tokenizer),
        **TINY_TEXT_MODEL,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    config = InternVLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=IMAGE_SEQ_LENGTH,
        downsample_ratio=DOWNSAMPLE,
        tie_word_embeddings=False,
    )
    save_tiny_model(
        InternVLForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer, bos_token_id=None,
    )


FIXTURE = TinyFixture(name="internvl", build=build, end_of_turn="<|im_end|>")
