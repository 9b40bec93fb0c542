"""The collator: labels audited token by token, padding, and the length budget."""

import copy
import logging

import pytest
import torch
from PIL import Image

from mmft.data.records import to_canonical
from mmft.train.collator import NUM_DROPPED_KEY, VLMCollator
from mmft.train.labels import IGNORE_INDEX, LabelAlignmentError
from mmft.train.overlength import OverlengthError

ANSWERS = ["red", "a small square on the left", "three"]


def _image(colour):
    return Image.new("RGB", (40, 30), colour)


def three_turn_record(record_id="audit-1"):
    """A system message, three user/assistant turns and two images (in the first and second user turns)."""
    raw = {
        "id": record_id,
        "image": [_image("red"), _image("blue")],
        "conversations": [
            {"from": "system", "value": "You answer questions about images."},
            {"from": "human", "value": "<image>\nWhat colour is the first image?"},
            {"from": "gpt", "value": ANSWERS[0]},
            {"from": "human", "value": "<image>\nDescribe the second image."},
            {"from": "gpt", "value": ANSWERS[1]},
            {"from": "human", "value": "How many turns so far?"},
            {"from": "gpt", "value": ANSWERS[2]},
        ],
    }
    return to_canonical(raw)


def supervised_runs(labels_row):
    """Contiguous runs of supervised token ids in one row of labels."""
    runs, current = [], []
    for label in labels_row.tolist():
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    if current:
        runs.append(current)
    return runs


def audit(processor, batch, row=0):
    tokenizer = processor.tokenizer
    labels, input_ids = batch["labels"][row], batch["input_ids"][row]
    supervised = labels != IGNORE_INDEX
    # Every label is the token at its own position (the model shifts internally).
    assert torch.equal(labels[supervised], input_ids[supervised])
    runs = [tokenizer.decode(run, skip_special_tokens=False) for run in supervised_runs(labels)]
    assert runs == [f"{answer}<|im_end|>" for answer in ANSWERS]
    # Nothing else: the count equals the answers' tokens plus one end-of-turn token each.
    expected = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in ANSWERS)
    assert int(supervised.sum()) == expected
    # Image tokens and padding are never supervised.
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert not supervised[input_ids == image_id].any()
    assert not supervised[batch["attention_mask"][row] == 0].any()


def test_label_audit_system_three_turns_two_images(tiny_processor):
    batch = VLMCollator(tiny_processor)([three_turn_record()])
    image_id = tiny_processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((batch["input_ids"][0] == image_id).sum()) == 2 * 36  # both images expanded (6x6 patches each)
    assert batch["pixel_values"].shape[0] == 2
    audit(tiny_processor, batch)


def test_label_turn_suffix_adds_the_newline_after_each_end_of_turn(tiny_processor):
    """--label_turn_suffix: the ChatML newline after each <|im_end|> is supervised too (TRL's completion labels), and
    nothing else changes; the default leaves it out (the answer and its end-of-turn token only)."""
    tokenizer = tiny_processor.tokenizer
    record = three_turn_record()
    plain = VLMCollator(tiny_processor)([record])
    suffixed = VLMCollator(tiny_processor, label_turn_suffix=True)([record])
    assert torch.equal(plain["input_ids"], suffixed["input_ids"])
    runs = [tokenizer.decode(run, skip_special_tokens=False) for run in supervised_runs(suffixed["labels"][0])]
    assert runs == [f"{answer}<|im_end|>\n" for answer in ANSWERS]
    added = (suffixed["labels"][0] != IGNORE_INDEX) & (plain["labels"][0] == IGNORE_INDEX)
    assert int(added.sum()) == len(ANSWERS)
    assert tokenizer.decode(suffixed["input_ids"][0][added]) == "\n" * len(ANSWERS)
    assert not ((plain["labels"][0] != IGNORE_INDEX) & (suffixed["labels"][0] == IGNORE_INDEX)).any()


def test_label_audit_with_pad_equal_to_eos(tiny_llava_pad_eos_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_llava_pad_eos_dir)
    tokenizer = processor.tokenizer
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    short = to_canonical({"id": "short", "image": _image("red"),
                          "conversations": [{"from": "human", "value": "<image>\nColour?"},
                                            {"from": "gpt", "value": "red"}]})
    batch = VLMCollator(processor)([three_turn_record(), short])
    audit(processor, batch, row=0)
    # The short row is right-padded with the eos id, yet its own eos label survives and padding is unlabelled.
    row = batch["labels"][1]
    assert batch["attention_mask"][1, -1] == 0 and batch["input_ids"][1, -1] == tokenizer.eos_token_id
    runs = [tokenizer.decode(run, skip_special_tokens=False) for run in supervised_runs(row)]
    assert runs == ["red<|im_end|>"]


