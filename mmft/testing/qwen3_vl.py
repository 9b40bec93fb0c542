"""Tiny Qwen3-VL: a ViT with learned (interpolated) position embeddings plus 2D rotary attention, a patch merger
(2x2 patches -> one token) as projector, *DeepStack* mergers that project intermediate vision layers into the
first text layers, and a Qwen3 text model with interleaved multimodal RoPE (``mrope_section``).

Built with the real classes: ``Qwen3VLForConditionalGeneration``, ``Qwen3VLProcessor`` with the image processor
``Qwen2VLImageProcessorPil`` (saved as ``Qwen2VLImageProcessor``, which the real checkpoints use too, with
mean/std 0.5; ``AutoProcessor`` gives whichever backend is installed) and ``Qwen3VLVideoProcessor`` (required;
videos unused).

Sizes: patches of 8 pixels (real: 16), merged 2x2, so images are resized to multiples of 16 pixels and give
(h/16)*(w/16) tokens, 4 to 16 with ``min_pixels``/``max_pixels`` of 32x32 / 64x64 (64x48 -> 12 tokens, 40x56 -> 8).
The learned position table is 8x8 (``num_position_embeddings`` 64; real 48x48), bilinearly resampled to each
image's patch grid.

Vision: 3 blocks of width 32 (2 heads); DeepStack taps blocks 0 and 1 (real: 8, 16, 24 of 27) and adds them to the
image positions of text layers 0 and 1, so there must be at least as many text layers as taps. Text: 2 layers of
width 64, 4 heads (2 KV heads) of head_dim 16 with q/k norms; ``mrope_section`` [4, 2, 2] sums to head_dim / 2 = 8
in the real model's proportions ([24, 20, 20] for head_dim 128: temporal gets the most, height and width equal).
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import TINY_TEXT_MODEL
from .qwen_vl_common import qwen_vl_processor, qwen_vl_tokenizer, save_qwen_vl_model, vision_token_ids

# The chat template of Qwen/Qwen3-VL-*-Instruct (chat_template.json), with the tool-calling parts (tools in the
# system turn, assistant tool_calls, tool-role turns) left out: ChatML turns, no default system prompt, each image
# as <|vision_start|><|image_pad|><|vision_end|>, where the processor expands <|image_pad|> into one token per
# merged 2x2 patch; system and assistant turns keep only their text items.
CHAT_TEMPLATE = """{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].content is string %}
        {{- messages[0].content }}
    {%- else %}
        {%- for content in messages[0].content %}
            {%- if 'text' in content %}
                {{- content.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\\n' }}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

PATCH_SIZE = 8
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 32 * 32
MAX_PIXELS = 64 * 64
VISION_WIDTH = 32
VISION_DEPTH = 3
DEEPSTACK_VISUAL_INDEXES = [0, 1]
NUM_POSITION_EMBEDDINGS = 8 * 8
TEXT_HIDDEN = TINY_TEXT_MODEL["hidden_size"]  # the tiny decoder: 2 layers of width 64, 4 heads (2 KV heads)
TEXT_LAYERS = TINY_TEXT_MODEL["num_hidden_layers"]
HEAD_DIM = 16  # spelt out: Qwen3's default is 128, not hidden_size // heads
MROPE_SECTION = [4, 2, 2]  # sums to HEAD_DIM // 2


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    assert sum(MROPE_SECTION) == HEAD_DIM // 2
    assert all(0 <= i < VISION_DEPTH for i in DEEPSTACK_VISUAL_INDEXES)
    assert len(DEEPSTACK_VISUAL_INDEXES) <= TEXT_LAYERS  # tap k feeds text layer k
    out_dir = Path(out_dir)
    tokenizer = qwen_vl_tokenizer(CHAT_TEMPLATE)  # as Qwen2-VL's, no BOS in the template either
    pixels = {
        "patch_size": PATCH_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE, "merge_size": MERGE_SIZE,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }
    processor = qwen_vl_processor(Qwen3VLProcessor, Qwen3VLVideoProcessor, tokenizer, CHAT_TEMPLATE,
                                  min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, **pixels)
    config = Qwen3VLConfig(
        vision_config={
            "depth": VISION_DEPTH,
            "hidden_size": VISION_WIDTH,
            "intermediate_size": VISION_WIDTH * 2,
            "num_heads": 2,
            "out_hidden_size": TEXT_HIDDEN,  # the mergers' output width: the text model's
            "patch_size": PATCH_SIZE,
            "temporal_patch_size": TEMPORAL_PATCH_SIZE,
            "spatial_merge_size": MERGE_SIZE,
            "num_position_embeddings": NUM_POSITION_EMBEDDINGS,
            "deepstack_visual_indexes": DEEPSTACK_VISUAL_INDEXES,
        },
        text_config={
            "vocab_size": len(tokenizer),
            **TINY_TEXT_MODEL,
            "head_dim": HEAD_DIM,
            "rope_parameters": {
                "rope_type": "default", "rope_theta": 5000000.0,
                "mrope_section": MROPE_SECTION, "mrope_interleaved": True,
            },
            "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        },
        **vision_token_ids(tokenizer),
        tie_word_embeddings=False,
    )
    save_qwen_vl_model(Qwen3VLForConditionalGeneration, config, processor, out_dir, tokenizer)


FIXTURE = TinyFixture(name="qwen3-vl", build=build, end_of_turn="<|im_end|>")
