"""Tests for mmft.train.modeling and mmft.families: where the parts are, where LoRA lands, what trains, and the report.

Uses the tiny LLaVA built offline by ``mmft.testing`` (session fixture ``tiny_llava_dir``): CLIP vision tower,
MLP projector, Llama language model. Its vision tower uses ``q_proj``/``k_proj``/``v_proj`` names too, so a LoRA
target by bare names would wrongly hit it: exactly the case these tests guard.
"""

from __future__ import annotations

import logging
import re
import uuid
from types import SimpleNamespace

import pytest
from torch import nn

from mmft.config.model_args import ModelArguments
from mmft.families import GENERIC, family_for
from mmft.train.modeling import (
    component_paths,
    format_parameter_report,
    lora_target_regex,
    parameter_report,
    prepare_model_for_training,
)

VISION, PROJECTOR, LANGUAGE = "model.vision_tower", "model.multi_modal_projector", "model.language_model"


@pytest.fixture
def model(tiny_llava_dir):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)  # fresh per test: tests mutate it


def _under(name: str, path: str) -> bool:
    name = re.sub(r"^base_model\.model\.", "", name)
    return name == path or name.startswith(path + ".")


def _linears(model, path: str | None = None) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and (path is None or _under(n, path))}


def _matched(model, regex: str) -> set[str]:
    return {n for n, _ in model.named_modules() if n and re.fullmatch(regex, n)}


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# ---- parts -------------------------------------------------------------------------------------------------------
def test_component_paths_of_tiny_llava(model):
    assert component_paths(model) == {
        "vision tower": VISION, "projector": PROJECTOR, "language model": LANGUAGE, "lm head": "lm_head",
    }
    # The generic discovery (used for unknown families) finds the same parts on this layout.
    assert component_paths(model, GENERIC) == component_paths(model)


def test_family_for_tiny_llava_is_llava(model):
    assert model.config.model_type == "llava"
    assert family_for(model).name == "llava"


def test_unknown_model_type_gets_generic_family_and_one_warning(caplog):
    model_type = f"mystery-vlm-{uuid.uuid4().hex[:8]}"
    fake = SimpleNamespace(config=SimpleNamespace(model_type=model_type))
    with caplog.at_level(logging.WARNING, logger="mmft.families"):
        assert family_for(fake) is GENERIC
        assert family_for(fake) is GENERIC
    warnings = [r for r in caplog.records if model_type in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


# ---- LoRA targets ------------------------------------------------------------------------------------------------
def test_language_target_matches_exactly_the_language_model_linears(model):
    regex = lora_target_regex(model, "language")
    expected = _linears(model, LANGUAGE)
    assert len(expected) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    assert _matched(model, regex) == expected
    assert not any(_under(n, VISION) or _under(n, PROJECTOR) or n == "lm_head" for n in _matched(model, regex))
    # The trap: vision tower layers use the same leaf names.
    assert any(n.endswith("self_attn.q_proj") for n in _linears(model, VISION))


def test_language_plus_projector_and_all_linear(model):
    language = _linears(model, LANGUAGE)
    projector = _linears(model, PROJECTOR)
    vision = _linears(model, VISION)
    assert projector and vision
    assert _matched(model, lora_target_regex(model, "language+projector")) == language | projector
    assert _matched(model, lora_target_regex(model, "all-linear")) == language | projector | vision  # not lm_head


def test_custom_regex_passes_through_and_invalid_regex_raises(model):
    custom = r".*language_model.*\.(q_proj|v_proj)"
    assert lora_target_regex(model, custom) == custom
    with pytest.raises(re.error):
        lora_target_regex(model, r"model\.(q_proj")


def test_missing_language_model_is_a_clear_error():
    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(model_type="llava")
            self.proj = nn.Linear(2, 2)

    with pytest.raises(ValueError, match="Cannot find the language model"):
        lora_target_regex(Bare(), "language")


# ---- what trains -------------------------------------------------------------------------------------------------
def test_lora_lands_only_on_the_language_model_and_only_adapters_train(model):
    from peft.tuners.lora import LoraLayer

    language_linears = _linears(model, LANGUAGE)  # before wrapping: PEFT adds lora_A/lora_B linears in place
    peft_model = prepare_model_for_training(model, ModelArguments(use_peft=True, lora_r=4))
    lora_modules = {
        re.sub(r"^base_model\.model\.", "", n) for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)
    }
    assert lora_modules == language_linears
    trainable = _trainable(peft_model)
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert not any(_under(n, VISION) or _under(n, PROJECTOR) for n in trainable)


