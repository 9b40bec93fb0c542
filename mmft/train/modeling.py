"""Load a model and its processor, decide what trains, attach LoRA, and report trainable parameters.

What trains is decided here and nowhere else:

- LoRA (default): adapters on the *language model's* linear layers, matched by full module paths built
  from the model's own module tree. Matching bare names like ``q_proj`` would also adapt the vision tower
  of families whose vision encoder uses the same names (CLIP, SigLIP). Everything else is frozen unless
  ``freeze_projector`` is false (the projector then trains fully and is saved with the adapter).
  ``use_dora`` makes the adapters DoRA (a learned magnitude per output row on top of the LoRA direction).
- QLoRA (``load_in_4bit``): LoRA over a language model loaded in 4-bit NF4 by bitsandbytes; the vision tower,
  projector and LM head stay unquantised (they are small, and quantising the vision tower hurts image features).
  Needs a CUDA GPU and bitsandbytes; without either, ``load_model`` stops before loading anything.
- Full fine-tuning: every weight trains, except the vision tower (``freeze_vision_tower``, default) and the
  projector when ``freeze_projector`` is true.

The per-component report printed at start makes the decision visible before any compute is spent.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Iterable
from types import SimpleNamespace

import torch
from torch import nn

from ..errors import MissingRequirementError, UsageError
from ..families import Family, family_for

logger = logging.getLogger(__name__)

LORA_TARGETS = ("language", "language+projector", "all-linear")


def resolve_model_path(name: str) -> str:
    from ..testing import resolve_builtin_model

    return resolve_builtin_model(name)


def load_starting_adapter(model, adapter):
    """The base ``model`` with the weights of ``adapter`` (a ``mmft.train.starting_adapter.StartingAdapter``)
    applied and trainable (a ``PeftModel``), its shape as saved."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter.path), is_trainable=True)


def load_processor(model_args):
    from transformers import AutoProcessor

    path = resolve_model_path(model_args.model_name_or_path)
    return _from_pretrained(AutoProcessor, path, revision=model_args.model_revision,
                            trust_remote_code=model_args.trust_remote_code)


def _from_pretrained(auto_class, path: str, **kwargs):
    """``auto_class.from_pretrained``, with a missing folder, unknown repo or unreachable Hub as a usage error."""
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except OSError as error:  # transformers' message says what is missing and where it looked
        raise UsageError(f"Cannot load {path!r} with {auto_class.__name__}: {error}") from error


def load_model(model_args):
    """The model, as ``AutoModelForImageTextToText`` from safetensors (4-bit NF4 with ``load_in_4bit``)."""
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
    if getattr(model_args, "load_in_4bit", False):
        check_qlora_requirements()  # before any download or allocation: fail in seconds, not deep in bitsandbytes
        kwargs.update(qlora_load_kwargs(model_args, path))
    model = _from_pretrained(AutoModelForImageTextToText, path, **kwargs)
    family_for(model).prepare_model(model)
    return model


# ---- QLoRA ------------------------------------------------------------------------------------------
QLORA_INSTALL_HINT = "pip install -e '.[qlora]'"


def check_qlora_requirements() -> None:
    """Raise a clear error, naming what is missing and what to do, unless 4-bit loading can work here.

    bitsandbytes' 4-bit kernels run on CUDA GPUs; on a machine without one, transformers and bitsandbytes fail late
    and obscurely (a device-map error, a missing native library), so the check happens first.
    """
    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (torch.cuda.is_available() is False on this machine)")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append(f"the bitsandbytes package (not installed: {QLORA_INSTALL_HINT})")
    if missing:
        raise MissingRequirementError(
            "--load_in_4bit (QLoRA) needs " + " and ".join(missing) + ". Run on a CUDA GPU with bitsandbytes "
            f"installed ({QLORA_INSTALL_HINT}), or drop --load_in_4bit to train plain LoRA (add --use_dora for DoRA)."
        )


def unquantised_module_paths(config) -> list[str]:
    """Module paths kept in 16-bit under 4-bit loading: the family's vision tower, projector and LM head.

    The model does not exist yet when the quantisation config is built, so every candidate path of the family is
    listed; transformers skips any module whose path starts with one of them (candidates that do not exist match
    nothing).
    """
    from ..families import family_for

    family = family_for(SimpleNamespace(config=config))
    return list(dict.fromkeys([*family.vision_tower, *family.projector, *family.lm_head]))


def qlora_load_kwargs(model_args, path: str) -> dict:
    """``from_pretrained`` arguments for QLoRA: NF4 with double quantisation, 16-bit compute, one GPU per process."""
    from transformers import AutoConfig, BitsAndBytesConfig

    config = AutoConfig.from_pretrained(path, revision=model_args.model_revision,
                                        trust_remote_code=model_args.trust_remote_code)
    # bf16 compute is the QLoRA default; fp16 only when asked (GPUs without bf16, e.g. T4/V100).
    compute_dtype = torch.float16 if model_args.dtype == "float16" else torch.bfloat16
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=True,  # the quantisation constants too: ~0.37 bit/parameter saved (QLoRA paper)
        llm_int8_skip_modules=unquantised_module_paths(config),
    )
    # 4-bit weights cannot move between devices after loading: place the whole model on this process's GPU
    # (LOCAL_RANK under torchrun / accelerate launch), as data-parallel QLoRA needs.
    kwargs = {"quantization_config": quantization, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}
    if model_args.dtype == "auto":
        kwargs["dtype"] = compute_dtype  # the unquantised parts, before prepare_model_for_kbit_training upcasts
    return kwargs


