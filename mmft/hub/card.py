"""Sharing a fine-tuned model: its model card (``README.md``), and keeping the Hub token out of everything written.

The card is built from what the run actually used and measured, never from a dump of all arguments:

- metadata (YAML): ``base_model`` (a Hub id only; built-in ``mmft:`` and local models are named in the text),
  ``library_name`` (``peft`` for an adapter, ``transformers`` for a full model), ``pipeline_tag``,
  ``datasets`` (Hub dataset ids only), ``tags`` (mmft, the method, the model family) and ``model-index``
  with the final evaluation metrics;
- text: what was trained (method, LoRA rank/alpha/dropout/target, frozen parts, trainable parameters), the
  hyperparameters, the metrics (before and after training when both were measured), and how to load and
  prompt the model with PEFT and with transformers' own adapter loading.

Local paths never appear in the card (only a file or folder's own name): the card is meant to be published.

``--push_to_hub`` runs through ``transformers.Trainer.push_to_hub``; ``VLMTrainer.create_model_card`` makes it
write this card instead of transformers' text-model one. The token comes from ``HF_TOKEN`` / ``hf auth login``
(or ``--hub_token``); ``protect_hub_token`` makes a ``--hub_token`` value pickle as a placeholder, so the
``training_args.bin`` that transformers writes next to every checkpoint and uploads never carries it.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

PIPELINE_TAG = "image-text-to-text"
TASK_TYPE = "visual-question-answering"
TASK_NAME = "Visual Question Answering"
CARD_NAME = "README.md"
TOKEN_PLACEHOLDER = "<HUB_TOKEN>"
BEFORE_TRAINING_PREFIX = "eval_before_train"
# Reported by every evaluation but not a property of the model: left out of the card's metrics.
_NOT_METRICS = re.compile(r"(^|_)(runtime|samples_per_second|steps_per_second|model_preparation_time)$|^(epoch|step)$")
# What ``load_records`` names a dataset built in Python (a list of records, a ``datasets`` object).
_IN_MEMORY_SOURCES = ("records", "Dataset", "DatasetDict", "IterableDataset", "IterableDatasetDict")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_METRIC_NAMES = {"vqa_accuracy": "VQA accuracy", "exact_match": "Exact match", "anls": "ANLS", "loss": "Loss"}


# ---- the token ------------------------------------------------------------------------------------------------
class SecretToken(str):
    """A token that works as the string it is, but never leaves the process by pickling, copying or ``repr``.

    ``Trainer`` saves ``torch.save(self.args)`` as ``training_args.bin`` beside the model and in every checkpoint,
    and uploads it with ``--push_to_hub``: a plain ``--hub_token`` would be published with it. Pickled, this
    class becomes the string ``"<HUB_TOKEN>"``.
    """

    def __reduce__(self):
        return (str, (TOKEN_PLACEHOLDER,))

    def __repr__(self):
        return repr(TOKEN_PLACEHOLDER)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def protect_hub_token(args) -> None:
    """Wrap ``args.hub_token`` (when set) so that saving the arguments never writes it."""
    token = getattr(args, "hub_token", None)
    if token and not isinstance(token, SecretToken):
        args.hub_token = SecretToken(token)


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
        model_name=model_name or repo_id.split("/")[-1],
        repo_id=repo_id,
        base=base,
        train_data=train_data,
        eval_data=eval_data,
        eval_split=eval_split,
        is_adapter=is_adapter,
        method=method,
        family=family_for(base_model).name,
        hyperparameters=hyperparameters,
        metrics=evaluation_metrics(trainer, metrics),
        metrics_before=before,
        generation=generation,
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


# ---- the card -------------------------------------------------------------------------------------------------------
def _metric_name(key: str) -> str:
    return _METRIC_NAMES.get(key, key.replace("_", " "))


def card_data(summary: RunSummary, tags=(), license: str | None = None, language=None,
              datasets=None) -> ModelCardData:
    """The card's YAML metadata."""
    method_tag = {"lora": "lora", "dora": "dora", "full": "full-fine-tuning"}[summary.method]
    all_tags = ["mmft", method_tag, "vision-language", summary.family, TASK_TYPE]
    if summary.base.kind == "builtin":
        all_tags.append("mmft-builtin-base")
    for tag in [tags] if isinstance(tags, str) else (tags or ()):
        if tag not in all_tags:
            all_tags.append(tag)
    if datasets is None:
        datasets = [s.hub_id for s in (summary.train_data, summary.eval_data) if s is not None and s.hub_id]
    elif isinstance(datasets, str):
        datasets = [datasets]
    datasets = list(dict.fromkeys(datasets))
    eval_results = None
    if summary.metrics and summary.eval_data is not None:
        dataset_name = summary.eval_data.name
        eval_results = [
            EvalResult(task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=dataset_name, dataset_name=dataset_name,
                       dataset_split=summary.eval_split, metric_type=key, metric_name=_metric_name(key),
                       metric_value=round(value, 4))
            for key, value in summary.metrics.items()
        ]
    if summary.retention:  # the old tasks' scores after training, on their own datasets
        eval_results = list(eval_results or [])
        for task in summary.retention["old_tasks"]:
            for key, row in task["metrics"].items():
                if row["after"] is None or not math.isfinite(row["after"]):
                    continue
                eval_results.append(EvalResult(
                    task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=task["dataset"],
                    dataset_name=f"{task['dataset']} (retention)", dataset_split=task["split"], metric_type=key,
                    metric_name=_metric_name(key), metric_value=round(row["after"], 4)))
        eval_results = eval_results or None
    extra = {}
    if summary.parent:  # lineage, machine-readable: which adapter (and commit) this version continued from
        extra["parent_adapter"] = {k: v for k, v in summary.parent.items() if v is not None}
    return ModelCardData(
        **extra,
        base_model=summary.base.hub_id,
        library_name="peft" if summary.is_adapter else "transformers",
        pipeline_tag=PIPELINE_TAG,
        datasets=datasets or None,
        tags=all_tags,
        license=license,
        language=language,
        model_name=summary.model_name,
        eval_results=eval_results,
    )


