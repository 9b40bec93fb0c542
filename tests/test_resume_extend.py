"""Resume to more steps (issue #20): a run of K steps continued to N with ``--resume_from_checkpoint true`` ends on
the same weights, bit for bit, as one uninterrupted N-step run, whatever the workers, method, grouping and
augmentation; the learning-rate schedule is the one thing that legitimately depends on N, and is said so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.utils.data._utils

from mmft.train.checkpoints import CheckpointWeightsError, load_full_model_weights, schedule_depends_on_total

DRIVER = Path(__file__).with_name("_extend_run.py")
sys.path.insert(0, str(DRIVER.parent))

import _extend_run  # noqa: E402  (tests/_extend_run.py)

# 16 records in batches of 4: 4 steps per epoch. Six steps, resumed after three: the resumed run skips three batches
# of epoch 0, then crosses into epoch 1 (a new sampler order, augmentation epoch, and DataLoader iterator).
TOTAL, FIRST = 6, 3
SMALL = ["--use_cpu", "true", "--seed", "0", "--max_train_samples", "16", "--per_device_train_batch_size", "4",
         "--max_eval_samples", "2", "--per_device_eval_batch_size", "2", "--generation_max_new_tokens", "2",
         "--learning_rate", "5e-3", "--lr_scheduler_type", "constant", "--warmup_steps", "0"]
WORKERS = {0: ["--dataloader_num_workers", "0", "--dataloader_persistent_workers", "false"],
           2: ["--dataloader_num_workers", "2", "--dataloader_persistent_workers", "true"]}  # the demo's setting
METHODS = {"full": ["--use_peft", "false"],  # the demo: everything trained, vision tower included
           "lora": ["--use_peft", "true", "--lora_dropout", "0.1"]}  # dropout: the RNG must be restored exactly
GROUPING = {"random": [], "grouped": ["--group_by_length", "true", "--length_grouping_min_gain", "1.0"]}
AUGMENT = {"plain": [], "augmented": ["--augment_images", "true"]}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return {k: v for f in files for k, v in load_file(f).items()}


def assert_same_weights(straight: Path, resumed: Path) -> None:
    for sub in (f"checkpoint-{FIRST}", f"checkpoint-{TOTAL}", "."):
        expected, actual = _weights(straight / sub), _weights(resumed / sub)
        assert actual.keys() == expected.keys()
        differing = [k for k in expected if not torch.equal(actual[k], expected[k])]
        assert not differing, (f"{sub}: {len(differing)} of {len(expected)} tensors differ after the resume, max |dw| "
                               f"{max((actual[k] - expected[k]).abs().max().item() for k in differing):.3g}")


# Every pair of settings of any two of the four factors is covered (a strength-2 covering array: five cases instead of
# the full 16, about 60 s instead of 170 s; each fix switched off fails at least one of them), plus issue #20's own
# case, full fine-tuning with two persistent workers.
CASES = [
    (0, "full", "random", "plain"),
    (0, "lora", "grouped", "augmented"),
    (2, "full", "grouped", "augmented"),
    (2, "lora", "random", "augmented"),
    (2, "lora", "grouped", "plain"),
    (2, "full", "random", "plain"),  # issue #20's commands
]


@pytest.mark.parametrize("workers, method, grouping, augment", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_a_run_continued_to_more_steps_equals_an_uninterrupted_one(workers, method, grouping, augment,
                                                                 tiny_llava_dir, shapes_dir, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", _extend_run.FAST_WORKER_SHUTDOWN_S)
    flags = [*SMALL, *WORKERS[workers], *METHODS[method], *GROUPING[grouping], *AUGMENT[augment]]
    _extend_run.three_runs(tmp_path, str(tiny_llava_dir), str(shapes_dir["train"]), str(shapes_dir["test"]),
                           TOTAL, FIRST, flags)
    log = capsys.readouterr().out  # mmft logs to stdout (mmft.workflow.setup_logging), not through the root logger
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    state = json.loads((tmp_path / "resumed" / "trainer_state.json").read_text())
    assert state["global_step"] == TOTAL
    if grouping == "grouped":  # the length-grouped sampler really ran (not random order for lack of gain)
        assert "Length grouping (--train_sampling_strategy group_by_length): " in log
        assert "kept random order" not in log
    if method == "full":
        assert f"Loaded the model weights of {tmp_path / 'resumed' / f'checkpoint-{FIRST}'}" in log
    assert "Resuming from" in log and "learning-rate schedule" not in log  # constant: independent of the total


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_continued_to_more_steps_equal_an_uninterrupted_run(method, tiny_llava_dir, shapes_dir,
                                                                          tmp_path):
    """torchrun, two processes (gloo), 2 workers each, grouped and augmented: ~25 s per method."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    flags = [*SMALL, *WORKERS[2], *METHODS[method], *GROUPING["grouped"], *AUGMENT["augmented"],
             "--per_device_train_batch_size", "2"]  # 2 processes x 2: still 4 steps per epoch
    command = [torchrun, "--standalone", "--nproc_per_node", "2", str(DRIVER), str(tmp_path), str(tiny_llava_dir),
               str(shapes_dir["train"]), str(shapes_dir["test"]), str(TOTAL), str(FIRST), *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    assert "rng_state_1.pth" in os.listdir(tmp_path / "resumed" / f"checkpoint-{FIRST}")  # both ranks' RNG saved


def test_resume_to_more_steps_says_when_the_schedule_depends_on_the_total(tiny_llava_dir, shapes_dir, tmp_path,
                                                                          capsys):
    from mmft.recipe import finetune

    common = dict(model=str(tiny_llava_dir), train_dataset=str(shapes_dir["train"]), output_dir=str(tmp_path),
                  max_train_samples=8, per_device_train_batch_size=4, save_steps=2, report_to=[],
                  lr_scheduler_type="cosine", warmup_steps=0.5, disable_tqdm=True)
    finetune(max_steps=2, **common)
    assert "learning-rate schedule" not in capsys.readouterr().out
    results = finetune(max_steps=4, resume_from_checkpoint="true", **common)
    assert results["trainer"].state.global_step == 4
    warnings = [line for line in capsys.readouterr().out.splitlines() if "learning-rate schedule" in line]
    assert len(warnings) == 1
    assert "step 2 of a run planned for 2 steps, now 4" in warnings[0] and "cosine" in warnings[0]


def test_schedule_depends_on_total():
    from transformers import TrainingArguments

    def args(**kwargs):
        return TrainingArguments(output_dir="unused", report_to=[], **kwargs)

    assert not schedule_depends_on_total(args(lr_scheduler_type="constant"), 4, 4, 8)
    assert not schedule_depends_on_total(args(lr_scheduler_type="constant_with_warmup", warmup_steps=2), 4, 4, 8)
    assert schedule_depends_on_total(args(lr_scheduler_type="constant_with_warmup", warmup_steps=0.5), 4, 4, 8)
    assert schedule_depends_on_total(args(lr_scheduler_type="cosine"), 4, 4, 8)
    assert schedule_depends_on_total(args(lr_scheduler_type="linear"), 4, 8, 4)  # a shortened run too
    assert not schedule_depends_on_total(args(lr_scheduler_type="cosine"), 4, 8, 8)  # same total


# ---- the weights themselves --------------------------------------------------------------------------------------
def test_full_model_checkpoint_weights_load_back_exactly(tiny_llava_dir, tmp_path):
    """save_pretrained writes LLaVA in its original key layout (language_model.model.*); the weights must come back
    into the training model's own layout (model.language_model.*) exactly, every tensor of them."""
    from transformers import AutoModelForImageTextToText

    trained = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(torch.randn_like(parameter))
    trained.save_pretrained(tmp_path / "checkpoint-1")

    fresh = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    load_full_model_weights(fresh, tmp_path / "checkpoint-1")
    expected = trained.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in fresh.state_dict().items())


