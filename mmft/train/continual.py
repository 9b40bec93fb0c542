"""Continual retraining: start from an adapter trained earlier, rehearse the old task, measure what was forgotten.

A team retrains every month on new data instead of starting over. Three pieces make that a run like any other:

- **The starting adapter** (``--adapter_name_or_path``, a local folder or a Hub id at ``--adapter_revision``):
  :func:`resolve_starting_adapter` reads its ``adapter_config.json`` (``mmft.hub.merge.read_adapter_config``: a
  safetensors LoRA/DoRA adapter, or a clear error), takes the base model and revision it records as the run's model
  (naming another one is :class:`BaseModelMismatchError`), and ``modeling.prepare_model_for_training`` loads the
  adapter's weights *trainable*, with its own shape, instead of attaching a fresh one. The optimizer and schedule
  start fresh (this is not ``--resume_from_checkpoint``). The parent's id and revision go into the model card.
- **Replay** (``--replay_dataset_name``, ``--replay_fraction``): :class:`ReplayMixture` appends old-task records to
  the new training set, ``fraction`` of each epoch, a fresh sample per epoch drawn only from (seed, epoch), so the
  old task is rehearsed and a resumed run draws what the uninterrupted one did.
- **The forgetting report** (``--retention_eval_dataset_name``, ``--max_retention_drop``): :class:`Retention` scores
  each old-task set with its own metrics before training and after, and writes before / after / change into
  ``retention_results.json``, ``eval_results.json``, the model card and ``eval_report.html``; with a limit, a drop
  beyond it raises :class:`RetentionDropError` once everything is written, before the final push.

A continued run pushed without ``--hub_model_id`` goes to the parent adapter's own repository: a new commit there,
whose card names the parent commit, so every version's lineage is on the Hub.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.augment import CollatorEpochCallback
from ..errors import UsageError

logger = logging.getLogger("mmft")

ADAPTER_CONFIG = "adapter_config.json"  # mmft.hub.merge's name too; merge is imported only when an adapter is read
RETENTION_FILE = "retention_results.json"
RETENTION_PREFIX = "retention"
BEFORE_SUFFIX = "before_train"
# What a continued run downloads of a Hub adapter: the adapter, its processor and chat template, its card. Never
# pickles (adapter_model.bin, training_args.bin) and never checkpoints.
ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors", "*.json", "*.jinja", "*.txt", "*.model", "README.md")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Metrics where a lower value is better: for these a rise is the drop.
LOWER_IS_BETTER = ("loss", "perplexity")


class BaseModelMismatchError(UsageError):
    """``--model_name_or_path`` (or ``--model_revision``) names another model than the starting adapter's base."""


class RetentionDropError(UsageError):
    """An old task's score fell by more than ``--max_retention_drop``; results and the model card are written."""


# ---- the starting adapter ---------------------------------------------------------------------------------------
@dataclass
class StartingAdapter:
    """The adapter a continued run starts from, as the model card names it.

    Args:
        name: ``--adapter_name_or_path`` as given.
        path: the local folder holding it (the Hub snapshot for a Hub id).
        revision: the commit it was read at (Hub adapters), else ``None``.
        requested_revision: ``--adapter_revision`` as given (a branch or tag may move; the commit does not).
        base: the base model its config records, and ``base_revision``, the revision recorded with it.
        config: its ``adapter_config.json``.
    """

    name: str
    path: Path
    revision: str | None
    requested_revision: str | None
    base: str
    base_revision: str | None
    config: dict = field(default_factory=dict, repr=False)

    @property
    def hub_id(self) -> str | None:
        """The Hub id when the adapter came from the Hub (a local folder is never published by path)."""
        return self.name if self.revision is not None else None

    @property
    def shape(self) -> str:
        method = "DoRA" if self.config.get("use_dora") else "LoRA"
        saved = self.config.get("modules_to_save") or []
        extra = f", modules saved in full: {', '.join(saved)}" if saved else ""
        return f"{method} r={self.config.get('r')}, alpha={self.config.get('lora_alpha')}{extra}"

    def lineage(self) -> dict:
        """What the card and ``retention_results.json`` record of the parent (no local path: only a folder name)."""
        if self.hub_id:
            return {"id": self.hub_id, "revision": self.revision, "requested_revision": self.requested_revision}
        return {"id": None, "name": Path(self.name).name or self.name, "revision": None}


