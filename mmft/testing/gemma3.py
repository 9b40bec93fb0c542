"""Tiny Gemma 3 (``Gemma3ForConditionalGeneration``): a SigLIP vision tower, Gemma 3's pooling projector and a Gemma 3
text model with its sliding-window / global layer mix.

Sizes: 64x64 images in 8x8 patches give 8x8 = 64 patch embeddings, which the projector average-pools 2x2 down to
``mm_tokens_per_image`` = 16 image tokens. The processor writes them as
``\\n\\n<start_of_image>`` + 16 x ``<image_soft_token>`` + ``<end_of_image>\\n\\n`` in place of each
``<start_of_image>`` the chat template wrote. Text model: 2 layers (one sliding-window, one global), width 64,
2 heads of 32 with one KV head.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import TINY_VISION_MODEL, save_tiny_model, tokenizer_ids
from .paligemma import GEMMA_TEXT_MODEL  # the same tiny Gemma decoder
from .tokenizer import train_tokenizer

IMAGE_SIZE = 64
PATCH_SIZE = 8
MM_TOKENS_PER_IMAGE = 16  # a square; (64 / 8) = 8 patches per side, pooled 2x2 -> 4 per side

# Gemma 3's chat template (google/gemma-3-4b-it), image part included: a system turn is folded into the first user
# turn, the assistant role is called "model", texts are trimmed and each image is written as <start_of_image>.
CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

SPECIAL_TOKENS = ["<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                  "<image_soft_token>"]


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        640,
        chat_template=CHAT_TEMPLATE,
        special_tokens=SPECIAL_TOKENS,
        eos_token="<eos>",
        pad_token="<pad>",
        bos_token="<bos>",
        # As in the real tokenizer: the processor reads boi/eoi/image tokens (and their ids) from these names.
        extra_special_tokens={
            "image_token": "<image_soft_token>",
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
        },
    )
    image_processor = Gemma3ImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_pan_and_scan=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        image_seq_length=MM_TOKENS_PER_IMAGE,
    )
    vision_config = SiglipVisionConfig(
        **TINY_VISION_MODEL, num_hidden_layers=1, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False
    )
    text_config = Gemma3TextConfig(
        vocab_size=len(tokenizer), **GEMMA_TEXT_MODEL, layer_types=["sliding_attention", "full_attention"],
        **tokenizer_ids(tokenizer),
    )
    config = Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=MM_TOKENS_PER_IMAGE,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
    )
    def init(model):
        # The projector's input weight starts at zero (real checkpoints load trained values); with zero the image
        # features are all zero and the projector gets no gradient through them. Give it a real random init.
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(std=0.2)

    eot = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    # Like google/gemma-3-*-it: generation stops at <eos> or at <end_of_turn>, which closes every model turn.
    save_tiny_model(Gemma3ForConditionalGeneration, config, processor, out_dir, init=init, tokenizer=tokenizer,
                    eos_token_id=[tokenizer.eos_token_id, eot])


FIXTURE = TinyFixture(name="gemma3", build=build, end_of_turn="<end_of_turn>")
