"""``mmft merge``: fold a trained LoRA/DoRA adapter into its base model and write a standalone model folder.

The result loads with plain transformers (``AutoModelForImageTextToText`` / ``AutoProcessor``), no PEFT needed, and
is what serving stacks (vLLM, TGI, SGLang) expect: safetensors weights in the checkpoint's original key layout,
``config.json``, the processor with its chat template, ``generation_config.json`` and a model card.

    mmft merge outputs/my-adapter outputs/my-model            # base read from adapter_config.json
    mmft merge outputs/my-adapter outputs/my-model --dtype bf16 --base /models/llava-1.5-7b-hf

Steps: read ``adapter_config.json`` (its ``base_model_name_or_path``, unless ``--base`` overrides it; ``mmft:``
built-in names and local folders resolve as in training), load the base from safetensors only, apply the adapter,
``merge_and_unload`` (a projector trained with the adapter, ``modules_to_save``, replaces the base one), and write
everything into a temporary sibling folder that is renamed to ``OUT_DIR`` only when complete.

Precision: the merge happens in the dtype the base is loaded in (``--dtype``; ``auto`` keeps the checkpoint's).
Merging in bf16 rounds ``W + BA`` once to bf16, as serving in bf16 would anyway.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from ..dtypes import DTYPE_NAMES  # one dtype vocabulary for merge, eval and predict
from ..errors import UsageError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
UNSAFE_ADAPTER_WEIGHTS = "adapter_model.bin"
CARD_NAME = "README.md"
# Files that make a folder a processor/tokenizer folder: when the adapter folder has one, the processor saved with
# the adapter (the one training used, chat template included) wins over the base's.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
DTYPES = {name: "auto" if dtype == "auto" else getattr(torch, dtype) for name, dtype in DTYPE_NAMES.items()}
MERGEABLE_PEFT_TYPES = ("LORA",)  # DoRA is LoRA with use_dora; both merge exactly
# A Hub repository id: "name" or "owner/name" (a local path has other separators, a leading "/", "." or "~").
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Tags of the adapter's card that describe an adapter, not the merged model.
_ADAPTER_ONLY_TAGS = re.compile(r"^(base_model:|peft$|adapter$)")
MERGED_TAGS = ("mmft", "merged-adapter")


class MergeError(UsageError):
    """The adapter, the base model or the output folder cannot be used; the message says what to do."""


# ---- inputs ---------------------------------------------------------------------------------------------------------
def read_adapter_config(adapter_dir: str | os.PathLike) -> dict:
    """``adapter_config.json`` of ``adapter_dir``, after checking the folder holds a mergeable safetensors adapter."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise MergeError(f"Adapter folder {str(adapter_dir)!r} does not exist.")
    config_path = adapter_dir / ADAPTER_CONFIG
    if not config_path.is_file():
        hint = (" It holds a config.json: it is a full model already, with nothing to merge."
                if (adapter_dir / "config.json").is_file() else "")
        raise MergeError(
            f"{str(adapter_dir)!r} is not an adapter folder: it has no {ADAPTER_CONFIG}.{hint} Pass the folder a LoRA "
            "run saved (its --output_dir, or one of its checkpoint-* folders)."
        )
    if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        found = " Only the pickle-based adapter_model.bin is there, which mmft never loads (it can run code)." if (
            adapter_dir / UNSAFE_ADAPTER_WEIGHTS).is_file() else ""
        raise MergeError(f"{str(adapter_dir)!r} has no {ADAPTER_WEIGHTS}.{found} Re-save the adapter with "
                         "safetensors (peft's save_pretrained does by default).")
    config = json.loads(config_path.read_text())
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type not in MERGEABLE_PEFT_TYPES:
        raise MergeError(f"{str(adapter_dir)!r} holds a {peft_type or 'unknown'} adapter; mmft merge folds LoRA and "
                         "DoRA adapters only.")
    return config


