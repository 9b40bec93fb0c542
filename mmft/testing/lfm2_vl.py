"""Tiny LFM2-VL: a SigLIP2 NaFlex vision tower, a pixel-unshuffle MLP projector and an LFM2 hybrid text model.

Built with the real ``Lfm2VlForConditionalGeneration`` / ``Lfm2VlProcessor`` / ``Lfm2VlImageProcessor``. The text
model has 2 layers, one of each LFM2 kind (a gated short convolution and a full-attention layer), width 64. The
vision tower (width 32, 1 layer, no pooling head as in the real checkpoints) sees 4x4-pixel patches at native
aspect ratio (NaFlex: position embeddings of a 4x4 grid resized to each image's patch grid); the projector
unshuffles 2x2 patches into one token.

Image tokens: a single image is resized to 4-16 tokens (``min_image_tokens``/``max_image_tokens``, i.e. 16-64
patches); one over twice that (``max_pixels_tolerance=2``) is split into 16x16 tiles (2-4 of them, 4 tokens each)
plus a thumbnail. The test images (64x48, 40x56) become 2x2 tiles + a 12-token thumbnail
(28 tokens) and 1x2 tiles + a 12-token thumbnail (20 tokens), wrapped in ``<|image_start|>``,
``<|img_row_i_col_j|>``, ``<|img_thumbnail|>`` and ``<|image_end|>`` as the real processor writes them.

Tokenizer roles follow LFM2's: BOS ``<|startoftext|>``, EOS ``<|im_end|>`` (the end of a ChatML turn), pad
``<|pad|>``. The chat template is LFM2-VL's ChatML: ``<|startoftext|><|im_start|>user\\n<image>question<|im_end|>\\n
<|im_start|>assistant\\nanswer<|im_end|>\\n``.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyFixture
from .fixture import save_tiny_model
from .tokenizer import train_tokenizer

# LFM2-VL's template (it takes string and typed content already).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<image>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

MAX_TILES = 4
# The tile tokens the processor writes for grids of up to MAX_TILES tiles (1x4 ... 4x1).
TILE_TOKENS = [f"<|img_row_{r}_col_{c}|>" for r in range(1, MAX_TILES + 1) for c in range(1, MAX_TILES + 1)]
SPECIAL_TOKENS = [
    "<|pad|>", "<|startoftext|>", "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>", *TILE_TOKENS,
]

PATCH = 4
DOWNSAMPLE = 2
TILE = 16  # (16 / 4 / 2)^2 = 4 tokens per tile


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build(out_dir) -> None:
    from transformers import (
        Lfm2Config,
        Lfm2VlConfig,
        Lfm2VlForConditionalGeneration,
        Lfm2VlImageProcessor,
        Lfm2VlProcessor,
        Siglip2VisionConfig,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(
        700,
        chat_template=CHAT_TEMPLATE,
        special_tokens=SPECIAL_TOKENS,
        bos_token="<|startoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = Lfm2VlImageProcessor(
        encoder_patch_size=PATCH,
        downsample_factor=DOWNSAMPLE,
        min_image_tokens=4,
        max_image_tokens=16,
        do_image_splitting=True,
        min_tiles=2,
        max_tiles=MAX_TILES,
        use_thumbnail=True,
        tile_size=TILE,
        max_pixels_tolerance=2.0,
    )
    processor = Lfm2VlProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    vision_config = Siglip2VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        patch_size=PATCH,
        num_patches=16,  # a 4x4 grid of position embeddings, resized to each image's patch grid
        vision_use_head=False,
    )
    text_config = Lfm2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        block_auto_adjust_ff_dim=False,  # else the MLP width is rounded up to a multiple of 256
        num_hidden_layers=2,
        layer_types=["conv", "full_attention"],
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = Lfm2VlConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        downsample_factor=DOWNSAMPLE,
        projector_hidden_size=64,
    )
    # The tokenizer's eos is <|im_end|>.
    save_tiny_model(Lfm2VlForConditionalGeneration, config, processor, out_dir, tokenizer=tokenizer)


FIXTURE = TinyFixture(name="lfm2-vl", build=build, end_of_turn="<|im_end|>")
