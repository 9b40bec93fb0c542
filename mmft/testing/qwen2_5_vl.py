"""Tiny Qwen2.5-VL: Qwen2-VL's layout with a SwiGLU/RMSNorm ViT that attends within windows in most blocks and
globally in a few (``fullatt_block_indexes``), a patch merger (2x2 patches -> one token) as projector, and a
Qwen2 text model with multimodal RoPE (``mrope_section``).

Built with the real classes: ``Qwen2_5_VLForConditionalGeneration``, ``Qwen2_5_VLProcessor`` with the image
processor ``Qwen2VLImageProcessorPil`` (saved as ``Qwen2VLImageProcessor``, which the real checkpoints use too;
``AutoProcessor`` gives whichever backend is installed) and ``Qwen2VLVideoProcessor`` (required; videos unused).

Sizes: patches of 8 pixels (real: 14), merged 2x2, so images are resized to multiples of 16 pixels and give
(h/16)*(w/16) tokens, 4 to 16 with ``min_pixels``/``max_pixels`` of 32x32 / 64x64 (64x48 -> 12 tokens, 40x56 -> 8).

Windowed attention: ``window_size`` is in pixels and must be a multiple of patch_size * merge_size (16 here):
the vision tower groups merged tokens into windows of ``window_size // merge_size // patch_size`` tokens a side
(real: 112 // 2 // 14 = 4; here 32 // 2 // 8 = 2, so a 3x4-token image has 4 windows and the windows really
split the image). With 2 vision blocks, block 1 attends globally (real: blocks 7, 15, 23, 31 of 32, the last one
included), block 0 within windows.

Vision width 32 (2 heads), text: 2 layers of width 64, 4 heads (2 KV heads) of head_dim 16, so ``mrope_section``
is [2, 3, 3] (sums to head_dim / 2; real: [16, 24, 24] for head_dim 128).
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture

# Qwen2.5-VL-*-Instruct's chat template is Qwen2-VL's, and the tiny text model is Qwen2-VL's (a Qwen2 with mrope).
from .qwen2_vl import CHAT_TEMPLATE, TEXT_HIDDEN, text_config
from .qwen_vl_common import qwen_vl_processor, qwen_vl_tokenizer, save_qwen_vl_model, vision_token_ids

PATCH_SIZE = 8
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
WINDOW_SIZE = 32  # pixels: 2x2 merged tokens per window
VISION_DEPTH = 2
FULLATT_BLOCK_INDEXES = [1]
MIN_PIXELS = 32 * 32
MAX_PIXELS = 64 * 64
VISION_WIDTH = 32


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
    )

    assert WINDOW_SIZE % (PATCH_SIZE * MERGE_SIZE) == 0 and WINDOW_SIZE >= PATCH_SIZE * MERGE_SIZE
    assert all(0 <= i < VISION_DEPTH for i in FULLATT_BLOCK_INDEXES)
    out_dir = Path(out_dir)
    tokenizer = qwen_vl_tokenizer(CHAT_TEMPLATE)
    pixels = {"patch_size": PATCH_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE, "merge_size": MERGE_SIZE}
    processor = qwen_vl_processor(Qwen2_5_VLProcessor, Qwen2VLVideoProcessor, tokenizer, CHAT_TEMPLATE,
                                  min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, **pixels)
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": VISION_DEPTH,
            "hidden_size": VISION_WIDTH,
            "intermediate_size": VISION_WIDTH * 2,
            "num_heads": 2,
            "out_hidden_size": TEXT_HIDDEN,  # the merger's output width: the text model's
            "patch_size": PATCH_SIZE,
            "temporal_patch_size": TEMPORAL_PATCH_SIZE,
            "spatial_merge_size": MERGE_SIZE,
            "window_size": WINDOW_SIZE,
            "fullatt_block_indexes": FULLATT_BLOCK_INDEXES,
        },
        text_config=text_config(tokenizer),
        **vision_token_ids(tokenizer),
        tie_word_embeddings=False,
    )
    save_qwen_vl_model(Qwen2_5_VLForConditionalGeneration, config, processor, out_dir, tokenizer)


FIXTURE = TinyFixture(name="qwen2-5-vl", build=build, end_of_turn="<|im_end|>")
