"""A user's mistake gets one line and a non-zero exit; an explicit flag beats the config file it contradicts.

- Under ``accelerate launch`` (one process and two) a usage error prints its message once and no traceback: neither
  ours nor the launcher's ``CalledProcessError``.
- ``mmft`` commands do the same; ``MMFT_DEBUG=1`` brings the traceback back; a bug keeps its traceback.
- ``--dataloader_num_workers 0`` on the demo (whose config asks for persistent workers) runs instead of crashing in
  torch's DataLoader; two explicit flags that cannot hold together are refused in one line naming both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmft.config.conflicts import CONFLICTS, settle_conflicts
from mmft.config.parsing import parse_args
from mmft.errors import USAGE_ERROR_EXIT_CODE, UsageError, report_usage_errors

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "vqa.py"
sys.path.insert(0, str(REPO / "recipes"))
import vqa  # noqa: E402  (the recipe module itself: its parse() applies the demo config)


def _env(**extra) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    env.pop("MMFT_DEBUG", None)
    env.update(extra)
    return env


def _accelerate(args: list[str], num_processes: int = 1, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    # Several CPU processes: accelerate's --cpu runs one process whatever --num_processes says; --multi_gpu with no
    # GPU visible starts them under torchrun, and mmft's arguments switch the run to gloo.
    where = ["--multi_gpu", "--num_processes", str(num_processes)] if num_processes > 1 else ["--cpu"]
    command = [sys.executable, "-m", "accelerate.commands.launch", *where, str(RECIPE), "--disable_tqdm", "true",
               *args]
    return subprocess.run(command, cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=timeout)


# ---- one message, no traceback ---------------------------------------------------------------------------------
@pytest.mark.parametrize("num_processes", [1, 2])
def test_a_usage_error_under_accelerate_launch_is_one_line_without_any_traceback(tiny_llava_dir, num_processes):
    # Issue #14's case: a model folder and no dataset.
    result = _accelerate(["--model_name_or_path", str(tiny_llava_dir), "--output_dir", "unused"], num_processes)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output and "CalledProcessError" not in output, output[-4000:]
    lines = [line for line in output.splitlines() if "No training data" in line]
    assert lines == ["recipes/vqa.py: error: No training data: pass --dataset_name (a data card name such as "
                     "'chartqa', a .json/.jsonl/.parquet file or folder, a Hub id, or 'shapes')."], output[-4000:]


def test_mmft_debug_brings_the_traceback_back(tiny_llava_dir):
    command = [sys.executable, str(RECIPE), "--model_name_or_path", str(tiny_llava_dir), "--output_dir", "unused"]
    quiet = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    debug = subprocess.run(command, cwd=REPO, env=_env(MMFT_DEBUG="1"), capture_output=True, text=True, timeout=300)
    assert quiet.returncode == USAGE_ERROR_EXIT_CODE and "Traceback" not in quiet.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "UsageError: No training data" in debug.stderr


def test_mmft_commands_report_usage_errors_in_one_line(tmp_path):
    missing = tmp_path / "nowhere" / "train.jsonl"
    for argv in (["data", "check", str(missing)], ["eval", str(tmp_path / "no-model"), "--dataset_name", "shapes"],
                 ["build-tiny-model", str(tmp_path / "m"), "--name", "mmft:tiny-nonexistent"]):
        result = subprocess.run([sys.executable, "-m", "mmft.commands.cli", *argv], cwd=REPO, env=_env(),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and "Traceback" not in result.stderr, (argv, result.stderr[-3000:])
        assert result.stderr.strip().count("\n") == 0, (argv, result.stderr)  # one line
        assert result.stderr.startswith("mmft "), (argv, result.stderr)


def test_a_bug_keeps_its_traceback_and_a_usage_error_exits_with_its_code(capsys):
    with pytest.raises(KeyError), report_usage_errors("prog"):
        raise KeyError("a programming error is not the user's to fix")
    with pytest.raises(SystemExit) as exit_info, report_usage_errors("prog"):
        raise UsageError("pass --dataset_name")
    assert exit_info.value.code == USAGE_ERROR_EXIT_CODE
    assert capsys.readouterr().err == "prog: error: pass --dataset_name\n"


def test_argument_errors_are_usage_errors():
    with pytest.raises(UsageError, match="Unknown argument"):
        parse_args(["--model_name_or_path", "m", "--no_such_flag", "1"])
    with pytest.raises(UsageError, match="length_grouping_target"):  # a dataclass check of a value
        parse_args(["--model_name_or_path", "m", "--output_dir", "o", "--length_grouping_target", "2"])


# ---- explicit flags win; real conflicts are named -------------------------------------------------------------
def test_an_explicit_worker_count_wins_over_the_configs_persistent_workers(capsys):
    # The demo config asks for persistent workers (with one worker); the user asks for none.
    _, _, args = vqa.parse(["--dataloader_num_workers", "0", "--output_dir", "unused"])
    assert args.dataloader_num_workers == 0 and args.dataloader_persistent_workers is False
    assert "--dataloader_persistent_workers true from" in capsys.readouterr().err  # said, not silent
    _, _, args = vqa.parse(["--output_dir", "unused"])  # without the flag the config's choice stands
    assert args.dataloader_num_workers == 1 and args.dataloader_persistent_workers is True


@pytest.mark.parametrize("flags, named", [
    (["--dataloader_num_workers", "0", "--dataloader_persistent_workers", "true"],
     ["--dataloader_persistent_workers true", "--dataloader_num_workers 0"]),
    (["--dataloader_num_workers", "0", "--dataloader_prefetch_factor", "4"],
     ["--dataloader_prefetch_factor 4", "--dataloader_num_workers 0"]),
    (["--group_by_length", "true", "--train_sampling_strategy", "random"],
     ["--group_by_length true", "--train_sampling_strategy random"]),
])
def test_two_explicit_flags_that_conflict_are_refused_naming_both(flags, named):
    with pytest.raises(UsageError) as error:
        vqa.parse([*flags, "--output_dir", "unused"])
    assert all(name in str(error.value) for name in named), str(error.value)


def test_persistent_workers_against_the_derived_worker_count_is_named():
    # On a CPU-only run the derived default is 0 workers: asking for persistent workers names that default.
    with pytest.raises(UsageError, match=r"--dataloader_num_workers 0 \(the default on a CPU-only run\)"):
        parse_args(["--model_name_or_path", "m", "--output_dir", "o", "--use_cpu", "true",
                    "--dataloader_persistent_workers", "true"])


def test_a_config_value_gives_way_to_the_flag_it_contradicts_on_either_side(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: m\noutput_dir: o\ntrain_sampling_strategy: random\n")
    *_, args = parse_args(["--config", str(config), "--group_by_length", "true"])
    assert args.train_sampling_strategy == "group_by_length" and args.group_by_length
    config.write_text("model_name_or_path: m\noutput_dir: o\ngroup_by_length: true\nuse_cpu: true\n")
    *_, args = parse_args(["--config", str(config), "--train_sampling_strategy", "random"])
    assert args.train_sampling_strategy == "random" and not args.group_by_length
    config.write_text("model_name_or_path: m\noutput_dir: o\ngroup_by_length: true\ntrain_sampling_strategy: random\n")
    with pytest.raises(UsageError, match="both in"):  # the file contradicts itself: nothing to prefer
        parse_args(["--config", str(config)])


def test_every_conflict_names_settings_that_exist():
    from dataclasses import fields

    from mmft.config.data_args import DataArguments
    from mmft.config.model_args import ModelArguments
    from mmft.config.training_args import VLMTrainingArguments

    names = {f.name for t in (ModelArguments, DataArguments, VLMTrainingArguments) for f in fields(t)}
    for conflict in CONFLICTS:
        assert {conflict.setting, conflict.depends_on} <= names
    values = {"dataloader_persistent_workers": True, "dataloader_num_workers": 0}
    settle_conflicts(values, explicit={"dataloader_num_workers"}, from_config={"dataloader_persistent_workers"},
                     defaults={"dataloader_persistent_workers": None}, config_path="c.yaml")
    assert values["dataloader_persistent_workers"] is None  # re-derived later from the worker count


@pytest.mark.slow  # ~40 s: the demo recipe, two steps, no workers
def test_the_demo_runs_with_no_dataloader_workers(tmp_path):
    out = tmp_path / "out"
    result = _accelerate(["--use_cpu", "true", "--dataloader_num_workers", "0", "--max_steps", "2",
                          "--output_dir", str(out), "--eval_before_train", "false", "--max_eval_samples", "4",
                          "--per_device_train_batch_size", "4"], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((out / "train_results.json").read_text())["train_loss"] > 0
