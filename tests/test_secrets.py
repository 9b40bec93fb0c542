"""A Hub token, from the environment or ``--hub_token``, reaches no log line, no file a run writes, no tracker.

``tests/test_hub.py`` checks the same for an in-process push; here the recipe runs as a user runs it (a
subprocess under ``accelerate launch``, every log line captured), and the payloads that experiment trackers are
sent (W&B and MLflow send ``args.to_dict()`` plus the model config, TensorBoard ``to_json_string()`` and
``to_sanitized_dict()``) are captured at ``on_train_begin`` and on every log call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from transformers import TrainerCallback

from mmft.config.data_args import DataArguments
from mmft.config.model_args import ModelArguments
from mmft.config.training_args import VLMTrainingArguments
from mmft.data.sources import load_records
from mmft.workflow import build_trainer

REPO = Path(__file__).resolve().parents[1]
ARG_TOKEN = "hf_ArgPlantedSecret0123456789abcdefXYZ"
ENV_TOKEN = "hf_EnvPlantedSecret0123456789abcdefXYZ"


def _assert_no_token_in_files(folder: Path) -> int:
    checked = 0
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert ARG_TOKEN.encode() not in data and ENV_TOKEN.encode() not in data, path
            checked += 1
    return checked


def test_a_recipe_run_writes_and_prints_no_token(tiny_llava_dir, shapes_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_TOKEN": ENV_TOKEN, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TRANSFORMERS_VERBOSITY": "debug"}  # the most transformers would ever log
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
               str(REPO / "recipes" / "vqa.py"), "--model_name_or_path", str(tiny_llava_dir),
               "--dataset_name", str(shapes_dir["train"]), "--max_train_samples", "8", "--eval_dataset_name",
               str(shapes_dir["test"]), "--max_eval_samples", "4", "--eval_before_train", "true",
               "--per_device_train_batch_size", "4", "--max_steps", "2", "--save_strategy", "steps",
               "--save_steps", "1", "--logging_steps", "1", "--lora_r", "4", "--output_dir", str(out),
               "--hub_token", ARG_TOKEN, "--report_to", "none", "--dataloader_num_workers", "0"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for text in (result.stdout, result.stderr):
        assert ARG_TOKEN not in text and ENV_TOKEN not in text
    # Arguments dumps (training_args.bin in the folder and in each checkpoint), model card, report, trainer state.
    for name in ("training_args.bin", "checkpoint-1/training_args.bin", "checkpoint-1/trainer_state.json",
                 "trainer_state.json", "README.md", "eval_report.html", "all_results.json"):
        assert (out / name).is_file(), name
    assert _assert_no_token_in_files(out) >= 10


class _TrackerPayloads(TrainerCallback):
    """What an experiment tracker would be sent."""

    def __init__(self):
        self.payloads: list[str] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.payloads += [json.dumps(args.to_dict(), default=str), args.to_json_string(),
                          json.dumps(args.to_sanitized_dict(), default=str)]
        if model is not None and hasattr(model, "config"):
            self.payloads.append(json.dumps(model.config.to_dict(), default=str))

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.payloads.append(json.dumps(logs, default=str))


def test_tracker_payloads_hold_no_token(tiny_llava_dir, shapes_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    args = VLMTrainingArguments(output_dir=str(tmp_path / "out"), hub_token=ARG_TOKEN, report_to="none",
                                max_steps=1, logging_steps=1, save_strategy="no", disable_tqdm=True,
                                per_device_train_batch_size=2)
    trainer = build_trainer(ModelArguments(model_name_or_path=str(tiny_llava_dir), lora_r=4),
                            DataArguments(max_length=256), args, load_records(shapes_dir["train"], max_samples=4))
    tracker = _TrackerPayloads()
    trainer.add_callback(tracker)
    trainer.train()
    assert len(tracker.payloads) >= 5  # args three ways, the model config, at least one log
    assert any('"hub_token"' in payload for payload in tracker.payloads)  # the field is there, its value is not
    for payload in tracker.payloads:
        assert ARG_TOKEN not in payload and ENV_TOKEN not in payload
