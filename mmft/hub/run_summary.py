"""What the run used and measured, as the model card may publish it: ``summarize_run`` gathers a ``RunSummary``
from the trainer and the arguments; ``Source`` names a model or dataset without local paths."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

BEFORE_TRAINING_PREFIX = "eval_before_train"
# Reported by every evaluation but not a property of the model: left out of the card's metrics.
_NOT_METRICS = re.compile(r"(^|_)(runtime|samples_per_second|steps_per_second|model_preparation_time)$|^(epoch|step)$")
# What ``load_records`` names a dataset built in Python (a list of records, a ``datasets`` object).
_IN_MEMORY_SOURCES = ("records", "Dataset", "DatasetDict", "IterableDataset", "IterableDatasetDict")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# ---- where things came from, as they may be published -------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A model or dataset as the card may name it.

    Args:
        kind: ``"hub"`` (a Hub id), ``"builtin"`` (``mmft:`` models, the ``shapes`` demo data), ``"local"`` (a file
            or folder on this machine: only its own name is kept) or ``"memory"`` (records built in Python).
        name: the Hub id, built-in name, or the local path's last component.
    """

    kind: str
    name: str

    @property
    def hub_id(self) -> str | None:
        return self.name if self.kind == "hub" else None


def model_source(name: str | None) -> Source:
    """Classify a ``--model_name_or_path`` value (or a loaded model's ``name_or_path``)."""
    if not name:
        return Source("memory", "a model built in Python")
    name = str(name)
    if name.startswith("mmft:"):
        return Source("builtin", name)
    if os.path.exists(name) or not _HUB_ID.match(name):
        return Source("local", Path(name).name or name)
    return Source("hub", name)


def dataset_source(name) -> Source:
    """Classify a ``--dataset_name`` value (or a record dataset's ``source``)."""
    from ..data.sources import BUILTIN_DATASETS, LOCAL_SUFFIXES

    if name is None or not isinstance(name, (str, os.PathLike)) or str(name) in _IN_MEMORY_SOURCES:
        return Source("memory", "records passed from Python")
    name = str(name)
    if name in BUILTIN_DATASETS:
        return Source("builtin", name)
    if Path(name).suffix in LOCAL_SUFFIXES or os.path.exists(name) or not _HUB_ID.match(name):
        return Source("local", Path(name).name or name)
    return Source("hub", name)


def _describe(source: Source, what: str) -> str:
    if source.kind == "hub":
        return f"[{source.name}](https://huggingface.co/{'datasets/' if what == 'dataset' else ''}{source.name})"
    if source.kind == "builtin":
        if what == "dataset":
            return f"`{source.name}` (mmft's built-in synthetic VQA set; `mmft shapes` writes it)"
        return f"`{source.name}` (a tiny random-weight model built locally by mmft, not on the Hub)"
    if source.kind == "local":
        return f"`{source.name}` (a local {what}, not on the Hub)"
    return source.name


# ---- what the run used and measured ---------------------------------------------------------------------------------
def evaluation_metrics(trainer, metrics: dict | None = None, prefix: str = "eval") -> dict[str, float]:
    """The measured metrics under ``prefix`` (``eval_vqa_accuracy`` -> ``vqa_accuracy``), timings left out.

    From ``metrics`` when it holds any (the recipe passes what ``evaluate`` returned), else from the last
    evaluation in the trainer's log history.
    """
    start = prefix + "_"

    def select(values):
        out = {}
        for key, value in values.items():
            if not key.startswith(start) or (prefix == "eval" and key.startswith(BEFORE_TRAINING_PREFIX + "_")):
                continue
            name = key[len(start):]
            if _NOT_METRICS.search(name) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            out[name] = float(value)
        return out

    chosen = select(metrics or {})
    if chosen or prefix != "eval":
        return chosen
    for entry in reversed(trainer.state.log_history):
        chosen = select(entry)
        if chosen:
            return chosen
    return {}


def _trainable_parameters(model) -> tuple[int, int]:
    # Under DeepSpeed ZeRO-3 a parameter holds a shard (numel 0 locally); ds_numel is its full size.
    total = trainable = 0
    for parameter in model.parameters():
        count = getattr(parameter, "ds_numel", parameter.numel())
        total += count
        trainable += count if parameter.requires_grad else 0
    return trainable, total


def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _weights_dtype(model) -> str:
    parameter = next(_base_model(model).parameters(), None)
    return str(parameter.dtype).removeprefix("torch.") if parameter is not None else "unknown"


@dataclass
class RunSummary:
    """Everything the card states, gathered from the trainer and the arguments the run was given."""

    model_name: str
    repo_id: str
    base: Source
    train_data: Source
    eval_data: Source | None
    eval_split: str | None
    is_adapter: bool
    method: str  # "lora", "dora" or "full"
    family: str
    hyperparameters: dict[str, object] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_before: dict[str, float] = field(default_factory=dict)
    generation: str = ""
    # A continued run (``mmft.train.continual``): the parent adapter ({"id", "revision", ...} or {"name"} for a local
    # one)
    # and the retention results (old tasks before / after / change, and the new task's), as retention_results.json.
    parent: dict | None = None
    retention: dict | None = None
    bad_records: dict | None = None  # VLMTrainer.bad_record_summary: records left out (--on_bad_record drop)


