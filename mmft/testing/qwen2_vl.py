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
from .fixture import save_tiny_model
from .tokenizer import train_tokenizer

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

SPECIAL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

PATCH_SIZE = 8
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 32 * 32
MAX_PIXELS = 64 * 64
TEXT_HIDDEN = 64
TEXT_HEADS = 4
TEXT_KV_HEADS = 2
HEAD_DIM = TEXT_HIDDEN // TEXT_HEADS
MROPE_SECTION = [2, 3, 3]  # sums to HEAD_DIM // 2
VISION_WIDTH = 32


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    assert sum(MROPE_SECTION) == HEAD_DIM // 2
    out_dir = Path(out_dir)
    # Real Qwen2-VL-Instruct: eos <|im_end|> (the turn end), pad <|endoftext|>, no BOS.
    tokenizer = train_tokenizer(
        640,
        chat_template=CHAT_TEMPLATE,
        special_tokens=SPECIAL_TOKENS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    pixels = {"patch_size": PATCH_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE, "merge_size": MERGE_SIZE}
    image_processor = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, **pixels)
    video_processor = Qwen2VLVideoProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}, **pixels)
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
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
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": TEXT_HIDDEN * 2,
            "num_hidden_layers": 2,
            "num_attention_heads": TEXT_HEADS,
            "num_key_value_heads": TEXT_KV_HEADS,
            "max_position_embeddings": 1024,
            "max_window_layers": 2,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": MROPE_SECTION},
            "bos_token_id": None,
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    # As Qwen2-VL-Instruct's generation_config.json: stop at <|im_end|> or <|endoftext|>, pad with <|endoftext|>.
    save_tiny_model(
        Qwen2VLForConditionalGeneration, config, processor, out_dir,
        eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")], pad_token_id=ids("<|endoftext|>"), bos_token_id=None,
    )


FIXTURE = TinyFixture(name="qwen2-vl", build=build, end_of_turn="<|im_end|>")