def test_right_padding_for_training_left_padding_for_generation(tiny_processor):
    long_record, short_record = three_turn_record("long"), three_turn_record("short")
    short_record["messages"] = short_record["messages"][:3]
    short_record["images"] = short_record["images"][:1]
    train = VLMCollator(tiny_processor, mode="train")([long_record, short_record])
    assert train["attention_mask"][1, 0] == 1 and train["attention_mask"][1, -1] == 0
    generate = VLMCollator(tiny_processor, mode="generate")([long_record, short_record])
    assert "labels" not in generate
    assert generate["attention_mask"][1, 0] == 0 and generate["attention_mask"][1, -1] == 1
    assert generate["ids"] == ["long", "short"]
    # The prompt stops right after the generation prompt of the last assistant turn: the answer is not in it.
    text = tiny_processor.tokenizer.decode(generate["input_ids"][0][generate["attention_mask"][0] == 1])
    assert text.endswith("<|im_start|>assistant\n")
    assert ANSWERS[2] not in text.split("How many turns so far?")[-1]


def test_text_only_and_image_records_share_a_batch(tiny_processor):
    text_only = to_canonical({"id": "t", "conversations": [{"from": "human", "value": "Say hi."},
                                                             {"from": "gpt", "value": "hi"}]})
    batch = VLMCollator(tiny_processor)([text_only, three_turn_record()])
    assert batch["pixel_values"].shape[0] == 2  # only the image record's two images
    runs = [tiny_processor.tokenizer.decode(r, skip_special_tokens=False) for r in supervised_runs(batch["labels"][0])]
    assert runs == ["hi<|im_end|>"]


def test_overlength_error_names_record_and_length(tiny_processor):
    collator = VLMCollator(tiny_processor, max_length=20)
    with pytest.raises(OverlengthError, match=r"record 'too-long-7' is \d+ tokens long.*max_length=20"):
        collator([three_turn_record("too-long-7")])


def test_overlength_drop_counts_and_keeps_the_rest(tiny_processor, caplog):
    short = to_canonical({"id": "fits", "conversations": [{"from": "human", "value": "Hi"},
                                                            {"from": "gpt", "value": "hello"}]})
    collator = VLMCollator(tiny_processor, max_length=40, overlength_policy="drop")
    with caplog.at_level(logging.WARNING, logger="mmft.train.collator"):
        batch = collator([three_turn_record("dropme"), short])
    assert batch["input_ids"].shape[0] == 1
    assert int(batch[NUM_DROPPED_KEY]) == 1
    assert "dropme" in caplog.text
    # Never truncated: the kept sample is whole (its answer and end-of-turn are supervised).
    runs = [tiny_processor.tokenizer.decode(r, skip_special_tokens=False) for r in supervised_runs(batch["labels"][0])]
    assert runs == ["hello<|im_end|>"]
    empty = collator([three_turn_record("a"), three_turn_record("b")])
    assert empty["input_ids"].shape[0] == 0 and int(empty[NUM_DROPPED_KEY]) == 2


def test_template_that_rewrites_earlier_turns_is_refused(tiny_processor):
    processor = copy.deepcopy(tiny_processor)
    # A template that renders the number of messages first: every prefix renders differently.
    processor.chat_template = "{{ messages | length }}" + processor.chat_template
    with pytest.raises(LabelAlignmentError, match="audit-1"):
        VLMCollator(processor)([three_turn_record()])


def test_max_pixels_caps_images_before_the_processor(tiny_processor, monkeypatch):
    seen = []
    original = tiny_processor.__class__.__call__

    def spy(self, *args, images=None, **kwargs):
        seen.extend(image for per_record in images or [] for image in per_record)
        return original(self, *args, images=images, **kwargs)

    monkeypatch.setattr(tiny_processor.__class__, "__call__", spy)
    record = to_canonical({"id": "big", "image": Image.new("RGB", (400, 300), "green"),
                           "conversations": [{"from": "human", "value": "<image>\nColour?"},
                                             {"from": "gpt", "value": "green"}]})
    VLMCollator(tiny_processor, max_pixels=100 * 75)([record])
    assert seen and seen[0].size[0] * seen[0].size[1] <= 100 * 75
    assert abs(seen[0].size[0] / seen[0].size[1] - 4 / 3) < 0.05


def test_processor_without_chat_template_is_refused(tiny_processor):
    processor = copy.deepcopy(tiny_processor)
    processor.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        VLMCollator(processor)