def summarize_run(trainer, model_args=None, data_args=None, metrics: dict | None = None,
                  model_name: str | None = None) -> RunSummary:
    """What the card says about this run. ``model_args`` / ``data_args`` give the names as the user typed them
    (a Hub id rather than the folder it was cached in, ``language`` rather than the resolved LoRA regex);
    without them everything is read from the trainer and its model."""
    from ..families import family_for

    args, model = trainer.args, trainer.model
    base_model = _base_model(model)
    peft_config = getattr(model, "peft_config", {}).get("default") if hasattr(model, "peft_config") else None
    is_adapter = peft_config is not None

    given_model = getattr(model_args, "model_name_or_path", None)
    if given_model is None:
        given_model = (peft_config.base_model_name_or_path if is_adapter
                       else getattr(base_model.config, "_name_or_path", None))
    base = model_source(given_model)

    train_name = getattr(data_args, "dataset_name", None)
    train_data = dataset_source(train_name if train_name is not None
                                else getattr(trainer.train_dataset, "source", None))
    eval_data, eval_split = None, None
    if trainer.eval_dataset is not None or (data_args is not None and (data_args.eval_dataset_name
                                                                      or data_args.eval_split)):
        eval_name = (getattr(data_args, "eval_dataset_name", None) or train_name) if data_args is not None else None
        eval_data = dataset_source(eval_name if eval_name is not None
                                   else getattr(trainer.eval_dataset, "source", None))
        eval_split = getattr(data_args, "eval_split", None)

    method = "full"
    if is_adapter:
        method = "dora" if getattr(peft_config, "use_dora", False) else "lora"

    repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id or Path(args.output_dir).name
    hyperparameters = _hyperparameters(trainer, model_args, data_args, peft_config)
    before = {}
    if metrics:
        before = evaluation_metrics(trainer, metrics, prefix=BEFORE_TRAINING_PREFIX)
    generation = ""
    if getattr(args, "eval_generation", False):
        beams = getattr(args, "num_beams", 1)
        decoding = "greedy decoding" if beams == 1 else f"beam search ({beams} beams)"
        generation = (f"Answers were generated with {decoding}, at most "
                      f"{getattr(args, 'generation_max_new_tokens', '?')} new tokens, and scored against the "
                      "references.")
    starting_adapter = getattr(trainer, "starting_adapter", None)
    retention = getattr(trainer, "retention", None)
    return RunSummary(
        parent=starting_adapter.lineage() if starting_adapter is not None else None,
        retention=retention.results() if retention is not None and retention.after else None,
        model_name=model_name or repo_id.split("/")[-1], repo_id=repo_id, base=base, train_data=train_data,
        eval_data=eval_data, eval_split=eval_split, is_adapter=is_adapter, method=method,
        family=family_for(base_model).name, hyperparameters=hyperparameters,
        metrics=evaluation_metrics(trainer, metrics), metrics_before=before, generation=generation,
        bad_records=getattr(trainer, "bad_record_summary", None),
    )


def _hyperparameters(trainer, model_args, data_args, peft_config) -> dict[str, object]:
    """The settings that shaped the weights, by name: chosen one by one, so no secret or path can slip in."""
    args, state = trainer.args, trainer.state
    rows: dict[str, object] = {}
    if peft_config is not None:
        rows["method"] = "DoRA" if getattr(peft_config, "use_dora", False) else "LoRA"
        rows["LoRA rank (r)"] = peft_config.r
        rows["LoRA alpha"] = peft_config.lora_alpha
        rows["LoRA dropout"] = peft_config.lora_dropout
        target = getattr(model_args, "lora_target", None)
        rows["LoRA target"] = target if target is not None else "see `target_modules` in adapter_config.json"
        if peft_config.modules_to_save:
            rows["trained in full beside the adapter"] = ", ".join(peft_config.modules_to_save)
    else:
        rows["method"] = "full fine-tuning"
        if model_args is not None:
            rows["vision tower"] = "frozen" if model_args.freeze_vision_tower else "trained"
            rows["projector"] = "frozen" if model_args.freeze_projector else "trained"
    trainable, total = _trainable_parameters(trainer.model)
    rows["trainable parameters"] = f"{trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)"
    rows["learning rate"] = args.learning_rate
    rows["scheduler"] = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    if args.warmup_steps:
        rows["warmup"] = args.warmup_steps  # steps, or a share of training when below 1
    rows["weight decay"] = args.weight_decay
    rows["optimizer"] = getattr(args.optim, "value", args.optim)
    rows["max gradient norm"] = args.max_grad_norm
    if args.max_steps and args.max_steps > 0:
        rows["max steps"] = args.max_steps
    else:
        rows["epochs"] = args.num_train_epochs
    rows["optimizer steps run"] = state.global_step
    rows["batch size per device"] = args.per_device_train_batch_size
    rows["gradient accumulation steps"] = args.gradient_accumulation_steps
    rows["processes"] = args.world_size
    rows["effective batch size"] = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                                    * args.world_size)
    precision = "bf16 mixed precision" if args.bf16 else "fp16 mixed precision" if args.fp16 else "no mixed precision"
    rows["precision"] = f"{precision}, weights in {_weights_dtype(trainer.model)}"
    if args.gradient_checkpointing:
        rows["gradient checkpointing"] = True
    if data_args is not None:
        rows["max length (tokens)"] = data_args.max_length
        rows["over-length samples"] = data_args.overlength_policy
        on_bad = getattr(data_args, "on_bad_record", None)
        if on_bad is not None:
            rows["bad records"] = (f"drop (stop above {100 * data_args.max_bad_fraction:g}% bad)"
                                   if on_bad == "drop" else on_bad)
        if data_args.max_pixels:
            rows["max pixels per image"] = data_args.max_pixels
    rows["seed"] = args.seed
    return rows
