"""Tiny dual encoders (CLIP, SigLIP) for the contrastive recipe: discovery, cache, tokenizer.

Each module of this package that defines ``DUAL_ENCODER`` is one (``clip.py`` -> ``mmft:tiny-clip``). They are kept
apart from the generative family fixtures (``FIXTURE``, ``tiny_fixtures()``), which the image-text-to-text family
matrix runs: a dual encoder has no chat template and no language-model head.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BUILTIN_PREFIX = "mmft:tiny-"


@dataclass(frozen=True)
class DualEncoderFixture:
    """A tiny offline dual encoder: ``build(folder)`` writes the model (random weights) and its processor."""

    name: str
    build: Callable[[Path], None]
    module: str = ""


def contrastive_tokenizer(model_max_length: int):
    """The in-process BPE tokenizer (``mmft.testing.tokenizer``) wrapping every text in BOS ... EOS, as CLIP's does:
    CLIP's text tower pools the hidden state at the first EOS, so every text must end with one."""
    from tokenizers import processors

    from .tokenizer import train_tokenizer

    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tokenizer = train_tokenizer(640, chat_template=None, special_tokens=[bos], eos_token=eos, bos_token=bos,
                                pad_token="<pad>", model_max_length=model_max_length)
    backend = tokenizer.backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos)),
                                                  (eos, tokenizer.convert_tokens_to_ids(eos))])
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token="<pad>",
                                   unk_token=None, model_max_length=model_max_length)


def dual_encoder_fixtures() -> dict[str, DualEncoderFixture]:
    """Every tiny dual encoder, by name (discovered from this package's modules)."""
    from . import __path__ as package_path

    found = {}
    for info in pkgutil.iter_modules(package_path):
        if info.name.startswith("_") or info.name in ("tokenizer", "dual_encoders"):
            continue
        module = importlib.import_module(f"mmft.testing.{info.name}")
        fixture = getattr(module, "DUAL_ENCODER", None)
        if fixture is not None:
            found[fixture.name] = fixture
    return dict(sorted(found.items()))


def dual_encoder_names() -> list[str]:
    return [BUILTIN_PREFIX + name for name in dual_encoder_fixtures()]


def tiny_dual_encoder_path(name: str) -> Path:
    """The folder of tiny dual encoder ``name`` (``clip`` or ``mmft:tiny-clip``), built once, atomically; the cache
    key holds the builder's source, so an edited builder never serves a stale model."""
    from . import _build_atomically, _source_hash, cache_dir

    name = name.removeprefix(BUILTIN_PREFIX)
    fixtures = dual_encoder_fixtures()
    if name not in fixtures:
        raise ValueError(f"Unknown tiny dual encoder {name!r}. Known: {', '.join(dual_encoder_names())}.")
    fixture = fixtures[name]
    key = _source_hash(fixture.module, "mmft.testing.tokenizer", "mmft.testing.fixture", __name__)
    return _build_atomically(cache_dir() / "models" / f"tiny-{name}-{key}", fixture.build, "mmft_fixture_complete")
