"""``TinyFixture``: what a family's fixture module declares. Its own module, so that the fixture modules and the
package that discovers them (``mmft.testing``, which imports ``llava`` for the demo) both import it from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The tiny decoder most fixtures give their language model (a Llama/Qwen2/Cohere-style config's size fields): 2
# layers of width 64, 4 heads sharing 2 KV heads (head_dim 16), 1024 positions.
TINY_TEXT_MODEL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}

# The tiny vision tower most fixtures give their model (a CLIP/SigLIP-style config's width fields): width 32, an MLP of
# 64, 2 heads (head_dim 16). Its depth, image and patch sizes are each fixture's own, spelt out there.
TINY_VISION_MODEL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
}


def tokenizer_ids(tokenizer) -> dict:
    """``bos/eos/pad_token_id`` from ``tokenizer``: what a tiny text config (and a generation config) takes from it."""
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


@dataclass(frozen=True)
class TinyFixture:
    """A tiny offline model of one family.

    Args:
        name: short name (``"qwen2-vl"``); the built-in model ``mmft:tiny-<name>``.
        build: writes the model (random weights, safetensors) and its processor into the folder it is given.
        end_of_turn: the text the chat template closes an assistant turn with (``"<|im_end|>"``,
            ``"<end_of_turn>"``): the label audit expects each supervised span to be the answer plus this.
        module: the defining module (its source is part of the cache key).
    """

    name: str
    build: Callable[[Path], None]
    end_of_turn: str
    module: str = ""


def save_tiny_model(
    model_class: type,
    config,
    processor,
    out_dir: str | Path,
    *,
    tokenizer=None,
    seed: int = 0,
    init: Callable | None = None,
    generation: bool = True,
    **generation_config,
):
    """The end of every fixture's ``build``: a seeded random model of ``model_class``, saved with its processor.

    ``init(model)`` (under ``torch.no_grad()``) re-initialises what a fresh model gets wrong for a minute of
    training (a zero projector, closed gates); it runs before saving. Generative models get a greedy
    ``GenerationConfig`` (``do_sample=False, max_new_tokens=32``) with ``bos/eos/pad_token_id`` from ``tokenizer``
    when given, overridden by ``generation_config`` (a family's stop tokens; ``bos_token_id=None`` to leave it
    out); ``generation=False`` (dual encoders) gives none. Returns the model.
    """
    import torch
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    model = model_class(config)
    if init is not None:
        with torch.no_grad():
            init(model)
    if generation:
        ids = tokenizer_ids(tokenizer) if tokenizer is not None else {}
        model.generation_config = GenerationConfig(**{**ids, **generation_config}, do_sample=False, max_new_tokens=32)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return model
