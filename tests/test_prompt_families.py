"""Prompt-style and encoder-decoder families (issue #19): folding multi-turn records, what each model's extra
inputs hold, and the records they refuse. The five-point matrix itself is tests/test_families.py."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from PIL import Image

from mmft.data.records import to_canonical
from mmft.families import REGISTRY, fold_to_prompt
from mmft.testing import tiny_fixtures, tiny_model_path
from mmft.train.collator import VLMCollator
from mmft.train.labels import IGNORE_INDEX

TWO_TURNS = [{"from": "human", "value": "<image>\nWhat colour is the shape?"}, {"from": "gpt", "value": "red"},
             {"from": "human", "value": "Where is the shape?"}, {"from": "gpt", "value": "on the left side"}]


def _record(conversations=TWO_TURNS, record_id="r", images=1):
    image = [Image.new("RGB", (40, 40), "white") for _ in range(images)]
    return to_canonical({"id": record_id, "image": image, "conversations": conversations})


def _processor(name, tmp_path_factory):
    from transformers import AutoProcessor

    if name not in tiny_fixtures():
        pytest.skip(f"MMFT_TEST_FAMILIES excludes {name}")
    return AutoProcessor.from_pretrained(tiny_model_path(name, tmp_path_factory.getbasetemp() / "prompt_models"))


def test_fold_puts_earlier_turns_and_images_in_one_prompt_and_keeps_the_last_answer():
    messages = _record()["messages"]
    system = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}]
    folded = fold_to_prompt(system + messages, "test-family")
    assert [m["role"] for m in folded] == ["user", "assistant"]
    assert folded[0]["content"][0] == {"type": "image"}
    assert folded[0]["content"][1]["text"] == "Be brief.\nWhat colour is the shape?\nred\nWhere is the shape?"
    assert folded[1] == messages[-1]
    prompt_only = fold_to_prompt(system + messages[:-1], "test-family")  # a generation prompt folds alike
    assert prompt_only == folded[:1]
    single = messages[:2]
    assert fold_to_prompt(single, "test-family") is single


def test_fold_is_logged_once_per_family(caplog):
    messages = _record()["messages"]
    with caplog.at_level(logging.WARNING, logger="mmft.families"):
        for _ in range(3):
            fold_to_prompt(messages, "log-once-family")
    notices = [r for r in caplog.records if "log-once-family" in r.getMessage()]
    assert len(notices) == 1 and "only the last answer is supervised" in notices[0].getMessage()


@pytest.mark.parametrize("model_type", ["blip-2", "instructblip", "kosmos-2", "florence2", "fuyu"])
def test_prompt_style_families_are_registered(model_type):
    family = REGISTRY.get(model_type)
    assert family is not None, f"no family module registers {model_type}"
    assert family.prompt_style and family.chat_template is not None


def test_instructblip_qformer_reads_the_instruction_never_the_answer(tmp_path_factory):
    processor = _processor("instructblip", tmp_path_factory)
    records = [_record(), _record(TWO_TURNS[:2], "short")]
    batch = VLMCollator(processor)(records)
    qformer = processor.qformer_tokenizer
    texts = [qformer.decode(ids[mask.bool()].tolist()) for ids, mask in
             zip(batch["qformer_input_ids"], batch["qformer_attention_mask"])]
    assert texts == ["What colour is the shape?\nred\nWhere is the shape?", "What colour is the shape?"]
    assert not any("on the left side" in text for text in texts)  # the supervised answer: never seen by the Q-former
    generate = VLMCollator(processor, mode="generate")(records)
    assert torch.equal(generate["qformer_input_ids"], batch["qformer_input_ids"])  # same instruction as in training


@pytest.mark.parametrize("name", ["blip-2", "fuyu"])
def test_a_prompt_style_record_without_image_or_with_two_fails_naming_it(name, tmp_path_factory):
    from mmft.families import UnsupportedRecordError

    processor = _processor(name, tmp_path_factory)
    text_only = to_canonical({"id": "no-image", "conversations": TWO_TURNS[2:]})
    with pytest.raises(UnsupportedRecordError, match="'no-image'"):
        VLMCollator(processor)([_record(), text_only])
    two_images = _record([{"from": "human", "value": "<image><image>Same?"}, {"from": "gpt", "value": "no"}],
                         "two-images", images=2)
    with pytest.raises(UnsupportedRecordError, match="'two-images'"):
        VLMCollator(processor)([two_images])


def test_labels_cover_only_the_last_answer_of_a_folded_record(tmp_path_factory):
    processor = _processor("blip-2", tmp_path_factory)
    batch = VLMCollator(processor)([_record()])
    labels = batch["labels"][0]
    assert processor.tokenizer.decode(labels[labels != IGNORE_INDEX].tolist()) == " on the left side</s>"


def test_florence2_lora_lands_on_encoder_and_decoder_language_layers_only(tmp_path_factory):
    from transformers import AutoModelForImageTextToText

    from mmft.train.modeling import lora_target_regex

    if "florence2" not in tiny_fixtures():
        pytest.skip("MMFT_TEST_FAMILIES excludes florence2")
    model = AutoModelForImageTextToText.from_pretrained(
        tiny_model_path("florence2", tmp_path_factory.getbasetemp() / "prompt_models"))
    pattern = re.compile(lora_target_regex(model, "language"))
    targets = [name for name, _ in model.named_modules() if pattern.fullmatch(name)]
    assert any(".encoder.layers." in n for n in targets) and any(".decoder.layers." in n for n in targets)
    assert any("encoder_attn" in n for n in targets)  # the decoder's cross-attention over the encoder output
    assert all(n.startswith("model.language_model.") for n in targets), targets


def test_encoder_decoder_generation_keeps_the_whole_decoder_sequence():
    from types import SimpleNamespace

    from mmft.train.generation_eval import is_encoder_decoder

    seq2seq = SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=True))
    blip2_t5 = SimpleNamespace(config=SimpleNamespace(
        is_encoder_decoder=False, get_text_config=lambda: SimpleNamespace(is_encoder_decoder=True)))
    causal = SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=False))
    assert is_encoder_decoder(seq2seq) and is_encoder_decoder(blip2_t5) and not is_encoder_decoder(causal)


def test_fuyu_training_rows_are_the_generation_prompt_then_the_answer(tmp_path_factory):
    """Fuyu's processor appends its boundary-of-answer token to every text and pads on the left: a training row is
    the generation prompt (patch stream, ``<s>``, prompt, one ``<0x04>``) followed by the supervised answer and EOS,
    right-padded, with no extra boundary after the EOS."""
    processor = _processor("fuyu", tmp_path_factory)
    tokenizer = processor.tokenizer
    boundary = tokenizer.convert_tokens_to_ids("<0x04>")
    image_ids = torch.tensor([processor.image_token_id, processor.image_newline_id])
    records = [_record(), _record(TWO_TURNS[:2], "short")]
    train = VLMCollator(processor)(records)
    generate = VLMCollator(processor, mode="generate")(records)
    assert (generate["attention_mask"][:, -1] == 1).all() and (generate["input_ids"][:, -1] == boundary).all()
    for row in range(len(records)):
        mask = train["attention_mask"][row].bool()
        n = int(mask.sum())
        assert mask[:n].all(), "training rows must be right-padded"
        ids, labels = train["input_ids"][row, :n], train["labels"][row, :n]
        supervised = (labels != IGNORE_INDEX).nonzero().flatten()
        first = int(supervised[0])
        assert supervised.tolist() == list(range(first, n))  # the answer and its EOS end the row
        assert int(ids[-1]) == tokenizer.eos_token_id and int((ids == boundary).sum()) == 1
        prompt = generate["input_ids"][row][generate["attention_mask"][row].bool()]
        assert torch.equal(ids[:first], prompt)  # trained on exactly the prompt it will generate from
        assert torch.isin(ids, image_ids).sum() > 0 and not torch.isin(ids[first:], image_ids).any()
    answers = [tokenizer.decode(train["labels"][row][train["labels"][row] != IGNORE_INDEX]) for row in range(2)]
    assert answers == [" on the left side|ENDOFTEXT|", " red|ENDOFTEXT|"]
