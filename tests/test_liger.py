"""`--use_liger_kernel`: refused at start, with what to do, when liger-kernel is missing, there is no GPU, or the
model type is one Liger does not patch (transformers would silently train without the kernels). liger-kernel is
never installed here (it brings Triton): availability is monkeypatched and its dispatch table is a fake module."""

import sys
import types
from types import SimpleNamespace

import pytest
from transformers import AyaVisionConfig, LlamaConfig, LlavaConfig, MistralConfig, Qwen2VLConfig

from mmft.train import liger
from mmft.train.liger import LigerUnavailableError, check_liger

ON = SimpleNamespace(use_liger_kernel=True, use_cpu=False)


@pytest.fixture
def fake_liger(monkeypatch):
    """liger-kernel "installed" (a fake package whose table holds llava, llama, qwen2_vl) on a machine "with a GPU"."""
    monkey_patch = types.ModuleType("liger_kernel.transformers.monkey_patch")
    monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN = {name: object() for name in ("llava", "llama", "qwen2_vl")}
    package = types.ModuleType("liger_kernel.transformers")
    package.monkey_patch = monkey_patch
    monkeypatch.setitem(sys.modules, "liger_kernel", types.ModuleType("liger_kernel"))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", package)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", monkey_patch)
    monkeypatch.setattr(liger, "liger_available", lambda: True)
    monkeypatch.setattr(liger, "gpu_available", lambda: True)
    return monkey_patch


def _llava(text_config):
    return SimpleNamespace(config=LlavaConfig(text_config=text_config.to_dict()))


def test_flag_off_checks_nothing(monkeypatch):
    def fail():
        raise AssertionError("checked although --use_liger_kernel is off")

    monkeypatch.setattr(liger, "liger_available", fail)
    monkeypatch.setattr(liger, "gpu_available", fail)
    check_liger(SimpleNamespace(config=AyaVisionConfig()), SimpleNamespace(use_liger_kernel=False, use_cpu=True))


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(liger, "gpu_available", lambda: True)
    monkeypatch.setattr(liger, "liger_available", lambda: False)
    with pytest.raises(LigerUnavailableError, match=r"pip install liger-kernel"):
        check_liger(_llava(LlamaConfig()), ON)


@pytest.mark.skipif(liger.liger_available(), reason="liger-kernel is installed in this environment")
def test_real_availability_probe_refuses_here():
    """Unpatched: in this venv liger-kernel is absent, and transformers' own probe must say so."""
    with pytest.raises(LigerUnavailableError, match="not installed"):
        check_liger(_llava(LlamaConfig()), ON)


def test_no_gpu_or_use_cpu_is_refused(fake_liger, monkeypatch):
    with pytest.raises(LigerUnavailableError, match="--use_cpu is set"):
        check_liger(_llava(LlamaConfig()), SimpleNamespace(use_liger_kernel=True, use_cpu=True))
    monkeypatch.setattr(liger, "gpu_available", lambda: False)
    with pytest.raises(LigerUnavailableError, match="no CUDA GPU.*drop --use_liger_kernel"):
        check_liger(_llava(LlamaConfig()), ON)


def test_model_types_judged_by_the_installed_table(fake_liger):
    # Supported: a LLaVA over a Llama language model, Qwen2-VL (as a model or as a bare config).
    check_liger(_llava(LlamaConfig()), ON)
    check_liger(Qwen2VLConfig(), ON)
    # A type missing from the table: refused, naming it and the supported VLM types (those this liger has).
    with pytest.raises(LigerUnavailableError) as error:
        check_liger(SimpleNamespace(config=AyaVisionConfig()), ON)
    message = str(error.value)
    assert "'aya_vision'" in message and "Drop --use_liger_kernel" in message
    assert "patches: llava, qwen2_vl." in message  # the fake table's VLM types, not the static list
    # A LLaVA whose language model Liger does not know: only the loss would be fused, so it is refused too.
    with pytest.raises(LigerUnavailableError, match="'mistral'"):
        check_liger(_llava(MistralConfig()), ON)
    fake_liger.MODEL_TYPE_TO_APPLY_LIGER_FN["mistral"] = object()
    check_liger(_llava(MistralConfig()), ON)


def test_build_trainer_checks_the_loaded_model(fake_liger, tiny_llava_dir, tmp_path):
    """Wired into build_trainer: the tiny LLaVA (Llama text model) is refused by a table without 'llava'."""
    from mmft.config.data_args import DataArguments
    from mmft.config.model_args import ModelArguments
    from mmft.config.training_args import VLMTrainingArguments
    from mmft.workflow import build_trainer

    del fake_liger.MODEL_TYPE_TO_APPLY_LIGER_FN["llava"]
    args = VLMTrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_liger_kernel=True, metrics=[])
    with pytest.raises(LigerUnavailableError, match="model type 'llava'"):
        build_trainer(ModelArguments(model_name_or_path=str(tiny_llava_dir)), DataArguments(), args)