def resolve_base(adapter_config: dict, base: str | None = None) -> tuple[str, str]:
    """``(name, path_to_load)`` of the base model: ``base`` if given, else the adapter's ``base_model_name_or_path``.

    ``mmft:`` names resolve to the locally built tiny model; a local path must exist; anything shaped like a Hub id
    is passed to ``from_pretrained`` as is.
    """
    from ..testing import resolve_builtin_model

    name = base or adapter_config.get("base_model_name_or_path")
    if not name:
        raise MergeError(f"{ADAPTER_CONFIG} names no base model (base_model_name_or_path is empty). Pass --base with "
                         "the model the adapter was trained on (a Hub id or a local folder).")
    if name.startswith("mmft:"):
        try:
            return name, resolve_builtin_model(name)
        except ValueError as error:
            raise MergeError(str(error)) from error
    path = Path(name).expanduser()
    if path.exists():
        return name, str(path)
    if not _HUB_ID.match(name):
        where = "--base" if base else f"{ADAPTER_CONFIG} (base_model_name_or_path)"
        raise MergeError(
            f"Base model {name!r}, named by {where}, was not found: no such local folder. The adapter was probably "
            "trained on another machine or the base folder moved; pass --base with the base model's folder or Hub id."
        )
    return name, name


def hub_id(name: str) -> str | None:
    """``name`` when it is a Hub id (for the card's ``base_model``), else ``None``: local paths are never published."""
    if name.startswith("mmft:") or os.path.exists(name) or not _HUB_ID.match(name):
        return None
    return name


