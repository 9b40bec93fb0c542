"""Load a model and its processor, decide what trains, attach LoRA, and report trainable parameters.

What trains is decided here and nowhere else:

- LoRA (default): adapters on the *language model's* linear layers, matched by full module paths built
  from the model's own module tree. Matching bare names like ``q_proj`` would also adapt the vision tower
  of families whose vision encoder uses the same names (CLIP, SigLIP). Everything else is frozen unless
  ``freeze_projector`` is false (the projector then trains fully and is saved with the adapter).
- Full fine-tuning: every weight trains, except the vision tower (``freeze_vision_tower``, default) and the
  projector when ``freeze_projector`` is true.

The per-component report printed at start makes the decision visible before any compute is spent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import torch
from torch import nn

from .families import Family, family_for

logger = logging.getLogger(__name__)

LORA_TARGETS = ("language", "language+projector", "all-linear")


def resolve_model_path(name: str) -> str:
    from .testing import resolve_builtin_model

    return resolve_builtin_model(name)


def load_processor(model_args):
    from transformers import AutoProcessor

    path = resolve_model_path(model_args.model_name_or_path)
    processor = AutoProcessor.from_pretrained(
        path, revision=model_args.model_revision, trust_remote_code=model_args.trust_remote_code
    )
    return processor


def load_model(model_args):
    from transformers import AutoModelForImageTextToText

    path = resolve_model_path(model_args.model_name_or_path)
    kwargs = {"trust_remote_code": model_args.trust_remote_code, "use_safetensors": True}
    if model_args.model_revision:
        kwargs["revision"] = model_args.model_revision
    if model_args.dtype != "auto":
        kwargs["dtype"] = getattr(torch, model_args.dtype)
    else:
        kwargs["dtype"] = "auto"
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    return AutoModelForImageTextToText.from_pretrained(path, **kwargs)


# ---- parts ------------------------------------------------------------------------------------------
def find_module_path(model: nn.Module, candidates: Iterable[str]) -> str | None:
    names = dict(model.named_modules())
    for candidate in candidates:
        if candidate in names:
            return candidate
    return None


def component_paths(model: nn.Module, family: Family | None = None) -> dict[str, str | None]:
    """Module paths of the vision tower, projector, language model and LM head (``None`` when absent)."""
    family = family or family_for(model)
    return {
        "vision tower": find_module_path(model, family.vision_tower),
        "projector": find_module_path(model, family.projector),
        "language model": find_module_path(model, family.language_model),
        "lm head": find_module_path(model, family.lm_head),
    }


def component_of(name: str, paths: dict[str, str | None]) -> str:
    # PEFT wraps the model: strip its prefixes so names match the base model's paths.
    name = re.sub(r"^(base_model\.model\.)", "", name)
    # Longest path first: a projector nested inside the vision tower (Qwen-VL's visual.merger) is the projector.
    for component, path in sorted(paths.items(), key=lambda item: -len(item[1] or "")):
        if path and (name == path or name.startswith(path + ".")):
            return "language model" if component == "lm head" else component
    return "other"


def parameter_report(model: nn.Module, family: Family | None = None) -> dict[str, dict[str, int]]:
    """Total and trainable parameter counts per component."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    paths = component_paths(base, family)
    report = {c: {"total": 0, "trainable": 0} for c in ("vision tower", "projector", "language model", "other")}
    for name, parameter in model.named_parameters():
        component = component_of(name, paths)
        report[component]["total"] += parameter.numel()
        if parameter.requires_grad:
            report[component]["trainable"] += parameter.numel()
    return report


def format_parameter_report(report: dict[str, dict[str, int]]) -> str:
    lines = [f"{'component':<16}{'parameters':>14}{'trainable':>14}{'%':>8}"]
    total = trainable = 0
    for component, counts in report.items():
        if counts["total"] == 0:
            continue
        total += counts["total"]
        trainable += counts["trainable"]
        share = 100 * counts["trainable"] / counts["total"]
        lines.append(f"{component:<16}{counts['total']:>14,}{counts['trainable']:>14,}{share:>7.2f}%")
    lines.append(f"{'all':<16}{total:>14,}{trainable:>14,}{100 * trainable / max(total, 1):>7.2f}%")
    return "\n".join(lines)


# ---- LoRA targets -------------------------------------------------------------------------------------
def linear_module_names(model: nn.Module, under: str | None) -> list[str]:
    if under is None:
        return []
    return [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and (name == under or name.startswith(under + "."))
    ]


def names_to_regex(names: Iterable[str]) -> str:
    """An anchored regex matching exactly these module paths, with layer indices generalised to ``\\d+``.

    ``model.language_model.layers.0.self_attn.q_proj`` and ``...layers.1...`` become one alternative.
    """
    patterns = sorted({re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(name)) for name in names})
    return "^(?:" + "|".join(patterns) + ")$"


def lora_target_regex(model: nn.Module, target: str, family: Family | None = None) -> str:
    """Resolve ``--lora_target`` to a regex over full module paths (PEFT matches it with ``re.fullmatch``)."""
    paths = component_paths(model, family)
    if target not in LORA_TARGETS:
        re.compile(target)  # a user regex: fail now, clearly, if it does not compile
        return target
    if paths["language model"] is None:
        raise ValueError(
            f"Cannot find the language model of {type(model).__name__} to place LoRA on. Pass --lora_target with "
            "a regex over module paths, or add a family module in mmft/families/."
        )
    names = linear_module_names(model, paths["language model"])
    if target == "language+projector":
        names += linear_module_names(model, paths["projector"])
    elif target == "all-linear":
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    head = paths["lm head"]
    names = [n for n in names if n != head]  # the output head stays as is (it is huge and rarely helps)
    if not names:
        raise ValueError(f"No linear layers found for --lora_target {target!r} in {type(model).__name__}.")
    return names_to_regex(names)


# ---- deciding what trains ---------------------------------------------------------------------------
def _set_requires_grad(model: nn.Module, path: str | None, value: bool):
    if path is None:
        return
    module = model.get_submodule(path)
    for parameter in module.parameters():
        parameter.requires_grad_(value)


def prepare_model_for_training(model: nn.Module, model_args) -> nn.Module:
    """Freeze parts and attach LoRA as ``model_args`` says; return the model to train (maybe a PeftModel)."""
    family = family_for(model)
    paths = component_paths(model, family)
    freeze_projector = model_args.freeze_projector
    if model_args.use_peft:
        from peft import LoraConfig, get_peft_model

        if freeze_projector is None:
            freeze_projector = True
        target = lora_target_regex(model, model_args.lora_target, family)
        modules_to_save = None
        if not freeze_projector and paths["projector"] is not None:
            modules_to_save = [paths["projector"]]
        config = LoraConfig(
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            target_modules=target,
            use_dora=model_args.use_dora,
            modules_to_save=modules_to_save,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    else:
        if freeze_projector is None:
            freeze_projector = False
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        if model_args.freeze_vision_tower:
            _set_requires_grad(model, paths["vision tower"], False)
        if freeze_projector:
            _set_requires_grad(model, paths["projector"], False)
    if model_args.use_peft and not model_args.freeze_vision_tower and model_args.lora_target != "all-linear":
        logger.warning("--freeze_vision_tower false has no effect with LoRA unless --lora_target reaches it.")
    return model


def log_parameter_report(model: nn.Module, print_fn=None) -> dict:
    report = parameter_report(model)
    text = "Trainable parameters by component:\n" + format_parameter_report(report)
    (print_fn or logger.info)(text)
    return report
