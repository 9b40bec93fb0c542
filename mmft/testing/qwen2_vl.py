"""Tiny Qwen2-VL: a ViT with 2D rotary attention over 8x8 patches, a patch merger (2x2 patches -> one token) as
projector, and a Qwen2 text model with multimodal RoPE (``mrope_section``).

Built with the real classes: ``Qwen2VLForConditionalGeneration``, ``Qwen2VLProcessor`` with the image processor
``Qwen2VLImageProcessorPil`` (saved as ``Qwen2VLImageProcessor``; ``AutoProcessor`` gives whichever backend is
installed) and ``Qwen2VLVideoProcessor`` (the processor requires one; videos are not used).

Sizes: patches of 8 pixels (real: 14), merged 2x2, so images are resized to multiples of 16 and each image gives
(h/16)*(w/16) tokens; ``min_pixels``/``max_pixels`` of 32x32 / 64x64 keep that between 4 and 16 tokens (64x48 ->
12 tokens, 40x56 -> 8). Vision: 2 blocks of width 32. Text: 2 layers of width 64, 4 heads (2 KV heads) of
head_dim 16, so ``mrope_section`` (temporal, height, width) is [2, 3, 3], summing to head_dim / 2 = 8, in the
real model's proportions ([16, 24, 24] for head_dim 128).
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import TINY_TEXT_MODEL
from .qwen_vl_common import qwen_vl_processor, qwen_vl_tokenizer, save_qwen_vl_model, vision_token_ids

# The chat template of Qwen/Qwen2-VL-*-Instruct (chat_template.json), verbatim apart from line breaks: ChatML turns,
# a default system prompt when the conversation has none, and each image as <|vision_start|><|image_pad|>
# <|vision_end|>, where the processor expands <|image_pad|> into one token per merged 2x2 patch.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PATCH_SIZE = 8
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 32 * 32
MAX_PIXELS = 64 * 64
TEXT_HIDDEN = TINY_TEXT_MODEL["hidden_size"]  # the tiny decoder: 2 layers of width 64, 4 heads (2 KV heads)
HEAD_DIM = TEXT_HIDDEN // TINY_TEXT_MODEL["num_attention_heads"]
MROPE_SECTION = [2, 3, 3]  # sums to HEAD_DIM // 2
VISION_WIDTH = 32


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def text_config(tokenizer) -> dict:
    """The tiny Qwen2 text model with multimodal RoPE (Qwen2.5-VL's fixture uses it too)."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "vocab_size": len(tokenizer),
        **TINY_TEXT_MODEL,
        "max_window_layers": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": MROPE_SECTION},
        "bos_token_id": None,
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
    }


def build(out_dir) -> None:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    assert sum(MROPE_SECTION) == HEAD_DIM // 2
    out_dir = Path(out_dir)
    tokenizer = qwen_vl_tokenizer(CHAT_TEMPLATE)
    pixels = {"patch_size": PATCH_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE, "merge_size": MERGE_SIZE}
    processor = qwen_vl_processor(Qwen2VLProcessor, Qwen2VLVideoProcessor, tokenizer, CHAT_TEMPLATE,
                                  min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, **pixels)
    config = Qwen2VLConfig(
        vision_config={
            "depth": 2,
            "embed_dim": VISION_WIDTH,
            "hidden_size": TEXT_HIDDEN,  # the merger's output width: the text model's
            "mlp_ratio": 2,
            "num_heads": 2,
            **pixels,
            "spatial_merge_size": MERGE_SIZE,
        },
        text_config=text_config(tokenizer),
        **vision_token_ids(tokenizer),
        tie_word_embeddings=False,
    )
    save_qwen_vl_model(Qwen2VLForConditionalGeneration, config, processor, out_dir, tokenizer)


FIXTURE = TinyFixture(name="qwen2-vl", build=build, end_of_turn="<|im_end|>")
