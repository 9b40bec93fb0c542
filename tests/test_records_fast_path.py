"""``to_canonical``'s fast path for plain LLaVA records must be invisible: same records, same errors, same ids.

The fast path (``mmft.data.record_fast_path._fast_llava``) exists for start-up time (100,000 records: ~37 us each on
the general path, ~7 us on it; benchmarks/RESULTS.md, "Start-up"). It may only ever return what the general path
returns, and must hand every doubtful record over to the general path, which alone raises. These tests compare both
paths on many generated records, valid and invalid, near the fast path's domain.
"""

import gc
import json
import random

import pytest

from mmft.data.record_conversion import _to_canonical_general
from mmft.data.record_errors import RecordError
from mmft.data.record_fast_path import _fast_llava
from mmft.data.records import gc_paused, to_canonical
from mmft.data.sources import load_records

# Building blocks chosen around the fast path's edges: role spellings, placeholder layouts, blank texts, image refs
# of other types, tuples where lists are expected, both 'image' and 'images', references in every shape.
IDS = [None, "", 0, "x", 5]
IMAGE = [None, "", " ", "a.png", 3, {"path": "a"}, {"bytes": None, "path": None}, b"x"]
IMAGES = [None, [], ["a.png"], ["a.png", "b.png"], ["a.png", ""], [None], ("a.png",), "a.png", [" "]]
ROLES = ["human", "gpt", "user", "assistant", "system", "Human", "GPT ", "bot", None, 3]
VALUES = ["<image>\nQ", "Q", "", " ", "<image>", "Q\n<image>", "<image>\n", "<image>\n\nQ", "a<image>b<image>c", "\n",
          None, ["x"], 5, "<image>\n ", "<image>\n<image>\nQ", "A", "<image>Q", " A "]
USER_VALUES = ["<image>\nQ", "Q", "<image>\n\nQ", "a<image>b", "Q\n<image>", "<image>", "<image>\n",
               "<image>\nQ<image>", " ", ""]
REFERENCES = [None, "a", "", " ", ["a", "b"], [], ["a", ""], [1], ("a",), 3]


