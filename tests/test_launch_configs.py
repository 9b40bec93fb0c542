"""The Accelerate launch configs load with Accelerate's own loader and say what they are for."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "accelerate_configs").glob("*.yaml"))
EXPECTED = {
    "single_gpu": "NO", "multi_gpu": "MULTI_GPU", "multi_node": "MULTI_GPU",
    "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED", "fsdp": "FSDP",
}


def test_the_expected_configs_exist():
    assert {path.stem for path in CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_with_accelerates_loader(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert str(config.distributed_type).rsplit(".", 1)[-1] == EXPECTED[path.stem]
    assert config.use_cpu is False
    text = path.read_text()
    assert f"accelerate launch --config_file accelerate_configs/{path.name}" in text, "usage line missing"
    if path.stem == "deepspeed_zero3":
        assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_save_16bit_model"]
    if path.stem == "deepspeed_zero2":
        assert config.deepspeed_config["zero_stage"] == 2
    if path.stem == "fsdp":
        assert int(config.fsdp_config["fsdp_version"]) == 2
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if path.stem == "multi_node":
        assert config.num_machines > 1


def test_fsdp_config_builds_accelerates_plugin(monkeypatch):
    """Beyond parsing: the FSDP section is one Accelerate's FSDP plugin accepts (as `accelerate launch` sets it)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import FullyShardedDataParallelPlugin

    fsdp = load_config_from_file(str(ROOT / "accelerate_configs" / "fsdp.yaml")).fsdp_config
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=int(fsdp["fsdp_version"]),
        auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"],
        reshard_after_forward=fsdp["fsdp_reshard_after_forward"],
        state_dict_type=fsdp["fsdp_state_dict_type"],
        cpu_ram_efficient_loading=fsdp["fsdp_cpu_ram_efficient_loading"],
    )
    assert plugin.fsdp_version == 2
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"


def test_readme_lists_every_config():
    readme = (ROOT / "README.md").read_text()
    for path in CONFIGS:
        assert f"accelerate_configs/{path.name}" in readme, path.name


def test_slurm_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "recipes" / "launch.slurm")], check=True)