def _download_adapter(repo_id: str, revision: str | None, token=None) -> Path:
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=list(ADAPTER_FILES),
                                    token=token))
    return folder


def _model_identity(name: str) -> str:
    """A comparable identity of a model name: the real path of local and built-in models, the Hub id otherwise."""
    if name.startswith("mmft:"):
        from ..testing import resolve_builtin_model

        try:
            name = resolve_builtin_model(name)
        except ValueError:
            return name
    path = Path(name).expanduser()
    return os.path.realpath(path) if path.exists() else name


def _recorded_base_usable(name: str) -> bool:
    from ..hub.merge import hub_id

    return name.startswith("mmft:") or Path(name).expanduser().exists() or hub_id(name) is not None


def resolve_starting_adapter(model_args, training_args=None) -> StartingAdapter | None:
    """Read ``--adapter_name_or_path`` (downloading a Hub adapter's files) and make the run's model its base.

    Sets ``model_args.model_name_or_path`` / ``model_revision`` to what the adapter records (an explicit one must
    name the same model: :class:`BaseModelMismatchError` otherwise), and, for a run pushed without
    ``--hub_model_id``, ``training_args.hub_model_id`` to the parent's Hub id (the new version is a new commit of
    the same repository). Returns ``None`` when no adapter was given.
    """
    from ..hub.merge import hub_id, read_adapter_config

    name = getattr(model_args, "adapter_name_or_path", None)
    if not name:
        if getattr(model_args, "adapter_revision", None):
            raise UsageError("--adapter_revision names a revision of --adapter_name_or_path, which is not set.")
        return None
    if not model_args.use_peft:
        raise UsageError(
            "--adapter_name_or_path continues a LoRA/DoRA adapter, but --use_peft is false. To continue a fully "
            "fine-tuned model, pass its folder or Hub id as --model_name_or_path (and drop --adapter_name_or_path)."
        )
    local = Path(name).expanduser()
    revision = None
    if local.exists():
        if model_args.adapter_revision:
            raise UsageError(f"--adapter_revision {model_args.adapter_revision!r} applies to Hub adapters, but "
                             f"{name!r} is a local folder.")
        path = local
    elif hub_id(name):
        token = getattr(training_args, "hub_token", None) if training_args is not None else None
        path = _download_adapter(name, model_args.adapter_revision, token)
        revision = path.name if _COMMIT.match(path.name) else (model_args.adapter_revision or "main")
    else:
        raise UsageError(f"--adapter_name_or_path {name!r} is neither a local folder nor a Hub id.")
    if not (path / ADAPTER_CONFIG).is_file() and (path / "config.json").is_file():
        raise UsageError(f"{name!r} holds a full model (config.json, no {ADAPTER_CONFIG}): to continue training it, "
                         "pass it as --model_name_or_path and drop --adapter_name_or_path.")
    config = read_adapter_config(path)  # MergeError (a UsageError) for anything that is not a safetensors LoRA
    base = config.get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{ADAPTER_CONFIG} of {name!r} names no base model (base_model_name_or_path is empty); "
                         "set it to the model the adapter was trained on.")
    base_revision = config.get("revision")
    _adopt_base(model_args, name, base, base_revision)
    adapter = StartingAdapter(name=name, path=path, revision=revision, requested_revision=model_args.adapter_revision,
                              base=model_args.model_name_or_path, base_revision=model_args.model_revision,
                              config=config)
    if training_args is not None and training_args.push_to_hub and not training_args.hub_model_id and adapter.hub_id:
        training_args.hub_model_id = adapter.hub_id
        logger.info("--push_to_hub without --hub_model_id: the new version goes to %s as a new commit.",
                    adapter.hub_id)
    return adapter


