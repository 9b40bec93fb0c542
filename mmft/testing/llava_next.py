"""Tiny LLaVA-NeXT (1.6): CLIP vision tower, MLP projector, learned ``image_newline``, Mistral language model.

What makes the family: *anyres* tiling. Each image is resized to the base resolution (one global view) and also
cut into tiles on the best-fitting grid of ``image_grid_pinpoints``; the processor needs ``image_sizes`` to know the
grid and expands every ``<image>`` into base + unpadded-tile features + one newline feature per tile row.

Sizes, for a 2-core CPU: 32x32 base images in 8x8 patches (16 patches + CLIP's CLS, dropped by the ``default``
feature strategy) and pinpoints ``[[32, 32], [32, 64], [64, 32]]``, so an image has at most three 32x32 views and
expands into 16-60 image tokens (a 64x48 image: 16 base + 4x6 unpadded + 4 newlines = 44). Vision width 32 (2 layers),
text width 64 (2 layers, 4 heads, 2 kv heads).

The chat template is the layout of ``llava-hf/llava-v1.6-mistral-7b-hf`` (``[INST] <image>\\n... [/INST] answer</s>``,
all images of a turn first, then its text), extended to string content; the Hub copy writes ``<\\s>`` by mistake in
some revisions, here it is the real ``</s>``.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import TINY_TEXT_MODEL, TINY_VISION_MODEL, save_tiny_model, tokenizer_ids
from .tokenizer import SENTENCEPIECE_ROLES, train_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8
PINPOINTS = [[32, 32], [32, 64], [64, 32]]

# llava-v1.6-mistral's template (images first, then text; the assistant turn is " answer</s> "), plus string content.
# It has no generation prompt: "[/INST]" already hands the turn to the assistant.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set texts = [message['content']] %}{% set n_images = 0 %}"
    "{% else %}"
    "{% set texts = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | list %}"
    "{% set n_images = message['content'] | selectattr('type', 'equalto', 'image') | list | length %}"
    "{% endif %}"
    "{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + texts | join('') + '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}{{ '<image>\\n' * n_images }}{{ texts | join('') }}"
    "{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + texts | join('') + '</s> ' }}"
    "{% else %}{{ raise_exception('Only system, user and assistant roles are supported!') }}"
    "{% endif %}"
    "{% endfor %}"
)


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        MistralConfig,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        640,
        chat_template=CHAT_TEMPLATE,
        special_tokens=["<s>", "</s>", "<unk>", "[INST]", "[/INST]"],
        **SENTENCEPIECE_ROLES,
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_grid_pinpoints=PINPOINTS,
        do_center_crop=True,
        do_pad=True,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",  # drop CLIP's CLS token, as the real checkpoints do
        num_additional_image_tokens=1,  # the CLS token
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
    )
    vision_config = CLIPVisionConfig(
        **TINY_VISION_MODEL, num_hidden_layers=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32
    )
    text_config = MistralConfig(
        vocab_size=len(tokenizer), **TINY_TEXT_MODEL, head_dim=16, sliding_window=None, **tokenizer_ids(tokenizer),
        tie_word_embeddings=False,
    )
    config = LlavaNextConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        tie_word_embeddings=False,
    )
    save_tiny_model(LlavaNextForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer)


FIXTURE = TinyFixture(name="llava-next", build=build, end_of_turn="</s>")
