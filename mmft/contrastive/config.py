"""The contrastive recipe's arguments: ``ModelArguments`` and ``DataArguments`` as the other recipes, plus
``ContrastiveArguments`` (what trains, pairs, evaluation) and ``ContrastiveTrainingArguments``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from ..config.environment import default_num_workers, trains_on_accelerator, use_cpu_if_launched_without_accelerator


# Every field below has the same shape, field(default=..., metadata={"help": ...}): one command-line flag, its
# default and its --help text. The repetition is deliberate (HfArgumentParser reads exactly this), not code to share.
@dataclass
class ContrastiveArguments:
    """What trains in the dual encoder, how records become pairs, and what evaluation scores."""

    image_tower: Literal["lora", "full", "frozen"] | None = field(
        default=None,
        metadata={"help": "How the image tower trains: 'lora', 'full' or 'frozen'. Default: 'lora' with --use_peft "
                          "true, else 'full'; 'frozen' with --lock_image_tower."},
    )
    text_tower: Literal["lora", "full", "frozen"] | None = field(
        default=None,
        metadata={"help": "How the text tower trains: 'lora', 'full' or 'frozen'. Default: 'lora' with --use_peft "
                          "true, else 'full'; 'full' with --lock_image_tower."},
    )
    lock_image_tower: bool = field(
        default=False,
        metadata={"help": "LiT (locked-image tuning): the image tower stays frozen and the text tower trains in "
                          "full. Explicit --image_tower / --text_tower still win."},
    )
    train_logit_scale: bool = field(
        default=True,
        metadata={"help": "Train the logit scale (temperature; CLIP's is clamped to at most 100) and SigLIP's bias. "
                          "With LoRA they are saved beside the adapter (contrastive_head.safetensors)."},
    )
    pair_policy: Literal["error", "drop"] = field(
        default="error",
        metadata={"help": "A record that is no (image, caption) pair (no image, several images, or no caption and no "
                          "one-turn answer): 'error' stops, naming the records; 'drop' leaves them out and logs the "
                          "count."},
    )
    zero_shot: list[str] | None = field(
        default=None,
        metadata={"help": "Zero-shot classification tasks scored at every evaluation: names (or .md files) of "
                          "zero_shot data cards, which list the class names and the prompt templates (e.g. "
                          "'shapes-shape-names imagenette')."},
    )
    zero_shot_split: str | None = field(
        default=None, metadata={"help": "Split of the zero-shot cards' datasets (default: each card's eval_split)."}
    )
    zero_shot_max_samples: int | None = field(
        default=None, metadata={"help": "Use at most N images per zero-shot task."}
    )
    retrieval_ks: list[int] = field(
        default_factory=lambda: [1, 5, 10], metadata={"help": "The K of the reported Recall@K (default: 1 5 10)."}
    )
    gallery_queries: int = field(
        default=8,
        metadata={"help": "Queries shown with their top-5 retrieved items in eval_report.html (0: no report)."},
    )
    open_clip_pretrained: str | None = field(
        default=None,
        metadata={"help": "open_clip models only: the pretrained tag (e.g. 'laion2b_s34b_b79k') for "
                          "'open_clip:<arch>'; default: random weights. 'hf-hub:<id>' models carry their own."},
    )

    def tower_modes(self, use_peft: bool) -> dict[str, str]:
        """``{"image": mode, "text": mode}``: explicit flags, else LiT, else LoRA/full from --use_peft."""
        default = "lora" if use_peft else "full"
        image = "frozen" if self.lock_image_tower else default
        text = "full" if self.lock_image_tower else default
        return {"image": self.image_tower or image, "text": self.text_tower or text}


@dataclass
class ContrastiveTrainingArguments(TrainingArguments):
    """``TrainingArguments`` for dual encoders: whole batches only, records kept whole, evaluation before training."""

    eval_before_train: bool = field(
        default=False, metadata={"help": "Evaluate once before training, to see the starting point."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept false: the collator needs the whole pair item (image and captions)."}
    )
    dataloader_drop_last: bool = field(
        default=True,
        metadata={"help": "Drop the last incomplete batch of an epoch (default true: a short batch has fewer "
                          "negatives, and a one-pair batch none)."},
    )
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={"help": "Processes that load images and tokenise captions while the model trains. Default: "
                          "min(4, CPU cores per process) on a GPU, 0 on CPU-only runs."},
    )

    dataloader_pin_memory: bool | None = field(
        default=None,
        metadata={"help": "Collate into page-locked memory for faster copies to the GPU. Default: true on an "
                          "accelerator, false on CPU."},
    )

    def __post_init__(self):
        use_cpu_if_launched_without_accelerator(self)  # as VLMTrainingArguments
        on_accelerator = trains_on_accelerator(self.use_cpu)
        if self.dataloader_num_workers is None:
            self.dataloader_num_workers = default_num_workers(on_accelerator)
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = on_accelerator
        super().__post_init__()