def _record(rng: random.Random) -> dict:
    raw = {}
    if rng.random() < 0.9:
        raw["id"] = rng.choice(IDS)
    r = rng.random()
    if r < 0.4:
        raw["image"] = rng.choice(IMAGE)
    elif r < 0.7:
        raw["images"] = rng.choice(IMAGES)
    elif r < 0.75:
        raw["image"], raw["images"] = rng.choice(IMAGE), rng.choice(IMAGES)
    n = rng.choice([0, 1, 2, 2, 3, 4, 5])
    turns = []
    if rng.random() < 0.6:  # well-formed-looking LLaVA conversations (the fast path's domain), with variations
        if rng.random() < 0.15:
            turns.append({"from": "system", "value": rng.choice(["S", "", " ", "<image>"])})
        for i in range(max(2, n // 2 * 2) if rng.random() < 0.9 else n):
            user = i % 2 == 0
            answers = ["A", "A", " A ", "<image>A"]
            value = rng.choice(USER_VALUES if user and i == 0 else (["Q", "<image>\nQ", ""] if user else answers))
            turns.append({"from": rng.choice(["human", "user"] if user else ["gpt", "assistant"]), "value": value})
        if rng.random() < 0.7:  # mostly one image per placeholder, as a string or a list of strings
            slots = sum(str(turn["value"]).count("<image>") for turn in turns) or rng.choice([0, 1])
            raw.pop("image", None)
            raw.pop("images", None)
            if slots == 1 and rng.random() < 0.5:
                raw["image"] = "a.png"
            elif slots:
                raw["images"] = [f"{k}.png" for k in range(slots)]
    else:
        for _ in range(n):
            if rng.random() < 0.03:
                turns.append(rng.choice([None, "turn"]))
                continue
            turn = {"from": rng.choice(ROLES), "value": rng.choice(VALUES)}
            if rng.random() < 0.05:
                del turn[rng.choice(["from", "value"])]
            turns.append(turn)
    r = rng.random()
    if r < 0.9:
        raw["conversations"] = turns if rng.random() < 0.97 else tuple(turns)
    elif r < 0.95:
        raw["conversations"] = rng.choice([None, "x", []])
    else:
        raw["messages"] = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
        if rng.random() < 0.5:
            raw["conversations"] = turns
    if rng.random() < 0.2:
        raw["references"] = rng.choice(REFERENCES)
    if rng.random() < 0.1:
        raw["answers"] = rng.choice(REFERENCES)
    if rng.random() < 0.05:
        raw["meta"] = {"x": 1}
    return raw


def _outcome(convert, raw, kwargs):
    try:
        return "ok", convert(raw, **kwargs)
    except RecordError as error:
        return "error", str(error), error.record_id, error.field, error.source


def _general(raw, *, index=None, source=None, allow_text_only=True):
    return _to_canonical_general(raw, index, source, allow_text_only)


def test_fast_path_returns_exactly_what_the_general_path_returns():
    rng = random.Random(0)
    taken = valid = 0
    for case in range(20_000):
        raw = _record(rng)
        kwargs = {"index": rng.choice([None, case]), "source": rng.choice([None, "train.jsonl"]),
                  "allow_text_only": rng.random() < 0.8}
        got, want = _outcome(to_canonical, raw, kwargs), _outcome(_general, raw, kwargs)
        assert got == want, (raw, kwargs)
        valid += want[0] == "ok"
        taken += _fast_llava(raw, kwargs["index"], kwargs["source"], kwargs["allow_text_only"]) is not None
    # The generator must exercise both sides: many valid records through the fast path, many errors.
    assert taken > 2_000 and valid - taken > 500 and 20_000 - valid > 5_000, (taken, valid)


@pytest.mark.parametrize("raw", [
    {"id": "r1", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat shape?"},
                                                     {"from": "gpt", "value": "A square."}]},
    {"id": 7, "images": ["a.png", "b.png"], "conversations": [
        {"from": "system", "value": "Be brief."}, {"from": "human", "value": "<image>\nCompare <image> with it."},
        {"from": "gpt", "value": "Same."}, {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]},
    {"image": "a.png", "conversations": [{"from": "user", "value": "What is it?"},
                                         {"from": "assistant", "value": "A cat."}], "answers": ["cat", "a cat"]},
    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}], "references": "Hello"},
])
def test_common_llava_records_take_the_fast_path(raw):
    fast = _fast_llava(raw, 3, "train.jsonl", True)
    assert fast is not None  # if this fails, start-up on large LLaVA files is ~4x slower again
    assert fast == _general(raw, index=3, source="train.jsonl") == to_canonical(raw, index=3, source="train.jsonl")


def test_gc_paused_restores_the_collector_and_nests():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # only the outermost pause re-enables
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a collector the caller disabled stays disabled
    finally:
        gc.enable()
    with pytest.raises(RecordError), gc_paused():
        to_canonical({"conversations": []})
    assert gc.isenabled()  # also after an error


def test_load_records_leaves_the_collector_enabled_and_still_reports_every_bad_record(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"id": f"r{i}", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nQ"},
                                                                 {"from": "gpt", "value": "A"}]} for i in range(50)]
    rows[3]["conversations"][1]["value"] = " "
    rows[40]["conversations"][0]["from"] = "bot"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(RecordError) as caught:
        load_records(path)
    assert gc.isenabled()
    message = str(caught.value)
    assert message.startswith("2 of 50 records are invalid in train.jsonl")
    assert "record 'r3' in train.jsonl: conversations[1].value: empty assistant answer" in message
    assert "record 'r40' in train.jsonl: conversations[0].from: unknown role 'bot'" in message
    del rows[40], rows[3]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_records(path)
    assert gc.isenabled() and len(dataset) == 48
    assert dataset[0]["messages"][0]["content"] == [{"type": "image"}, {"type": "text", "text": "Q"}]
