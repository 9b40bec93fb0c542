"""Tiny Idefics3: a SigLIP-style vision tower, a pixel-shuffle connector and a Llama text model.

Built with the real ``Idefics3ForConditionalGeneration`` / ``Idefics3Processor`` / ``Idefics3ImageProcessor``.
Sizes: each tile is 32x32 in 8x8 patches (16 patches), pixel-shuffled by ``scale_factor=2`` into 4 image tokens
(``image_seq_len=4``). Images are first resized to a longest edge of 64 and split into 32x32 tiles plus a global
image, so the test images (64x48, 40x56) become 2x2 tiles + 1 global = 20 image tokens each, wrapped in
``<fake_token_around_image>`` / ``<row_i_col_j>`` / ``<global-img>`` as the real processor does. Vision width 32,
text width 64 (2 layers, 4 heads, 2 kv heads).

The chat template is Idefics3-8B-Llama3's (``<|begin_of_text|>User:<image>question<end_of_utterance>\\nAssistant:
answer<end_of_utterance>\\n``), extended to also take string content.
"""

from __future__ import annotations

from pathlib import Path

from ..families.idefics3 import CHAT_TEMPLATE  # the checkpoint's template (plus string content)
from . import TinyFixture
from .fixture import TINY_TEXT_MODEL, TINY_VISION_MODEL, save_tiny_model, tokenizer_ids
from .tokenizer import train_tokenizer

# The tile grid tokens the processor writes (it looks up rows/cols 1..6).
ROW_COL_TOKENS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
    *ROW_COL_TOKENS,
]

TILE = 32  # max_image_size: the vision encoder's input side
PATCH = 8
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (TILE // PATCH) ** 2 // SCALE_FACTOR**2  # 4 tokens per tile


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def tiling_image_processor(image_processor_class, tile: int):
    """Images of longest edge ``2 * tile`` cut into a 2x2 grid of ``tile``-pixel tiles (+ the global image). SmolVLM's
    fixture builds its image processor this way too."""
    return image_processor_class(
        size={"longest_edge": 2 * tile}, max_image_size={"longest_edge": tile}, do_image_splitting=True
    )


def model_config(config_class, vision_config_class, tokenizer, *, tile: int, patch: int, scale_factor: int):
    """The model config: a one-layer tiny vision tower over one tile, pixel shuffle by ``scale_factor`` in the
    connector, the tiny Llama decoder. SmolVLM's fixture builds its config this way too."""
    from transformers import LlamaConfig

    vision_config = vision_config_class(**TINY_VISION_MODEL, num_hidden_layers=1, image_size=tile, patch_size=patch)
    text_config = LlamaConfig(
        vocab_size=len(tokenizer), **TINY_TEXT_MODEL, **tokenizer_ids(tokenizer), tie_word_embeddings=False
    )
    return config_class(
        vision_config=vision_config, text_config=text_config, scale_factor=scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def build(out_dir) -> None:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        700,
        chat_template=CHAT_TEMPLATE,
        special_tokens=SPECIAL_TOKENS,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<pad>",
        extra_special_tokens={
            "image_token": "<image>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    image_processor = tiling_image_processor(Idefics3ImageProcessor, TILE)
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT_TEMPLATE
    )
    ids = tokenizer.convert_tokens_to_ids
    config = model_config(
        Idefics3Config, Idefics3VisionConfig, tokenizer, tile=TILE, patch=PATCH, scale_factor=SCALE_FACTOR
    )
    # Turns end with <end_of_utterance> (the chat template's), so generation must stop there as well as at EOS.
    save_tiny_model(
        Idefics3ForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer,
        eos_token_id=[ids("<end_of_utterance>"), tokenizer.eos_token_id],
    )


FIXTURE = TinyFixture(name="idefics3", build=build, end_of_turn="<end_of_utterance>")
