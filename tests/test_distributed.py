"""Two processes on the CPU (torchrun, gloo): the recipe trains data-parallel exactly as on GPUs.

Each test launches ``torchrun --nproc_per_node 2 tests/_ddp_run.py``, which runs ``recipes/vqa.py`` and records, per
rank, the records its collator received, a digest of the final weights and the files it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("_ddp_run.py")
pytestmark = pytest.mark.slow


def _torchrun(record_dir: Path, flags: list[str], **env_vars) -> list[dict]:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **env_vars}
    command = [torchrun, "--standalone", "--nproc_per_node", "2", str(DRIVER), str(record_dir), *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return [json.loads((record_dir / f"rank{r}.json").read_text()) for r in range(2)]


def _common(model_dir, output_dir) -> list[str]:
    return ["--model_name_or_path", str(model_dir), "--output_dir", str(output_dir), "--report_to", "none",
            "--save_strategy", "no", "--logging_steps", "1", "--dataloader_num_workers", "0", "--seed", "3"]


def test_two_process_lora_run_shards_data_and_only_rank_zero_writes(tiny_llava_dir, shapes_dir, tmp_path):
    out = tmp_path / "out"
    ranks = _torchrun(tmp_path / "records", _common(tiny_llava_dir, out) + [
        "--dataset_name", str(shapes_dir["train"]), "--max_train_samples", "32", "--eval_dataset_name",
        str(shapes_dir["test"]), "--max_eval_samples", "10", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "3", "--num_train_epochs", "1", "--learning_rate", "1e-3",
    ])
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 4  # 32 records / (2 processes x 4)
    # Disjoint shards that together cover the data once.
    # (the training collator also serves the eval-loss pass: keep the training records)
    trained = [[i for i in r["seen_ids"] if i.startswith("shapes-train")] for r in ranks]
    seen = [set(ids) for ids in trained]
    assert len(trained[0]) == len(trained[1]) == 16
    assert not seen[0] & seen[1]
    records = [json.loads(line)["id"] for line in Path(shapes_dir["train"]).read_text().splitlines()][:32]
    assert seen[0] | seen[1] == set(records)
    # Gradients were averaged: both ranks end on the same weights.
    assert ranks[0]["weights"] == ranks[1]["weights"]
    # Only the main process wrote outputs: the adapter, results and predictions are there, written once.
    assert ranks[1]["writes"] == []
    assert "eval_results.json" in ranks[0]["writes"] and "eval_predictions.jsonl" in ranks[0]["writes"]
    assert (out / "adapter_model.safetensors").exists()
    predictions = (out / "eval_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 10 and len({json.loads(p)["id"] for p in predictions}) == 10  # each record once
    # Generation was sharded: each rank generated for its own records (Accelerate evens out the last batch by
    # repeating records, which gather_for_metrics drops again), and together they covered the evaluation set.
    eval_ids = [json.loads(line)["id"] for line in Path(shapes_dir["test"]).read_text().splitlines()][:10]
    generated = [set(r["generated_ids"]) for r in ranks]
    assert generated[0] | generated[1] == set(eval_ids)
    assert len(generated[0]) < 10 and len(generated[1]) < 10
    # The same adapter scored by one process gives the same metric: nothing was scored twice or lost.
    from mmft.evaluation.inference import evaluate_model

    single = evaluate_model(str(out), str(shapes_dir["test"]), max_samples=10, batch_size=4,
                            metrics=["vqa_accuracy"], output_dir=str(tmp_path / "single"))
    two_process = json.loads((out / "eval_results.json").read_text())
    assert single["eval_vqa_accuracy"] == pytest.approx(two_process["eval_vqa_accuracy"])
    single_rows = {json.loads(p)["id"]: json.loads(p)["prediction"]
                   for p in (tmp_path / "single" / "eval_predictions.jsonl").read_text().splitlines()}
    assert single_rows == {json.loads(p)["id"]: json.loads(p)["prediction"] for p in predictions}


def test_text_only_batches_on_one_rank_train_in_strict_lockstep(tiny_llava_dir, shapes_dir, tmp_path):
    """Rank 1 only ever gets text-only batches while the projector trains (full fine-tuning, frozen vision tower).
    DDP runs strict (``ddp_find_unused_parameters false``): without mmft's blank-image keep-alive sample, rank 1's
    projector would get no gradient and the reduction would fail at the next step; under ZeRO-3/FSDP, whose
    sharded vision tower must be gathered by every rank, it would hang. (Strict DDP with a trainable *vision tower*
    is a different matter: LLaVA never uses its CLIP's last norm, so it needs find_unused_parameters anyway.)"""
    image_records = [json.loads(line) for line in Path(shapes_dir["train"]).read_text().splitlines()][:8]
    root = Path(shapes_dir["train"]).parent
    mixed = []
    for i in range(4):  # sequential order, 2 per rank per step: [img, img] -> rank 0, [text, text] -> rank 1
        mixed += [{**image_records[2 * i], "image": str(root / image_records[2 * i]["image"])},
                  {**image_records[2 * i + 1], "image": str(root / image_records[2 * i + 1]["image"])}]
        mixed += [{"id": f"text-{i}-{j}", "conversations": [
            {"from": "human", "value": "How many shapes are there?"}, {"from": "gpt", "value": "one"}]}
            for j in range(2)]
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in mixed))
    ranks = _torchrun(tmp_path / "records", _common(tiny_llava_dir, tmp_path / "out") + [
        "--dataset_name", str(data), "--allow_images_outside_root", "true", "--use_peft", "false",
        "--train_sampling_strategy", "sequential",
        "--ddp_find_unused_parameters", "false", "--per_device_train_batch_size", "2", "--max_steps", "4",
    ])
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 4
    assert all(i.startswith("text-") for i in ranks[1]["seen_ids"])
    assert not any(i.startswith("text-") for i in ranks[0]["seen_ids"])
    assert ranks[0]["weights"] == ranks[1]["weights"]


def test_bad_records_are_counted_once_across_processes(tiny_llava_dir, tmp_path):
    """The bad-input corpus on two processes: the start-up scan is sharded and gathered (8 bad records, not 16 or 4),
    and images broken after start-up are dropped by whichever rank meets them and summed (2, on the ranks that met
    them)."""
    from bad_corpus import EXPECTED_BAD, MAX_IMAGE_PIXELS, bad_ids, write_bad_corpus

    path = write_bad_corpus(tmp_path)
    broken = [path.parent / "images" / "good-0.png", path.parent / "images" / "good-2.png"]
    out = tmp_path / "out"
    ranks = _torchrun(tmp_path / "records", _common(tiny_llava_dir, out) + [
        "--dataset_name", str(path), "--max_image_pixels", str(MAX_IMAGE_PIXELS), "--max_bad_fraction", "0.5",
        "--per_device_train_batch_size", "2", "--num_train_epochs", "1", "--max_length", "256",
    ], MMFT_TEST_BREAK_AFTER_STARTUP=",".join(map(str, broken)))
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 4  # 16 clean records / (2 processes x 2)
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_bad_records_at_startup"] == len(bad_ids())
    assert results["train_bad_records"] == len(bad_ids()) + 2
    assert results["train_bad_records_unreadable_image"] == len(EXPECTED_BAD["unreadable_image"]) + 2
    dropped_in_loader = ranks[0]["bad_records_seen_here"] + ranks[1]["bad_records_seen_here"]
    assert sorted(dropped_in_loader) == ["good-0", "good-2"]
    card = (out / "README.md").read_text()
    assert "`good-0`" in card and "`good-2`" in card and "`missing-1`" in card
