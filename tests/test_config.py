"""Tests for mmft.config: the three argument dataclasses, ``--config file.yaml`` defaults and CLI precedence."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from mmft.config.data_args import DataArguments
from mmft.config.model_args import ModelArguments
from mmft.config.parsing import parse_args
from mmft.config.training_args import VLMTrainingArguments

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "recipes" / "configs" / "vqa" / "tiny-llava_shapes_full.yaml"
DEFAULT_LR = VLMTrainingArguments.__dataclass_fields__["learning_rate"].default


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def run_yaml(tmp_path):
    # "1e-3" is a *string* to YAML 1.1 (no dot): it must still arrive as a float.
    return _yaml(tmp_path / "run.yaml", (
        "model_name_or_path: some/model\n"
        "lora_r: 8\n"
        "use_peft: false\n"
        "dataset_name: my-data\n"
        "max_length: 512\n"
        f"output_dir: {tmp_path / 'out'}\n"
        "learning_rate: 1e-3\n"
        "num_train_epochs: 2\n"
        "metrics: [anls]\n"
    ))


def test_parse_args_returns_the_three_dataclasses_with_defaults():
    model_args, data_args, training_args = parse_args([])
    assert type(model_args) is ModelArguments
    assert type(data_args) is DataArguments
    assert type(training_args) is VLMTrainingArguments
    assert model_args.use_peft is True and model_args.lora_target == "language"
    assert data_args.dataset_name is None
    assert training_args.metrics is None  # resolved at build time: the data card's, else DEFAULT_METRICS
    assert training_args.remove_unused_columns is False  # the collator needs the whole record


def test_cli_flags_are_parsed_into_the_right_dataclass():
    model_args, data_args, training_args = parse_args([
        "--model_name_or_path", "m", "--lora_r", "4", "--use_peft", "false",
        "--dataset_name", "d", "--max_pixels", "1000",
        "--learning_rate", "2e-4", "--metrics", "anls", "exact_match",
    ])
    assert (model_args.model_name_or_path, model_args.lora_r, model_args.use_peft) == ("m", 4, False)
    assert (data_args.dataset_name, data_args.max_pixels) == ("d", 1000)
    assert training_args.learning_rate == pytest.approx(2e-4)
    assert training_args.metrics == ["anls", "exact_match"]


@pytest.mark.parametrize("form", ["separate", "equals"])
def test_yaml_supplies_defaults_and_cli_flags_win(run_yaml, form):
    config = ["--config", str(run_yaml)] if form == "separate" else [f"--config={run_yaml}"]
    model_args, data_args, training_args = parse_args(
        config + ["--learning_rate", "5e-4", "--use_peft", "true", "--metrics", "exact_match"]
    )
    # Flags win over the file ...
    assert training_args.learning_rate == pytest.approx(5e-4)
    assert model_args.use_peft is True
    assert training_args.metrics == ["exact_match"]
    # ... and what only the file says is kept, with the right types.
    assert model_args.model_name_or_path == "some/model"
    assert model_args.lora_r == 8
    assert data_args.dataset_name == "my-data"
    assert data_args.max_length == 512
    assert training_args.num_train_epochs == 2
    assert training_args.output_dir == str(run_yaml.parent / "out")


def test_yaml_values_alone(run_yaml):
    model_args, _, training_args = parse_args(["--config", str(run_yaml)])
    assert isinstance(training_args.learning_rate, float)
    assert training_args.learning_rate == pytest.approx(1e-3)
    assert model_args.use_peft is False
    assert training_args.metrics == ["anls"]


def test_yaml_scalar_for_a_list_argument_becomes_a_list(tmp_path):
    path = _yaml(tmp_path / "one_metric.yaml", "metrics: vqa_accuracy\n")
    _, _, training_args = parse_args(["--config", str(path)])
    assert training_args.metrics == ["vqa_accuracy"]  # not the string, which would be iterated by character


def test_unknown_yaml_key_is_named(tmp_path):
    path = _yaml(tmp_path / "typo.yaml", "learning_rate: 1.0e-4\nlearnig_rate: 1.0e-3\nlora_rank: 8\n")
    with pytest.raises(ValueError) as info:
        parse_args(["--config", str(path)])
    message = str(info.value)
    assert "learnig_rate" in message and "lora_rank" in message
    assert "typo.yaml" in message
    assert "learning_rate," not in message  # known keys are not reported


def test_missing_config_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        parse_args(["--config", str(missing)])


def test_config_flag_needs_a_path_and_file_must_be_a_mapping(tmp_path):
    with pytest.raises(ValueError, match="--config needs a path"):
        parse_args(["--lora_r", "4", "--config"])
    path = _yaml(tmp_path / "list.yaml", "- learning_rate\n- 1.0e-3\n")
    with pytest.raises(ValueError, match="mapping"):
        parse_args(["--config", str(path)])


def test_default_config_only_when_argv_names_no_config_model_or_dataset(tmp_path, run_yaml):
    other = _yaml(tmp_path / "other.yaml", "lora_r: 2\n")

    model_args, data_args, training_args = parse_args([], default_config=run_yaml)
    assert (model_args.model_name_or_path, data_args.dataset_name) == ("some/model", "my-data")

    # Other flags still combine with the default config (and override it).
    model_args, _, training_args = parse_args(["--learning_rate", "3e-4"], default_config=run_yaml)
    assert model_args.lora_r == 8 and training_args.learning_rate == pytest.approx(3e-4)

    for argv in (["--model_name_or_path", "mine"], ["--dataset_name=mine"]):
        model_args, data_args, training_args = parse_args(argv, default_config=run_yaml)
        assert model_args.lora_r == 16, argv  # the dataclass default, not the default config's 8
        assert training_args.learning_rate == pytest.approx(DEFAULT_LR), argv

    model_args, data_args, _ = parse_args(["--config", str(other)], default_config=run_yaml)
    assert model_args.lora_r == 2
    assert model_args.model_name_or_path is None and data_args.dataset_name is None


def _mmft_fields():
    own_training = set(VLMTrainingArguments.__annotations__)  # fields mmft defines or redefines
    assert {"metrics", "eval_generation", "remove_unused_columns"} <= own_training
    return [
        *((ModelArguments, f) for f in fields(ModelArguments)),
        *((DataArguments, f) for f in fields(DataArguments)),
        *((VLMTrainingArguments, f) for f in fields(VLMTrainingArguments) if f.name in own_training),
    ]


def test_every_mmft_field_has_help():
    missing = [
        f"{cls.__name__}.{f.name}" for cls, f in _mmft_fields()
        if not isinstance(f.metadata.get("help"), str) or not f.metadata["help"].strip()
    ]
    assert missing == []
    assert len(_mmft_fields()) > 30


def test_help_prints_every_flag(capsys):
    # argparse %-formats help texts: a plain "10%," in one of them made `recipes/vqa.py --help` crash.
    assert any("%" in f.metadata["help"] for _, f in _mmft_fields())  # the case this guards is present
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for _, f in _mmft_fields():
        assert f"--{f.name}" in out, f.name
    assert "at least ~10% fewer tokens" in " ".join(out.split())  # printed as written, not doubled


def test_demo_yaml_parses_and_every_key_is_a_known_argument():
    values = yaml.safe_load(DEMO_CONFIG.read_text())
    known = {f.name for cls in (ModelArguments, DataArguments, VLMTrainingArguments) for f in fields(cls) if f.init}
    assert set(values) - known == set()

    model_args, data_args, training_args = parse_args(["--config", str(DEMO_CONFIG)])
    parsed = {**vars(model_args), **vars(data_args)}
    for key, value in values.items():
        if key in parsed:
            assert parsed[key] == value, key
    assert model_args.model_name_or_path == "mmft:tiny-llava"
    assert model_args.use_peft is False
    assert data_args.dataset_name == "shapes"
    assert training_args.learning_rate == pytest.approx(values["learning_rate"])
    assert training_args.num_train_epochs == values["num_train_epochs"]
    assert training_args.per_device_train_batch_size == values["per_device_train_batch_size"]
    assert training_args.metrics == values["metrics"]
    assert training_args.eval_before_train is True
