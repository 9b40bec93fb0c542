"""Tiny Aya Vision: SigLIP vision tower, pixel-shuffle + SwiGLU projector, Cohere2 (Command R7B) language model.

The chat template writes ``<image>`` where an image goes; ``AyaVisionProcessor`` replaces it with
``<|START_OF_IMG|>`` + (``TILE_<k>`` + patches for each tile) + ``TILE_GLOBAL`` + patches of the thumbnail +
``<|END_OF_IMG|>``, where every patch is an ``<|IMG_PATCH|>`` token (the model's ``image_token_id``). Images are cut
into tiles by the GOT-OCR2 image processor (``crop_to_patches``), plus one global thumbnail when there are >1 tiles.

Sizes, for a 2-core CPU: 32x32 tiles in 8x8 SigLIP patches (4x4 = 16 features) pixel-shuffled 2x2 into 4 image tokens
per tile, at most 2 tiles + thumbnail: a 64x48 image fits one tile best (4 ``<|IMG_PATCH|>`` tokens), a 40x56 one
is cut 1x2 and gets 2 tiles + thumbnail (12), plus the ``<|START_OF_IMG|>``/``<|END_OF_IMG|>`` wrappers and the tile
markers (``TILE_1``.. and ``TILE_GLOBAL`` are plain text to the tokenizer: the processor writes them as text).
Vision width 32 (2 layers), text width 64 (2 layers: one sliding-window, one global, as Cohere2 alternates them;
4 heads, 2 kv heads).

The chat template follows the Aya Vision / Command R layout: ``<BOS_TOKEN>`` then per turn
``<|START_OF_TURN_TOKEN|><|USER_TOKEN|>...<|END_OF_TURN_TOKEN|>`` (``<|CHATBOT_TOKEN|>`` for the assistant,
``<|SYSTEM_TOKEN|>`` for a system turn), generation prompt ``<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>``.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import TINY_TEXT_MODEL, TINY_VISION_MODEL, save_tiny_model, tokenizer_ids
from .tokenizer import train_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8
DOWNSAMPLE = 2  # pixel shuffle: 2x2 neighbouring patch features become one image token
SIGLIP_MEAN = [0.5, 0.5, 0.5]

ROLE_TOKENS = {"user": "<|USER_TOKEN|>", "assistant": "<|CHATBOT_TOKEN|>", "system": "<|SYSTEM_TOKEN|>"}
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}"
    "{% elif message['role'] == 'system' %}{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' }}"
    "{% else %}{{ raise_exception('Only system, user and assistant roles are supported!') }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|END_OF_TURN_TOKEN|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"
)


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        AyaVisionConfig,
        AyaVisionForConditionalGeneration,
        AyaVisionProcessor,
        Cohere2Config,
        GotOcr2ImageProcessor,
        SiglipVisionConfig,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        640,
        chat_template=CHAT_TEMPLATE,
        special_tokens=[
            "<BOS_TOKEN>", "<PAD>", "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", *ROLE_TOKENS.values(),
            "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>",
        ],
        bos_token="<BOS_TOKEN>",
        eos_token="<|END_OF_TURN_TOKEN|>",
        pad_token="<PAD>",
        extra_special_tokens={},
    )
    image_processor = GotOcr2ImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        crop_to_patches=True,
        min_patches=1,
        max_patches=2,  # few tiles keep the CPU tests fast; 40x56 still tiles
        image_mean=SIGLIP_MEAN,
        image_std=SIGLIP_MEAN,
    )
    processor = AyaVisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        img_size=IMAGE_SIZE,
        downsample_factor=DOWNSAMPLE,  # (32 // (8 * 2)) ** 2 = 4 image tokens per tile
        image_token="<image>",
        chat_template=CHAT_TEMPLATE,
    )
    vision_config = SiglipVisionConfig(
        **TINY_VISION_MODEL, num_hidden_layers=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False
    )
    text_config = Cohere2Config(
        vocab_size=len(tokenizer),
        **TINY_TEXT_MODEL,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=512,
        **tokenizer_ids(tokenizer),
        tie_word_embeddings=True,
        # Cohere's logits are multiplied by logit_scale (default 0.0625, tuned for an 8192-wide model whose hidden
        # states are large). At width 64 with random tied embeddings that scale squeezes every logit to about +-0.05,
        # so the loss stays at ln(vocab) whatever LoRA learns; transformers >= 5.25 applies it in AyaVision's forward
        # too (6.454 -> 6.389 in the matrix's 20 steps). 1.0 keeps the tiny model learnable, as the real one is.
        logit_scale=1.0,
    )
    config = AyaVisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<|IMG_PATCH|>"),
        downsample_factor=DOWNSAMPLE,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    save_tiny_model(AyaVisionForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer)


FIXTURE = TinyFixture(name="aya-vision", build=build, end_of_turn="<|END_OF_TURN_TOKEN|>")
