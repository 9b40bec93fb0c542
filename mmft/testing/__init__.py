"""Tiny, offline vision-language models and processors for tests, the demo and the notebook.

Nothing here touches the network. Each tiny model is built from scratch with its family's *real* classes:

- a byte-level BPE tokenizer trained in-process (``mmft.testing.tokenizer``) carrying the family's special
  tokens and a chat template in the family's layout (ChatML, Gemma turns, Llama 3 headers, ...);
- the family's model class (``LlavaForConditionalGeneration``, ``Qwen2VLForConditionalGeneration``, ...) from a
  tiny config: 1-2 layers, widths of 32-128, a vocabulary of ~700;
- the family's real processor and image processor, configured for small images.

The result is saved to a folder and loaded back through ``AutoProcessor`` / ``AutoModelForImageTextToText``,
exactly like a Hub checkpoint, so every code path that serves a real model serves these.

One module per family (``mmft/testing/<family>.py``) defines ``FIXTURE``; they are discovered, not listed, so
adding a family touches no shared file. Every fixture is a built-in model name: ``mmft:tiny-<name>``.

The fixture modules read alike on purpose: each calls its family's tokenizer, image-processor, processor and config
constructors with keyword arguments, so ``duplicates`` pairs them by shape. The values are each family's own (its
special tokens, patch and tile sizes, config fields); what several share is named once in ``fixture.py``
(``TINY_TEXT_MODEL``, ``TINY_VISION_MODEL``, ``tokenizer_ids``), ``qwen_vl_common.py`` and ``idefics3.py``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import os
import pkgutil
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError
from .fixture import TinyFixture
from .llava import TinyLlavaSpec, build_tiny_llava
from .tokenizer import CHATML_TEMPLATE, SPECIAL_TOKENS, train_tokenizer

__all__ = [
    "BUILTIN_MODELS", "CHATML_TEMPLATE", "SPECIAL_TOKENS", "TinyFixture", "TinyLlavaSpec", "build_tiny_llava",
    "cache_dir", "resolve_builtin_model", "tiny_fixtures", "tiny_llava_path", "tiny_model_path", "train_tokenizer",
]


def cache_dir() -> Path:
    """Where mmft keeps built tiny models and generated demo data: ``$MMFT_CACHE`` or ``~/.cache/mmft``."""
    return Path(os.environ.get("MMFT_CACHE", Path.home() / ".cache" / "mmft"))


def _build_atomically(target: Path, build: Callable[[Path], None], marker: str) -> Path:
    """Build into a temporary sibling folder and rename it, so a process killed mid-build never leaves a
    half-written model that a later run would load."""
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(tmp)
        (tmp / marker).touch(exist_ok=True)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: use its build
            if not (target / marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_llava_path(spec: TinyLlavaSpec | None = None, root: str | os.PathLike | None = None) -> Path:
    """Return the folder of the tiny LLaVA for ``spec`` (default: the demo's), building it once if needed."""
    spec = spec or TinyLlavaSpec()
    root = Path(root) if root is not None else cache_dir() / "models"
    return _build_atomically(root / spec.cache_key(), lambda out: build_tiny_llava(out, spec), "mmft_tiny_spec.json")


# ---- the family fixtures ----------------------------------------------------------------------------------------
_NOT_FIXTURES = {"tokenizer", "fixture"}


def tiny_fixtures() -> dict[str, TinyFixture]:
    """Every family fixture, by name (discovered from the modules of this package).

    ``MMFT_TEST_FAMILIES=qwen2-vl,gemma3`` restricts the set (e.g. to run the family matrix for one family).
    """
    only = {name.strip() for name in os.environ.get("MMFT_TEST_FAMILIES", "").split(",") if name.strip()}
    fixtures = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_FIXTURES or info.name.startswith("_"):
            continue
        name = info.name.replace("_", "-")  # module qwen2_vl.py defines fixture "qwen2-vl"
        if only and name not in only:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        fixture = getattr(module, "FIXTURE", None)
        if fixture is not None:
            if fixture.name != name:
                raise ValueError(f"{module.__name__}: FIXTURE.name must be {name!r} (the module name with dashes)")
            fixtures[fixture.name] = TinyFixture(fixture.name, fixture.build, fixture.end_of_turn, module.__name__)
    return dict(sorted(fixtures.items()))


def _source_hash(*module_names: str) -> str:
    digest = hashlib.sha1()
    for name in module_names:
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())
    return digest.hexdigest()[:12]


def _relative_imports(module_name: str) -> list[str]:
    """The modules ``module_name`` imports relatively (``from .qwen2_vl import CHAT_TEMPLATE``, ``from
    ..families.idefics3 import ...``): what a fixture takes from a sibling is part of what it builds."""
    tree = ast.parse(Path(importlib.util.find_spec(module_name).origin).read_text())
    package = module_name.rpartition(".")[0]
    return [importlib.util.resolve_name("." * node.level + node.module, package)
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level and node.module]


def tiny_model_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of the tiny model of family fixture ``name``, built once (atomically).

    The cache key includes the source of the fixture module, its family module, the tokenizer builder,
    ``fixture.py`` (``save_tiny_model``) and the modules the fixture imports from (a sibling's chat template), so
    editing any of them never serves a stale model.
    """
    fixtures = tiny_fixtures()
    if name not in fixtures:
        raise ValueError(f"Unknown tiny model family {name!r}. Known: {', '.join(fixtures)}.")
    fixture = fixtures[name]
    root = Path(root) if root is not None else cache_dir() / "models"
    sources = [fixture.module, f"{__name__}.tokenizer", f"{__name__}.fixture", *_relative_imports(fixture.module)]
    family_module = f"mmft.families.{fixture.module.rsplit('.', 1)[-1]}"
    if importlib.util.find_spec(family_module) is not None:  # fixtures may build from their family's template
        sources.append(family_module)
    key = _source_hash(*dict.fromkeys(sources))
    return _build_atomically(root / f"tiny-{name}-{key}", fixture.build, "mmft_fixture_complete")


# Names accepted by `--model_name_or_path` that resolve to a locally built tiny model. The "mmft:" prefix cannot
# collide with a Hub id (a colon is not allowed in repo names). The demo's LLaVA variants are keyed by their spec;
# every family fixture is also available as mmft:tiny-<name>.
BUILTIN_MODELS = {
    "mmft:tiny-llava": TinyLlavaSpec(),
    "mmft:tiny-llava-pad-eos": TinyLlavaSpec(pad_is_eos=True),
}


def builtin_model_names() -> list[str]:
    return sorted({*BUILTIN_MODELS, *(f"mmft:tiny-{name}" for name in tiny_fixtures())})


def resolve_builtin_model(name: str) -> str:
    """Map ``mmft:<name>`` to the local folder of that tiny model (building it once); other names pass through."""
    if not name.startswith("mmft:"):
        return name
    if name in BUILTIN_MODELS:
        return str(tiny_llava_path(BUILTIN_MODELS[name]))
    family = name.removeprefix("mmft:tiny-")
    if name.startswith("mmft:tiny-") and family in tiny_fixtures():
        return str(tiny_model_path(family))
    raise UsageError(f"Unknown built-in model {name!r}. Built-in models: {', '.join(builtin_model_names())}.")
