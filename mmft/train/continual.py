"""Continual retraining: start from an adapter trained earlier, rehearse the old task, measure what was forgotten.

A team retrains every month on new data instead of starting over. Three pieces make that a run like any other:

- **The starting adapter** (``mmft.train.starting_adapter``): ``--adapter_name_or_path``, a local folder or a Hub
  id at ``--adapter_revision``, trained further with its own shape from its own weights.
- **Replay** (``mmft.train.replay``): ``--replay_dataset_name`` and ``--replay_fraction`` rehearse the old task.
- **The forgetting report** (``mmft.train.retention``): ``--retention_eval_dataset_name`` and
  ``--max_retention_drop`` score the old tasks before and after, and can fail the run.

A continued run pushed without ``--hub_model_id`` goes to the parent adapter's own repository: a new commit there,
whose card names the parent commit, so every version's lineage is on the Hub.

This module holds what the final push of such a run does differently.
"""

from __future__ import annotations

import contextlib

from .retention import public_dataset_name


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
    return f"Continue training from {parent} on {public_dataset_name(data)}"
