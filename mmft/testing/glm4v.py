"""Tiny GLM-4.1V: GLM-4V vision tower (2D rope, conv downsample, patch merger), GLM-4 text model with 3D (M-)RoPE.

Built with the real classes (``Glm4vForConditionalGeneration``, ``Glm4vProcessor`` + ``Glm4vImageProcessor`` /
``Glm4vVideoProcessor``). Sizes: ``patch_size`` 4 and ``merge_size`` 2, so images are resized to multiples of 8 px
with at most 1024 px of area (``longest_edge`` 2 * 32 * 32: GLM counts the two temporal copies of an image). A
64x48 image becomes 32x24 px = 8x6 patches = 12 ``<|image|>`` tokens between ``<|begin_of_image|>`` and
``<|end_of_image|>``. Vision width 32 (1 block, 2 heads); text width 64 (2 layers, 2 heads of head_dim 32, 1 KV
head). Half of head_dim is rotary (``partial_rotary_factor`` 0.5, as GLM-4.1V) = 16 dims = 8 frequencies, split
``mrope_section`` [2, 3, 3] over (temporal, height, width) (GLM-4.1V: [8, 12, 12] of 32).

The chat template is GLM-4.1V-9B-Thinking's (``[gMASK]<sop>``, ``<|system|>``/``<|user|>``/``<|assistant|>`` role
markers each followed by a newline, ``<|begin_of_image|><|image|><|end_of_image|>`` per image) with two changes,
the same two the GLM-4V family module applies to the real template (see ``mmft/families/glm4v.py``):

- system and assistant turns accept typed content (the real template prints ``msg.content`` as is, which for a
  list of parts would be its Python repr);
- each assistant turn is closed with ``<|endoftext|>``. The real template has no end-of-turn token: the next
  ``<|user|>`` starts the next turn and generation stops on the generation config's eos ids (``<|endoftext|>``,
  ``<|user|>``, ``<|observation|>``). Without a closing token, no supervised token ever teaches a fine-tuned model to
  stop, so turns end with ``<|endoftext|>``, the first of those eos ids.
"""

from __future__ import annotations

from pathlib import Path

from ..families.glm4v import GLM41V_TEMPLATE
from . import TinyFixture
from .fixture import save_tiny_model
from .tokenizer import train_tokenizer

# The family's fixed GLM-4.1V template (the fixture renders exactly what mmft trains real checkpoints with).
GLM4V_TEMPLATE = GLM41V_TEMPLATE

GLM_SPECIAL_TOKENS = [
    "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<|begin_of_video|>", "<|end_of_video|>", "<|video|>",
]

PATCH = 4
MERGE = 2
TEMPORAL = 2


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        Glm4vConfig,
        Glm4vForConditionalGeneration,
        Glm4vImageProcessor,
        Glm4vProcessor,
        Glm4vTextConfig,
        Glm4vVideoProcessor,
        Glm4vVisionConfig,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        640,
        chat_template=GLM4V_TEMPLATE,
        special_tokens=GLM_SPECIAL_TOKENS,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",  # GLM-4.1V pads with <|endoftext|> (151329), its eos
        extra_special_tokens={"image_token": "<|image|>", "video_token": "<|video|>"},
    )
    ids = tokenizer.convert_tokens_to_ids
    size = {"shortest_edge": TEMPORAL * 8 * 8, "longest_edge": TEMPORAL * 32 * 32}  # areas x temporal copies
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    image_processor = Glm4vImageProcessor(
        size=size, patch_size=PATCH, temporal_patch_size=TEMPORAL, merge_size=MERGE, image_mean=mean, image_std=std
    )
    video_processor = Glm4vVideoProcessor(
        size=size, max_image_size={"longest_edge": size["longest_edge"]}, patch_size=PATCH,
        temporal_patch_size=TEMPORAL, merge_size=MERGE, image_mean=mean, image_std=std,
    )
    processor = Glm4vProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=GLM4V_TEMPLATE,
    )
    text_hidden = 64
    vision_config = Glm4vVisionConfig(
        depth=1,
        hidden_size=32,
        num_heads=2,  # head_dim 16: the axial 2D rope splits it between rows and columns
        intermediate_size=64,  # the patch merger's inner width
        out_hidden_size=text_hidden,  # downsample conv -> merger -> text width
        image_size=32,  # 8x8 learned positions, interpolated to each image's grid
        patch_size=PATCH,
        spatial_merge_size=MERGE,
        temporal_patch_size=TEMPORAL,
    )
    text_config = Glm4vTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.5,
            "mrope_section": [2, 3, 3],  # sums to head_dim (32) * 0.5 / 2 = 8 frequencies
        },
        pad_token_id=tokenizer.pad_token_id,
    )
    config = Glm4vConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=ids("<|image|>"),
        video_token_id=ids("<|video|>"),
        image_start_token_id=ids("<|begin_of_image|>"),
        image_end_token_id=ids("<|end_of_image|>"),
        video_start_token_id=ids("<|begin_of_video|>"),
        video_end_token_id=ids("<|end_of_video|>"),
        tie_word_embeddings=False,
    )
    # As GLM-4.1V-9B-Thinking's generation config: stop on <|endoftext|>, <|user|> or <|observation|>.
    save_tiny_model(
        Glm4vForConditionalGeneration, config, processor, out_dir,
        eos_token_id=[ids("<|endoftext|>"), ids("<|user|>"), ids("<|observation|>")],
        pad_token_id=tokenizer.pad_token_id,
    )


FIXTURE = TinyFixture(name="glm4v", build=build, end_of_turn="<|endoftext|>")