def _adopt_base(model_args, adapter_name: str, base: str, base_revision: str | None) -> None:
    given, given_revision = model_args.model_name_or_path, model_args.model_revision
    recorded = f"{base!r}" + (f" at revision {base_revision!r}" if base_revision else "")
    if given is not None and not _recorded_base_usable(base):
        # The adapter was trained on another machine against a local folder: nothing here to compare with.
        logger.warning("The adapter %s records base model %r, which is not on this machine; using "
                       "--model_name_or_path %s as its base.", adapter_name, base, given)
        return
    if given is not None and _model_identity(given) != _model_identity(base):
        raise BaseModelMismatchError(
            f"--model_name_or_path {given!r} is not the base model of --adapter_name_or_path {adapter_name!r}, "
            f"which was trained on {recorded} (its {ADAPTER_CONFIG}). Drop --model_name_or_path to use the recorded "
            "base, or start a new adapter on the other model without --adapter_name_or_path."
        )
    if given_revision and base_revision and given_revision != base_revision:
        raise BaseModelMismatchError(
            f"--model_revision {given_revision!r} is not the revision --adapter_name_or_path {adapter_name!r} was "
            f"trained on: {recorded}. Drop --model_revision to use the recorded one."
        )
    model_args.model_name_or_path = given or base
    model_args.model_revision = given_revision or base_revision


def load_starting_processor(adapter: StartingAdapter, model_args):
    """The processor saved with the adapter (the chat template its run trained with), else the base model's."""
    from ..hub.merge import load_processor_for_merge
    from .modeling import resolve_model_path

    processor, _ = load_processor_for_merge(adapter.path, resolve_model_path(model_args.model_name_or_path),
                                            model_args.trust_remote_code, model_args.model_revision)
    return processor


def describe_start(adapter: StartingAdapter) -> str:
    """The one log line that says where training starts and that it is not a resume."""
    where = f"{adapter.hub_id}@{adapter.revision[:12]}" if adapter.hub_id else f"{adapter.name}"
    base = adapter.base + (f"@{adapter.base_revision}" if adapter.base_revision else "")
    return (f"Continuing adapter {where} ({adapter.shape}) on base {base}: training starts from its weights; the "
            "optimizer and learning-rate schedule start fresh (not a resume of its run).")


# ---- replay ------------------------------------------------------------------------------------------------------
def replay_count(num_new: int, fraction: float) -> int:
    """Replayed records per epoch so that they are ``fraction`` of it: ``num_new * f / (1 - f)``, at least one."""
    return max(1, round(num_new * fraction / (1 - fraction)))


