"""The family matrix: every tiny family fixture (``mmft.testing``), offline, through the same five checks.

For each family:
1. label audit on a two-turn record (two images where the family takes several): the supervised tokens are exactly
   the assistant answers plus the template's end-of-turn token, and nothing else;
2. one LoRA step changes LoRA weights of the language model and nothing else (vision tower and every base weight
   bit-identical); the projector changes only when asked (``freeze_projector=False``);
3. the loss falls over 20 steps on a fixed batch;
4. the saved adapter, loaded onto a fresh base model, gives identical logits;
5. batched generation with left padding gives the same tokens as one-at-a-time generation;
plus: text-only records mixed with image records in one batch train (or, for a family that cannot take them, are
refused with a clear message naming the record).

Models are random and tiny, so the checks are about plumbing (labels, what trains, what is saved, padding), not
quality; the demo (tests/test_recipe.py) covers learning.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
from PIL import Image

from mmft.config.model_args import ModelArguments
from mmft.data.records import to_canonical
from mmft.families import UnsupportedRecordError, family_for
from mmft.testing import tiny_fixtures, tiny_model_path
from mmft.train.collator import VLMCollator
from mmft.train.generation_eval import is_encoder_decoder
from mmft.train.labels import IGNORE_INDEX
from mmft.train.modeling import component_of, component_paths, prepare_model_for_training

FIXTURES = tiny_fixtures()
NAMES = list(FIXTURES)

ANSWERS = ["red circle", "on the left side"]
QUESTIONS = ["What colour is the shape?", "Where is the shape?"]


# ---- building blocks -------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def family_root(tmp_path_factory):
    return tmp_path_factory.mktemp("family_models")


@functools.cache
def _model_dir(name: str, root) -> str:
    return str(tiny_model_path(name, root))


@pytest.fixture(params=NAMES)
def name(request):
    return request.param


@pytest.fixture
def model_dir(name, family_root):
    return _model_dir(name, family_root)


def _processor(model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_dir)


def _model(model_dir):
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    family_for(model).prepare_model(model)  # as mmft.train.modeling.load_model does
    return model


def _image(seed: int, size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _two_turn_record(family, record_id="two-turn") -> dict:
    several = family.max_images is None or family.max_images >= 2
    conversations = [
        {"from": "human", "value": f"<image>\n{QUESTIONS[0]}"},
        {"from": "gpt", "value": ANSWERS[0]},
        {"from": "human", "value": ("<image>\n" if several else "") + QUESTIONS[1]},
        {"from": "gpt", "value": ANSWERS[1]},
    ]
    images = [_image(1), _image(2, (40, 56))] if several else [_image(1)]
    return to_canonical({"id": record_id, "image": images, "conversations": conversations})


def _qa_record(record_id: str, question: str, answer: str, image: Image.Image | None) -> dict:
    prefix = "<image>\n" if image is not None else ""
    return to_canonical({
        "id": record_id,
        **({"image": image} if image is not None else {}),
        "conversations": [{"from": "human", "value": prefix + question}, {"from": "gpt", "value": answer}],
    })


def _model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) and not k.startswith("mmft_")}


def _supervised_runs(labels: torch.Tensor) -> list[list[int]]:
    runs, current = [], []
    for position, label in enumerate(labels.tolist()):
        if label != IGNORE_INDEX:
            current.append(position)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _lora_args(model_dir, **overrides) -> ModelArguments:
    values = dict(model_name_or_path=model_dir, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    return ModelArguments(**{**values, **overrides})


# ---- 1. label audit --------------------------------------------------------------------------------------------
def test_label_audit_two_turns(name, model_dir):
    processor = _processor(model_dir)
    family = family_for(_model(model_dir))
    assert family.name != "generic", f"{name}: no family module registered for this model type"
    record = _two_turn_record(family)
    batch = VLMCollator(processor, family=family)([record])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    runs = _supervised_runs(labels)
    tokenizer = processor.tokenizer
    end = FIXTURES[name].end_of_turn
    # A prompt-style family folds the first turn into the prompt and supervises the last answer only.
    expected = [answer + end for answer in (ANSWERS[-1:] if family.prompt_style else ANSWERS)]
    supervised = labels != IGNORE_INDEX
    if family.encoder_decoder:  # labels are the decoder's: the whole (right-padded) row is the answer
        assert runs == [list(range(int(supervised.sum())))], runs
        decoded = [tokenizer.decode(labels[run].tolist(), skip_special_tokens=False) for run in runs]
    else:
        decoded = [tokenizer.decode(ids[run].tolist(), skip_special_tokens=False) for run in runs]
        assert torch.equal(labels[supervised], ids[supervised])  # labels are the ids themselves, never shifted
    assert [text.strip() for text in decoded] == expected, decoded
    if family.prompt_style:  # the earlier turn is context: in the (unsupervised) prompt
        prompt = tokenizer.decode(ids[~supervised if not family.encoder_decoder else slice(None)].tolist())
        assert QUESTIONS[0] in prompt and ANSWERS[0] in prompt and QUESTIONS[1] in prompt, prompt
    # Image tokens are expanded (never truncated) and never supervised.
    image_ids = {tokenizer.convert_tokens_to_ids(t) for t in family.image_placeholders(processor)}
    image_positions = torch.isin(ids, torch.tensor(sorted(image_ids)))
    assert image_positions.sum() >= len(record["images"])
    if family.encoder_decoder:  # decoder labels hold no image token at all
        assert not torch.isin(labels, torch.tensor(sorted(image_ids))).any()
    else:
        assert not supervised[image_positions].any()


# ---- 2. one LoRA step ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("train_projector", [False, True], ids=["projector-frozen", "projector-trained"])
def test_one_lora_step_changes_only_language_model_adapters(name, model_dir, train_projector):
    model = _model(model_dir)
    family = family_for(model)
    paths = component_paths(model, family)
    has_projector = bool(family.projector)  # Chameleon has none: its image codes are tokens of the decoder
    assert paths["vision tower"] and paths["language model"] and bool(paths["projector"]) == has_projector, paths
    model = prepare_model_for_training(model, _lora_args(model_dir, freeze_projector=not train_projector))
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    batch = VLMCollator(_processor(model_dir), family=family)([_two_turn_record(family)])
    loss = model(**_model_inputs(batch)).loss
    assert torch.isfinite(loss)
    loss.backward()
    torch.optim.SGD(trainable, lr=0.1).step()

    lora_modules = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and n]
    assert lora_modules
    assert {component_of(n, paths) for n in lora_modules} == {"language model"}, lora_modules
    changed_projector = False
    for n, p in model.named_parameters():
        component = component_of(n, paths)
        changed = not torch.equal(p.detach(), before[n])
        if "lora_B" in n:
            assert changed, f"LoRA weight {n} did not change after a step"
        elif "lora_" in n:
            continue  # lora_A gets no gradient on the first step (lora_B starts at zero)
        elif component == "projector" and train_projector:
            changed_projector |= changed
        else:
            assert not changed, f"{n} ({component}) changed but should be frozen"
    assert changed_projector == (train_projector and has_projector)


# ---- 3 + 4. loss falls; the adapter reloads exactly -------------------------------------------------------------
def _fixed_batch(family, processor):
    records = [_two_turn_record(family)] + [
        _qa_record(f"qa-{i}", QUESTIONS[i % 2], ANSWERS[(i + 1) % 2], _image(10 + i)) for i in range(3)
    ]
    return _model_inputs(VLMCollator(processor, family=family)(records))


def test_loss_falls_and_saved_adapter_reloads_with_identical_logits(name, model_dir, tmp_path):
    from peft import PeftModel

    model = _model(model_dir)
    family = family_for(model)
    batch = _fixed_batch(family, _processor(model_dir))
    model = prepare_model_for_training(model, _lora_args(model_dir))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(20):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, f"{name}: loss did not fall in 20 steps: {losses[0]:.3f} -> {losses[-1]:.3f}"

    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(_model(model_dir), tmp_path / "adapter").eval()
    with torch.no_grad():
        actual = reloaded(**batch).logits
    assert torch.equal(actual, expected)


# ---- 5. batched generation -------------------------------------------------------------------------------------
def _new_tokens(row: torch.Tensor, stop_ids: set[int]) -> list[int]:
    tokens = []
    for token in row.tolist():
        tokens.append(token)
        if token in stop_ids:
            break
    return tokens


def test_batched_left_padded_generation_equals_one_at_a_time(name, model_dir):
    processor = _processor(model_dir)
    model = _model(model_dir)
    family = family_for(model)
    records = [
        _qa_record("short", "Where?", "left", _image(21)),
        _qa_record("long", "What colour is the object in the image? Answer with a single word.", "red", _image(22)),
    ]
    if family.text_only:
        records.append(_qa_record("text-only", "Count the shapes.", "two", None))
    collator = VLMCollator(processor, mode="generate", family=family)
    config = model.generation_config
    stop_ids = set(np.atleast_1d(config.eos_token_id).tolist()) | {config.pad_token_id}
    kwargs = dict(max_new_tokens=6, do_sample=False)

    batch = collator(records)
    assert (batch["attention_mask"][:, -1] == 1).all(), "generation batches must be left-padded"

    def prompt_length(inputs) -> int:  # an encoder-decoder model returns its decoder sequence alone
        return 1 if is_encoder_decoder(model) else inputs["input_ids"].shape[1]  # 1: skip the decoder start

    with torch.no_grad():
        batched = model.generate(**_model_inputs(batch), **kwargs)[:, prompt_length(batch):]
    for i, record in enumerate(records):
        single = collator([record])
        with torch.no_grad():
            alone = model.generate(**_model_inputs(single), **kwargs)[0, prompt_length(single):]
        assert _new_tokens(batched[i], stop_ids) == _new_tokens(alone, stop_ids), record["id"]


# ---- mixed text-only and image records -------------------------------------------------------------------------
def test_text_only_records_mix_with_image_records(name, model_dir):
    processor = _processor(model_dir)
    model = _model(model_dir)
    family = family_for(model)
    records = [_qa_record("with-image", QUESTIONS[0], ANSWERS[0], _image(31)),
               _qa_record("text-only", QUESTIONS[1], ANSWERS[1], None)]
    collator = VLMCollator(processor, family=family)
    if not family.text_only:
        with pytest.raises(UnsupportedRecordError, match=re.escape("'text-only'")):
            collator(records)
        return
    batch = collator(records)
    runs = [_supervised_runs(row) for row in batch["labels"]]
    assert [len(r) for r in runs] == [1, 1]
    loss = model(**_model_inputs(batch)).loss
    assert torch.isfinite(loss)


def test_text_only_batch_still_runs_the_vision_tower_when_asked(name, model_dir):
    """``keep_vision_active`` (on under several processes): a batch with no image gets one unsupervised blank-image
    sample, so every process runs the vision tower each step (ZeRO-3/FSDP all-gathers, DDP reduction); the loss is
    unchanged."""
    processor = _processor(model_dir)
    model = _model(model_dir)
    family = family_for(model)
    records = [_qa_record(f"text-{i}", QUESTIONS[i], ANSWERS[i], None) for i in range(2)]
    if not family.text_only:  # no text-only batch can reach the model, keep-alive or not
        with pytest.raises(UnsupportedRecordError, match=re.escape("'text-0'")):
            VLMCollator(processor, family=family, keep_vision_active=True)(records)
        return
    plain = VLMCollator(processor, family=family)(records)
    kept = VLMCollator(processor, family=family, keep_vision_active=True)(records)
    assert plain["input_ids"].shape[0] == 2 and kept["input_ids"].shape[0] == 3
    assert (kept["labels"][2] == IGNORE_INDEX).all()
    vision = model.get_submodule(component_paths(model, family)["vision tower"])
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if family.vision_tokens_discrete:  # no gradient reaches a VQ tokenizer: check that it runs
        calls = []  # on every submodule: Chameleon calls vqmodel.encode(), not the VQ-VAE's own forward
        for module in vision.modules():
            module.register_forward_hook(lambda module, args, output: calls.append(1))
        model(**_model_inputs(plain))
        assert not calls
        model(**_model_inputs(kept))
        assert calls, "the vision tower did not run on the text-only batch"
        torch.testing.assert_close(model(**_model_inputs(kept)).loss, model(**_model_inputs(plain)).loss,
                                   rtol=1e-4, atol=1e-5)
        return

    def vision_parameters_reached(batch) -> set[str]:
        model.zero_grad(set_to_none=True)
        loss = model(**_model_inputs(batch)).loss
        loss.backward()
        return {n for n, p in vision.named_parameters() if p.grad is not None}

    # The vision parameters an image batch reaches (some families never use a last norm or a pooling head).
    with_image = VLMCollator(processor, family=family)([_qa_record("img", QUESTIONS[0], ANSWERS[0], _image(41))])
    used = vision_parameters_reached(with_image)
    assert used
    assert vision_parameters_reached(plain) == set()
    assert vision_parameters_reached(kept) == used, "the vision tower did not run on the text-only batch"
    loss = model(**_model_inputs(kept)).loss
    with torch.no_grad():
        expected = model(**_model_inputs(plain)).loss
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)
