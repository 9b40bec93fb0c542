"""Every YAML in recipes/configs/ is a runnable description of a run.

Each file parses with its recipe's own parser (the ``parse`` function the recipe's ``main`` uses), every key is a
known field that reaches the dataclasses, its metrics resolve to bundled metric scripts, its dataset is a built-in
set or a data card, its name says ``<model>_<dataset>_<method>`` truthfully, and its comments name the hardware and
an existing Accelerate launch config. Nothing here loads a model or data.
"""

import functools
import importlib.util
import re
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
RECIPES = {"vqa": "vqa.py", "caption": "caption.py", "instruct": "instruct.py", "retrieval": "retrieval.py"}
ALL_CONFIGS = sorted(CONFIGS.glob("*/*.yaml"))
LAUNCH_CONFIG = re.compile(r"accelerate_configs/[\w.-]+\.yaml")


@functools.cache
def recipe_module(task: str):
    path = REPO / "recipes" / RECIPES[task]
    spec = importlib.util.spec_from_file_location(f"recipe_{task}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def comments(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.lstrip().startswith("#"))


def test_configs_exist_for_every_recipe_and_enough_real_models():
    tasks = {path.parent.name for path in ALL_CONFIGS}
    assert tasks == set(RECIPES), tasks  # no config folder without a recipe, no recipe without configs
    real = [path for path in ALL_CONFIGS if not path.name.startswith("tiny-")]
    assert len(real) >= 8, [path.name for path in real]
    for task in RECIPES:  # each recipe's embedded demo is a tiny CPU config in its folder
        demo = recipe_module(task).DEMO_CONFIG
        assert demo.is_file() and demo.parent.name == task and demo.name.startswith("tiny-"), demo


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_parses_with_its_recipe(path, tmp_path):
    from mmft.config.data_args import DataArguments
    from mmft.config.model_args import ModelArguments
    from mmft.metrics import metric_path

    values = yaml.safe_load(path.read_text())
    # transformers refuses bf16 without a bf16 GPU unless told the run is on the CPU: parse the GPU configs as a
    # CPU-only machine would (everything else is unchanged).
    cpu = [] if torch.cuda.is_available() else ["--use_cpu", "true"]
    argv = ["--config", str(path), "--output_dir", str(tmp_path), *cpu]
    parsed = recipe_module(path.parent.name).parse(argv)
    model_args, data_args, training_args = parsed[:3]
    # Every key reached a dataclass (unknown keys raise in parse_args); model and data fields arrive as written.
    known = {f.name for args in parsed for f in fields(args)}
    assert set(values) <= known, set(values) - known
    for args, cls in ((model_args, ModelArguments), (data_args, DataArguments)):
        for f in fields(cls):
            if f.name in values:
                assert getattr(args, f.name) == values[f.name], (f.name, getattr(args, f.name))
    for name in ("metrics", "eval_before_train", "generation_max_new_tokens", "eval_generation", "learning_rate"):
        if name in values:
            assert getattr(training_args, name) == values[name], name
    assert training_args.output_dir == str(tmp_path)  # flags override the file
    if path.parent.name == "retrieval":  # dual encoders score retrieval and zero-shot, not generated answers
        return
    # Metrics resolve to bundled evaluate scripts (offline); an unknown name raises ValueError naming it.
    assert training_args.metrics or not training_args.eval_generation or path.parent.name == "instruct", path
    for name in training_args.metrics:
        assert metric_path(name).is_file(), name
    assert training_args.num_beams >= 1


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_names_data_model_method_and_launch(path):
    from mmft.data.cards import find_card
    from mmft.data.sources import BUILTIN_DATASETS

    values = yaml.safe_load(path.read_text())
    model, dataset, method = path.stem.split("_")  # <model>_<dataset>_<method>.yaml
    assert values["dataset_name"] == dataset, (path.name, values["dataset_name"])
    for key in ("dataset_name", "eval_dataset_name"):
        name = values.get(key)
        if name is not None:  # a built-in set or a data card in data_cards/ (no Hub lookup here)
            assert name in BUILTIN_DATASETS or find_card(name) is not None, (path.name, key, name)
    if values.get("load_in_4bit"):
        assert method == "qlora" and values.get("use_peft", True), path.name
    elif values.get("use_peft", True):
        assert method in ("lora", "dora"), path.name
    else:
        assert method.split("-")[0] == "full", path.name
    assert values["output_dir"].startswith("outputs/"), path.name
    # Comments say which machine and which launch config; the launch configs named exist.
    text = comments(path)
    assert "Hardware:" in text and "Launch config:" in text, path.name
    launch = LAUNCH_CONFIG.findall(text)
    assert launch, f"{path.name} names no accelerate_configs/*.yaml"
    for name in launch:
        assert (REPO / name).is_file(), (path.name, name)
    if "zero3" in method:
        assert "accelerate_configs/deepspeed_zero3.yaml" in launch
    if "fsdp" in method:
        assert "accelerate_configs/fsdp.yaml" in launch
    if not path.name.startswith("tiny-"):  # a copy-pasteable command for this very file
        assert f"--config recipes/configs/{path.parent.name}/{path.name}" in text, path.name


def test_required_examples_are_present():
    """The issue's examples: QLoRA, ZeRO-3, FSDP, and a config per recipe for a real model."""
    loaded = {path.name: yaml.safe_load(path.read_text()) for path in ALL_CONFIGS}
    assert any(values.get("load_in_4bit") for values in loaded.values())
    assert any("deepspeed_zero3.yaml" in comments(path) for path in ALL_CONFIGS if "zero3" in path.name)
    assert any("fsdp.yaml" in comments(path) for path in ALL_CONFIGS if "fsdp" in path.name)
    models = {values["model_name_or_path"] for values in loaded.values()}
    for expected in ("HuggingFaceTB/SmolVLM-256M-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct",
                     "Qwen/Qwen2.5-VL-7B-Instruct", "HuggingFaceM4/Idefics3-8B-Llama3", "google/gemma-3-4b-it"):
        assert expected in models, expected
    assert any(model.startswith("google/paligemma2") for model in models)


@pytest.mark.parametrize("task", sorted(RECIPES))
def test_recipe_docstring_has_a_launch_command(task):
    module = recipe_module(task)
    assert f"accelerate launch recipes/{RECIPES[task]}" in module.__doc__
    assert "--config_file accelerate_configs/" in module.__doc__
