"""``python benchmarks/gpu.py --dry_run`` (issue #16: CI runs it on CPU) prints a full table, and its MFU arithmetic.

The dry run builds shrunken Qwen2.5-VL and LLaVA models (same classes, random weights, nothing downloaded) and
trains each with mmft and TRL, LoRA and full fine-tuning: ~10 s on one CPU core.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _requirements import require_installed

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
require_installed("trl", "pip install -e '.[test]' brings it: the dry run times mmft against TRL's SFTTrainer")
ROW = re.compile(r"^(lora|full)\s+(base|padding_free|liger)\s+(mmft|trl)\s+(.*)$")


def parse_tables(stdout: str) -> dict[str, dict[tuple[str, str, str], str]]:
    """{model: {(method, variant, trainer): rest of the row}} from the printed tables."""
    tables, model = {}, None
    for line in stdout.splitlines():
        if line.startswith("## "):
            model = line[3:].split(":")[0]
            tables[model] = {}
        elif model and (match := ROW.match(line)):
            tables[model][match.groups()[:3]] = match.group(4).strip()
    return tables


@pytest.fixture(scope="module")
def dry_run_output() -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py"), "--dry_run"], capture_output=True,
                            text=True, timeout=300, env=env, cwd=BENCHMARKS.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_dry_run_prints_every_row_with_positive_throughput(dry_run_output):
    tables = parse_tables(dry_run_output)
    assert set(tables) == {"qwen2.5-vl-3b", "llava-1.5-7b"}
    for model, rows in tables.items():
        for method in ("lora", "full"):
            for trainer in ("mmft", "trl"):
                fields = rows[(method, "base", trainer)].split()
                tokens_per_s, mfu_lm, mfu_lm_vision = float(fields[0]), fields[1], fields[2]
                assert tokens_per_s > 0, (model, method, trainer, fields)
                assert mfu_lm.endswith("%") and mfu_lm_vision.endswith("%"), fields
                # the vision tower's forward adds FLOPs, never removes them
                assert float(mfu_lm_vision[:-1]) >= float(mfu_lm[:-1])
                for variant in ("padding_free", "liger"):  # CUDA-only: a reason, not a crash
                    assert rows[(method, variant, trainer)] == "skipped: needs CUDA"


def test_dry_run_states_the_mfu_formula(dry_run_output):
    formula = next(line for line in dry_run_output.splitlines() if line.startswith("# MFU = "))
    assert "k = 3 for full fine-tuning" in formula and "2 for LoRA" in formula
    assert "N_vis" in formula and "peak 989.4 TFLOP/s" in formula


def test_full_fine_tuning_counts_weight_gradients():
    """6·N per token for full fine-tuning, 4·N with LoRA; the vision forward is the same for both."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu
    finally:
        sys.path.remove(str(BENCHMARKS))
    from transformers import Qwen2_5_VLConfig

    config = Qwen2_5_VLConfig(**gpu.QWEN25_VL_3B)
    lora, vision = gpu.flops_per_token(config, 2048, 1200, "lora")
    full, vision_full = gpu.flops_per_token(config, 2048, 1200, "full")
    assert full == pytest.approx(1.5 * lora) and vision_full == vision
    text = config.text_config
    # forward ~2 FLOPs per weight: the 3B model's ~3.1e9 language-model weights (with the tied LM head counted)
    assert 2 * 2.8e9 < lora / 2 < 2 * 3.6e9 + 2 * text.num_hidden_layers * text.hidden_size * 2048
