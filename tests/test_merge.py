"""``mmft merge``: a trained tiny adapter (LoRA with a trained projector, and DoRA) folded into its base model gives
the adapter model's logits, and the folder stands alone: it reloads with the Auto classes as is, carries the chat
template, generation config and a model card, and no adapter files. Bad inputs stop with a message saying what to do.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

from mmft.commands.cli import main
from mmft.data.sources import load_records
from mmft.errors import USAGE_ERROR_EXIT_CODE
from mmft.hub.merge import MergeError, merge_adapter, merged_model_card
from mmft.recipe import finetune
from mmft.train.collator import VLMCollator

ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"}


def _train_adapter(out, model_dir, shapes_dir, **method):
    """A briefly trained adapter folder, as a LoRA run saves it (processor, chat template, generation config)."""
    finetune(model=str(model_dir), train_dataset=str(shapes_dir["train"]), output_dir=str(out), max_steps=3,
             per_device_train_batch_size=8, max_train_samples=8, learning_rate=5e-3, max_length=256,
             lora_dropout=0.0, report_to="none", save_strategy="no", disable_tqdm=True, seed=0, **method)
    return out


@pytest.fixture(scope="module")
def lora_adapter(tiny_llava_dir, shapes_dir, tmp_path_factory):
    """LoRA on the language model plus a fully trained projector (modules_to_save)."""
    return _train_adapter(tmp_path_factory.mktemp("adapters") / "lora-projector", tiny_llava_dir, shapes_dir,
                          freeze_projector=False)


@pytest.fixture(scope="module")
def dora_adapter(tiny_llava_dir, shapes_dir, tmp_path_factory):
    return _train_adapter(tmp_path_factory.mktemp("adapters") / "dora", tiny_llava_dir, shapes_dir, use_dora=True)


@pytest.fixture(params=["lora_adapter", "dora_adapter"])
def adapter(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def inputs(tiny_llava_dir, shapes_dir):
    collator = VLMCollator(AutoProcessor.from_pretrained(tiny_llava_dir))
    batch = collator([load_records(shapes_dir["train"], max_samples=4)[i] for i in range(4)])
    return {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}


@torch.no_grad()
def _logits(model, inputs):
    model.eval()
    return model(**inputs).logits.float()


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_merged_model_gives_the_adapter_models_logits_and_stands_alone(adapter, inputs, tiny_llava_dir, tmp_path):
    from peft import PeftModel

    messages = []
    out = merge_adapter(adapter, tmp_path / "merged", dtype="fp32", log=messages.append)

    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "README.md"} <= files
    assert not files & ADAPTER_FILES, files & ADAPTER_FILES
    assert not any(p.name.startswith(".merged.merging-") for p in out.parent.iterdir())  # temporary folder gone

    merged, info = AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with safe_open(out / "model.safetensors", "pt") as weights:
        assert not any("lora_" in key or "modules_to_save" in key for key in weights.keys())

    base = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    base_logits = _logits(base, inputs)
    adapter_logits = _logits(PeftModel.from_pretrained(base, adapter), inputs)
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-4)  # the adapter matters, so the check can fail
    torch.testing.assert_close(_logits(merged, inputs), adapter_logits, rtol=1e-5, atol=1e-5)

    processor = AutoProcessor.from_pretrained(out)
    assert processor.chat_template and processor.chat_template == AutoProcessor.from_pretrained(adapter).chat_template
    assert GenerationConfig.from_pretrained(out).to_dict() == GenerationConfig.from_pretrained(adapter).to_dict()

    card = (out / "README.md").read_text()
    metadata = _front_matter(card)
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-text-to-text"
    adapter_tags = _front_matter((adapter / "README.md").read_text())["tags"]
    assert {"mmft", "merged-adapter", *adapter_tags} <= set(metadata["tags"])
    assert "base_model" not in metadata  # a local base is named in the text only, never by its path
    assert str(tiny_llava_dir) not in card and tiny_llava_dir.name in card and adapter.name in card
    assert ("DoRA" in card) == ("dora" in adapter.name)
    assert [m.split()[0] for m in messages] == ["Loading", "Applying", "Merging", "Writing", "Writing", "Done:"]


def test_cli_merges_with_base_override_and_dtype(lora_adapter, tiny_llava_dir, tmp_path, capsys):
    moved = tmp_path / "adapter"
    shutil.copytree(lora_adapter, moved)
    config_path = moved / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone" / "base")  # trained elsewhere: base not here
    config_path.write_text(json.dumps(config))

    with pytest.raises(SystemExit) as exit_info:
        main(["merge", str(moved), str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert exit_info.value.code == USAGE_ERROR_EXIT_CODE and "was not found" in error and "--base" in error
    assert not (tmp_path / "out").exists()

    main(["merge", str(moved), str(tmp_path / "out"), "--base", str(tiny_llava_dir), "--dtype", "bf16"])
    assert "Done:" in capsys.readouterr().out
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "out", dtype="auto")
    assert merged.dtype == torch.bfloat16
    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as weights:
        assert {weights.get_slice(key).get_dtype() for key in weights.keys()} == {"BF16"}


def test_card_names_a_hub_base_in_metadata_and_never_a_local_path(tmp_path):
    config = {"r": 8, "lora_alpha": 16, "use_dora": False, "modules_to_save": None}
    hub = _front_matter(merged_model_card("m", "llava-hf/llava-1.5-7b-hf", tmp_path, config, "bfloat16"))
    assert hub["base_model"] == "llava-hf/llava-1.5-7b-hf"
    local = merged_model_card("m", "/home/someone/models/my-llava", tmp_path, config, "bfloat16")
    assert "base_model" not in _front_matter(local) and "/home/someone" not in local and "my-llava" in local


# ---- errors -------------------------------------------------------------------------------------------------------
def _fake_adapter(folder, **config):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **config}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize(("case", "expected"), [
    ("missing", "does not exist"),
    ("full_model", "full model already"),
    ("empty", "is not an adapter folder"),
    ("pickle_only", "pickle-based adapter_model.bin"),
    ("not_lora", "LoRA and DoRA adapters only"),
    ("no_base", "names no base model"),
    ("unknown_builtin", "Unknown built-in model"),
    ("output_not_empty", "already exists and is not empty"),
    ("output_is_adapter", "OUT_DIR is the adapter folder"),
])
def test_bad_input_stops_with_a_clear_message(case, expected, tmp_path, capsys):
    adapter, out = tmp_path / "adapter", tmp_path / "out"
    if case == "full_model":
        adapter.mkdir()
        (adapter / "config.json").write_text("{}")
    elif case == "empty":
        adapter.mkdir()
    elif case == "pickle_only":
        _fake_adapter(adapter, base_model_name_or_path="x")
        (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    elif case == "not_lora":
        _fake_adapter(adapter, peft_type="PREFIX_TUNING", base_model_name_or_path="x")
    elif case == "no_base":
        _fake_adapter(adapter, base_model_name_or_path=None)
    elif case == "unknown_builtin":
        _fake_adapter(adapter, base_model_name_or_path="mmft:tiny-nonexistent")
    elif case == "output_not_empty":
        _fake_adapter(adapter, base_model_name_or_path="x")
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "output_is_adapter":
        _fake_adapter(adapter, base_model_name_or_path="x")
        out = adapter
    with pytest.raises(MergeError, match=expected):
        merge_adapter(adapter, out, log=lambda message: None)
    with pytest.raises(SystemExit) as exit_info:  # the command says the same, in one line, without a traceback
        main(["merge", str(adapter), str(out)])
    error = capsys.readouterr().err
    assert exit_info.value.code == USAGE_ERROR_EXIT_CODE and error.startswith("mmft merge: error: ")
    assert re.search(expected, error) and error.count("\n") == 1, error
    if case == "output_not_empty":
        assert (out / "keep.txt").read_text() == "mine"
