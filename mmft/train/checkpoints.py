"""Checkpoints that count only once complete, and resuming from the last complete one.

``transformers.Trainer`` writes ``checkpoint-N/`` file by file (model, optimizer, scheduler, RNG, trainer state) by
several processes; a run killed in the middle leaves a folder that looks like a checkpoint but is not one, and
``get_last_checkpoint`` would pick it. So:

- after every process has finished writing ``checkpoint-N`` the main process writes a completion marker
  (``mmft_checkpoint_complete``, atomically: temp file + rename), and only then rotates old checkpoints;
- ``--resume_from_checkpoint true`` resumes from the newest *complete* checkpoint; incomplete ones are renamed
  ``incomplete-checkpoint-N`` (kept for inspection, out of the way of resume and rotation) with a warning;
- an explicit ``--resume_from_checkpoint PATH`` without the marker is refused with a message saying why.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from ..errors import MissingPathError, UsageError

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "mmft_checkpoint_complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class IncompleteCheckpointError(UsageError, RuntimeError):
    """Asked to resume from a checkpoint whose writing never finished."""


def mark_complete(checkpoint_dir: str | os.PathLike, step: int) -> None:
    """Write the completion marker atomically (a reader sees no marker or a whole one)."""
    checkpoint_dir = Path(checkpoint_dir)
    tmp = checkpoint_dir / f".{COMPLETE_MARKER}.tmp"
    tmp.write_text(json.dumps({"global_step": step}))
    os.replace(tmp, checkpoint_dir / COMPLETE_MARKER)


def is_complete(checkpoint_dir: str | os.PathLike) -> bool:
    return (Path(checkpoint_dir) / COMPLETE_MARKER).is_file()


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-N`` folders of ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def last_complete_checkpoint(output_dir: str | os.PathLike, set_aside_incomplete: bool = True) -> Path | None:
    """The newest complete checkpoint of ``output_dir`` (``None`` if there is none).

    Incomplete checkpoints newer than it are renamed ``incomplete-checkpoint-N`` (when ``set_aside_incomplete``;
    call it on the main process only) so that neither resume nor rotation mistakes them for checkpoints.
    """
    found = checkpoints(output_dir)
    complete = [p for p in found if is_complete(p)]
    latest = complete[-1] if complete else None
    for path in found:
        if is_complete(path):
            continue
        logger.warning("%s was never completed (the run was stopped while writing it); ignoring it.", path)
        if set_aside_incomplete:
            target = path.with_name(f"incomplete-{path.name}")
            if target.exists():
                target = path.with_name(f"incomplete-{path.name}-{os.getpid()}")
            path.rename(target)
    return latest


def resolve_resume_checkpoint(value, output_dir: str | os.PathLike, is_main_process: bool = True) -> str | None:
    """Turn ``--resume_from_checkpoint`` (``None`` / ``"true"`` / ``"false"`` / a path) into a checkpoint path.

    ``"true"`` means the newest complete checkpoint in ``output_dir`` (a fresh start when there is none, so the same
    command serves the first launch and every relaunch after a preemption).
    """
    if value is None or value is False or (isinstance(value, str) and value.lower() in ("", "false", "no", "0")):
        return None
    if value is True or (isinstance(value, str) and value.lower() in ("true", "yes", "1", "latest")):
        latest = last_complete_checkpoint(output_dir, set_aside_incomplete=is_main_process)
        if latest is None:
            logger.info("No complete checkpoint in %s: starting from scratch.", output_dir)
            return None
        logger.info("Resuming from %s (the newest complete checkpoint).", latest)
        return str(latest)
    path = Path(value)
    if not path.is_dir():
        raise MissingPathError(f"--resume_from_checkpoint {value}: no such checkpoint folder.")
    if not is_complete(path):
        raise IncompleteCheckpointError(
            f"--resume_from_checkpoint {value}: this checkpoint was never completed (no {COMPLETE_MARKER} file: the "
            "run was stopped while writing it, or it was not written by mmft). Resume from an earlier checkpoint, "
            "or pass --resume_from_checkpoint true to pick the newest complete one."
        )
    return str(path)


# ---- loading a full model's weights back (resume, best model) ------------------------------------------------------
FULL_MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")  # what save_pretrained writes (safetensors)


class CheckpointWeightsError(UsageError, RuntimeError):
    """A checkpoint's model weights do not fit the model being trained."""


