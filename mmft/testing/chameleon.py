"""Tiny Chameleon: a VQ-VAE image tokenizer and a Llama-style decoder that reads image codes as ordinary tokens.

Built with the real ``ChameleonForConditionalGeneration`` / ``ChameleonProcessor`` / ``ChameleonImageProcessor``.
Images are resized and centre-cropped to 32x32; the VQ encoder (4 resolutions: 3 halvings, 32 channels, the least
its GroupNorm(32) takes) maps them to a 4x4 grid of codes from a 16-entry codebook, so each ``<image>`` becomes
``<racm3:break><image>*16<eoss>`` and the model swaps the 16 placeholders for the codes' BPE tokens
(``IMGIMG<code in letters A-J>Z``, in the vocabulary like the real checkpoints'). Text width 64, 2 layers.

The tokenizer carries Chameleon's special tokens (``<racm3:break>`` / ``<eoss>`` around an image, the chat-mode
separator ``<reserved08706>``) and the family's chat template (``mmft.families.chameleon``).
"""

from __future__ import annotations

from pathlib import Path

from ..families.chameleon import CHAT_TEMPLATE
from . import TinyFixture
from .fixture import TINY_TEXT_MODEL, save_tiny_model, tokenizer_ids
from .tokenizer import SENTENCEPIECE_ROLES, train_tokenizer

IMAGE_SIZE = 32
CODEBOOK = 16
CHANNEL_MULTIPLIER = (1, 1, 1, 1)  # 3 halvings: 32x32 pixels -> 4x4 codes
IMAGE_SEQ_LENGTH = (IMAGE_SIZE // 2 ** (len(CHANNEL_MULTIPLIER) - 1)) ** 2
DIGIT_LETTERS = "ABCDEFGHIJ"  # ChameleonImageVocabularyMapping.bpe2img reads code digits as letters A-J


def image_code_token(code: int) -> str:
    return "IMGIMG" + "".join(DIGIT_LETTERS[int(digit)] for digit in str(code)) + "Z"


SPECIAL_TOKENS = ["<s>", "</s>", "<racm3:break>", "<eoss>", "<reserved08706>",
                  *(image_code_token(code) for code in range(CODEBOOK))]


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        ChameleonConfig,
        ChameleonForConditionalGeneration,
        ChameleonImageProcessor,
        ChameleonProcessor,
    )
    from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        700,
        chat_template=CHAT_TEMPLATE,
        special_tokens=SPECIAL_TOKENS,
        **SENTENCEPIECE_ROLES,
        extra_special_tokens={"image_token": "<image>", "boi_token": "<racm3:break>", "eoi_token": "<eoss>"},
    )
    tokenizer.sep_token = "<reserved08706>"
    image_processor = ChameleonImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = ChameleonProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   image_seq_length=IMAGE_SEQ_LENGTH, image_token="<image>")
    processor.chat_template = CHAT_TEMPLATE
    vq_config = ChameleonVQVAEConfig(
        embed_dim=8, num_embeddings=CODEBOOK, latent_channels=8, resolution=IMAGE_SIZE, base_channels=32,
        channel_multiplier=list(CHANNEL_MULTIPLIER), num_res_blocks=1,
    )
    config = ChameleonConfig(
        vocab_size=len(tokenizer), **TINY_TEXT_MODEL, **tokenizer_ids(tokenizer), vq_config=vq_config.to_dict(),
        vocabulary_map=tokenizer.get_vocab(), tie_word_embeddings=False,
    )
    save_tiny_model(ChameleonForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer)


FIXTURE = TinyFixture(name="chameleon", build=build, end_of_turn="</s>")
