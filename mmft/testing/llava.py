"""Tiny LLaVA (1.5): a CLIP vision tower and a Llama text model joined by LLaVA's MLP projector.

This is the model of the demo (``mmft:tiny-llava``) as well as the LLaVA entry of the family matrix. Sizes are
chosen for a 2-core CPU: 48x48 images in 8x8 patches give 36 image tokens per image; the text model has 2 layers
of width 96. A training step on a batch of 16 takes tens of milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .fixture import TinyFixture, save_tiny_model
from .tokenizer import CHATML_TEMPLATE, train_tokenizer


@dataclass(frozen=True)
class TinyLlavaSpec:
    """Sizes of the tiny LLaVA. Changing any field changes the cache key, so old builds are never reused."""

    image_size: int = 48
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 96
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    vocab_size: int = 640
    pad_is_eos: bool = False
    position_init_std: float = 1.0
    seed: int = 0
    version: int = 2  # bump when the builder changes in a way the fields above do not capture

    def cache_key(self) -> str:
        fields = "-".join(f"{v}" for v in asdict(self).values())
        return f"tiny-llava-{fields}"


# Spelt out per family on purpose: the tiny configs and processors pass the family's real classes their
# arguments, which often coincide with another fixture's (sizes, token ids); each fixture reads in one file.
def build_tiny_llava(out_dir, spec: TinyLlavaSpec = TinyLlavaSpec()) -> Path:
    """Build the tiny LLaVA (random weights) and its processor into ``out_dir``; return the path."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(spec.vocab_size, pad_is_eos=spec.pad_is_eos)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        do_center_crop=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",  # drop CLS: (48/8)^2 = 36 image tokens
        num_additional_image_tokens=1,  # the CLS token the vision tower adds
        chat_template=CHATML_TEMPLATE,
        image_token="<image>",
    )
    vision_config = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_hidden * 4,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=4,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_hidden * 3,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    def init(model):
        # CLIP initialises position embeddings with std 0.02 while a 16x16x3 patch embeds with a magnitude near 5:
        # position is ~250x weaker than content, and a model trained from scratch for a minute cannot tell where
        # things are. Pretrained CLIPs learned this over millions of steps; here we start position at content scale.
        model.model.vision_tower.embeddings.position_embedding.weight.normal_(std=spec.position_init_std)

    save_tiny_model(LlavaForConditionalGeneration, config, processor, out_dir, seed=spec.seed, init=init,
                    tokenizer=tokenizer, bos_token_id=None)
    (out_dir / "mmft_tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2))
    return out_dir




def build(out_dir) -> None:
    """The family-matrix fixture: the demo's tiny LLaVA."""
    build_tiny_llava(out_dir, TinyLlavaSpec())


FIXTURE = TinyFixture(name="llava", build=build, end_of_turn="<|im_end|>")
