"""Tiny Mistral 3 (Mistral-Small-3.1 / 3.2): Pixtral vision tower, patch-merging projector, Mistral text model.

Built with the real classes (``Mistral3ForConditionalGeneration``, ``PixtralProcessor`` + ``PixtralImageProcessor``).
Sizes: images are resized to a longest edge of 32 px in multiples of 8 (``patch_size`` 4 x ``spatial_merge_size``
2), so a 64x48 image becomes 32x24 px = 8x6 vision patches, merged 2x2 into 4x3 = 12 ``[IMG]`` tokens, plus one
``[IMG_BREAK]`` per row (the last one replaced by ``[IMG_END]``): 15 tokens. Vision width 32 (1 layer), text width
64 (2 layers, 4 heads, 2 KV heads, head_dim 16).

The chat template follows Mistral-Small-3.1-24B-Instruct-2503's: ``<s>[SYSTEM_PROMPT]...[/SYSTEM_PROMPT]`` (a
default system prompt when the conversation has none), user turns ``[INST]...[/INST]`` with ``[IMG]`` written per
image, assistant turns ``answer</s>``; no generation prompt (the prompt already ends with ``[/INST]``). The real
default system prompt is long and dated (``strftime_now``); here it is one short, undated sentence so fixtures are
deterministic and samples stay short.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import TINY_TEXT_MODEL, TINY_VISION_MODEL, save_tiny_model, tokenizer_ids
from .tokenizer import SENTENCEPIECE_ROLES, train_tokenizer

MISTRAL3_TEMPLATE = (
    "{%- set default_system_message = 'You are a helpful assistant that answers questions about images.' %}"
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- if messages[0]['content'] is string %}{%- set system_message = messages[0]['content'] %}"
    "{%- else %}{%- set system_message = messages[0]['content'][0]['text'] %}{%- endif %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set system_message = default_system_message %}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if message['content'] is string %}{{- '[INST]' + message['content'] + '[/INST]' }}"
    "{%- else %}"
    "{{- '[INST]' }}"
    "{%- for block in message['content'] %}"
    "{%- if block['type'] == 'text' %}{{- block['text'] }}"
    "{%- elif block['type'] in ['image', 'image_url'] %}{{- '[IMG]' }}"
    "{%- else %}{{- raise_exception('Only text and image blocks are supported in message content!') }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{{- '[/INST]' }}"
    "{%- endif %}"
    "{%- elif message['role'] == 'system' %}"
    "{%- if message['content'] is string %}{{- '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' }}"
    "{%- else %}{{- '[SYSTEM_PROMPT]' + message['content'][0]['text'] + '[/SYSTEM_PROMPT]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- if message['content'] is string %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- message['content'][0]['text'] + eos_token }}{%- endif %}"
    "{%- else %}{{- raise_exception('Only user, system and assistant roles are supported!') }}"
    "{%- endif %}"
    "{%- endfor %}"
)

PATCH = 4
MERGE = 2
LONGEST_EDGE = 32


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralImageProcessor,
        PixtralProcessor,
        PixtralVisionConfig,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        640,
        chat_template=MISTRAL3_TEMPLATE,
        special_tokens=[
            "<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]",
            "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
        ],
        **SENTENCEPIECE_ROLES,  # Mistral-Small-3.1 pads with <pad> (id 11), not </s>
        extra_special_tokens={},
    )
    image_processor = PixtralImageProcessor(
        size={"longest_edge": LONGEST_EDGE},
        patch_size={"height": PATCH, "width": PATCH},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    processor = PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        spatial_merge_size=MERGE,
        chat_template=MISTRAL3_TEMPLATE,
        image_token="[IMG]",
        image_break_token="[IMG_BREAK]",
        image_end_token="[IMG_END]",
    )
    # head_dim 16: the 2D rope splits it between rows and columns.
    vision_config = PixtralVisionConfig(
        **TINY_VISION_MODEL, num_hidden_layers=1, image_size=LONGEST_EDGE, patch_size=PATCH
    )
    text_config = MistralConfig(
        vocab_size=len(tokenizer), **TINY_TEXT_MODEL, head_dim=16, sliding_window=None, **tokenizer_ids(tokenizer),
        tie_word_embeddings=False,
    )
    config = Mistral3Config(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=MERGE,
        vision_feature_layer=-1,
        multimodal_projector_bias=False,
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    save_tiny_model(Mistral3ForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer)


FIXTURE = TinyFixture(name="mistral3", build=build, end_of_turn="</s>")
