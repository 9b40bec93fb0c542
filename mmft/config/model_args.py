"""``ModelArguments``: which model to fine-tune and how (the ``--model_*``, ``--lora_*``, freezing and QLoRA flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import UsageError


# Every field below has the same shape, field(default=..., metadata={"help": ...}): one command-line flag, its
# default and its --help text. The repetition is deliberate (HfArgumentParser reads exactly this), not code to share.
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
    adapter_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue training a LoRA/DoRA adapter trained earlier (a local folder or a Hub id): its "
                          "weights are the starting point and its shape (rank, alpha, targets, modules saved in "
                          "full) is kept, so the --lora_* flags are not used. The base model and revision are the "
                          "ones its adapter_config.json records; --model_name_or_path may be left out, and naming "
                          "another model is an error. The optimizer and learning-rate schedule start fresh: this "
                          "is not --resume_from_checkpoint. To continue a fully fine-tuned model, pass its folder "
                          "or Hub id as --model_name_or_path instead."},
    )
    adapter_revision: str | None = field(
        default=None,
        metadata={"help": "Branch, tag or commit of --adapter_name_or_path on the Hub (default: main). The commit "
                          "it resolves to is recorded in the model card as the parent adapter's revision."},
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
            raise UsageError(
                "--load_in_4bit trains a LoRA adapter over frozen 4-bit weights (QLoRA); 4-bit weights cannot be "
                "fine-tuned in full. Drop --use_peft false, or drop --load_in_4bit for full fine-tuning."
            )
