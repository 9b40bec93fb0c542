"""Tiny Llama 3.2 Vision (``MllamaForConditionalGeneration``): a tiled vision encoder (local + gated global layers,
intermediate-layer features), a linear projector, and a Llama 3 text model whose cross-attention layers read the
image, as in ``meta-llama/Llama-3.2-11B-Vision-Instruct``.

Sizes: images are resized into at most 2 tiles of 32x32 (tile layouts 1x1, 1x2, 2x1); each tile is 4x4 patches of
8x8 plus a CLS token = 17 vision tokens, so an image is 17-34 vision tokens, which the text model reads through
cross-attention (in the text, an image stays one ``<|image|>`` token). Vision: width 32, 2 local layers + 1 global
layer, features of layers [1] concatenated with the last (vision_output_dim 64). Text: 3 layers (self, cross,
self), width 64, 2 heads of 32, one KV head.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import save_tiny_model
from .tokenizer import train_tokenizer

TILE_SIZE = 32
PATCH_SIZE = 8
MAX_TILES = 2

# The layout of meta-llama/Llama-3.2-11B-Vision-Instruct's chat template, without its tool-calling branches: a
# system block (with the knowledge cutoff and today's date) is written when the user supplies a system message OR
# the conversation has no image at all; each image is one <|image|>; turns are Llama 3 header blocks closed by
# <|eot_id|>.
CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- if strftime_now is defined %}\n"
    "        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n"
    "    {%- else %}\n"
    "        {%- set date_string = \"26 Jul 2024\" %}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- if messages[0]['content'] is string %}\n"
    "        {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- else %}\n"
    "        {%- set system_message = messages[0]['content'][0]['text']|trim %}\n"
    "    {%- endif %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "    {%- set user_supplied_system_message = true %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "    {%- set user_supplied_system_message = false %}\n"
    "{%- endif %}\n"
    "{#- Find out if there are any images #}\n"
    "{% set image_ns = namespace(has_images=false) %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message['content'] is not string %}\n"
    "        {%- for content in message['content'] %}\n"
    "            {%- if content['type'] == 'image' %}\n"
    "                {%- set image_ns.has_images = true %}\n"
    "            {%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{#- System message if there are no images, or if the user supplied one #}\n"
    "{%- if user_supplied_system_message or not image_ns.has_images %}\n"
    "    {{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "    {{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "    {{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "    {{- system_message }}\n"
    "    {{- \"<|eot_id|>\" }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}\n"
    "    {%- if message['content'] is string %}\n"
    "        {{- message['content'] }}\n"
    "    {%- else %}\n"
    "        {%- for content in message['content'] %}\n"
    "            {%- if content['type'] == 'image' %}\n"
    "                {{- '<|image|>' }}\n"
    "            {%- elif content['type'] == 'text' %}\n"
    "                {{- content['text'] }}\n"
    "            {%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- endif %}\n"
    "    {{- '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>"]


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    out_dir = Path(out_dir)
    # As in the Instruct checkpoint: eos <|eot_id|>, pad <|finetune_right_pad_id|>, bos <|begin_of_text|>.
    tokenizer = train_tokenizer(
        640,
        chat_template=CHAT_TEMPLATE,
        special_tokens=SPECIAL_TOKENS,
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        bos_token="<|begin_of_text|>",
        extra_special_tokens={"image_token": "<|image|>"},
    )
    image_processor = MllamaImageProcessor(
        size={"height": TILE_SIZE, "width": TILE_SIZE},
        max_image_tiles=MAX_TILES,
    )
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    vision_config = MllamaVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_global_layers=1,
        attention_heads=2,
        image_size=TILE_SIZE,
        patch_size=PATCH_SIZE,
        max_num_tiles=MAX_TILES,
        supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],  # every layout of at most MAX_TILES tiles
        intermediate_layers_indices=[1],
        vision_output_dim=32 * 2,  # the last layer concatenated with one intermediate layer
    )
    text_config = MllamaTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        cross_attention_layers=[1],
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = MllamaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<|image|>"),
    )
    def init(model):
        # Cross-attention layers are tanh-gated and their gates start at 0, so a fresh model ignores the image and
        # no gradient reaches the projector. The real checkpoints' gates are trained open; start these half open.
        for layer in model.model.language_model.layers:
            if hasattr(layer, "cross_attn_attn_gate"):
                layer.cross_attn_attn_gate.fill_(0.5)
                layer.cross_attn_mlp_gate.fill_(0.5)

    ids = tokenizer.convert_tokens_to_ids
    # As in the Instruct checkpoint: generation stops at <|end_of_text|>, <|eom_id|> or <|eot_id|>.
    save_tiny_model(MllamaForConditionalGeneration, config, processor, out_dir, init=init, tokenizer=tokenizer,
                    eos_token_id=[ids("<|end_of_text|>"), ids("<|eom_id|>"), ids("<|eot_id|>")])


FIXTURE = TinyFixture(name="mllama", build=build, end_of_turn="<|eot_id|>")
