"""The forgetting report of a continued run: old tasks scored before training and after (see
``mmft.train.continual``).

**The forgetting report** (``--retention_eval_dataset_name``, ``--max_retention_drop``): :class:`Retention` scores
each old-task set with its own metrics before training and after, and writes before / after / change into
``retention_results.json``, ``eval_results.json``, the model card and ``eval_report.html``; with a limit, a drop
beyond it raises :class:`RetentionDropError` once everything is written, before the final push.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

logger = logging.getLogger("mmft")

RETENTION_FILE = "retention_results.json"
RETENTION_PREFIX = "retention"
BEFORE_SUFFIX = "before_train"
# Metrics where a lower value is better: for these a rise is the drop.
LOWER_IS_BETTER = ("loss", "perplexity")


class RetentionDropError(UsageError):
    """An old task's score fell by more than ``--max_retention_drop``; results and the model card are written."""


# ---- retention: the old tasks, before and after -----------------------------------------------------------------
def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "data"


@dataclass
class RetentionSet:
    """One old-task evaluation set: its name as given, the key it is reported under, its split and metrics."""

    name: str
    key: str
    split: str
    dataset: object
    metrics: list[str]

    @property
    def prefix(self) -> str:
        return f"{RETENTION_PREFIX}_{self.key}"

    @property
    def before_prefix(self) -> str:
        return f"{self.prefix}_{BEFORE_SUFFIX}"


@contextlib.contextmanager
def _scored_with(args, metrics: list[str]):
    """Let one evaluation score with ``metrics`` (the dataset's own) instead of ``--metrics``."""
    original = args.metrics
    args.metrics = list(metrics)
    try:
        yield
    finally:
        args.metrics = original


def _scores(metrics: dict, prefix: str) -> dict[str, float]:
    from ..hub.run_summary import _NOT_METRICS

    start = prefix + "_"
    out = {}
    for key, value in metrics.items():
        if not key.startswith(start) or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        name = key[len(start):]
        # eval_samples_* (the instruct recipe's generated samples) share the "eval" start but are another set.
        if (name.startswith((BEFORE_SUFFIX + "_", "samples_")) or _NOT_METRICS.search(name)
                or name == "dropped_samples"):
            continue
        out[name] = float(value)
    return out


def _comparison(before: dict[str, float], after: dict[str, float]) -> dict[str, dict]:
    rows = {}
    for name, value in after.items():
        start = before.get(name)
        rows[name] = {"before": start, "after": value,
                      "change": None if start is None or not math.isfinite(start) else value - start}
    return rows