def test_a_checkpoint_missing_weights_is_refused(tiny_llava_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    model.save_pretrained(tmp_path / "checkpoint-1")
    weights = tmp_path / "checkpoint-1" / "model.safetensors"
    tensors = load_file(weights)
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(CheckpointWeightsError, match="do not match the model being trained") as error:
        load_full_model_weights(model, tmp_path / "checkpoint-1")
    assert "missing keys" in str(error.value)


def test_load_best_model_at_end_restores_the_best_full_model(tiny_llava_dir, shapes_dir, tmp_path):
    """The same plain load_state_dict loads the best checkpoint at the end: the best model (here the *highest* eval
    loss, step 1, so that it differs from the last) must really be the one left in the trainer."""
    from mmft.recipe import finetune

    results = finetune(model=str(tiny_llava_dir), train_dataset=str(shapes_dir["train"]),
                       eval_dataset=str(shapes_dir["test"]), output_dir=str(tmp_path), use_peft=False,
                       max_train_samples=8, max_eval_samples=2, per_device_train_batch_size=4,
                       per_device_eval_batch_size=2, max_steps=2, learning_rate=5e-3, eval_strategy="steps",
                       eval_steps=1, save_steps=1, load_best_model_at_end=True, metric_for_best_model="eval_loss",
                       greater_is_better=True, eval_generation=False, report_to=[], disable_tqdm=True)
    trainer = results["trainer"]
    assert trainer.state.best_model_checkpoint == str(tmp_path / "checkpoint-1")
    best, last = _weights(tmp_path / "checkpoint-1"), _weights(tmp_path / "checkpoint-2")
    assert any(not torch.equal(best[k], last[k]) for k in best)  # the two differ: the test can tell them apart
    final = _weights(tmp_path)  # save_model at the end wrote the model the trainer holds
    assert all(torch.equal(final[k], best[k]) for k in best)