def holds_full_model(checkpoint_dir: str | os.PathLike) -> bool:
    """Whether ``checkpoint_dir`` holds a full model's safetensors weights (``save_pretrained``), not an adapter."""
    return any((Path(checkpoint_dir) / name).is_file() for name in FULL_MODEL_WEIGHTS)


def load_full_model_weights(model, checkpoint_dir: str | os.PathLike) -> None:
    """Put the weights ``save_pretrained`` wrote to ``checkpoint_dir`` back into ``model``, in place, exactly.

    ``save_pretrained`` writes many families in their *original* key layout (LLaVA: ``language_model.model.layers.*``,
    where the model's own modules are ``model.language_model.layers.*``: transformers' weight conversion mapping,
    reverted on save), and ``transformers.Trainer`` reloads a checkpoint with a plain ``load_state_dict(...,
    strict=False)``, which applies no conversion: every key misses, nothing is loaded, and a resumed full fine-tuning
    silently continues from the *initial* weights with the checkpoint's optimizer state (transformers issue #43701).
    So the checkpoint is read by ``from_pretrained``, the loader that knows this layout (renamings and tensor
    conversions, sharded or not), and its state dict is copied into ``model`` strictly: a checkpoint that does
    not cover every weight of the model is refused, never half loaded.
    """
    checkpoint_dir = str(checkpoint_dir)
    loaded, info = type(model).from_pretrained(checkpoint_dir, dtype="auto", output_loading_info=True)
    problems = {kind: sorted(info.get(kind) or []) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        listed = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(map(str, keys[:5]))}"
                           + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "") for kind, keys in problems.items())
        raise CheckpointWeightsError(
            f"{checkpoint_dir}: its model weights do not match the model being trained ({listed}). Resume with the "
            "same --model_name_or_path and model settings the checkpoint was written with."
        )
    try:
        model.load_state_dict(loaded.state_dict(), strict=True)
    except RuntimeError as error:
        raise CheckpointWeightsError(
            f"{checkpoint_dir}: its model weights do not match the model being trained: {error}"
        ) from None
    del loaded
    logger.info("Loaded the model weights of %s.", checkpoint_dir)


# ---- what a resume can and cannot reproduce ------------------------------------------------------------------------
def schedule_depends_on_total(args, steps_done: int, old_total: int, new_total: int) -> bool:
    """Whether the learning rates of the first ``steps_done`` steps differ between a schedule planned for
    ``old_total`` steps and one planned for ``new_total`` (cosine and linear decay do, and so does a warmup given as a
    fraction; a constant rate does not). A resume keeps the steps already taken, so only then can it differ from an
    uninterrupted run of ``new_total`` steps."""
    if old_total == new_total or steps_done <= 0:
        return False
    import torch
    from transformers import get_scheduler

    def rates(total: int) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = get_scheduler(args.lr_scheduler_type, optimizer=optimizer,
                                  num_warmup_steps=args.get_warmup_steps(total), num_training_steps=total,
                                  scheduler_specific_kwargs=args.lr_scheduler_kwargs)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):  # driven by metrics, not the total
            return []
        values = []
        for _ in range(min(steps_done, old_total, new_total)):
            values.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return values

    try:
        return rates(old_total) != rates(new_total)
    except Exception:  # noqa: BLE001 - a schedule that cannot be simulated here: say it may differ
        return True


class CompleteCheckpointsMixin:
    """For ``transformers.Trainer`` subclasses (``VLMTrainer``, ``ContrastiveTrainer``): a checkpoint counts once it is
    marked complete, after every process wrote its part, which is what ``--resume_from_checkpoint true`` looks for.

    Rotation (deleting old checkpoints) is deferred until the new one is marked complete: a kill in between must never
    leave the run with no complete checkpoint (with ``save_total_limit=1`` it otherwise would).
    """

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()  # every process has written its part (shards, RNG state)
        if self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            mark_complete(os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"),
                          self.state.global_step)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()
