"""Sharing a fine-tuned model: its model card (``README.md``), written into the output folder and pushed with it.

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
write this card instead of transformers' text-model one (``mmft.hub.hub_token`` keeps the token out of it).

This module writes the card and its metadata; ``mmft.hub.run_summary`` gathers what it states and
``mmft.hub.card_text`` renders the text.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .card_text import _metric_name, card_text
from .run_summary import RunSummary, _base_model, model_source, summarize_run

PIPELINE_TAG = "image-text-to-text"
TASK_TYPE = "visual-question-answering"
TASK_NAME = "Visual Question Answering"
CARD_NAME = "README.md"


# ---- the card -------------------------------------------------------------------------------------------------------
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
