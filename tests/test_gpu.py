"""GPU runs of the tiny recipe under each single-machine launch config. They need a CUDA GPU (and DeepSpeed for the
ZeRO configs) and skip, saying which, everywhere else; CI has no GPU, so these run on GPU machines only.

    pytest tests/test_gpu.py   # on a GPU machine, after `pip install -e ".[test,deepspeed]"`
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine"),
]


@pytest.mark.parametrize("config", ["single_gpu", "deepspeed_zero2", "deepspeed_zero3"])
def test_tiny_recipe_runs_under_launch_config(config, tiny_llava_dir, shapes_dir, tmp_path):
    if config.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("DeepSpeed is not installed (pip install -e '.[deepspeed]')")
    processes = 1 if config == "single_gpu" else max(1, torch.cuda.device_count())
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "accelerate_configs" /
        f"{config}.yaml"), "--num_processes", str(processes), str(ROOT / "recipes" / "vqa.py"),
        "--model_name_or_path", str(tiny_llava_dir), "--dataset_name", str(shapes_dir["train"]),
        "--eval_dataset_name", str(shapes_dir["test"]), "--output_dir", str(out), "--max_steps", "6",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--use_peft", "false",
        "--learning_rate", "1e-3", "--report_to", "none", "--save_strategy", "no", "--bf16", "true",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    metrics = json.loads((out / "all_results.json").read_text())
    assert metrics["train_peak_memory_gib"] > 0 and metrics["train_tokens_per_second"] > 0
    assert (out / "model.safetensors").exists() or any(out.glob("model-*.safetensors"))
