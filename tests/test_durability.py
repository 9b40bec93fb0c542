"""Durability: checkpoints count only once complete, resume is exact, a non-finite loss stops training cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmft.train.checkpoints import (
    COMPLETE_MARKER,
    IncompleteCheckpointError,
    last_complete_checkpoint,
    mark_complete,
    resolve_resume_checkpoint,
)

DRIVER = Path(__file__).with_name("_killable_run.py")


# ---- completion markers and resume resolution -----------------------------------------------------------------
def _checkpoint(root: Path, step: int, complete: bool) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"x")
    if complete:
        mark_complete(path, step)
    return path


def test_resume_true_picks_the_newest_complete_checkpoint_and_sets_incomplete_ones_aside(tmp_path, caplog):
    _checkpoint(tmp_path, 2, True)
    newest_complete = _checkpoint(tmp_path, 10, True)  # numeric order, not lexical: 10 > 4
    _checkpoint(tmp_path, 4, True)
    _checkpoint(tmp_path, 12, False)  # killed while writing
    assert resolve_resume_checkpoint("true", tmp_path) == str(newest_complete)
    assert not (tmp_path / "checkpoint-12").exists()
    assert (tmp_path / "incomplete-checkpoint-12" / "adapter_model.safetensors").exists()  # kept for inspection
    assert "checkpoint-12 was never completed" in caplog.text
    assert json.loads((newest_complete / COMPLETE_MARKER).read_text()) == {"global_step": 10}


def test_resume_values(tmp_path):
    assert resolve_resume_checkpoint(None, tmp_path) is None
    assert resolve_resume_checkpoint("false", tmp_path) is None
    assert resolve_resume_checkpoint("true", tmp_path / "missing") is None  # first launch: start fresh
    assert last_complete_checkpoint(tmp_path) is None
    partial = _checkpoint(tmp_path, 3, False)
    with pytest.raises(IncompleteCheckpointError, match="never completed"):
        resolve_resume_checkpoint(str(partial), tmp_path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-99"), tmp_path)
    done = _checkpoint(tmp_path, 5, True)
    assert resolve_resume_checkpoint(str(done), tmp_path) == str(done)


# ---- the non-finite guard -------------------------------------------------------------------------------------
def _nan_trainer_class(nan_at_step: int):
    from mmft.train.trainer import VLMTrainer

    class NaNAtStep(VLMTrainer):
        instances = []

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.instances.append(self)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.state.global_step + 1 == nan_at_step:
                loss = loss * float("nan")
            return loss

    return NaNAtStep


def _run_with_nan(monkeypatch, tiny_llava_dir, shapes_dir, output_dir, **kwargs):
    import mmft.recipe
    import mmft.workflow

    monkeypatch.setattr(mmft.workflow, "VLMTrainer", _nan_trainer_class(nan_at_step=3))
    _run_with_nan.trainer_class = mmft.workflow.VLMTrainer
    return mmft.recipe.finetune(
        model=str(tiny_llava_dir), train_dataset=str(shapes_dir["train"]), output_dir=str(output_dir),
        max_steps=5, save_steps=2, per_device_train_batch_size=4, learning_rate=1e-3, report_to=[], **kwargs,
    )


def test_nonfinite_loss_stops_training_before_the_weights_change(monkeypatch, tiny_llava_dir, shapes_dir, tmp_path):
    from mmft.train.trainer import NonFiniteTrainingError

    with pytest.raises(NonFiniteTrainingError) as error:
        _run_with_nan(monkeypatch, tiny_llava_dir, shapes_dir, tmp_path / "out")
    message = str(error.value)
    assert "step 3" in message and "loss=nan" in message and "grad_norm=nan" in message
    assert "checkpoint-2" in message and "--stop_on_nonfinite false" in message
    checkpoints = sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2"]  # the last good one, complete; nothing written after the NaN
    assert (tmp_path / "out" / "checkpoint-2" / COMPLETE_MARKER).exists()
    model = _run_with_nan.trainer_class.instances[-1].model
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN gradients were never applied


def test_nonfinite_guard_can_be_turned_off(monkeypatch, tiny_llava_dir, shapes_dir, tmp_path):
    results = _run_with_nan(monkeypatch, tiny_llava_dir, shapes_dir, tmp_path / "out", stop_on_nonfinite=False)
    assert results["trainer"].state.global_step == 5


# ---- the run summary ------------------------------------------------------------------------------------------
def test_training_reports_tokens_per_second_and_peak_memory(tiny_llava_dir, shapes_dir, tmp_path):
    from mmft.recipe import finetune

    results = finetune(model=str(tiny_llava_dir), train_dataset=str(shapes_dir["train"]),
                       output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, report_to=[])
    # 4 samples of >= 36 image tokens + text per step: far more tokens than samples per second.
    assert results["train_tokens_per_second"] > 40 * results["train_samples_per_second"] > 0
    assert 0.1 < results["train_peak_memory_gib"] < 64  # this process's peak RSS, in GiB


# ---- exact resume after SIGKILL ----------------------------------------------------------------------------------
def _run(output_dir, tiny_llava_dir, shapes_dir, workers, *flags) -> int:
    command = [sys.executable, str(DRIVER), str(output_dir), str(tiny_llava_dir), str(shapes_dir["train"]),
               str(workers), *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=600).returncode


def _adapter(output_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(output_dir / "adapter_model.safetensors")


@pytest.mark.slow
def test_killed_and_resumed_runs_equal_an_uninterrupted_one(tiny_llava_dir, shapes_dir, tmp_path):
    """Five runs of ~12 s: one straight (0 workers); a SIGKILL mid-step with 2 DataLoader workers, resumed; a SIGKILL
    mid-checkpoint-write with 0 workers, resumed. Data order and dropout draw from the main process's seeded RNG
    whatever the worker count, so all three end on the same weights, bit for bit."""
    straight, killed, killed_saving = tmp_path / "straight", tmp_path / "killed", tmp_path / "killed_saving"
    assert _run(straight, tiny_llava_dir, shapes_dir, 0) == 0

    # SIGKILL during step 4 (checkpoint-2 complete), then resume.
    assert _run(killed, tiny_llava_dir, shapes_dir, 2, "--kill-at-step", "3") == -9
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-2"]
    assert _run(killed, tiny_llava_dir, shapes_dir, 2, "--resume") == 0

    # SIGKILL while checkpoint-4 is half written: resume takes checkpoint-2.
    assert _run(killed_saving, tiny_llava_dir, shapes_dir, 0, "--kill-saving", "4") == -9
    half_written = killed_saving / "checkpoint-4"
    assert half_written.exists() and not (half_written / COMPLETE_MARKER).exists()
    assert _run(killed_saving, tiny_llava_dir, shapes_dir, 0, "--resume") == 0
    assert (killed_saving / "incomplete-checkpoint-4").exists()

    expected = _adapter(straight)
    for run in (killed, killed_saving):
        actual = _adapter(run)
        assert actual.keys() == expected.keys()
        for name in expected:
            assert torch.equal(actual[name], expected[name]), f"{run.name}: {name} differs after resume"
