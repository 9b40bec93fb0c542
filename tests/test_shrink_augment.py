"""The ``shrink`` length policy and opt-in training augmentation.

Shrink: an over-long sample of a dynamic-resolution family (tiny Qwen2-VL: image tokens grow with the image size)
fits after its images are downscaled, its image tokens are exactly the processor's expansion of the shrunk images,
its labels still audit, and it is counted; the floor is never crossed; a fixed-token family (tiny LLaVA) gets a
clear error after one probe instead of a loop.

Augmentation: a sample's draw depends only on (seed, epoch, record id): same inputs give identical pixels, another
seed or epoch gives others, the batch around it does not matter; evaluation and generation are never augmented;
flips are off by default; paraphrases touch user turns only and the labels still audit.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch
from PIL import Image

from mmft.config.data_args import DataArguments
from mmft.config.model_args import ModelArguments
from mmft.config.training_args import VLMTrainingArguments
from mmft.data.augment import ImageAugmenter, PromptParaphraser
from mmft.data.records import to_canonical
from mmft.testing import tiny_model_path
from mmft.train.collator import NUM_SHRUNK_KEY, VLMCollator
from mmft.train.labels import IGNORE_INDEX
from mmft.train.overlength import OverlengthError
from mmft.workflow import build_collators, build_trainer

IMAGE_PAD = "<|image_pad|>"
END = "<|im_end|>"
BIG = (260, 200)  # the tiny Qwen2-VL caps images at 64x64 pixels: 12 image tokens for this aspect


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    # The same folder as tests/test_lengths_packing.py: one build per session.
    return tiny_model_path("qwen2-vl", tmp_path_factory.getbasetemp() / "fam")


@pytest.fixture(scope="module")
def qwen(qwen_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(qwen_dir)


def _image(seed: int, size) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _record(record_id: str, size=BIG, turns=(("What colour is the shape?", "red circle"),), seed: int = 0) -> dict:
    conversations = []
    for k, (question, answer) in enumerate(turns):
        conversations += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + question},
                          {"from": "gpt", "value": answer}]
    return to_canonical({"id": record_id, "image": _image(seed, size), "conversations": conversations})


def _length(collator, record) -> int:
    return int(collator([record])["attention_mask"].sum())


def _audit(processor, batch, row: int, answers) -> None:
    """The supervised tokens of ``row`` are exactly each answer plus the end-of-turn token; no image token is."""
    ids, labels = batch["input_ids"][row], batch["labels"][row]
    supervised = labels != IGNORE_INDEX
    assert torch.equal(labels[supervised], ids[supervised])
    runs, current = [], []
    for position, flag in enumerate(supervised.tolist()):
        if flag:
            current.append(position)
        elif current:
            runs, current = [*runs, current], []
    runs += [current] if current else []
    decoded = [processor.tokenizer.decode(ids[run].tolist(), skip_special_tokens=False) for run in runs]
    assert decoded == [answer + END for answer in answers], decoded
    assert not supervised[ids == processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)].any()


def _image_tokens(processor, images) -> tuple[int, torch.Tensor]:
    """How many image tokens the processor makes of ``images`` (its own rule), and their grids."""
    grid = processor.image_processor(images=images, return_tensors="pt")["image_grid_thw"]
    return int(grid.prod(-1).sum()) // processor.image_processor.merge_size ** 2, grid


# ---- shrink ----------------------------------------------------------------------------------------------------
def test_shrink_fits_keeps_image_tokens_intact_and_counts(qwen, caplog):
    big, small = _record("big"), _record("small", (40, 32), seed=1)
    full = _length(VLMCollator(qwen), big)
    limit = full - 3
    alone = VLMCollator(qwen)([small])
    collator = VLMCollator(qwen, max_length=limit, overlength_policy="shrink", shrink_min_pixels=32 * 32)
    with caplog.at_level(logging.DEBUG, logger="mmft.train.collator"):
        batch = collator([small, big])
    assert int(batch[NUM_SHRUNK_KEY]) == 1
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert max(lengths) <= limit and lengths[1] < full
    assert "Shrunk the images of record 'big'" in caplog.text
    # The sample that fitted is untouched.
    n = int(alone["attention_mask"].sum())
    assert lengths[0] == n and torch.equal(batch["input_ids"][0, :n], alone["input_ids"][0, :n])

    # The shrunk sample's image tokens are exactly what the processor makes of the shrunk image: none truncated.
    (_, shrunk, _), new_length = collator.shrink_to_fit(big, collator.prepare(big), full)
    assert new_length == lengths[1]
    assert shrunk[0].size != big["images"][0].size and shrunk[0].width * shrunk[0].height >= 32 * 32
    expected, grid = _image_tokens(qwen, shrunk)
    original, _ = _image_tokens(qwen, big["images"])
    assert expected < original
    image_id = qwen.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    assert int((batch["input_ids"][1] == image_id).sum()) == expected
    assert torch.equal(batch["image_grid_thw"][1], grid[0])  # rows: the small record's image, then the big one's
    assert lengths[1] == full - original + expected  # only image tokens went; every text token is still there
    _audit(qwen, batch, 1, ["red circle"])


def test_shrink_never_crosses_the_floor(qwen):
    big = _record("big-floor", turns=(("Describe it.", "noise"), ("And again?", "still noise")))
    full = _length(VLMCollator(qwen), big)
    original, _ = _image_tokens(qwen, big["images"])
    # 40x40 pixels of floor: at best 46x36, which the processor makes 48x32 (6 tokens); only the processor's own
    # minimum (32x32, 4 tokens) would fit `tight`.
    tight = full - original + 5
    floor = 40 * 40
    expected = r"record 'big-floor' .* still \d+ .*floor.*shrink_min_pixels \(now 1600\)"
    with pytest.raises(OverlengthError, match=expected):
        VLMCollator(qwen, max_length=tight, overlength_policy="shrink", shrink_min_pixels=floor)([big])
    # One token more fits, and only just above the floor.
    collator = VLMCollator(qwen, max_length=tight + 1, overlength_policy="shrink", shrink_min_pixels=floor)
    (_, shrunk, _), length = collator.shrink_to_fit(big, collator.prepare(big), full)
    assert length <= tight + 1 and floor <= shrunk[0].width * shrunk[0].height < 2 * floor
    batch = collator([big])
    _audit(qwen, batch, 0, ["noise", "still noise"])
    # A lower floor lets the tight budget fit.
    assert _length(VLMCollator(qwen, max_length=tight, overlength_policy="shrink", shrink_min_pixels=32 * 32),
                   big) <= tight
    # Images already at the floor cannot shrink.
    with pytest.raises(OverlengthError, match="already at or below --shrink_min_pixels"):
        VLMCollator(qwen, max_length=tight, overlength_policy="shrink", shrink_min_pixels=300 * 300)([big])


def test_shrink_finds_the_size_by_arithmetic_and_confirms_it_with_one_processor_call(qwen):
    big = _record("big-arith")
    full = _length(VLMCollator(qwen), big)
    collator = VLMCollator(qwen, max_length=full - 3, overlength_policy="shrink", shrink_min_pixels=32 * 32)
    prepared = collator.prepare(big)
    assert collator._predictable_token_counter().method == "helper"  # Qwen2-VL's count is arithmetic
    calls = []
    process = collator.process
    collator.process = lambda prepared: calls.append(len(prepared)) or process(prepared)
    (_, shrunk, _), length = collator.shrink_to_fit(big, prepared, full)
    assert calls == [1] and length <= full - 3
    assert length == full - _image_tokens(qwen, big["images"])[0] + _image_tokens(qwen, shrunk)[0]
    # A count that is off (here: three tokens low below 64x64 pixels) is caught by the confirming call: the search by
    # processor calls takes over and still fits.
    counter = collator._predictable_token_counter()
    collator._shrink_counter = lambda width, height: counter(width, height) - 3 * (width * height < 64 * 64)
    calls.clear()
    (_, shrunk, _), length = collator.shrink_to_fit(big, prepared, full)
    assert len(calls) > 2 and length <= full - 3


def test_shrink_with_a_fixed_token_family_errors_after_one_probe(tiny_processor):
    big = _record("llava-big", (400, 300))
    full = _length(VLMCollator(tiny_processor), big)
    collator = VLMCollator(tiny_processor, max_length=full - 1, overlength_policy="shrink", shrink_min_pixels=32 * 32)
    calls = []
    process = collator.process
    collator.process = lambda prepared: calls.append(len(prepared)) or process(prepared)
    with pytest.raises(OverlengthError, match=r"record 'llava-big' .*does not depend on the image size.*--max_length"):
        collator([big])
    assert calls == [1, 1]  # the batch, then one probe at the floor: no loop
    text_only = to_canonical({"id": "words", "conversations": [{"from": "human", "value": "word " * 40},
                                                               {"from": "gpt", "value": "ok"}]})
    with pytest.raises(OverlengthError, match="'words' .*no image to shrink"):
        VLMCollator(tiny_processor, max_length=20, overlength_policy="shrink")([text_only])


def test_trainer_counts_shrunk_samples_sets_epochs_and_evaluates_unaugmented(qwen_dir, qwen, tmp_path, caplog):
    records = [_record("big"), _record("small-1", (40, 32), seed=1), _record("small-2", (48, 48), seed=2)]
    limit = _length(VLMCollator(qwen), records[0]) - 3
    data_args = DataArguments(max_length=limit, overlength_policy="shrink", shrink_min_pixels=32 * 32,
                              augment_images=True)
    training_args = VLMTrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=3,
                                         num_train_epochs=2, save_strategy="no", report_to="none", seed=0,
                                         disable_tqdm=True, eval_generation=False)
    trainer = build_trainer(ModelArguments(model_name_or_path=str(qwen_dir), lora_r=4), data_args, training_args,
                            records)
    with caplog.at_level(logging.INFO, logger="mmft.train.trainer"):
        result = trainer.train()
    assert result.metrics["train_shrunk_samples"] == 2  # the big record, once per epoch
    assert "Shrank the images of 2 training samples" in caplog.text
    assert trainer.data_collator.epoch == 1  # set by the trainer as the second epoch began
    eval_collate = trainer.get_eval_dataloader(records).collate_fn
    assert eval_collate.augmenter is None and trainer.data_collator.augmenter is not None
    trainer.evaluate(records)
    assert trainer.num_shrunk == 2  # evaluation-loss batches are not counted as training samples


# ---- image augmentation -----------------------------------------------------------------------------------------
def _pixels(processor, record, seed=0, epoch=0, others=(), **kwargs):
    collator = VLMCollator(processor, augmenter=ImageAugmenter(crop_scale=(0.6, 0.9), color_jitter=0.3), seed=seed,
                           **kwargs)
    collator.set_epoch(epoch)
    batch = collator([*others, record])
    skip = sum(int(g.prod()) for g in batch["image_grid_thw"][: len(others)])  # patches of the other records
    return batch["pixel_values"][skip:]


def test_image_augmentation_depends_only_on_seed_epoch_and_record(qwen):
    record = _record("aug", (64, 48))
    plain = VLMCollator(qwen)([record])["pixel_values"]
    first = _pixels(qwen, record)
    assert torch.equal(first, _pixels(qwen, record))  # same seed, epoch and record: identical
    assert first.shape == plain.shape and not torch.equal(first, plain)  # augmented, same image token count
    assert not torch.equal(first, _pixels(qwen, record, seed=1))
    assert not torch.equal(first, _pixels(qwen, record, epoch=1))
    # Another record id draws differently; the batch around a record does not change its draw.
    assert not torch.equal(first, _pixels(qwen, {**record, "id": "aug-2"}))
    assert torch.equal(first, _pixels(qwen, record, others=[_record("other", (40, 32), seed=3)]))


def test_evaluation_and_generation_are_never_augmented(qwen):
    record = _record("aug-eval", (64, 48))
    augmenter = ImageAugmenter(crop_scale=(0.6, 0.9), color_jitter=0.3)
    paraphraser = PromptParaphraser(("Q: {question} Think.",))
    training = VLMCollator(qwen, augmenter=augmenter, paraphraser=paraphraser)
    evaluation = training.for_evaluation()
    assert evaluation is not training and training.augmenter is augmenter
    plain = VLMCollator(qwen)([record])
    batch = evaluation([record])
    assert torch.equal(batch["pixel_values"], plain["pixel_values"])
    assert torch.equal(batch["input_ids"], plain["input_ids"])
    generate = VLMCollator(qwen, mode="generate", augmenter=augmenter, paraphraser=paraphraser)([record])
    reference = VLMCollator(qwen, mode="generate")([record])
    assert torch.equal(generate["pixel_values"], reference["pixel_values"])
    assert torch.equal(generate["input_ids"], reference["input_ids"])


def test_no_flip_by_default_and_hflip_is_opt_in_with_a_warning(caplog, tmp_path, qwen):
    image = _image(5, (32, 24))
    identity = ImageAugmenter(crop_scale=(1.0, 1.0), color_jitter=0.0)
    assert not identity.hflip and not DataArguments().augment_hflip and not DataArguments().augment_images
    assert all(np.array_equal(np.asarray(identity(image, random.Random(s))), np.asarray(image)) for s in range(20))
    with caplog.at_level(logging.WARNING, logger="mmft.data.augment"):
        flipping = ImageAugmenter(crop_scale=(1.0, 1.0), color_jitter=0.0, hflip=True)
    assert "left and right" in caplog.text
    mirrored = np.asarray(image)[:, ::-1]
    flips = [np.array_equal(np.asarray(flipping(image, random.Random(s))), mirrored) for s in range(20)]
    assert 0 < sum(flips) < 20
    # Through the flags: nothing augments by default; a flip without --augment_images is refused.
    train, generate = build_collators(qwen, DataArguments())
    assert train.augmenter is None and train.paraphraser is None and generate.augmenter is None
    with pytest.raises(ValueError, match="--augment_images"):
        build_collators(qwen, DataArguments(augment_hflip=True))
    with pytest.raises(ValueError, match="augment_crop_scale"):
        build_collators(qwen, DataArguments(augment_images=True, augment_crop_scale=[0.9, 1.2]))


# ---- paraphrases ------------------------------------------------------------------------------------------------
def test_paraphrases_touch_user_turns_only_and_labels_still_audit(qwen, tmp_path):
    path = tmp_path / "paraphrases.txt"
    path.write_text("# templates\nQ: {question}\\nAnswer briefly.\n\n{question} Look closely.\n", encoding="utf-8")
    paraphraser = PromptParaphraser.from_file(path)
    assert paraphraser.templates == ("Q: {question}\nAnswer briefly.", "{question} Look closely.")
    turns = (("What colour is the shape?", "red circle"), ("Where is it?", "on the left side"))
    record = _record("para", (40, 32), turns=turns)
    record["messages"].insert(0, {"role": "system", "content": [{"type": "text", "text": "Be brief."}]})
    seen = set()
    for seed in range(8):
        collator = VLMCollator(qwen, paraphraser=paraphraser, seed=seed)
        batch = collator([record])
        _audit(qwen, batch, 0, ["red circle", "on the left side"])
        text = qwen.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=False)
        assert text.count("Answer briefly.") + text.count("Look closely.") == 2  # each user turn, once
        assert "Be brief." in text and "What colour is the shape?" in text and "Where is it?" in text
        seen.add(text)
        assert torch.equal(batch["input_ids"], collator([record])["input_ids"])  # deterministic
    assert len(seen) > 1  # the templates are drawn, not fixed
    assert record["messages"][1]["content"][-1]["text"] == "What colour is the shape?"  # the record is untouched
    bad = tmp_path / "bad.txt"
    bad.write_text("Answer: {question}\nNo placeholder here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt: template 2 .*\{question\}"):
        build_collators(qwen, DataArguments(prompt_paraphrases=str(bad)))
