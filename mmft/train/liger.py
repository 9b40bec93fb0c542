"""``--use_liger_kernel``: Liger's fused Triton kernels, refused up front where they cannot apply.

transformers already has the flag (``TrainingArguments.use_liger_kernel``, kernel options in
``--liger_kernel_config``): ``Trainer.train()`` calls ``transformers.integrations.liger.apply_liger_kernel``, which
unwraps a PEFT model and hands it to ``liger_kernel.transformers._apply_liger_kernel_to_instance``. That function
looks ``config.model_type`` up in ``MODEL_TYPE_TO_APPLY_LIGER_FN`` and, for a type it does not know, only *logs* at
INFO level and returns: the run then trains without any Liger kernel while the user believes it has them. And a
missing package or a machine without a GPU surfaces only once ``train()`` starts (or deep inside a Triton launch).

:func:`check_liger` makes those three cases errors at start, each saying what to do:

- liger-kernel not installed: ``pip install liger-kernel`` (or ``pip install -e '.[liger]'``);
- no GPU: Liger's kernels are Triton GPU kernels (CUDA, or ROCm through torch's ``cuda`` device); there is no CPU
  path, so the flag must be dropped on CPU;
- a model type Liger has no patch for, judged by the *installed* liger-kernel's own table (it grows with each
  release), with the VLM model types of mmft's families that Liger covers listed. For wrappers that patch their
  language model by *its* model type (LLaVA-style), that type must be known to Liger too: otherwise only the loss
  is fused and Liger's own docstring warns of "unexpected side effects".

With the fused linear cross-entropy (Liger's default for most families) the training forward returns no logits;
mmft's trainer uses only the loss in training and ``generate()`` in evaluation, so nothing else changes. Whether the
kernels change results is judged by eval parity: run the evaluation with and without the flag (README, Performance).
"""

from __future__ import annotations

import logging

from ..errors import UsageError

logger = logging.getLogger(__name__)

LIGER_INSTALL_HINT = "pip install liger-kernel  (or: pip install -e '.[liger]')"

# Model types whose Liger patch fuses the loss itself but patches the language model by the *text* model's type
# (``config.text_config.model_type``), so that type must be in Liger's table as well.
PATCHES_LANGUAGE_MODEL_BY_TYPE = ("llava", "internvl", "smolvlm")


class LigerUnavailableError(UsageError, RuntimeError):
    """``--use_liger_kernel`` cannot work here (package, device or model type); the message says what to do."""


def liger_available() -> bool:
    """Whether liger-kernel is importable at a version transformers accepts (>= 0.3.0; transformers' own test)."""
    from transformers.utils import is_liger_kernel_available

    return is_liger_kernel_available()


def gpu_available() -> bool:
    """Whether torch sees a GPU Triton kernels can run on (CUDA, or ROCm through the ``cuda`` device)."""
    import torch

    return torch.cuda.is_available()


def supported_model_types() -> set[str]:
    """The model types the installed liger-kernel patches: the keys of its ``MODEL_TYPE_TO_APPLY_LIGER_FN``."""
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    return set(MODEL_TYPE_TO_APPLY_LIGER_FN)


def _liger_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("liger-kernel")
    except PackageNotFoundError:
        return "unknown version"


def _model_type_problem(config, supported: set[str]) -> str | None:
    """Why Liger would not (fully) patch a model with this config, or None when it would."""
    model_type = getattr(config, "model_type", None)
    from ..families import REGISTRY

    listed = ", ".join(sorted(set(REGISTRY) & supported)) or "none"
    if model_type not in supported:
        return (
            f"liger-kernel ({_liger_version()}) has no kernels for model type {model_type!r}: transformers would "
            f"log this at INFO level and train without Liger. Model types of mmft's families that Liger patches: "
            f"{listed}. Drop --use_liger_kernel for this model, or upgrade liger-kernel "
            "(pip install -U liger-kernel) if a newer release adds it."
        )
    text_type = getattr(getattr(config, "text_config", None), "model_type", None)
    if model_type in PATCHES_LANGUAGE_MODEL_BY_TYPE and text_type is not None and text_type not in supported:
        return (
            f"liger-kernel ({_liger_version()}) patches {model_type!r} models through their language model's "
            f"type, and has no kernels for {text_type!r} (this checkpoint's language model): only the loss would "
            "be fused, which Liger itself warns may have side effects. Drop --use_liger_kernel for this model."
        )
    return None


def check_liger(model, args) -> None:
    """Refuse ``--use_liger_kernel`` at start where Liger cannot apply; a no-op when the flag is off.

    Args:
        model: the loaded model (or its config): its ``config.model_type`` must be one Liger patches.
        args: the training arguments (``use_liger_kernel``, ``use_cpu``).

    Raises:
        LigerUnavailableError: liger-kernel is not installed, there is no GPU (or ``--use_cpu``), or the model
            type is not one Liger supports; the message names what to do.
    """
    if not getattr(args, "use_liger_kernel", False):
        return
    if not liger_available():
        raise LigerUnavailableError(
            "--use_liger_kernel needs the liger-kernel package (>= 0.3.0; it brings Triton), which is not "
            f"installed: {LIGER_INSTALL_HINT}, on a machine with a CUDA GPU. Or drop --use_liger_kernel."
        )
    if getattr(args, "use_cpu", False) or not gpu_available():
        where = "--use_cpu is set" if getattr(args, "use_cpu", False) else "no CUDA GPU is visible to torch"
        raise LigerUnavailableError(
            f"--use_liger_kernel runs Liger's Triton kernels, which need a GPU, but {where}. Liger has no CPU path: "
            "drop --use_liger_kernel on this machine (train on a CUDA GPU to use it)."
        )
    config = getattr(model, "config", model)
    problem = _model_type_problem(config, supported_model_types())
    if problem is not None:
        raise LigerUnavailableError(f"--use_liger_kernel: {problem}")
    logger.info(
        "Liger kernels will be applied to this %s model when training starts (liger-kernel %s).",
        getattr(config, "model_type", "?"),
        _liger_version(),
    )
