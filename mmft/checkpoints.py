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

from .errors import MissingPathError, UsageError

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
