"""What trains in a dual encoder: LoRA, full fine-tuning or nothing, per tower; and the per-tower parameter report.

Modes per tower (``--image_tower`` / ``--text_tower``): ``lora`` (adapters on the tower's linear layers, resolved
from the adapter's tower paths, so LoRA never reaches the other tower by accident), ``full`` or ``frozen``. LiT
(locked-image tuning, Zhai et al. 2022) is ``image frozen, text full``. A tower trained in full next to a LoRA tower
is saved with the adapter (PEFT's ``modules_to_save``). The logit scale (and SigLIP's bias) train unless frozen with
``--train_logit_scale false``.
"""

from __future__ import annotations

import logging

from torch import nn

from ..errors import UsageError
from ..train.modeling import format_parameter_report, names_to_regex

logger = logging.getLogger("mmft")

MODES = ("lora", "full", "frozen")


def tower_modules(model: nn.Module, adapter, tower: str) -> list[str]:
    """The module paths of one tower that exist in this model (e.g. ``vision_model``, ``visual_projection``)."""
    names = dict(model.named_modules())
    return [path for path in adapter.tower_paths[tower] if path in names]


def tower_linear_names(model: nn.Module, adapter, tower: str) -> list[str]:
    """The tower's ``nn.Linear`` layers that LoRA can adapt. A ``Linear`` inside ``nn.MultiheadAttention`` (its
    ``out_proj``; open_clip's attention) is left out: the attention reads its weight directly
    (``F.multi_head_attention_forward``) and never calls it, so a LoRA layer there would never train."""
    roots = tower_modules(model, adapter, tower)
    inside_attention = {f"{name}.{child}" if name else child for name, module in model.named_modules()
                        if isinstance(module, nn.MultiheadAttention) for child, _ in module.named_modules() if child}
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and name not in inside_attention
            and any(name == r or name.startswith(r + ".") for r in roots)]


def configure_towers(model: nn.Module, adapter, modes: dict[str, str], *, lora_r: int = 16, lora_alpha: int = 32,
                     lora_dropout: float = 0.05, use_dora: bool = False, train_logit_scale: bool = True) -> nn.Module:
    """Freeze, unfreeze and attach LoRA per tower (``modes = {"image": ..., "text": ...}``); returns the model
    (a ``PeftModel`` when a tower uses LoRA)."""
    for tower, mode in modes.items():
        if mode not in MODES:
            raise UsageError(f"--{tower}_tower must be one of {', '.join(MODES)}, got {mode!r}.")
    if all(mode == "frozen" for mode in modes.values()) and not train_logit_scale:
        raise UsageError("Nothing would train: both towers are frozen and --train_logit_scale is false.")
    lora_towers = [tower for tower, mode in modes.items() if mode == "lora"]
    full_towers = [tower for tower, mode in modes.items() if mode == "full"]
    model.requires_grad_(False)
    if lora_towers:
        from peft import LoraConfig, get_peft_model

        targets = [name for tower in lora_towers for name in tower_linear_names(model, adapter, tower)]
        if not targets:
            raise UsageError(f"No linear layers found in the {' and '.join(lora_towers)} tower(s) of "
                             f"{type(model).__name__} to place LoRA on.")
        modules_to_save = [path for tower in full_towers for path in tower_modules(model, adapter, tower)]
        config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, use_dora=use_dora,
                            target_modules=names_to_regex(targets), modules_to_save=modules_to_save or None)
        model = get_peft_model(model, config)
    else:
        base = model
        for tower in full_towers:
            for path in tower_modules(base, adapter, tower):
                base.get_submodule(path).requires_grad_(True)
    if train_logit_scale:
        for parameter in adapter.logit_parameters(model).values():
            parameter.requires_grad_(True)
    return model


def parameter_report(model: nn.Module, adapter) -> dict[str, dict[str, int]]:
    """Total and trainable parameters per tower (``image tower``, ``text tower``, ``other``: logit scale, bias)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    roots = {tower: tower_modules(base, adapter, tower) for tower in ("image", "text")}
    report = {c: {"total": 0, "trainable": 0} for c in ("image tower", "text tower", "other")}
    for name, parameter in model.named_parameters():
        name = name.removeprefix("base_model.model.")
        component = "other"
        for tower, paths in roots.items():
            if any(name.startswith(path + ".") for path in paths):
                component = f"{tower} tower"
        report[component]["total"] += parameter.numel()
        report[component]["trainable"] += parameter.numel() if parameter.requires_grad else 0
    return report


def log_parameter_report(model: nn.Module, adapter, print_fn=None) -> dict:
    report = parameter_report(model, adapter)
    (print_fn or logger.info)("Parameters:\n" + format_parameter_report(report))
    return report
