"""``VLMTrainingArguments``: ``transformers.TrainingArguments`` plus evaluation by generation, length grouping and
data-loading defaults chosen from the machine; ``metric_names`` reads its resolved ``--metrics``."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..errors import UsageError
from ..metrics import DEFAULT_METRICS
from .environment import default_num_workers, trains_on_accelerator, use_cpu_if_launched_without_accelerator


# Every field below has the same shape, field(default=..., metadata={"help": ...}): one command-line flag, its
# default and its --help text. The repetition is deliberate (HfArgumentParser reads exactly this), not code to share.
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
        use_cpu_if_launched_without_accelerator(self)
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
        self._accept_gradient_checkpointing_names()
        super().__post_init__()
        self._default_non_reentrant_checkpointing()

    def _default_data_loading(self):
        """Data-loading settings the user left unset, chosen to keep an accelerator fed.

        Images are decoded and resized once per sample, inside the loader's workers (the collator runs there), so on
        a GPU the workers hide that work behind the training step: min(4, cores per process) of them, kept alive
        across epochs, collating into pinned memory. On a CPU-only run the workers would take cores from the
        training threads, so loading stays in the main process (see benchmarks/RESULTS.md for the measurement).
        """
        on_accelerator = trains_on_accelerator(self.use_cpu)
        derived_workers = self.dataloader_num_workers is None
        if derived_workers:
            self.dataloader_num_workers = default_num_workers(on_accelerator)
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

    def _accept_gradient_checkpointing_names(self):
        """``--gradient_checkpointing`` (the name the tutorials and our recipe YAMLs use) without a FutureWarning.

        transformers 5.25 renamed it ``activation_checkpointing`` and warns on every run that sets the old name; older
        5.x releases have only the old name, so the YAMLs keep it. Moving the value to the new field before
        ``Trainer``'s own ``__post_init__`` reads it is exactly what that alias does, minus the warning.
        """
        for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                         ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
            if hasattr(self, new) and getattr(self, new) is None and getattr(self, old) is not None:
                setattr(self, new, getattr(self, old))

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


def metric_names(training_args) -> list[str]:
    """``--metrics`` as resolved (``build_trainer`` fills it from the data card), or the default."""
    metrics = getattr(training_args, "metrics", None)
    return list(DEFAULT_METRICS) if metrics is None else list(metrics)
