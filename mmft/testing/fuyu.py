"""Tiny Fuyu (``FuyuForCausalLM``): the linear patch embedding and a Persimmon decoder, like ``adept/fuyu-8b``.

Sizes: images fit within 32x32 (the image processor's target size; larger ones shrink, aspect kept) in 8x8 patches,
so an image is at most 16 patch tokens plus a ``|NEWLINE|`` per row (the shapes images: 4x4 patches, 20 tokens);
each 192-value patch is embedded to the decoder's width of 64; Persimmon with 2 layers, relu2, qk layer norm and
half-rotary positions, as on the Hub.

The tokenizer mimics what the processor relies on in Fuyu's SentencePiece tokenizer. ``|SPEAKER|`` (image patch)
and ``|NEWLINE|`` (end of patch row) are ordinary vocabulary entries, not added tokens, and every piece of text gets
a space prepended (SentencePiece's ``▁``; here a normaliser): the processor tokenises the patch stream and then drops
its first token, expecting that space. ``<s>`` (written by the processor after the patches), ``<0x04>`` (the
boundary of the answer) and ``|ENDOFTEXT|`` (EOS) are special tokens. The processor pads with id 0. As on the Hub,
no chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import TinyFixture
from .fixture import save_tiny_model
from .tokenizer import train_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = ("|SPEAKER|", "|NEWLINE|")
# GPT-2's pre-tokenisation, plus: the image tokens stay whole, and the space prepended before a patch stream is a
# piece of its own (the token the processor drops).
PIECES = (r"\|SPEAKER\||\|NEWLINE\|| (?=\|(?:SPEAKER|NEWLINE)\|)|"
          r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")


def fuyu_tokenizer():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    names = dict(eos_token="|ENDOFTEXT|", pad_token="<|endoftext|>", bos_token="<s>")  # <|endoftext|> is id 0
    trained = train_tokenizer(640, chat_template=None, special_tokens=["|ENDOFTEXT|", "<s>", "<0x04>"],
                              extra_special_tokens={}, **names)
    spec = json.loads(trained.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    for token in IMAGE_TOKENS:
        vocab[token] = len(vocab)
    spec["model"]["ignore_merges"] = True  # a piece that is a whole vocabulary entry (|SPEAKER|) is one token
    spec["normalizer"] = {"type": "Prepend", "prepend": " "}
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": PIECES}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ]}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), unk_token=None,
                                   extra_special_tokens={}, model_max_length=4096, **names)


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import FuyuConfig, FuyuForCausalLM, FuyuImageProcessor, FuyuProcessor

    out_dir = Path(out_dir)
    tokenizer = fuyu_tokenizer()
    image_processor = FuyuImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                         patch_size={"height": PATCH_SIZE, "width": PATCH_SIZE})
    processor = FuyuProcessor(image_processor=image_processor, tokenizer=tokenizer)  # sets pad id 0
    config = FuyuConfig(
        text_config={
            "model_type": "persimmon", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 512,
            "hidden_act": "relu2", "qk_layernorm": True, "partial_rotary_factor": 0.5,
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, num_channels=3,
        image_token_id=tokenizer.convert_tokens_to_ids("|SPEAKER|"),
    )
    save_tiny_model(FuyuForCausalLM, config, processor, out_dir, tokenizer=tokenizer)


FIXTURE = TinyFixture(name="fuyu", build=build, end_of_turn="|ENDOFTEXT|")