class ReplayMixture(torch.utils.data.Dataset):
    """The new training records followed by ``num_replay`` old-task records, drawn afresh each epoch.

    Positions ``[0, len(new))`` are the new records; the rest are replayed ones: epoch ``e`` takes the next
    ``num_replay`` records of a sequence of shuffled passes over the replay set, shuffled by a generator seeded by
    ``(seed, e)`` alone, so every epoch rehearses different old records (without repeats while the set lasts) and
    any process, worker or resumed run computes the same draw. The sampler shuffles the whole mixture, so replayed
    records spread over the batches. The epoch is set by the trainer (``CollatorEpochCallback``) in shared memory,
    so DataLoader workers see it. With ``--group_by_length`` the lengths are measured on epoch 0's draw.
    """

    def __init__(self, new, replay, fraction: float, seed: int, name: str | None = None):
        if not hasattr(new, "__len__") or not hasattr(replay, "__len__"):
            raise UsageError("--replay_dataset_name mixes old records into each epoch of the new data, which needs "
                             "both as map-style datasets: drop --streaming.")
        if len(replay) == 0:
            raise UsageError(f"The replay dataset {getattr(replay, 'source', '')!r} has no records.")
        self.new, self.replay = new, replay
        self.parts = (new, replay)
        self.fraction = fraction
        self.seed = int(seed)
        self.num_new = len(new)
        self.num_replay = replay_count(self.num_new, fraction)
        self.source = getattr(new, "source", "records")
        self.replay_name = name or getattr(replay, "source", "the replay set")
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()
        self._drawn: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return self.num_new + self.num_replay

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def replay_indices(self, epoch: int) -> list[int]:
        """Indices into the replay set that epoch ``epoch`` mixes in (a pure function of seed and epoch)."""
        if self._drawn is not None and self._drawn[0] == epoch:
            return self._drawn[1]
        pool = len(self.replay)
        # Epoch e continues the stream of shuffled passes where epoch e-1 stopped: pass p is shuffled by (seed, p).
        start = epoch * self.num_replay
        indices = []
        position = start
        while len(indices) < self.num_replay:
            pass_index, offset = divmod(position, pool)
            order = list(range(pool))
            random.Random(f"mmft-replay\x1f{self.seed}\x1f{pass_index}").shuffle(order)
            take = order[offset:offset + self.num_replay - len(indices)]
            indices.extend(take)
            position += len(take)
        self._drawn = (epoch, indices)
        return indices

    def __getitem__(self, index: int) -> dict:
        if index < self.num_new:
            return self.new[index]
        if index >= len(self):
            raise IndexError(index)
        return self.replay[self.replay_indices(self.epoch)[index - self.num_new]]

    def describe(self) -> str:
        return (f"Replay: {self.num_replay} records of {self.replay_name} (of "
                f"{len(self.replay)}) mixed into each epoch of {self.num_new} new records "
                f"({100 * self.num_replay / len(self):.0f}% of {len(self)}), drawn afresh each epoch from seed "
                f"{self.seed}.")

    def __repr__(self) -> str:
        return f"ReplayMixture(new={self.num_new}, replay={self.num_replay} per epoch of {len(self.replay)})"


class ReplayEpochCallback(CollatorEpochCallback):
    """Tell the ``ReplayMixture`` which epoch starts (its own class: transformers warns on a second callback of one
    class, and the collator already has one)."""


def mix_in_replay(train, data_args, seed: int):
    """``train`` with ``--replay_dataset_name`` mixed in (``ReplayMixture``), or ``train`` unchanged without it."""
    from ..data.sources import load_records

    if not data_args.replay_dataset_name:
        return train
    replay = load_records(data_args.replay_dataset_name, split=data_args.replay_split)
    mixture = ReplayMixture(train, replay, data_args.replay_fraction, seed, name=data_args.replay_dataset_name)
    logger.info(mixture.describe())
    return mixture


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
        self.new_task_name = _public_name(eval_name if eval_name is not None
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
            tasks.append({"dataset": _public_name(retention_set.name), "key": retention_set.key,
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


def _public_name(name) -> str:
    from ..hub.run_summary import dataset_source

    return dataset_source(name).name


@contextlib.contextmanager
def push_deferred(trainer, defer: bool):
    """While ``defer``: ``save_model`` writes without pushing (a gated run pushes only once its check passed)."""
    if not defer or not trainer.args.push_to_hub:
        yield
        return
    trainer.args.push_to_hub = False
    try:
        yield
    finally:
        trainer.args.push_to_hub = True


def push_commit_message(trainer, data_args=None) -> str | None:
    """The commit message of a continued run's final push: its parent and new data, visible in the repo history."""
    adapter = getattr(trainer, "starting_adapter", None)
    if adapter is None:
        return None
    parent = f"{adapter.hub_id}@{adapter.revision[:12]}" if adapter.hub_id else adapter.lineage()["name"]
    data = getattr(data_args, "dataset_name", None) or getattr(trainer.train_dataset, "source", None)
    return f"Continue training from {parent} on {_public_name(data)}"