# ---- loading --------------------------------------------------------------------------------------------------------
def load_base_model(path: str, dtype: str = "auto", revision: str | None = None, trust_remote_code: bool = False):
    """The base model from safetensors only, ``trust_remote_code`` off unless asked."""
    from transformers import AutoModelForImageTextToText

    kwargs = {"dtype": DTYPES[dtype], "use_safetensors": True, "trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except OSError as error:
        raise MergeError(
            f"Could not load the base model {path!r} ({error}). Check the name (a Hub id needs network access and, "
            "for gated models, `hf auth login`; a local folder needs config.json and *.safetensors), or pass --base."
        ) from error
    from ..families import family_for

    family_for(model).prepare_model(model)  # e.g. Llama 4's pixel cast
    return model


def load_processor_for_merge(adapter_dir: Path, base_path: str, trust_remote_code: bool = False,
                             revision: str | None = None):
    """``(processor, where_from)``: the processor saved with the adapter when there is one, else the base's."""
    from transformers import AutoProcessor

    if any((adapter_dir / name).is_file() for name in PROCESSOR_FILES):
        return AutoProcessor.from_pretrained(adapter_dir, trust_remote_code=trust_remote_code), "the adapter folder"
    kwargs = {"revision": revision} if revision else {}
    return AutoProcessor.from_pretrained(base_path, trust_remote_code=trust_remote_code, **kwargs), "the base model"


# ---- the card -------------------------------------------------------------------------------------------------------
def _adapter_card_tags(adapter_dir: Path) -> list[str]:
    card = adapter_dir / CARD_NAME
    if not card.is_file():
        return []
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", card.read_text(encoding="utf-8"), re.DOTALL)
    if not match:
        return []
    try:
        metadata = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        return []
    tags = (metadata.get("tags") or []) if isinstance(metadata, dict) else []
    return [str(tag) for tag in tags if not _ADAPTER_ONLY_TAGS.match(str(tag))]


def merged_model_card(model_name: str, base_name: str, adapter_dir: Path, adapter_config: dict, dtype: str) -> str:
    """A short model card for the merged folder: metadata for the Hub plus what was merged and how to load it."""
    tags = list(dict.fromkeys([*MERGED_TAGS, *_adapter_card_tags(adapter_dir)]))
    metadata = {"library_name": "transformers", "pipeline_tag": "image-text-to-text", "tags": tags}
    base_id = hub_id(base_name)
    if base_id:
        metadata["base_model"] = base_id
    method = "DoRA" if adapter_config.get("use_dora") else "LoRA"
    base_text = (f"[{base_id}](https://huggingface.co/{base_id})" if base_id
                 else f"`{Path(base_name).name or base_name}` (not on the Hub)")
    saved = adapter_config.get("modules_to_save") or []
    saved_text = f" The adapter also carried fully trained modules ({', '.join(saved)}), now in the weights." if (
        saved) else ""
    return (
        "---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---\n\n"
        f"# {model_name}\n\n"
        f"{base_text} with the {method} adapter `{adapter_dir.name}` (rank {adapter_config.get('r')}, alpha "
        f"{adapter_config.get('lora_alpha')}) merged into its weights by `mmft merge` (weights dtype: {dtype})."
        f"{saved_text} It is a standalone transformers model: no PEFT needed to load or serve it.\n\n"
        "## Usage\n\n"
        "```python\n"
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
        f'model = AutoModelForImageTextToText.from_pretrained("{model_name}", dtype="auto")\n'
        f'processor = AutoProcessor.from_pretrained("{model_name}")\n'
        "```\n\n"
        f"Serving: `vllm serve {model_name}` or any server that loads transformers checkpoints.\n"
    )


# ---- merging --------------------------------------------------------------------------------------------------------
def load_adapter_model(adapter_dir: str | os.PathLike, dtype: str = "auto", *, base: str | None = None,
                       revision: str | None = None, trust_remote_code: bool = False,
                       log: Callable[[str], None] = lambda message: None):
    """``(peft_model, processor, base_name, processor_from)``: the base model with the adapter applied, unmerged.

    The base is ``base_model_name_or_path`` of ``adapter_config.json`` (or ``base``), at the revision the adapter
    recorded (an explicit ``base`` or ``revision`` is taken as is); the processor saved beside the adapter wins over
    the base's. Shared by ``merge_adapter`` and ``mmft eval``/``predict`` (``inference.load_for_inference``).
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    adapter_config = read_adapter_config(adapter_dir)
    base_name, base_path = resolve_base(adapter_config, base)
    if revision is None and not base:  # the recorded revision belongs to the recorded base
        revision = adapter_config.get("revision")
    log(f"Loading base model {base_name} (dtype {dtype})")
    model = load_base_model(base_path, dtype, revision, trust_remote_code)
    log(f"Applying adapter {adapter_dir}")
    model = PeftModel.from_pretrained(model, adapter_dir)
    processor, processor_from = load_processor_for_merge(adapter_dir, base_path, trust_remote_code, revision)
    return model, processor, base_name, processor_from


def _check_output_dir(out_dir: Path, adapter_dir: Path) -> None:
    if out_dir.resolve() == adapter_dir.resolve():
        raise MergeError("OUT_DIR is the adapter folder: write the merged model to a new folder.")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MergeError(f"Output folder {str(out_dir)!r} already exists and is not empty: choose a new folder or "
                         "remove it first.")


def merge_adapter(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "auto",
                  base: str | None = None, trust_remote_code: bool = False,
                  log: Callable[[str], None] = print) -> Path:
    """Merge the adapter in ``adapter_dir`` into its base model and write a standalone model folder to ``out_dir``.

    Args:
        adapter_dir: a folder with ``adapter_config.json`` and ``adapter_model.safetensors`` (a LoRA/DoRA run's
            output or checkpoint).
        out_dir: where the merged model goes; must not exist or be empty.
        dtype: ``auto`` (the base checkpoint's), ``bf16``, ``fp16`` or ``fp32``.
        base: the base model (Hub id, local folder, ``mmft:`` name), overriding ``base_model_name_or_path``.
        trust_remote_code: allow code shipped with the base model (off by default).
        log: where progress messages go.

    Returns the output folder.
    """
    from transformers import GenerationConfig

    if dtype not in DTYPES:
        raise MergeError(f"Unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    adapter_config = read_adapter_config(adapter_dir)  # a bad adapter folder is the first thing to report
    _check_output_dir(out_dir, adapter_dir)
    model, processor, base_name, processor_from = load_adapter_model(adapter_dir, dtype, base=base,
                                                                     trust_remote_code=trust_remote_code, log=log)
    log("Merging adapter weights into the base weights")
    model = model.merge_and_unload(safe_merge=True)  # safe_merge: refuses to write NaN/inf weights
    if (adapter_dir / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(adapter_dir)
    if getattr(processor, "chat_template", None) is None:
        log(f"Warning: the processor (from {processor_from}) has no chat template; set one before serving chats.")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.merging-", dir=out_dir.parent))
    try:
        log(f"Writing the merged model (safetensors) to {out_dir}")
        model.save_pretrained(tmp)
        log(f"Writing the processor (from {processor_from})")
        processor.save_pretrained(tmp)
        weights_dtype = str(model.dtype).removeprefix("torch.")
        card = merged_model_card(out_dir.name, base_name, adapter_dir, adapter_config, weights_dtype)
        (tmp / CARD_NAME).write_text(card, encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()  # checked empty above
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"Done: {out_dir} ({parameters:,} parameters); load it with AutoModelForImageTextToText.from_pretrained.")
    return out_dir
