"""Configuration: three dataclasses parsed by ``HfArgumentParser``, with ``--config file.yaml`` for defaults.

Precedence, lowest to highest: the dataclass defaults, the YAML file, explicit command-line flags. So a recipe
YAML is a complete, reviewable description of a run, and any flag can still be overridden for one run:

    accelerate launch recipes/vqa.py --config recipes/configs/vqa/x.yaml --learning_rate 1e-4

``VLMTrainingArguments`` subclasses ``transformers.TrainingArguments``, so every standard flag works
(``--output_dir``, ``--learning_rate``, ``--report_to``, ``--push_to_hub``, ``--deepspeed``, ...).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .images import DEFAULT_MAX_IMAGE_PIXELS


@dataclass
class ModelArguments:
    """Which model to fine-tune and how (LoRA or full, which parts are frozen)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or local folder of an image-text-to-text model, or a built-in tiny model "
                          "('mmft:tiny-llava', built locally, no download)."},
    )
    model_revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of the model on the Hub (default: main)."}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow running code shipped in the model's repository. Off by default: only enable it "
                          "for repositories you trust."},
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto",
        metadata={"help": "Weights dtype when loading. 'auto' uses the checkpoint's dtype (float32 for the tiny "
                          "model). Prefer bfloat16 on recent GPUs."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel: 'sdpa' (default in transformers), 'eager', 'flash_attention_2'."},
    )
    use_peft: bool = field(
        default=True,
        metadata={"help": "Train a LoRA adapter (true) or fine-tune the full model (false)."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target: str = field(
        default="language",
        metadata={"help": "Which linear layers get LoRA: 'language' (the language model only; never the vision "
                          "tower), 'language+projector', 'all-linear' (includes the vision tower), or a regular "
                          "expression over full module paths."},
    )
    use_dora: bool = field(default=False, metadata={"help": "Use DoRA (weight-decomposed LoRA) instead of LoRA."})
    freeze_vision_tower: bool = field(
        default=True,
        metadata={"help": "Keep the vision tower's weights frozen (full fine-tuning; with LoRA the base model is "
                          "frozen anyway unless 'lora_target' reaches the vision tower)."},
    )
    freeze_projector: bool | None = field(
        default=None,
        metadata={"help": "Keep the projector (vision-to-language connector) frozen. Default: frozen with LoRA "
                          "(only adapters train), trained in full fine-tuning. 'false' with LoRA trains it fully "
                          "and saves it with the adapter."},
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={"help": "QLoRA: load the language model in 4-bit NF4 (bitsandbytes, double quantisation, bf16 "
                          "compute; fp16 with --dtype float16) and train a LoRA/DoRA adapter over it. The vision "
                          "tower, projector and LM head stay unquantised. Needs a CUDA GPU and "
                          "`pip install -e '.[qlora]'`."},
    )

    def __post_init__(self):
        if self.load_in_4bit and not self.use_peft:
            raise ValueError(
                "--load_in_4bit trains a LoRA adapter over frozen 4-bit weights (QLoRA); 4-bit weights cannot be "
                "fine-tuned in full. Drop --use_peft false, or drop --load_in_4bit for full fine-tuning."
            )


@dataclass
class DataArguments:
    """Where the data comes from and how samples are budgeted."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Training data: 'shapes' (the built-in demo), a local .json/.jsonl file in LLaVA or "
                          "messages format, a folder saved with save_to_disk, or a Hub dataset id."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Evaluation data, same forms as --dataset_name. Default: --dataset_name with --eval_split."},
    )
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Split used for evaluation (e.g. 'validation', 'test'). Without it and without "
                          "--eval_dataset_name there is no evaluation."},
    )
    image_root: str | None = field(
        default=None,
        metadata={"help": "Folder that relative image paths resolve against. Default: the data file's folder."},
    )
    allow_images_outside_root: bool = field(
        default=False,
        metadata={"help": "Allow absolute image paths and paths leading outside the image root."},
    )
    allow_remote_images: bool = field(
        default=False, metadata={"help": "Allow http(s) image URLs in records (fetched at training time)."}
    )
    max_length: int | None = field(
        default=2048,
        metadata={"help": "Maximum tokens per sample after image expansion. Image tokens are never truncated; "
                          "longer samples follow --overlength_policy."},
    )
    overlength_policy: Literal["error", "drop"] = field(
        default="error",
        metadata={"help": "What to do with a sample longer than --max_length: 'error' (stop, naming the record) or "
                          "'drop' (skip it; the count is logged)."},
    )
    max_pixels: int | None = field(
        default=None,
        metadata={"help": "Downscale every image to at most this many pixels (width*height, aspect kept) before "
                          "the processor sees it. Fewer pixels: faster, and fewer image tokens for models with "
                          "dynamic resolution."},
    )
    max_image_pixels: int | None = field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metadata={"help": "Refuse images whose header claims more pixels than this (decompression bombs)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training records."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation records."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream a Hub dataset instead of downloading it (requires --max_steps)."},
    )


@dataclass
class VLMTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus evaluation by generation."""

    eval_before_train: bool = field(
        default=False, metadata={"help": "Evaluate once before training, to see the starting point."}
    )
    eval_generation: bool = field(
        default=True,
        metadata={"help": "During evaluation, generate answers and score them with --metrics (besides the loss)."},
    )
    metrics: list[str] = field(
        default_factory=lambda: ["vqa_accuracy", "exact_match"],
        metadata={"help": "Metrics computed on generated answers: bundled names (vqa_accuracy, exact_match) or "
                          "paths to evaluate metric scripts."},
    )
    generation_max_new_tokens: int = field(
        default=32, metadata={"help": "Maximum new tokens generated per evaluation answer."}
    )
    generation_num_beams: int = field(default=1, metadata={"help": "Beams for evaluation generation (1 = greedy)."})
    stop_on_nonfinite: bool = field(
        default=True,
        metadata={"help": "Stop training, before the optimizer step, when the loss or gradient norm is NaN or "
                          "infinite, with a message naming the step; the last complete checkpoint stays intact. "
                          "Costs one host sync per optimizer step."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept false: the collator needs the whole record (images and messages)."},
    )

    def __post_init__(self):
        # Launched on several processes (torchrun / accelerate launch) on a machine without an accelerator,
        # Accelerate only goes distributed (gloo) when told the run is on the CPU; otherwise every process silently
        # trains alone on all the data and writes the outputs. Tell it.
        if _launched_world_size() > 1 and not self.use_cpu and not _accelerator_available():
            self.use_cpu = True
        super().__post_init__()
        self._default_non_reentrant_checkpointing()

    def _default_non_reentrant_checkpointing(self):
        """``--gradient_checkpointing`` checkpoints non-reentrantly unless the kwargs say otherwise.

        Reentrant checkpointing back-propagates through a block only when one of its inputs requires grad (with
        frozen embeddings, LoRA weights inside would get no gradient without an input hook) and warns on every
        frozen block; non-reentrant needs neither. Recent transformers default to it, older 5.x releases and
        torch's own default may not: state it explicitly.
        """
        # Recent transformers renamed gradient_checkpointing* to activation_checkpointing*, keeping the old names
        # as mirrored aliases; set whichever exist.
        for flag, kwargs_name in (("activation_checkpointing", "activation_checkpointing_kwargs"),
                                  ("gradient_checkpointing", "gradient_checkpointing_kwargs")):
            if getattr(self, flag, None):
                kwargs = dict(getattr(self, kwargs_name, None) or {})
                kwargs.setdefault("use_reentrant", False)
                setattr(self, kwargs_name, kwargs)


def _launched_world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _accelerator_available() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return accelerator.is_available()
    return torch.cuda.is_available()


CONFIG_FLAG = "--config"


def load_yaml_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a YAML mapping of argument names to values.")
    return data


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    rest, config = [], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == CONFIG_FLAG:
            if i + 1 >= len(argv):
                raise ValueError("--config needs a path to a YAML file.")
            config = argv[i + 1]
            i += 2
            continue
        if arg.startswith(CONFIG_FLAG + "="):
            config = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return config, rest


def parse_args(
    argv: list[str] | None = None,
    dataclass_types=(ModelArguments, DataArguments, VLMTrainingArguments),
    default_config: str | Path | None = None,
):
    """Parse ``--config file.yaml`` plus flags into the dataclasses; flags override the file.

    ``default_config`` is used when ``argv`` names neither a config nor a model nor a dataset: this is how a
    recipe run with no arguments becomes the embedded demo while staying an ordinary YAML configuration.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, rest = _split_config_flag(argv)
    names_run = any(a.split("=", 1)[0] in ("--model_name_or_path", "--dataset_name") for a in rest)
    if config_path is None and default_config is not None and not names_run:
        config_path = str(default_config)
    parser = HfArgumentParser(dataclass_types)
    if config_path is not None:
        values = load_yaml_config(config_path)
        known = {f.name for dataclass_type in dataclass_types for f in fields(dataclass_type) if f.init}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{config_path}: unknown argument(s) {', '.join(unknown)}. Run the recipe with --help for the list."
            )
        # argparse never applies nargs to defaults: a YAML scalar for a list flag (``metrics: anls``) would stay a
        # string and later be iterated character by character. Wrap it, unless the field itself takes a string.
        takes_str = {f.name for t in dataclass_types for f in fields(t) if isinstance(f.default, str)}
        for action in parser._actions:
            value = values.get(action.dest)
            if action.nargs in ("+", "*") and isinstance(value, str) and action.dest not in takes_str:
                values[action.dest] = [value]
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=rest)
