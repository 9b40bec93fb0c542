"""The story every recipe tells, once: load data, build the trainer, evaluate, train, save, evaluate, share.

``recipes/vqa.py``, ``recipes/caption.py`` and ``recipes/instruct.py`` differ only in their embedded demo config and
in how they evaluate (answers scored by a metric, captions scored by CIDEr/BLEU, conversations by loss, perplexity
and a few generated samples); the steps in between are the same and live here, so a fix reaches every recipe::

    from mmft.recipe import parse_recipe_args, run_recipe

    model_args, data_args, training_args = parse_recipe_args(default_config="recipes/configs/vqa/x.yaml")
    run_recipe(model_args, data_args, training_args)

Files written to ``--output_dir`` (main process only): the model or adapter, the processor, ``train_results.json``,
``eval_results.json`` (and ``eval_before_train_results.json`` with ``--eval_before_train``), ``all_results.json``,
``eval_predictions.jsonl`` and ``eval_report.html`` when answers are generated, ``retention_results.json`` (and
``retention_<set>_*`` predictions and reports) with ``--retention_eval_dataset_name``,
``eval_samples_predictions.jsonl`` and ``eval_samples_report.html`` for the instruct recipe's samples,
``trainer_state.json`` and the model card ``README.md``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from torch.utils.data import Subset
from transformers import set_seed

from .config.data_args import DataArguments
from .config.model_args import ModelArguments
from .config.parsing import parse_args
from .config.training_args import VLMTrainingArguments, metric_names
from .train.checkpoints import resolve_resume_checkpoint
from .train.continual import push_commit_message, push_deferred
from .train.retention import Retention
from .workflow import build_trainer, load_datasets, setup_logging

logger = logging.getLogger("mmft")

RECIPE_ARGUMENTS = (ModelArguments, DataArguments, VLMTrainingArguments)
SAMPLES_PREFIX = "eval_samples"  # the instruct recipe's generated samples: eval_samples_predictions.jsonl


@dataclass
class InstructArguments:
    """What the instruct recipe adds: conversations are judged by loss and perplexity, plus samples to read."""

    num_sample_generations: int = field(
        default=16,
        metadata={"help": "After the final evaluation, generate the last assistant turn of the first N evaluation "
                          "records and write them, with the references, to eval_samples_predictions.jsonl (scored "
                          "with --metrics, reported as eval_samples_<metric>). 0 turns it off."},
    )


def parse_recipe_args(argv: list[str] | None = None, default_config: str | Path | None = None, extra=()):
    """``(model_args, data_args, training_args, *extra)`` from ``--config`` and flags (see ``mmft.config``)."""
    return parse_args(argv, dataclass_types=(*RECIPE_ARGUMENTS, *extra), default_config=default_config)


def add_perplexity(metrics: dict, prefix: str = "eval") -> dict:
    """Add ``<prefix>_perplexity = exp(<prefix>_loss)`` (the mean per-token loss on assistant tokens) in place."""
    loss = metrics.get(f"{prefix}_loss")
    if loss is not None:
        metrics[f"{prefix}_perplexity"] = math.exp(loss) if loss < 700 else float("inf")  # exp overflows past ~709
    return metrics


def _evaluate(trainer, prefix: str, perplexity: bool) -> dict:
    metrics = trainer.evaluate(metric_key_prefix=prefix)
    if perplexity:
        add_perplexity(metrics, prefix)
    trainer.log_metrics(prefix, metrics)
    trainer.save_metrics(prefix, metrics)
    return metrics


def _print_summary(training_args, before: dict, after: dict, n_records: int, perplexity: bool) -> None:
    names = metric_names(training_args) if training_args.eval_generation else []
    if perplexity:
        names.append("perplexity")
    for name in names:
        value = after.get(f"eval_{name}")
        if value is None:
            continue
        start = before.get(f"eval_before_train_{name}")
        start_text = f"{start:.3f} -> " if start is not None else ""
        print(f"{name}: {start_text}{value:.3f}  ({n_records} held-out records)")


def generate_samples(trainer, eval_dataset, n: int) -> dict:
    """Generate answers for the first ``n`` evaluation records with the trainer's generation eval (the same batched,
    left-padded, gathered path), write them to ``eval_samples_predictions.jsonl`` and score them with --metrics."""
    n = min(n, len(eval_dataset))
    if n <= 0 or trainer.generation_collator is None:
        return {}
    metrics = trainer.generate_and_score(Subset(eval_dataset, range(n)), metric_key_prefix=SAMPLES_PREFIX)
    metrics[f"{SAMPLES_PREFIX}_count"] = n
    trainer._write_report(metrics, SAMPLES_PREFIX)  # eval_samples_report.html: the samples with their images
    trainer.log_metrics(SAMPLES_PREFIX, metrics)
    trainer.save_metrics(SAMPLES_PREFIX, metrics)
    return metrics


def run_recipe(model_args: ModelArguments, data_args: DataArguments, training_args: VLMTrainingArguments, *,
               perplexity: bool = False, sample_generations: int = 0, train_source=None, eval_source=None):
    """Train and evaluate as the recipes do; returns the ``VLMTrainer`` (its output folder holds the results, and
    ``trainer.run_metrics`` every metric of the run: before training, training, after training).

    Args:
        perplexity: also report ``eval_perplexity`` (exp of ``eval_loss``), before and after training.
        sample_generations: after the final evaluation, generate this many evaluation answers to read (see
            :func:`generate_samples`).
        train_source, eval_source: datasets given as objects (``datasets`` objects, lists of records), instead of
            ``--dataset_name`` / ``--eval_dataset_name`` (``mmft.finetune`` from a notebook).
    """
    setup_logging(training_args)
    set_seed(training_args.seed)

    train_dataset, eval_dataset = load_datasets(data_args, train_source, eval_source, training_args)
    logger.info("Training records: %s; evaluation records: %s",
                len(train_dataset) if hasattr(train_dataset, "__len__") else "streamed",
                len(eval_dataset) if eval_dataset is not None else "none")
    retention = Retention.from_args(data_args, training_args)  # --retention_eval_dataset_name: the old tasks
    trainer = build_trainer(model_args, data_args, training_args, train_dataset, eval_dataset)

    before = {}
    # Measuring forgetting needs the new task's starting point too: both sides of the comparison show their change.
    if (training_args.eval_before_train or retention is not None) and eval_dataset is not None:
        before = _evaluate(trainer, "eval_before_train", perplexity)
    if retention is not None:
        before.update(retention.start(trainer, data_args, before))  # the old tasks, scored on the starting model

    # --resume_from_checkpoint true: the newest *complete* checkpoint (a run killed mid-save resumes from the last).
    checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir,
                                           is_main_process=trainer.is_world_process_zero())
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.describe_run(model_args, data_args, metrics=before)  # the names as given, for the model card
    # The adapter (LoRA) or the full model, plus the processor (and a push with --push_to_hub, except in a run gated
    # by --max_retention_drop: that one pushes only after its check passed).
    with push_deferred(trainer, defer=retention is not None and retention.max_drop is not None):
        trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    trainer.run_metrics = {**before, **train_result.metrics}

    if retention is not None:  # before the final evaluation, whose eval_report.html then shows old and new tasks
        trainer.run_metrics.update(retention.evaluate(trainer, before=False))
    metrics = {}
    if eval_dataset is not None:
        metrics = _evaluate(trainer, "eval", perplexity)
        if sample_generations:
            metrics.update(generate_samples(trainer, eval_dataset, sample_generations))
        if trainer.is_world_process_zero():
            _print_summary(training_args, before, metrics, len(eval_dataset), perplexity)
        trainer.describe_run(metrics=metrics)
        trainer.run_metrics.update(metrics)
    if retention is not None:  # retention_results.json, and the old tasks' scores in eval_results.json
        trainer.run_metrics.update(retention.save(trainer, metrics))
        if trainer.is_world_process_zero():
            print("\n".join(retention.summary_lines()))
    # README.md: base model, data, settings, the metrics above and how to load the model. With --push_to_hub the
    # main process uploads the output folder (model, processor and chat template, results, this card) to
    # --hub_model_id; the token comes from HF_TOKEN or `hf auth login` and is never written anywhere.
    trainer.create_model_card()
    if retention is not None:
        retention.check()  # --max_retention_drop: RetentionDropError (a usage error: non-zero exit) before the push
    if training_args.push_to_hub:
        message = push_commit_message(trainer, data_args)  # a continued run: "Continue training from <parent>..."
        trainer.push_to_hub(**({"commit_message": message} if message else {}))
    return trainer


def finetune(model: str | None = None, train_dataset=None, eval_dataset=None, **kwargs) -> dict:
    """Fine-tune from Python: datasets may be ``datasets`` objects, lists of records, file paths or Hub ids.

    ``model`` defaults to ``mmft:tiny-llava``, or, with ``adapter_name_or_path=...`` (continue an adapter), to the
    base model that adapter records.

    Keyword arguments are any field of ``ModelArguments``, ``DataArguments`` or ``VLMTrainingArguments``
    (``output_dir``, ``num_train_epochs``, ``learning_rate``, ``use_peft``, ``max_length``, ...). Runs the recipes'
    story (:func:`run_recipe`) and returns the run's metrics (before training, training, after training) plus
    ``"trainer"``; the trained model, the results files and the model card (``README.md``) are saved to
    ``output_dir``, and pushed to the Hub with ``push_to_hub=True`` (``hub_model_id=...``).
    """
    if model is None and not kwargs.get("adapter_name_or_path"):
        model = "mmft:tiny-llava"
    groups = {}
    for cls in (ModelArguments, DataArguments, VLMTrainingArguments):
        names = {f.name for f in fields(cls) if f.init}
        groups[cls] = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    if kwargs:
        raise TypeError(f"finetune() got unknown argument(s): {', '.join(sorted(kwargs))}")
    trainer = run_recipe(ModelArguments(model_name_or_path=model, **groups[ModelArguments]),
                         DataArguments(**groups[DataArguments]), VLMTrainingArguments(**groups[VLMTrainingArguments]),
                         train_source=train_dataset, eval_source=eval_dataset)
    return {**trainer.run_metrics, "trainer": trainer}
