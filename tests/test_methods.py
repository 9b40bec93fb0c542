"""Training methods end to end on the tiny LLaVA: DoRA, full fine-tuning, a projector trained with LoRA, activation
checkpointing with a frozen vision tower, and QLoRA's requirements (a clear error at start without CUDA or
bitsandbytes; a real 4-bit run on a CUDA GPU only).

Each run is a few optimizer steps through ``mmft.recipe.finetune`` (the notebook API, which shares
``build_trainer`` with the recipe), then checks what was saved against what was trained: exact reload, weights that
moved, weights that must not have.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from mmft.config.data_args import DataArguments
from mmft.config.model_args import ModelArguments
from mmft.config.training_args import VLMTrainingArguments
from mmft.data.sources import load_records
from mmft.recipe import finetune
from mmft.train.collator import VLMCollator
from mmft.workflow import build_trainer

VISION, PROJECTOR, LANGUAGE = "model.vision_tower", "model.multi_modal_projector", "model.language_model"


def _finetune(model_dir, shapes_dir, out, **kwargs):
    values = dict(model=str(model_dir), train_dataset=str(shapes_dir["train"]), output_dir=str(out), max_steps=3,
                  per_device_train_batch_size=8, max_train_samples=8, learning_rate=5e-3, max_length=256,
                  lora_dropout=0.0, report_to="none", save_strategy="no", disable_tqdm=True, seed=0)
    values.update(kwargs)
    return finetune(**values)


def _inputs(model_dir, shapes_dir, n=4) -> dict:
    """A fixed batch (images and full conversations) as model inputs, without labels."""
    collator = VLMCollator(AutoProcessor.from_pretrained(model_dir))
    batch = collator([load_records(shapes_dir["train"], max_samples=n)[i] for i in range(n)])
    return {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}


@torch.no_grad()
def _logits(model, inputs) -> torch.Tensor:
    model.eval()
    return model(**inputs).logits.float()


def _base(model_dir):
    return AutoModelForImageTextToText.from_pretrained(model_dir)


def _strip(name: str) -> str:
    return name.removeprefix("base_model.model.")


# ---- DoRA ---------------------------------------------------------------------------------------------------------
def test_dora_trains_magnitudes_saves_them_and_reloads_to_identical_logits(tiny_llava_dir, shapes_dir, tmp_path):
    from peft import PeftModel

    out = tmp_path / "dora"
    trained = _finetune(tiny_llava_dir, shapes_dir, out, use_dora=True)["trainer"].model
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True

    saved = load_file(out / "adapter_model.safetensors")
    magnitudes = {k: v for k, v in saved.items() if "lora_magnitude_vector" in k}
    assert magnitudes and all(".language_model." in k for k in saved), sorted(saved)[:4]
    # A magnitude starts as the row norms of its base weight (B is zero at init); training must have moved it.
    base = _base(tiny_llava_dir)
    base_weights = dict(base.named_parameters())
    moved = 0
    for key, magnitude in magnitudes.items():
        layer = _strip(key).split(".lora_magnitude_vector")[0]
        initial = torch.linalg.norm(base_weights[layer + ".weight"], dim=1)
        moved += not torch.allclose(magnitude, initial, atol=1e-6)
    assert moved == len(magnitudes), f"only {moved}/{len(magnitudes)} magnitude vectors changed"

    inputs = _inputs(tiny_llava_dir, shapes_dir)
    expected = _logits(trained, inputs)
    assert not torch.allclose(expected, _logits(base, inputs), atol=1e-4)  # the adapter changes the model
    reloaded = PeftModel.from_pretrained(_base(tiny_llava_dir), out)
    torch.testing.assert_close(_logits(reloaded, inputs), expected, rtol=0, atol=1e-5)


# ---- full fine-tuning ---------------------------------------------------------------------------------------------
def test_full_fine_tuning_saves_a_full_model_that_reloads_with_auto_classes(tiny_llava_dir, shapes_dir, tmp_path):
    out = tmp_path / "full"
    trained = _finetune(tiny_llava_dir, shapes_dir, out, use_peft=False, learning_rate=1e-3)["trainer"].model
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json"} <= files and "adapter_config.json" not in files

    reloaded, info = AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert AutoProcessor.from_pretrained(out).chat_template
    inputs = _inputs(tiny_llava_dir, shapes_dir)
    torch.testing.assert_close(_logits(reloaded, inputs), _logits(trained, inputs), rtol=0, atol=1e-5)

    base = dict(_base(tiny_llava_dir).named_parameters())
    changed = {n for n, p in reloaded.named_parameters() if not torch.equal(p, base[n])}
    vision = [n for n in base if n.startswith(VISION + ".")]
    assert vision and not changed.intersection(vision), sorted(changed.intersection(vision))[:3]  # frozen: bit-equal
    assert any(n.startswith(PROJECTOR + ".") for n in changed)  # trains by default in full fine-tuning
    language = [n for n in base if n.startswith(LANGUAGE + ".layers.")]
    assert set(language) <= changed, sorted(set(language) - changed)[:3]


# ---- a projector trained with LoRA ----------------------------------------------------------------------------
def test_trained_projector_is_saved_with_the_adapter_and_reloads(tiny_llava_dir, shapes_dir, tmp_path):
    from peft import PeftModel

    out = tmp_path / "projector"
    trained = _finetune(tiny_llava_dir, shapes_dir, out, freeze_projector=False)["trainer"].model
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["modules_to_save"] == [PROJECTOR]

    saved = {_strip(k): v for k, v in load_file(out / "adapter_model.safetensors").items()}
    projector = {k: v for k, v in saved.items() if k.startswith(PROJECTOR + ".")}
    base = dict(_base(tiny_llava_dir).named_parameters())
    assert set(projector) == {n for n in base if n.startswith(PROJECTOR + ".")}  # every projector weight saved
    assert all(not torch.equal(v, base[k]) for k, v in projector.items())  # ... as trained, not as loaded

    reloaded = PeftModel.from_pretrained(_base(tiny_llava_dir), out)
    inputs = _inputs(tiny_llava_dir, shapes_dir)
    torch.testing.assert_close(_logits(reloaded, inputs), _logits(trained, inputs), rtol=0, atol=1e-5)


# ---- activation checkpointing ---------------------------------------------------------------------------------
def _checkpointing_run(model_dir, shapes_dir, tmp_path, **checkpointing):
    """Two LoRA steps on one fixed batch; returns (trainer, losses, weights before, vision-output grad flags)."""
    model_args = ModelArguments(model_name_or_path=str(model_dir), lora_r=8, lora_alpha=16, lora_dropout=0.0)
    training_args = VLMTrainingArguments(output_dir=str(tmp_path / "gc"), per_device_train_batch_size=8,
                                         learning_rate=5e-3, max_steps=2, logging_steps=1, save_strategy="no",
                                         report_to="none", seed=0, disable_tqdm=True, **checkpointing)
    train = load_records(shapes_dir["train"], max_samples=8)
    trainer = build_trainer(model_args, DataArguments(max_length=256), training_args, train)
    vision_requires_grad = []
    vision = trainer.model.get_base_model().get_submodule(VISION)
    vision.register_forward_hook(lambda m, i, o: vision_requires_grad.append(o.last_hidden_state.requires_grad))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return trainer, losses, before, vision_requires_grad


def test_gradient_checkpointing_matches_plain_training_and_skips_the_frozen_vision_tower(
        tiny_llava_dir, shapes_dir, tmp_path):
    plain, plain_losses, before, _ = _checkpointing_run(tiny_llava_dir, shapes_dir, tmp_path)
    plain_weights = {n: p.detach() for n, p in plain.model.named_parameters()}
    changed = {n for n, p in plain_weights.items() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n and ".language_model." in n for n in changed), sorted(changed)[:3]

    for checkpointing in ({"gradient_checkpointing": True},  # mmft's default: non-reentrant
                          {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": True}}):
        trainer, losses, before, vision_requires_grad = _checkpointing_run(tiny_llava_dir, shapes_dir, tmp_path,
                                                                           **checkpointing)
        reentrant = checkpointing.get("gradient_checkpointing_kwargs", {}).get("use_reentrant", False)
        assert trainer.args.activation_checkpointing_kwargs == {"use_reentrant": reentrant}
        layers = trainer.model.get_base_model().get_submodule(LANGUAGE).layers
        assert all(layer.gradient_checkpointing for layer in layers)  # it really ran checkpointed
        assert losses == pytest.approx(plain_losses, rel=1e-5), (checkpointing, losses, plain_losses)
        now = {n: p.detach() for n, p in trainer.model.named_parameters()}
        assert {n for n, p in now.items() if not torch.equal(p, before[n])} == changed  # the same LoRA weights move
        for name in changed:
            torch.testing.assert_close(now[name], plain_weights[name], rtol=1e-4, atol=1e-6)
        # The frozen vision tower builds no autograd graph: no stored activations, no backward through it.
        assert vision_requires_grad and not any(vision_requires_grad), checkpointing


def test_gradient_checkpointing_defaults_to_non_reentrant_but_keeps_user_kwargs(tmp_path):
    def args(**kwargs):
        return VLMTrainingArguments(output_dir=str(tmp_path), report_to="none", **kwargs)

    assert args(gradient_checkpointing=True).activation_checkpointing_kwargs == {"use_reentrant": False}
    assert args(activation_checkpointing=True, activation_checkpointing_kwargs={"every_n_layers": 2}
                ).activation_checkpointing_kwargs == {"every_n_layers": 2, "use_reentrant": False}
    assert args(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True}
                ).activation_checkpointing_kwargs == {"use_reentrant": True}
    assert args().activation_checkpointing_kwargs is None  # nothing set when checkpointing is off


def test_gradient_checkpointing_flag_runs_without_transformers_rename_warning(tmp_path):
    if "activation_checkpointing" not in {f.name for f in dataclasses.fields(VLMTrainingArguments)}:
        pytest.skip("this transformers release has only the gradient_checkpointing name: nothing to rename")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = VLMTrainingArguments(output_dir=str(tmp_path), report_to="none", gradient_checkpointing=True,
                                    gradient_checkpointing_kwargs={"every_n_layers": 2})
    assert not [w for w in caught if "gradient_checkpointing" in str(w.message)], [str(w.message) for w in caught]
    assert args.activation_checkpointing is True and args.gradient_checkpointing is True
    assert args.activation_checkpointing_kwargs == {"every_n_layers": 2, "use_reentrant": False}


# ---- QLoRA --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("missing", ["cuda", "bitsandbytes"])
def test_qlora_without_cuda_or_bitsandbytes_fails_at_start_saying_what_to_do(missing, tiny_llava_dir, monkeypatch):
    import transformers

    from mmft.train import modeling

    # Simulate the machine: the other requirement present, this one missing (true on CPU CI for "cuda" anyway).
    monkeypatch.setattr(modeling.torch.cuda, "is_available", lambda: missing != "cuda")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(modeling.importlib.util, "find_spec",
                        lambda name, *a: (None if missing == "bitsandbytes" else object()) if name == "bitsandbytes"
                        else real_find_spec(name, *a))

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was being loaded before the requirements were checked")

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", must_not_load)
    with pytest.raises(RuntimeError) as error:
        modeling.load_model(ModelArguments(model_name_or_path=str(tiny_llava_dir), load_in_4bit=True))
    message = str(error.value)
    assert "--load_in_4bit" in message and "pip install -e '.[qlora]'" in message and "CUDA GPU" in message
    assert ("torch.cuda.is_available() is False" in message) == (missing == "cuda")
    assert ("bitsandbytes package (not installed" in message) == (missing == "bitsandbytes")


def test_qlora_with_full_fine_tuning_is_refused_when_parsed():
    with pytest.raises(ValueError, match="4-bit weights cannot be fine-tuned in full"):
        ModelArguments(model_name_or_path="mmft:tiny-llava", use_peft=False, load_in_4bit=True)


def test_qlora_keeps_vision_tower_projector_and_head_unquantised(tiny_llava_dir):
    """The skip list, matched by transformers' own rule, spares exactly the vision tower, projector and LM head."""
    from transformers import BitsAndBytesConfig
    from transformers.quantizers import quantizers_utils  # a moved helper must fail here, not skip

    from mmft.train.modeling import qlora_load_kwargs
    kwargs = qlora_load_kwargs(ModelArguments(model_name_or_path=str(tiny_llava_dir), load_in_4bit=True),
                               str(tiny_llava_dir))
    config = kwargs["quantization_config"]
    assert isinstance(config, BitsAndBytesConfig) and config.load_in_4bit and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_compute_dtype == torch.bfloat16
    assert kwargs["dtype"] == torch.bfloat16 and kwargs["device_map"] == {"": 0}

    model = _base(tiny_llava_dir)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    quantised = {n for n in linears if quantizers_utils.should_convert_module(n, config.llm_int8_skip_modules)}
    expected = {n for n in linears if n.startswith(LANGUAGE + ".")}
    assert quantised == expected, sorted(quantised ^ expected)[:5]


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_qlora_trains_lora_over_4bit_language_model_on_gpu(tiny_llava_wide_dir, shapes_dir, tmp_path):
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed (pip install -e '.[qlora]')")
    import bitsandbytes as bnb

    out = tmp_path / "qlora"
    results = _finetune(tiny_llava_wide_dir, shapes_dir, out, load_in_4bit=True, bf16=True, max_steps=6)
    model = results["trainer"].model.get_base_model()
    modules = dict(model.named_modules())
    four_bit = {n for n, m in modules.items() if isinstance(m, bnb.nn.Linear4bit)}
    assert four_bit and all(n.startswith(LANGUAGE + ".") for n in four_bit)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for n, m in modules.items()
                   if n.startswith((VISION, PROJECTOR)) or n == "lm_head")
    assert torch.isfinite(torch.tensor(results["train_loss"]))
    saved = load_file(out / "adapter_model.safetensors")
    assert saved and all("lora_" in k and ".language_model." in k for k in saved)
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)  # B starts at zero: it trained
