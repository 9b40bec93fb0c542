"""Tiny SmolVLM (SmolVLM2 layout): a SigLIP-style vision tower, a pixel-shuffle connector and a Llama text model.

Built with the real ``SmolVLMForConditionalGeneration`` / ``SmolVLMProcessor`` (with its image *and* video
processors; the processor cannot be built without the latter). Sizes: each tile is 32x32 in 4x4 patches (64 patches),
pixel-shuffled by ``scale_factor=4`` (as SmolVLM-256M/500M do) into 4 image tokens (``image_seq_len=4``). Images are
resized to a longest edge of 64 and split into 32x32 tiles plus a global image: the test images become 2x2 tiles +
1 global = 20 image tokens each. Vision width 32, text width 64 (2 layers, 4 heads, 2 kv heads).

Tokenizer roles follow SmolVLM2's: BOS ``<|im_start|>``, EOS ``<end_of_utterance>``, pad ``<|im_end|>``; the
processor reads its image/wrapper tokens from the tokenizer's named special tokens. The chat template is the one
``processing_smolvlm.py`` ships as ``DEFAULT_CHAT_TEMPLATE`` (``<|im_start|>User:<image>question<end_of_utterance>
\\nAssistant: answer<end_of_utterance>\\n``), extended to also take string content.

``SmolVLMProcessor`` needs the ``num2words`` package (it spells out video frame counts) even for images.
"""

from __future__ import annotations

from pathlib import Path

from ..families.smolvlm import CHAT_TEMPLATE  # processing_smolvlm's DEFAULT_CHAT_TEMPLATE (plus string content)
from . import TinyFixture
from .fixture import save_tiny_model
from .idefics3 import model_config, tiling_image_processor  # SmolVLM is Idefics3's successor
from .tokenizer import train_tokenizer

ROW_COL_TOKENS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
SPECIAL_TOKENS = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "<video>", *ROW_COL_TOKENS]

TILE = 32
PATCH = 4
SCALE_FACTOR = 4
IMAGE_SEQ_LEN = (TILE // PATCH) ** 2 // SCALE_FACTOR**2  # 4 tokens per tile


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        700,
        chat_template=CHAT_TEMPLATE,
        special_tokens=SPECIAL_TOKENS,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        extra_special_tokens={
            "image_token": "<image>",
            "video_token": "<video>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    image_processor = tiling_image_processor(SmolVLMImageProcessor, TILE)
    video_processor = SmolVLMVideoProcessor(
        size={"longest_edge": TILE},
        max_image_size={"longest_edge": TILE},
        video_sampling={"fps": 1, "max_frames": 4, "video_size": {"longest_edge": TILE}},
    )
    processor = SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )
    config = model_config(
        SmolVLMConfig, SmolVLMVisionConfig, tokenizer, tile=TILE, patch=PATCH, scale_factor=SCALE_FACTOR
    )
    # The tokenizer's eos is <end_of_utterance>: the template's end of turn.
    save_tiny_model(SmolVLMForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer)


FIXTURE = TinyFixture(name="smolvlm", build=build, end_of_turn="<end_of_utterance>")
