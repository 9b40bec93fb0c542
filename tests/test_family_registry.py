"""The family registry and its hooks: lookup, start-time record checks, chat-template fallback, collator hooks,
and the built-in tiny model names. The per-family behaviour matrix is tests/test_families.py."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest

from mmft.data.record_datasets import RecordDataset
from mmft.families import GENERIC, REGISTRY, Family, UnsupportedRecordError, family_for_processor
from mmft.testing import resolve_builtin_model, tiny_fixtures
from mmft.train.collator import VLMCollator
from mmft.workflow import check_records_fit_family


def _record(record_id, n_images):
    value = "<image>" * n_images + "What shape is this?"
    return {"id": record_id, "image": [f"{i}.png" for i in range(n_images)],
            "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": "circle"}]}


def test_processor_class_finds_its_family(tiny_processor):
    assert family_for_processor(tiny_processor).name == "llava"
    assert family_for_processor(object()) is GENERIC


def test_every_fixture_family_has_a_family_module():
    registered = {family.name for family in REGISTRY.values()}
    assert set(tiny_fixtures()) <= registered


def test_records_a_family_cannot_take_fail_at_start_naming_them():
    dataset = RecordDataset([_record("ok", 1), _record("text-only-1", 0), _record("two-images", 2),
                             _record("text-only-2", 0)], source="train.jsonl")
    single_image_only = Family(name="one-image", max_images=1, text_only=False)
    with pytest.raises(UnsupportedRecordError) as error:
        check_records_fit_family(dataset, single_image_only)
    message = str(error.value)
    assert "3 record(s) of train.jsonl" in message
    for record_id in ("'text-only-1'", "'two-images'", "'text-only-2'"):
        assert record_id in message
    assert "'ok'" not in message
    check_records_fit_family(dataset, GENERIC)  # the generic family takes anything


def test_missing_chat_template_uses_the_family_fallback_or_fails_clearly(tiny_processor):
    processor = copy.deepcopy(tiny_processor)
    template = processor.chat_template
    processor.chat_template = None
    with pytest.raises(ValueError, match=r"\(no-template family\) has no chat template"):
        VLMCollator(processor, family=Family(name="no-template"))
    collator = VLMCollator(processor, family=Family(name="with-fallback", chat_template=template))
    assert collator.processor.chat_template == template


@dataclass(frozen=True)
class _Marking(Family):
    def processor_kwargs(self, mode):
        return {"pad_to_multiple_of": 32}

    def finalize_batch(self, batch, mode):
        batch["marked_in_" + mode] = True
        return batch


def test_collator_calls_the_family_hooks(tiny_processor):
    from PIL import Image

    from mmft.data.records import to_canonical

    conversations = [{"from": "human", "value": "<image>What?"}, {"from": "gpt", "value": "red"}]
    record = to_canonical({"id": "r", "image": Image.new("RGB", (48, 48)), "conversations": conversations})
    family = _Marking(name="marking")
    train = VLMCollator(tiny_processor, family=family)([record])
    assert train["marked_in_train"] and train["input_ids"].shape[1] % 32 == 0
    assert VLMCollator(tiny_processor, mode="generate", family=family)([record])["marked_in_generate"]


def test_builtin_names_cover_every_fixture_and_unknown_names_list_them():
    names = {f"mmft:tiny-{name}" for name in tiny_fixtures()}
    with pytest.raises(ValueError) as error:
        resolve_builtin_model("mmft:tiny-nonexistent")
    for name in names:
        assert name in str(error.value)
    assert resolve_builtin_model("org/model") == "org/model"


def test_test_families_env_var_restricts_the_fixtures(monkeypatch):
    monkeypatch.setenv("MMFT_TEST_FAMILIES", "llava")
    assert list(tiny_fixtures()) == ["llava"]


def test_generation_stops_on_every_configured_stop_token(tiny_processor):
    from types import SimpleNamespace

    from mmft.train.generation_eval import stop_token_ids

    tokenizer = tiny_processor.tokenizer
    several = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[5, 7]))
    assert stop_token_ids(several, tokenizer) == [5, 7, tokenizer.eos_token_id]
    one = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=tokenizer.eos_token_id))
    assert stop_token_ids(one, tokenizer) == [tokenizer.eos_token_id]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_llama4_pixels_follow_the_vision_tower_dtype(dtype):
    """Llama4ImageProcessor always returns bfloat16 pixels; a model loaded by mmft in float32 (the CPU default) runs
    them ("expected scalar type Float but found BFloat16" without the family's cast), and a bfloat16 one too."""
    import torch
    from PIL import Image

    from mmft.config.model_args import ModelArguments
    from mmft.data.records import to_canonical
    from mmft.testing import tiny_model_path
    from mmft.train.modeling import load_model, load_processor

    if "llama4" not in tiny_fixtures():
        pytest.skip("MMFT_TEST_FAMILIES leaves out llama4")
    args = ModelArguments(model_name_or_path=str(tiny_model_path("llama4")), dtype=dtype)
    model, processor = load_model(args), load_processor(args)
    conversations = [{"from": "human", "value": "<image>What?"}, {"from": "gpt", "value": "red"}]
    record = to_canonical({"id": "r", "image": Image.new("RGB", (64, 48), "red"), "conversations": conversations})
    batch = VLMCollator(processor)([record])
    assert batch["pixel_values"].dtype == torch.bfloat16  # the processor's own choice, left as it is
    with torch.no_grad():
        output = model(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
    assert output.logits.dtype == getattr(torch, dtype) and torch.isfinite(output.loss)
