"""Configuration: three dataclasses parsed by ``HfArgumentParser``, with ``--config file.yaml`` for defaults.

Precedence, lowest to highest: the dataclass defaults, the YAML file, explicit command-line flags. So a recipe
YAML is a complete, reviewable description of a run, and any flag can still be overridden for one run:

    accelerate launch recipes/vqa.py --config recipes/configs/vqa/x.yaml --learning_rate 1e-4

``VLMTrainingArguments`` subclasses ``transformers.TrainingArguments``, so every standard flag works
(``--output_dir``, ``--learning_rate``, ``--report_to``, ``--push_to_hub``, ``--deepspeed``, ...).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .data.images import DEFAULT_MAX_IMAGE_PIXELS
from .errors import MissingPathError, UsageError
from .metrics import DEFAULT_METRICS


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


@dataclass
class DataArguments:
    """Where the data comes from and how samples are budgeted."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Training data: 'shapes' (the built-in demo), a data card name (e.g. 'chartqa'; see "
                          "data_cards/) or card file (.md), a local .json/.jsonl/.parquet/.csv file, a folder saved "
                          "with save_to_disk, an image folder with metadata.jsonl/csv, or a Hub dataset id (its "
                          "card is used when there is one; otherwise the layout is detected from the columns)."},
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
    overlength_policy: Literal["error", "drop", "shrink"] = field(
        default="error",
        metadata={"help": "What to do with a sample longer than --max_length: 'error' (stop, naming the record), "
                          "'drop' (skip it; the count is logged) or 'shrink' (downscale its images, aspect kept, "
                          "until it fits, never below --shrink_min_pixels; the count is logged). 'shrink' helps "
                          "only models whose image token count depends on the image size (Qwen2-VL-style dynamic "
                          "resolution, Pixtral/Mistral 3, InternVL tiles, LLaVA-NeXT/OneVision anyres down to their "
                          "smallest grid); where it does not (LLaVA 1.5, PaliGemma, Gemma 3, Idefics3/SmolVLM, whose "
                          "processor resizes every image to one longest edge) it stops with an error saying so."},
    )
    shrink_min_pixels: int = field(
        default=224 * 224,
        metadata={"help": "With --overlength_policy shrink: the floor, in pixels (width*height), below which no "
                          "image is shrunk (default 224*224 = 50176). A sample that does not fit even at the floor "
                          "stops training with an error naming it."},
    )
    augment_images: bool = field(
        default=False,
        metadata={"help": "Augment training images (never evaluation or generation): a random resized crop "
                          "(--augment_crop_scale, aspect within 10%, resized back to the original size) and colour "
                          "jitter (--augment_color_jitter). Deterministic: each draw depends only on the seed "
                          "(--data_seed, else --seed), the epoch and the record id."},
    )
    augment_crop_scale: list[float] = field(
        default_factory=lambda: [0.8, 1.0],
        metadata={"help": "With --augment_images: the range of the image area a crop keeps, two numbers "
                          "0 < min <= max <= 1 ('1 1' disables cropping)."},
    )
    augment_color_jitter: float = field(
        default=0.1,
        metadata={"help": "With --augment_images: brightness, contrast and saturation are each scaled by a factor "
                          "in [1 - x, 1 + x] (hue is never changed); 0 disables it."},
    )
    augment_hflip: bool = field(
        default=False,
        metadata={"help": "With --augment_images: also mirror images left-right half of the time. Off by default "
                          "because flips break text in images, charts and every left/right question; warns."},
    )
    prompt_paraphrases: str | None = field(
        default=None,
        metadata={"help": "A text file of question templates, one per line, each containing {question}: in "
                          "training, each user turn's question is put into a template drawn per sample "
                          "(deterministically, like --augment_images). Add a line '{question}' to keep the original "
                          "wording among the choices. Blank lines and lines starting with # are ignored."},
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
    on_bad_record: Literal["drop", "error"] = field(
        default="drop",
        metadata={"help": "What to do with a bad record: one whose structure is invalid or whose image is missing, "
                          "outside the image root, over --max_image_pixels, truncated or unreadable, found by the "
                          "start-up scan (headers and PNG/JPEG end markers, nothing decoded) or when the data loader "
                          "decodes it. 'drop' (default): leave it out, log its id and reason, count it "
                          "(train_bad_records* in train_results.json and the model card), and stop with a report "
                          "once more than --max_bad_fraction of the records are bad. 'error': stop before the first "
                          "step naming every bad record the scan found, or at the first one the loader meets."},
    )
    max_bad_fraction: float = field(
        default=0.01,
        metadata={"help": "With --on_bad_record drop: stop with a report once more than this share of the records "
                          "scanned at start-up, or of the samples the data loader has seen, are bad. Judged over at "
                          "least 100 samples, so at the default 0.01 one bad sample among the first few does not "
                          "stop a run. 0 stops at the first bad record (with the report)."},
    )
    label_turn_suffix: bool = field(
        default=False,
        metadata={"help": "Also supervise what the chat template writes after each answer's end-of-turn token "
                          "(ChatML's newline after <|im_end|>; nothing for templates that write nothing there). "
                          "Default false: "
                          "labels cover the answer and its end-of-turn token, the token generation stops at, and "
                          "nothing the model never has to produce. true matches TRL's completion-only labels "
                          "(benchmarks/RESULTS.md, issue #16, measures both)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training records."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation records."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the training data instead of loading it all (Hub ids, cards and local files; an "
                          "IterableDataset, so --max_steps is required). Evaluation records are streamed too and "
                          "kept in memory (bound them with --max_eval_samples)."},
    )
    replay_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Old-task training data to rehearse while training on the new data (same forms as "
                          "--dataset_name, read with its own data card or detected layout: the --column_* flags and "
                          "--prompt_template apply to the new data only). Each epoch mixes in a fresh sample of its "
                          "records, --replay_fraction of the epoch, drawn from the seed (--data_seed, else --seed) "
                          "and the epoch number, so runs and resumes repeat the same draws."},
    )
    replay_split: str = field(default="train", metadata={"help": "Split of --replay_dataset_name to draw from."})
    replay_fraction: float = field(
        default=0.2,
        metadata={"help": "With --replay_dataset_name: the share of each epoch that is replayed old-task records, "
                          "in (0, 1). 0.2 with 800 new records adds 200 old ones (1,000 per epoch)."},
    )
    retention_eval_dataset_name: list[str] | None = field(
        default=None,
        metadata={"help": "Old-task evaluation data (one or more, same forms as --dataset_name), scored before "
                          "training (the starting model or adapter) and after, each with its own data card's "
                          "metrics (else vqa_accuracy exact_match), to measure what the new training made the "
                          "model forget. Results: retention_results.json, eval_results.json (retention_* keys), "
                          "the model card and eval_report.html. The new task's evaluation set is then scored "
                          "before training too, so both show their change."},
    )
    retention_eval_split: str | None = field(
        default=None,
        metadata={"help": "Split of the --retention_eval_dataset_name sets (default: --eval_split, else 'test'). "
                          "--max_eval_samples bounds them too."},
    )
    column_image: str | None = field(
        default=None,
        metadata={"help": "Column holding the image(s) (an Image, a path or a list). Default: the data card's, or "
                          "the Image-typed column / 'image' / 'images'. A template such as '{filepath}/{filename}' "
                          "builds a path relative to --image_root."},
    )
    column_id: str | None = field(default=None, metadata={"help": "Column used as the record id (default: 'id')."})
    column_question: str | None = field(
        default=None, metadata={"help": "Column holding the question (question answering and multiple choice)."}
    )
    column_answer: str | None = field(
        default=None,
        metadata={"help": "Column holding the answer(s): a string, a list of strings or a list of {answer: ...}. "
                          "All answers become references; the most common one is the training target. For "
                          "multiple choice: the correct option's index, letter or text."},
    )
    column_caption: str | None = field(
        default=None,
        metadata={"help": "Column holding the caption(s) (captioning; the first caption is the training target, "
                          "all are references)."},
    )
    column_options: str | None = field(
        default=None, metadata={"help": "Column holding the list of options (multiple choice; listed as A., B., ...)."}
    )
    column_messages: str | None = field(
        default=None,
        metadata={"help": "Column holding the conversation: role/content turns or LLaVA from/value turns."},
    )
    prompt_template: str | None = field(
        default=None,
        metadata={"help": "Prompt for question answering / captioning / multiple choice rows, with {question}, "
                          "{options} or any column name as fields, e.g. '{question}\\nAnswer with one word.'. "
                          "Default: the data card's prompt, else a generic one."},
    )

    def __post_init__(self):
        if not 0 < self.replay_fraction < 1:
            raise UsageError(f"--replay_fraction must be between 0 and 1 (the share of each epoch that is replayed "
                             f"old-task records, e.g. 0.2), got {self.replay_fraction}.")

    def column_overrides(self) -> dict[str, str | None]:
        """The ``--column_*`` flags as ``{role: column}`` (``mmft.data.cards`` role names)."""
        return {"image": self.column_image, "id": self.column_id, "question": self.column_question,
                "answers": self.column_answer, "captions": self.column_caption, "options": self.column_options,
                "messages": self.column_messages}


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
    metrics: list[str] | None = field(
        default=None,
        metadata={"help": "Metrics computed on generated answers: bundled names (vqa_accuracy, exact_match, anls, "
                          "relaxed_accuracy, mc_accuracy, bleu, cider) or paths to evaluate metric scripts. "
                          "Default: the metrics the dataset's data card names (e.g. anls for docvqa), else "
                          "vqa_accuracy exact_match."},
    )
    max_retention_drop: float | None = field(
        default=None,
        metadata={"help": "With --retention_eval_dataset_name: fail the run (non-zero exit, after every result and "
                          "the model card are written, before the final --push_to_hub) when an old task's score "
                          "falls by more than this, in the units of its first metric (0.05: vqa_accuracy 0.80 -> "
                          "0.74 fails) or, when it has none, its loss rises by more than this."},
    )
    generation_max_new_tokens: int = field(
        default=32, metadata={"help": "Maximum new tokens generated per evaluation answer."}
    )
    num_beams: int = field(default=1, metadata={"help": "Beams for evaluation generation (1 = greedy)."})
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
    train_sampling_strategy: str = field(
        default="auto",
        metadata={"help": "Order of training records. 'auto' (default): measure every record's token length at "
                          "start-up (rendered text plus image headers, no pixel decoded; cached on disk) and group "
                          "records of similar length only where that removes padding worth removing, else keep "
                          "random order (near-uniform lengths, or fewer than 8 steps of records); the decision "
                          "and the expected real-token fraction are logged and written to train_results.json. "
                          "'group_by_length': always plan a grouping (--length_grouping_target, "
                          "--length_grouping_min_gain), whatever the record count. 'random': shuffled, no length "
                          "measured. 'sequential': dataset order. 'batch_rebalance': transformers' sampler (needs "
                          "an input_ids column).",
                  "choices": ["auto", "random", "sequential", "group_by_length", "batch_rebalance"]},
    )
    group_by_length: bool | None = field(
        default=None,
        metadata={"help": "true: same as --train_sampling_strategy group_by_length; false: same as "
                          "--train_sampling_strategy random (no length measured). Unset: the strategy decides "
                          "(default 'auto'). Grouping batches records of similar token length together (less "
                          "padding, faster epochs), keeping the order random: lengths are measured once up front "
                          "from the rendered text and the image headers (no pixel decoded), then grouped in "
                          "shuffled megabatches; works with several processes. How tightly it groups is chosen "
                          "from the lengths (--length_grouping_target, --length_grouping_min_gain) and logged: on "
                          "near-uniform data it keeps random order, since grouping would save little and batches "
                          "would correlate with what fixes a record's length (benchmarks/RESULTS.md)."},
    )
    length_grouping_target: float = field(
        default=0.95,
        metadata={"help": "When lengths are grouped (auto, --group_by_length): the real-token (non-pad) fraction "
                          "of batches to reach. The widest length bucket (20%, 10%, 5%, 2%, then exact lengths) "
                          "whose estimated fraction reaches it is used: wider buckets keep batches more mixed."},
    )
    length_grouping_min_gain: float = field(
        default=1.1,
        metadata={"help": "When lengths are grouped (auto, --group_by_length): group only if exact-length "
                          "grouping would make batches at least this many times denser in real tokens than random "
                          "order (1.1: at least ~10% fewer tokens per epoch); otherwise keep random order. 1.0 "
                          "always groups."},
    )
    padding_free: bool = field(
        default=False,
        metadata={"help": "Concatenate each batch's samples into one row with per-sample position_ids (no padding "
                          "at all). Needs a CUDA GPU and --attn_implementation flash_attention_2; refused for "
                          "multimodal-RoPE families (Qwen2/2.5/3-VL, GLM-4V) and PaliGemma."},
    )
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={"help": "Processes that load and collate batches (decode and resize images, render, tokenise) "
                          "while the model trains. Default: min(4, CPU cores per process) when training on a GPU; "
                          "0 on CPU-only runs, where workers would compete with training for the same cores."},
    )
    dataloader_persistent_workers: bool | None = field(
        default=None,
        metadata={"help": "Keep the loader's workers alive between epochs and evaluations instead of restarting "
                          "them. Default: true whenever there are workers."},
    )
    dataloader_pin_memory: bool | None = field(
        default=None,
        metadata={"help": "Collate into page-locked memory, for faster, asynchronous copies to the GPU. Default: true "
                          "when a GPU (or other accelerator) is used, false on CPU."},
    )
    dataloader_prefetch_factor: int | None = field(
        default=None,
        metadata={"help": "Batches each worker prepares ahead (only with workers). Default: PyTorch's 2, so 4 "
                          "workers keep 8 batches in flight, enough to absorb slow samples."},
    )

    def __post_init__(self):
        # Launched on several processes (torchrun / accelerate launch) on a machine without an accelerator,
        # Accelerate only goes distributed (gloo) when told the run is on the CPU; otherwise every process silently
        # trains alone on all the data and writes the outputs. Tell it.
        if _launched_world_size() > 1 and not self.use_cpu and not _accelerator_available():
            self.use_cpu = True
        self._default_data_loading()
        if self.group_by_length:
            self.train_sampling_strategy = "group_by_length"
        elif self.group_by_length is not None and self.train_sampling_strategy in ("auto", "group_by_length"):
            self.train_sampling_strategy = "random"  # --group_by_length false: an explicit no to grouping
        # Idempotent: arguments rebuilt from these values (to_dict, dataclasses.replace) decide the same way.
        self.group_by_length = {"group_by_length": True, "auto": None}.get(self.train_sampling_strategy, False)
        if not 0 < self.length_grouping_target <= 1:
            raise UsageError(f"--length_grouping_target must be in (0, 1], got {self.length_grouping_target}.")
        if self.length_grouping_min_gain < 1:
            raise UsageError(f"--length_grouping_min_gain must be at least 1, got {self.length_grouping_min_gain}.")
        super().__post_init__()
        self._default_non_reentrant_checkpointing()

    def _default_data_loading(self):
        """Data-loading settings the user left unset, chosen to keep an accelerator fed.

        Images are decoded and resized once per sample, inside the loader's workers (the collator runs there), so on
        a GPU the workers hide that work behind the training step: min(4, cores per process) of them, kept alive
        across epochs, collating into pinned memory. On a CPU-only run the workers would take cores from the
        training threads, so loading stays in the main process (see benchmarks/RESULTS.md for the measurement).
        """
        on_accelerator = not self.use_cpu and _accelerator_available()
        derived_workers = self.dataloader_num_workers is None
        if derived_workers:
            self.dataloader_num_workers = min(4, _cores_per_process()) if on_accelerator else 0
        if self.dataloader_persistent_workers is None:
            self.dataloader_persistent_workers = self.dataloader_num_workers > 0
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = on_accelerator
        if self.dataloader_num_workers == 0:  # what workers do cannot be asked of no workers (torch would refuse late)
            workers = "--dataloader_num_workers 0" + (" (the default on a CPU-only run)" if derived_workers else "")
            for flag, asked in (("--dataloader_persistent_workers true", self.dataloader_persistent_workers),
                                (f"--dataloader_prefetch_factor {self.dataloader_prefetch_factor}",
                                 self.dataloader_prefetch_factor is not None)):
                if asked:
                    raise UsageError(f"{flag} and {workers} conflict: only data-loader workers keep alive or "
                                     "prefetch batches. Pass --dataloader_num_workers N (N > 0), or drop the first.")

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


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _launched_world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _cores_per_process() -> int:
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _accelerator_available() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return accelerator.is_available()
    return torch.cuda.is_available()