def test_lora_with_unfrozen_projector_trains_and_saves_it(model):
    peft_model = prepare_model_for_training(model, ModelArguments(use_peft=True, freeze_projector=False))
    assert PROJECTOR in peft_model.peft_config["default"].modules_to_save
    trainable = _trainable(peft_model)
    projector_trainable = {n for n in trainable if _under(n, PROJECTOR)}
    assert {n.rsplit(".", 2)[-2] + "." + n.rsplit(".", 1)[-1] for n in projector_trainable} == {
        "linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"
    }
    assert not any(_under(n, VISION) for n in trainable)
    assert all(".lora_" in n for n in trainable - projector_trainable)


@pytest.mark.parametrize(
    ("kwargs", "vision", "projector"),
    [
        ({}, False, True),  # the defaults of full fine-tuning
        ({"freeze_vision_tower": False}, True, True),
        ({"freeze_projector": True}, False, False),
    ],
)
def test_full_fine_tuning_freezing(model, kwargs, vision, projector):
    for parameter in model.parameters():  # start from the opposite of what is expected, to see the change
        parameter.requires_grad_(False)
    prepared = prepare_model_for_training(model, ModelArguments(use_peft=False, **kwargs))
    assert prepared is model  # no wrapper in full fine-tuning
    for name, parameter in model.named_parameters():
        if _under(name, VISION):
            assert parameter.requires_grad is vision, name
        elif _under(name, PROJECTOR):
            assert parameter.requires_grad is projector, name
        else:
            assert parameter.requires_grad, name  # language model, embeddings and lm_head train


# ---- the report --------------------------------------------------------------------------------------------------
def _expected_counts(model, trainable_only: bool) -> dict[str, int]:
    counts = {"vision tower": 0, "projector": 0, "language model": 0, "other": 0}
    for name, parameter in model.named_parameters():
        if trainable_only and not parameter.requires_grad:
            continue
        part = ("vision tower" if _under(name, VISION) else "projector" if _under(name, PROJECTOR)
                else "language model" if _under(name, LANGUAGE) or _under(name, "lm_head") else "other")
        counts[part] += parameter.numel()
    return counts


@pytest.mark.parametrize("args", [
    ModelArguments(use_peft=False),
    ModelArguments(use_peft=True, freeze_projector=False),
], ids=["full", "lora+projector"])
def test_parameter_report_numbers(model, args):
    prepared = prepare_model_for_training(model, args)
    report = parameter_report(prepared)
    assert sum(c["total"] for c in report.values()) == sum(p.numel() for p in prepared.parameters())
    assert sum(c["trainable"] for c in report.values()) == sum(
        p.numel() for p in prepared.parameters() if p.requires_grad
    )
    assert {k: c["total"] for k, c in report.items()} == _expected_counts(prepared, trainable_only=False)
    assert {k: c["trainable"] for k, c in report.items()} == _expected_counts(prepared, trainable_only=True)
    assert report["vision tower"]["trainable"] == 0
    assert report["projector"]["trainable"] > 0 and report["language model"]["trainable"] > 0


def test_format_parameter_report_lists_each_component(model):
    prepared = prepare_model_for_training(model, ModelArguments(use_peft=False))
    report = parameter_report(prepared)
    lines = format_parameter_report(report).splitlines()
    by_name = {line.split("  ")[0].strip(): line for line in lines[1:]}
    assert set(by_name) == {"vision tower", "projector", "language model", "all"}  # "other" is empty: omitted
    for component in ("vision tower", "projector", "language model"):
        counts = report[component]
        assert f"{counts['total']:,}" in by_name[component]
        assert f"{counts['trainable']:,}" in by_name[component]
    assert by_name["vision tower"].rstrip().endswith("0.00%")
    assert by_name["projector"].rstrip().endswith("100.00%")
    total = sum(p.numel() for p in prepared.parameters())
    assert f"{total:,}" in by_name["all"]


def test_projector_nested_in_vision_tower_is_reported_as_projector():
    """Qwen-VL keeps its merger (the projector) inside `model.visual`: the longer, more specific path wins."""
    from torch import nn

    from mmft.families import GENERIC
    from mmft.train.modeling import parameter_report

    class Visual(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Linear(4, 4)
            self.merger = nn.Linear(4, 2)

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = Visual()
            self.language_model = nn.Linear(2, 2)

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Inner()

    report = parameter_report(Toy(), GENERIC)
    assert report["projector"]["total"] == 4 * 2 + 2
    assert report["vision tower"]["total"] == 4 * 4 + 4
    assert report["language model"]["total"] == 2 * 2 + 2
