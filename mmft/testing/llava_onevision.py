"""Tiny LLaVA-OneVision: SigLIP vision tower, MLP projector, learned ``image_newline``, Qwen2 language model.

Like LLaVA-NeXT it tiles a *single* image (anyres, capped at ``anyres_max_9``); unlike it, a sample with several
images gets no tiling at all: each image is one base view plus one newline token. Both paths are exercised here (the
two-turn record has two images; the QA records have one).

Sizes, for a 2-core CPU: 32x32 base views in 8x8 patches (16 patches, SigLIP has no CLS: ``full`` feature strategy)
and pinpoints ``[[32, 32], [32, 64], [64, 32]]``: a lone 64x48 image becomes 16 base + 4x6 unpadded + 4 newline = 44
image tokens, an image in a multi-image sample 16 + 1 = 17. Vision width 32 (2 layers), text width 64 (2 layers,
4 heads, 2 kv heads, head_dim 16).

The chat template is the one ``convert_llava_onevision_weights_to_hf.py`` writes into the
``llava-hf/llava-onevision-*`` checkpoints (ChatML; a turn's images first as ``<image>\\n``, then its text; assistant
text in a generation block), extended to string content.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import TINY_TEXT_MODEL, TINY_VISION_MODEL, save_tiny_model
from .tokenizer import train_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8
PINPOINTS = [[32, 32], [32, 64], [64, 32]]
SIGLIP_MEAN = [0.5, 0.5, 0.5]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}{% endgeneration %}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{% else %}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{# Render all video then #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}"
    "{% endif %}"
    "{% endif %}"
    "{{ '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        640,
        chat_template=CHAT_TEMPLATE,
        special_tokens=["<video>"],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",  # Qwen2 pads with <|endoftext|>
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    image_processor = LlavaOnevisionImageProcessor(
        size=size, image_grid_pinpoints=PINPOINTS, image_mean=SIGLIP_MEAN, image_std=SIGLIP_MEAN, do_pad=True
    )
    video_processor = LlavaOnevisionVideoProcessor(size=size, image_mean=SIGLIP_MEAN, image_std=SIGLIP_MEAN)
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        num_image_tokens=(IMAGE_SIZE // PATCH_SIZE) ** 2,  # 16 per view: SigLIP adds no CLS token
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
        video_token="<video>",
        vision_aspect_ratio="anyres_max_9",
    )
    vision_config = SiglipVisionConfig(
        **TINY_VISION_MODEL, num_hidden_layers=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False
    )
    text_config = Qwen2Config(
        vocab_size=len(tokenizer),
        **TINY_TEXT_MODEL,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaOnevisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    save_tiny_model(
        LlavaOnevisionForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer, bos_token_id=None,
    )


FIXTURE = TinyFixture(name="llava-onevision", build=build, end_of_turn="<|im_end|>")