def metric_names(training_args) -> list[str]:
    """``--metrics`` as resolved (``build_trainer`` fills it from the data card), or the default."""
    metrics = getattr(training_args, "metrics", None)
    return list(DEFAULT_METRICS) if metrics is None else list(metrics)


CONFIG_FLAG = "--config"


def load_yaml_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"Config file {str(path)!r} does not exist.")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a config file must be a YAML mapping of argument names to values.")
    return data


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    rest, config = [], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == CONFIG_FLAG:
            if i + 1 >= len(argv):
                raise UsageError("--config needs a path to a YAML file.")
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
    for action in parser._actions:  # help texts are plain prose ("within 10%"); argparse %-formats them for --help
        if action.help and "%" in action.help:
            action.help = action.help.replace("%", "%%")
    if config_path is not None:
        values = load_yaml_config(config_path)
        known = {f.name for dataclass_type in dataclass_types for f in fields(dataclass_type) if f.init}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(
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
    else:
        values = {}
    namespace, unknown_flags = parser.parse_known_args(args=rest)
    if unknown_flags:
        raise UsageError(f"Unknown argument(s): {' '.join(unknown_flags)}. Run the recipe with --help for the list.")
    settle_conflicts(vars(namespace), explicit=_explicit_dests(parser, rest), from_config=set(values),
                     defaults={f.name: f.default for t in dataclass_types for f in fields(t) if f.init},
                     config_path=config_path)
    outputs = []
    for dataclass_type in dataclass_types:
        names = {f.name for f in fields(dataclass_type) if f.init}
        try:
            outputs.append(dataclass_type(**{k: v for k, v in vars(namespace).items() if k in names}))
        except ValueError as error:  # the dataclasses' (and TrainingArguments') own checks of the values given
            raise error if isinstance(error, UsageError) else UsageError(str(error)) from error
    return tuple(outputs)


def _explicit_dests(parser, argv: list[str]) -> set[str]:
    """The argument names given on the command line (``--flag value``, ``--flag=value``, ``--no_flag``)."""
    actions = parser._option_string_actions
    return {actions[a.split("=", 1)[0]].dest for a in argv if a.startswith("-") and a.split("=", 1)[0] in actions}


@dataclass(frozen=True)
class Conflict:
    """Two settings that cannot hold together: ``setting`` only makes sense under some values of ``depends_on``.

    ``conflicts(values, given)`` says whether the merged ``values`` clash; ``given`` holds the names set on the command
    line or in the config file (a value left at its default is not a choice anyone made).
    """

    setting: str
    depends_on: str
    conflicts: Callable[[dict, set], bool]
    reason: str


# Each pair is checked after the config file and the flags are merged. When only one side was given on the command
# line it wins and the other side falls back to its default (derived again later, see VLMTrainingArguments); when
# both were given on the command line, or both come from the config file, the run stops with one line naming both.
CONFLICTS = (
    Conflict("dataloader_persistent_workers", "dataloader_num_workers",
             lambda v, given: bool(v["dataloader_persistent_workers"]) and v["dataloader_num_workers"] == 0,
             "persistent workers need data-loader workers"),
    Conflict("dataloader_prefetch_factor", "dataloader_num_workers",
             lambda v, given: v["dataloader_prefetch_factor"] is not None and v["dataloader_num_workers"] == 0,
             "batches are prefetched by data-loader workers, and there are none"),
    Conflict("group_by_length", "train_sampling_strategy",
             lambda v, given: bool(v["group_by_length"]) and "train_sampling_strategy" in given
             and v["train_sampling_strategy"] != "group_by_length",
             "--group_by_length means --train_sampling_strategy group_by_length"),
    Conflict("group_by_length", "train_sampling_strategy",
             lambda v, given: v["group_by_length"] is False and "group_by_length" in given
             and "train_sampling_strategy" in given and v["train_sampling_strategy"] in ("auto", "group_by_length"),
             "--group_by_length false means --train_sampling_strategy random"),
)


def _shown(name: str, value) -> str:
    return f"--{name} {str(value).lower() if isinstance(value, bool) else value}"


def settle_conflicts(values: dict, explicit: set[str], from_config: set[str], defaults: dict,
                     config_path: str | None = None, conflicts=CONFLICTS) -> None:
    """Resolve ``conflicts`` in the merged ``values`` in place: an explicit flag beats the config file's value.

    Raises ``UsageError`` naming both settings when neither side gives way (both on the command line, both from the
    config file), or when the value left after giving way still clashes.
    """
    given = set(explicit) | set(from_config)
    for conflict in conflicts:
        a, b = conflict.setting, conflict.depends_on
        if a not in values or b not in values or not conflict.conflicts(values, given):
            continue
        if (a in explicit) != (b in explicit) and (b if a in explicit else a) in from_config:
            yielding, winner = (b, a) if a in explicit else (a, b)
            if _rank() == 0:
                print(f"mmft: {_shown(yielding, values[yielding])} from {config_path} gives way to "
                      f"{_shown(winner, values[winner])} on the command line ({conflict.reason}).", file=sys.stderr)
            values[yielding] = defaults.get(yielding)
            given.discard(yielding)
            if not conflict.conflicts(values, given):
                continue
        if a in explicit and b in explicit:
            where = "both on the command line"
        elif a in from_config and b in from_config and not {a, b} & explicit:
            where = f"both in {config_path}"
        else:
            where = "together"
        raise UsageError(f"{_shown(a, values[a])} and {_shown(b, values[b])} conflict ({where}): {conflict.reason}. "
                         "Drop or change one of them.")