class Retention:
    """The old-task sets of a run and their scores, before training and after (see the module docstring)."""

    def __init__(self, sets: list[RetentionSet], max_drop: float | None = None):
        self.sets = sets
        self.max_drop = max_drop
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}
        self.new_task_before: dict[str, float] = {}
        self.new_task_after: dict[str, float] = {}
        self.new_task_name: str | None = None
        self.parent: dict | None = None
        self.report_prefix = "eval"  # the evaluation whose eval_report.html shows the comparison

    @classmethod
    def from_args(cls, data_args, training_args) -> Retention | None:
        """The ``--retention_eval_dataset_name`` sets, loaded (``None`` without any)."""
        from ..data.cards import default_metrics
        from ..data.sources import load_records

        names = data_args.retention_eval_dataset_name or []
        if isinstance(names, str):
            names = [names]
        max_drop = getattr(training_args, "max_retention_drop", None)
        if not names:
            if max_drop is not None:
                raise UsageError("--max_retention_drop limits how far the --retention_eval_dataset_name scores may "
                                 "fall, but no retention dataset was given.")
            return None
        if max_drop is not None and max_drop < 0:
            raise UsageError(f"--max_retention_drop must be 0 or more, got {max_drop}.")
        if (max_drop is not None and training_args.push_to_hub and training_args.hub_strategy != "end"
                and training_args.save_strategy != "no"):
            logger.warning("--max_retention_drop holds back the final push until the old tasks are scored, but "
                           "checkpoints saved during training are pushed as they are written (--hub_strategy %s): "
                           "pass --hub_strategy end to push only a checked model.", training_args.hub_strategy)
        split = data_args.retention_eval_split or data_args.eval_split or "test"
        sets, keys = [], set()
        for name in names:
            from ..hub.run_summary import dataset_source

            key = _slug(dataset_source(name).name)
            base_key, n = key, 2
            while key in keys:
                key, n = f"{base_key}_{n}", n + 1
            keys.add(key)
            dataset = load_records(name, split=split, max_samples=data_args.max_eval_samples)
            metrics, _ = default_metrics(name)
            sets.append(RetentionSet(name=name, key=key, split=split, dataset=dataset, metrics=metrics))
        return cls(sets, max_drop)

    def start(self, trainer, data_args, new_task_before: dict) -> dict[str, float]:
        """Score the old tasks on the starting model; remember the new task's starting scores and the parent.

        Sets ``trainer.retention`` (the HTML report and the model card read it)."""
        adapter = getattr(trainer, "starting_adapter", None)
        self.parent = adapter.lineage() if adapter is not None else None
        eval_name = getattr(data_args, "eval_dataset_name", None) or getattr(data_args, "dataset_name", None)
        self.new_task_name = public_dataset_name(eval_name if eval_name is not None
                                          else getattr(trainer.eval_dataset, "source", None))
        self.new_task_before = _scores(new_task_before, "eval_before_train")
        trainer.retention = self
        if trainer.eval_dataset is None:  # no new-task evaluation: the last old-task report shows the comparison
            self.report_prefix = self.sets[-1].prefix
        return self.evaluate(trainer, before=True)

    def evaluate(self, trainer, *, before: bool) -> dict[str, float]:
        """Score every old-task set (each with its own metrics); returns the metrics under their prefixes."""
        from ..families import check_records_fit_family, family_for

        out = {}
        for retention_set in self.sets:
            if before:
                check_records_fit_family(retention_set.dataset, family_for(trainer.accelerator.unwrap_model(
                    trainer.model)))
            prefix = retention_set.before_prefix if before else retention_set.prefix
            with _scored_with(trainer.args, retention_set.metrics):
                metrics = trainer.evaluate(retention_set.dataset, metric_key_prefix=prefix)
            trainer.log_metrics(prefix, metrics)
            out.update(metrics)
        (self.before if before else self.after).update(out)
        return out

    # ---- what the run reports
    def old_tasks(self) -> list[dict]:
        tasks = []
        for retention_set in self.sets:
            before = _scores(self.before, retention_set.before_prefix)
            after = _scores(self.after, retention_set.prefix)
            primary = next((m for m in retention_set.metrics if m in after), "loss")
            comparison = _comparison(before, after)
            drop = _drop(primary, comparison.get(primary, {}))
            tasks.append({"dataset": public_dataset_name(retention_set.name), "key": retention_set.key,
                          "split": retention_set.split, "records": len(retention_set.dataset),
                          "metrics": comparison, "primary_metric": primary, "drop": drop})
        return tasks

    def new_task(self) -> dict | None:
        if not self.new_task_after:
            return None
        return {"dataset": self.new_task_name,
                "metrics": _comparison(self.new_task_before, self.new_task_after)}

    def failures(self) -> list[dict]:
        if self.max_drop is None:
            return []
        return [task for task in self.old_tasks() if task["drop"] is not None and task["drop"] > self.max_drop]

    def results(self) -> dict:
        """``retention_results.json``: the parent, the limit, each old task's and the new task's scores."""
        return {"parent_adapter": self.parent, "max_retention_drop": self.max_drop,
                "passed": not self.failures(), "old_tasks": self.old_tasks(), "new_task": self.new_task()}

    def flat_metrics(self) -> dict[str, float]:
        """The ``eval_results.json`` keys: ``retention_<set>_before_train_<m>``, ``retention_<set>_<m>`` and
        ``retention_<set>_change_<m>`` for each old-task set."""
        out = {}
        for task in self.old_tasks():
            prefix = f"{RETENTION_PREFIX}_{task['key']}"
            for name, row in task["metrics"].items():
                if row["before"] is not None:
                    out[f"{prefix}_{BEFORE_SUFFIX}_{name}"] = row["before"]
                out[f"{prefix}_{name}"] = row["after"]
                if row["change"] is not None:
                    out[f"{prefix}_change_{name}"] = row["change"]
        return out

    def report_rows(self, metric_key_prefix: str, metrics: dict) -> list[dict] | None:
        """The old-and-new comparison for the HTML report of the evaluation ``report_prefix`` (else ``None``)."""
        if metric_key_prefix != self.report_prefix or not self.after:
            return None
        rows = []
        if metric_key_prefix == "eval":
            new = _comparison(self.new_task_before, _scores(metrics, "eval"))
            rows += [{"task": "new", "dataset": self.new_task_name or "evaluation set", "metric": name, **row}
                     for name, row in new.items()]
        for task in self.old_tasks():
            rows += [{"task": "old", "dataset": task["dataset"], "metric": name, **row}
                     for name, row in task["metrics"].items()]
        return rows

    def save(self, trainer, new_task_metrics: dict | None = None) -> dict:
        """Write ``retention_results.json`` and add the retention keys to ``eval_results.json``/``all_results``."""
        if new_task_metrics:
            self.new_task_after = _scores(new_task_metrics, "eval")
        flat = self.flat_metrics()
        trainer.save_metrics("eval", {**(new_task_metrics or {}), **flat})
        if trainer.is_world_process_zero():
            path = Path(trainer.args.output_dir) / RETENTION_FILE
            path.write_text(json.dumps(self.results(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return flat

    def summary_lines(self) -> list[str]:
        lines = []
        for task in self.old_tasks():
            for name, row in task["metrics"].items():
                start = "" if row["before"] is None else f"{row['before']:.3f} -> "
                change = "" if row["change"] is None else f" ({row['change']:+.3f})"
                lines.append(f"old task {task['dataset']} {name}: {start}{row['after']:.3f}{change}  "
                             f"({task['records']} records)")
        return lines

    def check(self) -> None:
        """Raise :class:`RetentionDropError` naming every old task that fell by more than ``--max_retention_drop``."""
        failures = self.failures()
        if not failures:
            return
        details = "; ".join(
            f"{task['dataset']} {task['primary_metric']} {task['metrics'][task['primary_metric']]['before']:.4f} -> "
            f"{task['metrics'][task['primary_metric']]['after']:.4f} (a drop of {task['drop']:.4f})"
            for task in failures)
        raise RetentionDropError(
            f"Old-task score fell by more than --max_retention_drop {self.max_drop}: {details}. The results, the "
            f"model card and {RETENTION_FILE} are written, and the final push was skipped. Rehearse the old task "
            "(--replay_dataset_name, a higher --replay_fraction), lower the learning rate or train fewer steps."
        )


def _drop(metric: str, row: dict) -> float | None:
    if not row or row.get("change") is None:
        return None
    lower_is_better = metric in LOWER_IS_BETTER or metric.endswith(LOWER_IS_BETTER)
    return row["change"] if lower_is_better else -row["change"]


def public_dataset_name(name) -> str:
    from ..hub.run_summary import dataset_source

    return dataset_source(name).name