def _base_loading_line(base: Source) -> str:
    if base.kind == "hub":
        return f'base_id = "{base.name}"'
    if base.kind == "builtin":
        return ("from mmft.testing import resolve_builtin_model\n\n"
                f'base_id = resolve_builtin_model("{base.name}")  # builds the tiny model locally (needs mmft)')
    return f'base_id = "path/to/{base.name}"  # the model this adapter was trained on'


# Prompting through the processor's chat template; the placeholder image is a name the reader replaces.
PROMPT_EXAMPLE = '''messages = [
    {"role": "user", "content": [
        {"type": "image", "path": "photo.png"},  # or "url": "https://...", or "image": a PIL image
        {"type": "text", "text": "What is in the picture?"},
    ]},
]
# The chat template saved with this model is the one used in training: prompts are built the same way.
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt").to(model.device)
output = model.generate(**inputs, max_new_tokens=32, do_sample=False)
print(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))'''


def usage(summary: RunSummary) -> str:
    """Markdown with working code: loading (PEFT and transformers' adapter loading, or the full model) and a
    prompt through the processor's chat template (the one used in training, saved with the model)."""
    repo = summary.repo_id
    prompt = PROMPT_EXAMPLE
    if not summary.is_adapter:
        return f'''```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo}", dtype="auto")
processor = AutoProcessor.from_pretrained("{repo}")

{prompt}
```'''
    base_line = _base_loading_line(summary.base)
    return f'''With PEFT:

```python
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor

{base_line}
model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_id, dtype="auto"), "{repo}")
processor = AutoProcessor.from_pretrained("{repo}")  # saved with the adapter, chat template included

{prompt}
```

Or with transformers' own adapter loading (PEFT installed):

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

{base_line}
model = AutoModelForImageTextToText.from_pretrained(base_id, dtype="auto")
model.load_adapter("{repo}")
processor = AutoProcessor.from_pretrained("{repo}")

{prompt}
```

`model.merge_and_unload()` (PEFT) folds the adapter into the base weights for deployment without PEFT.'''


