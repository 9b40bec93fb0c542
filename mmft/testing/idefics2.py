"""Tiny Idefics2: a SigLIP-style vision tower, a perceiver-resampler connector and a Mistral text model.

Built with the real ``Idefics2ForConditionalGeneration`` / ``Idefics2Processor`` / ``Idefics2ImageProcessor``.
Sizes: images are resized to 32x32 (8x8 patches: 16 patches); the perceiver resamples every image to
``resampler_n_latents=4`` latents, so each ``<image>`` becomes ``<fake_token_around_image><image>*4
<fake_token_around_image>``; image splitting is off (it would write the block 5 times: 4 crops + the image).
Vision width 32, text width 64 (2 layers, 4 heads, 2 kv heads), perceiver depth 1.

The chat template is the Idefics2 instruction checkpoints' (``User:<image>question<end_of_utterance>\\nAssistant:
answer<end_of_utterance>\\n``), from the family module.
"""

from __future__ import annotations

from pathlib import Path

from ..families.idefics2 import CHAT_TEMPLATE
from . import TinyFixture
from .fixture import TINY_TEXT_MODEL, TINY_VISION_MODEL, save_tiny_model, tokenizer_ids
from .tokenizer import SENTENCEPIECE_ROLES, train_tokenizer

SPECIAL_TOKENS = ["<s>", "</s>", "<fake_token_around_image>", "<end_of_utterance>"]
IMAGE_SIZE = 32
PATCH = 8
N_LATENTS = 4  # image tokens per image


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        Idefics2ImageProcessor,
        Idefics2Processor,
        MistralConfig,
    )
    from transformers.models.idefics2.configuration_idefics2 import Idefics2PerceiverConfig, Idefics2VisionConfig

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        700,
        chat_template=CHAT_TEMPLATE,
        special_tokens=SPECIAL_TOKENS,
        **SENTENCEPIECE_ROLES,
        extra_special_tokens={"image_token": "<image>", "image_boundary_token": "<fake_token_around_image>"},
    )
    tokenizer.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    image_processor = Idefics2ImageProcessor(
        size={"shortest_edge": IMAGE_SIZE, "longest_edge": IMAGE_SIZE},
        do_image_splitting=False,
    )
    processor = Idefics2Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=N_LATENTS, chat_template=CHAT_TEMPLATE
    )
    ids = tokenizer.convert_tokens_to_ids
    vision_config = Idefics2VisionConfig(
        **TINY_VISION_MODEL, num_hidden_layers=1, image_size=IMAGE_SIZE, patch_size=PATCH
    )
    perceiver_config = Idefics2PerceiverConfig(
        hidden_size=64, resampler_n_latents=N_LATENTS, resampler_depth=1, resampler_n_heads=2,
        resampler_head_dim=16, num_key_value_heads=1,
    )
    text_config = MistralConfig(
        vocab_size=len(tokenizer), **TINY_TEXT_MODEL, **tokenizer_ids(tokenizer), tie_word_embeddings=False
    )
    config = Idefics2Config(
        vision_config=vision_config, perceiver_config=perceiver_config, text_config=text_config,
        image_token_id=ids("<image>"), pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    # Turns end with <end_of_utterance> (the chat template's), so generation must stop there as well as at EOS.
    save_tiny_model(
        Idefics2ForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer,
        eos_token_id=[ids("<end_of_utterance>"), tokenizer.eos_token_id],
    )


FIXTURE = TinyFixture(name="idefics2", build=build, end_of_turn="<end_of_utterance>")