def is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


# ---- activation (gradient) checkpointing -------------------------------------------------------------
def _make_output_require_grad(module, inputs, output):
    output.requires_grad_(True)


def _needs_input_grads(module: nn.Module, checkpointed: tuple[type, ...]) -> bool:
    """Whether reentrant checkpointing inside ``module`` needs its inputs to require grad: some checkpointed layer
    (any part, for models without transformers' checkpointing layers) holds a trainable parameter."""
    layers = [m for m in module.modules() if isinstance(m, checkpointed)] if checkpointed else []
    parts = layers or [module]
    return any(p.requires_grad for part in parts for p in part.parameters())


def input_grads_only_where_training(model: nn.Module) -> None:
    """Make ``model.enable_input_require_grads`` hook only the sub-models whose checkpointed layers train.

    Enabling activation checkpointing, transformers calls ``enable_input_require_grads``: reentrant checkpointing
    only back-propagates through a block when one of its *inputs* requires grad, so with frozen token embeddings the
    LoRA weights inside the blocks would get no gradient. The stock method hooks the input embeddings of *every*
    sub-model, the frozen vision tower's patch embedding included: the vision tower then builds an autograd graph,
    keeps (or recomputes) its activations and runs a backward pass whose gradients nobody uses. This replacement
    skips sub-models whose layers do not train, so a frozen vision tower stays out of the backward pass (also when a
    projector nested in it trains, like Qwen-VL's merger), while a vision tower that trains (``--lora_target
    all-linear``, ``--freeze_vision_tower false``) keeps its hook. Decided when called (the Trainer enables
    checkpointing after LoRA is attached), not when installed.
    """
    from transformers import PreTrainedModel

    try:
        from transformers.modeling_layers import GradientCheckpointingLayer

        checkpointed = (GradientCheckpointingLayer,)
    except ImportError:  # older transformers: fall back to "any trainable parameter in the sub-model"
        checkpointed = ()

    def enable_input_require_grads():
        hooks, seen = [], set()
        for module in model.modules():
            if not isinstance(module, PreTrainedModel) or not _needs_input_grads(module, checkpointed):
                continue
            try:
                embeddings = module.get_input_embeddings()
            except (NotImplementedError, AttributeError):
                continue
            if embeddings is None or id(embeddings) in seen or not hasattr(embeddings, "register_forward_hook"):
                continue
            seen.add(id(embeddings))
            hooks.append(embeddings.register_forward_hook(_make_output_require_grad))
        # The attributes transformers' disable_input_require_grads() removes.
        model._require_grads_hooks = hooks
        if hooks:
            model._require_grads_hook = hooks[0]

    model.enable_input_require_grads = enable_input_require_grads


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
        raise UsageError(
            f"Cannot find the language model of {type(model).__name__} to place LoRA on. Pass --lora_target with "
            "a regex over module paths, or add a family module in mmft/families/."
        )
    # A vision tower nested in the language model's module (Chameleon's model.vqmodel inside model) stays out.
    vision = set(linear_module_names(model, paths["vision tower"]))
    names = [n for n in linear_module_names(model, paths["language model"]) if n not in vision]
    if target == "language+projector":
        names += linear_module_names(model, paths["projector"])
    elif target == "all-linear":
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    head = paths["lm head"]
    names = [n for n in names if n != head]  # the output head stays as is (it is huge and rarely helps)
    family = family or family_for(model)
    names = [n for n in names if n.rsplit(".", 1)[-1] not in family.lora_exclude]
    if not names:
        raise UsageError(f"No linear layers found for --lora_target {target!r} in {type(model).__name__}.")
    return names_to_regex(names)


# ---- deciding what trains ---------------------------------------------------------------------------
def _set_requires_grad(model: nn.Module, path: str | None, value: bool):
    if path is None:
        return
    module = model.get_submodule(path)
    for parameter in module.parameters():
        parameter.requires_grad_(value)


def prepare_model_for_training(model: nn.Module, model_args, starting_adapter=None) -> nn.Module:
    """Freeze parts and attach LoRA as ``model_args`` says; return the model to train (maybe a PeftModel).

    With ``starting_adapter`` (``mmft.train.starting_adapter.StartingAdapter``, from ``--adapter_name_or_path``)
    the adapter saved earlier is loaded trainable, with its own shape and saved modules, instead of a fresh one.
    """
    family = family_for(model)
    paths = component_paths(model, family)
    freeze_projector = model_args.freeze_projector
    input_grads_only_where_training(model)
    if model_args.use_peft:
        from peft import LoraConfig, get_peft_model

        if freeze_projector is None:
            freeze_projector = True
        if is_quantized(model):
            from peft import prepare_model_for_kbit_training

            # Freezes the base and upcasts the unquantised 16-bit parts (vision tower, projector, norms) to fp32 for
            # stable training. Checkpointing is left to the Trainer (--gradient_checkpointing) and its kwargs.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if starting_adapter is not None:
            return load_starting_adapter(model, starting_adapter)
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
            revision=model_args.model_revision,  # recorded in adapter_config.json with the base model's name
        )
        model = get_peft_model(model, config)
    else:
        if freeze_projector is None:
            freeze_projector = False
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        if model_args.freeze_vision_tower:
            _set_requires_grad(model, paths["vision tower"], False)
        elif family.vision_tokens_discrete:
            logger.warning("--freeze_vision_tower false: the %s vision tower turns images into discrete tokens, so "
                           "no gradient reaches it and it will not change.", family.name)
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