def _versions() -> str:
    lines = []
    for package in ("mmft", "transformers", "peft", "torch", "accelerate", "datasets"):
        try:
            lines.append(f"- {package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(lines)


def _metrics_table(summary: RunSummary) -> str:
    if not summary.metrics:
        return "No evaluation was run."
    where = _describe(summary.eval_data, "dataset") if summary.eval_data is not None else "the evaluation set"
    if summary.eval_split:
        where += f", split `{summary.eval_split}`"
    before = summary.metrics_before
    header = "| metric | before training | after training |\n|---|---|---|" if before else \
        "| metric | value |\n|---|---|"
    rows = []
    for key, value in summary.metrics.items():
        if before:
            start = before.get(key)
            rows.append(f"| {_metric_name(key)} | {'' if start is None else f'{start:.4f}'} | {value:.4f} |")
        else:
            rows.append(f"| {_metric_name(key)} | {value:.4f} |")
    return f"Measured on {where}. {summary.generation}\n\n{header}\n" + "\n".join(rows)


def _parent_text(parent: dict) -> str:
    if parent.get("id"):
        revision = parent.get("revision") or "main"
        asked = parent.get("requested_revision")
        asked_text = f" (asked for as `{asked}`)" if asked and asked != revision else ""
        return (f"[{parent['id']}](https://huggingface.co/{parent['id']}/tree/{revision}) at revision "
                f"`{revision}`{asked_text}")
    return f"`{parent.get('name')}` (a local adapter, not on the Hub)"


def _change(value) -> str:
    return "" if value is None else f"{value:+.4f}"


def _lineage_section(summary: RunSummary) -> str:
    """Where this version came from and what it kept: the parent adapter, the new data, the old tasks' scores."""
    if not summary.parent and not summary.retention:
        return ""
    lines = ["## Lineage", ""]
    if summary.parent:
        lines.append(f"Continued from the adapter {_parent_text(summary.parent)}, starting from its weights (fresh "
                     f"optimizer and schedule), on new data: {_describe(summary.train_data, 'dataset')}.")
    retention = summary.retention
    if retention:
        limit = retention.get("max_retention_drop")
        limit_text = f" Allowed drop (`--max_retention_drop`): {limit}." if limit is not None else ""
        lines += ["", "Scores before this training (the starting model) and after, on the old tasks (what the new "
                  f"training may have made the model forget) and on the new one.{limit_text}", "",
                  "| task | dataset | metric | before | after | change |", "|---|---|---|---|---|---|"]
        rows = []
        new_task = retention.get("new_task")
        if new_task:
            rows += [("new", new_task["dataset"], key, row) for key, row in new_task["metrics"].items()]
        for task in retention["old_tasks"]:
            dataset = f"{task['dataset']} (`{task['split']}`)"
            rows += [("old", dataset, key, row) for key, row in task["metrics"].items()]
        for kind, dataset, key, row in rows:
            before = "" if row["before"] is None else f"{row['before']:.4f}"
            lines.append(f"| {kind} | {dataset} | {_metric_name(key)} | {before} | {row['after']:.4f} | "
                         f"{_change(row['change'])} |")
    return "\n".join(lines) + "\n\n"
CARD_LISTED_IDS = 20  # record ids named per reason in the card (every record is counted)


def _bad_records_section(summary: RunSummary) -> str:
    """The records training left out, by reason, with their ids (never the messages: they hold local paths)."""
    bad = summary.bad_records
    if not bad or not bad.get("counts"):
        return ""
    from ..data.badrecords import REASON_TEXT

    total = sum(bad["counts"].values())
    scanned = f" (of {bad['scanned']} records)" if bad.get("scanned") else ""
    lines = [f"{total} bad training record(s) were left out (`--on_bad_record drop`): {bad['at_startup']} by the "
             f"start-up scan{scanned}, {total - bad['at_startup']} by the data loader (of {bad['seen']} samples "
             "seen).",
             "", "| reason | records | ids |", "|---|---|---|"]
    for reason, count in bad["counts"].items():
        ids = bad["ids"].get(reason, [])
        shown = ", ".join(f"`{record_id}`" for record_id in ids[:CARD_LISTED_IDS])
        more = f" and {count - len(ids[:CARD_LISTED_IDS])} more" if count > len(ids[:CARD_LISTED_IDS]) else ""
        lines.append(f"| {REASON_TEXT.get(reason, reason)} | {count} | {shown}{more} |")
    if bad.get("eval_at_startup"):
        lines += ["", f"{bad['eval_at_startup']} bad evaluation record(s) were left out at start-up."]
    return "\n### Records left out\n\n" + "\n".join(lines) + "\n"


def card_text(summary: RunSummary) -> str:
    """The card's Markdown body."""
    what = "A LoRA adapter" if summary.method == "lora" else "A DoRA adapter" if summary.method == "dora" else \
        "A fully fine-tuned model"
    data = _describe(summary.train_data, "dataset")
    hyperparameters = "\n".join(f"| {name} | {value} |" for name, value in summary.hyperparameters.items())
    return f"""
# {summary.model_name}

{what} for image-text-to-text (visual question answering), fine-tuned from {_describe(summary.base, "model")}
({summary.family} family) on {data} with mmft.

## Evaluation

{_metrics_table(summary)}

{_lineage_section(summary)}## Usage

{usage(summary)}

## Training

| setting | value |
|---|---|
{hyperparameters}
{_bad_records_section(summary)}
### Framework versions

{_versions()}
"""


def model_card(trainer, model_args=None, data_args=None, metrics: dict | None = None, *, model_name=None,
               tags=(), license=None, language=None, finetuned_from=None, datasets=None) -> ModelCard:
    """The model card of ``trainer``'s model (see the module docstring for what it holds).

    Args:
        model_args, data_args: the run's ``ModelArguments`` / ``DataArguments`` (names as given by the user).
        metrics: what ``evaluate`` returned (``eval_*``, and ``eval_before_train_*`` when measured); default: the
            last evaluation in the log history.
        model_name, tags, license, language: as in ``Trainer.create_model_card``.
        finetuned_from: the base model's Hub id, overriding what the run says (e.g. a local copy of a Hub model).
        datasets: Hub dataset id(s) for the metadata, overriding those found.
    """
    summary = summarize_run(trainer, model_args, data_args, metrics, model_name=model_name)
    if finetuned_from:
        summary.base = model_source(finetuned_from)
    data = card_data(summary, tags=tags, license=license, language=language, datasets=datasets)
    # ModelCard parses the YAML back and checks model-index: a malformed card fails here, not on the Hub.
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{card_text(summary)}")


def write_model_card(output_dir: str | os.PathLike, trainer, model_args=None, data_args=None,
                     metrics: dict | None = None, **kwargs) -> Path:
    """Write ``README.md`` into ``output_dir`` (keyword arguments as for ``model_card``); returns its path."""
    card = model_card(trainer, model_args, data_args, metrics, **kwargs)
    path = Path(output_dir) / CARD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path


def save_generation_config(trainer, output_dir: str | os.PathLike) -> None:
    """Save the base model's ``generation_config.json`` beside an adapter (a full model saves its own), so the
    repository carries the stop tokens and defaults the model generates with."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not hasattr(model, "peft_config"):
        return
    config = getattr(_base_model(model), "generation_config", None)
    if config is not None and not (Path(output_dir) / "generation_config.json").exists():
        config.save_pretrained(output_dir)
