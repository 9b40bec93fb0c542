"""Tests for data cards (mmft.data.cards), card / Hub-id / local loading and streaming (mmft.data.sources, finetune).

Offline: every card is exercised on a local Parquet file built with exactly the card's features (Image columns hold
small PNG bytes), served through a monkeypatched ``datasets.load_dataset`` that checks the Hub id, config, split,
data files and revision the card asks for, then reads the local file with the real ``load_dataset``.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import datasets
import PIL.Image
import pytest

from mmft.config.data_args import DataArguments
from mmft.config.model_args import ModelArguments
from mmft.config.training_args import VLMTrainingArguments
from mmft.data import cards
from mmft.data.card_errors import CardError
from mmft.data.card_schema import parse_card
from mmft.data.cards import find_card, list_cards, metrics_for
from mmft.data.column_detection import detect_mapping
from mmft.data.columns import ColumnMapping
from mmft.data.record_datasets import RecordDataset, RecordIterableDataset
from mmft.data.record_errors import RecordError
from mmft.data.source_errors import SourceError
from mmft.data.sources import load_records
from mmft.errors import UsageError
from mmft.metrics import available_metrics
from mmft.workflow import build_trainer, load_datasets


def _png(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (6, 6), colour).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()
CARDS = [card for card in list_cards() if not card.builtin]


@pytest.fixture(autouse=True)
def _local_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


# ---- synthetic rows with a card's exact schema ---------------------------------------------------------------------
def _filler(feature, i: int):
    """A value of ``feature``'s type (the columns a card does not map)."""
    if isinstance(feature, datasets.Image):
        return {"bytes": PNG, "path": None}
    if isinstance(feature, datasets.ClassLabel):
        return 0
    if isinstance(feature, datasets.Value):
        if feature.dtype == "string":
            return f"x{i}"
        if feature.dtype.startswith(("int", "uint")):
            return i
        if feature.dtype.startswith("float"):
            return 0.5
        if feature.dtype == "bool":
            return False
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        return [_filler(feature.feature, i)]
    if isinstance(feature, dict):
        return {key: _filler(value, i) for key, value in feature.items()}
    raise AssertionError(f"no filler for {feature!r}")


ANSWERS = ["cat", "dog", "cat"]  # most common: "cat"; all three are the references
CAPTIONS = ["a cat on a mat", "a cat"]
OPTIONS = ["red", "green", "blue"]


def _mapped_value(card, role: str, feature, i: int):
    """A meaningful value for a mapped column, shaped by its feature type."""
    if role == "question":
        return f"What is in picture {i}?"
    if role == "answers":
        if isinstance(feature, datasets.Value):
            return ANSWERS[0]
        inner = feature.feature
        if isinstance(inner, dict):
            return [{**_filler(inner, i), "answer": answer} for answer in ANSWERS]
        return list(ANSWERS)
    if role == "answer":
        if card.format == "multiple_choice":
            return 1
        return "cat"
    if role == "options":
        return list(OPTIONS)
    if role == "captions":
        return list(CAPTIONS)
    if role == "conversations":
        return [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A cat."}]
    if role == "messages":
        entry = _filler(feature.feature["content"].feature, i)
        images = [{**{key: None for key in entry}, "type": "image", "index": k} for k in range(2)]  # 2 images
        text = {**{key: None for key in entry}, "type": "text"}
        return [{"role": "user", "content": [*images, {**text, "text": "What is this?"}]},
                {"role": "assistant", "content": [{**text, "text": "A cat."}]}]
    if role == "texts":
        return [{**_filler(feature.feature, i), "user": "What is this?", "assistant": "A cat."}]
    if role == "image":
        if isinstance(feature, datasets.Image):
            return None if i == 1 else {"bytes": PNG, "path": None}  # row 1: a text-only row
        if isinstance(feature, (datasets.List, datasets.LargeList)):
            return [{"bytes": PNG, "path": None}, {"bytes": _png((0, 0, 200)), "path": None}]
        return f"img{i}.png"  # a path (LLaVA-Instruct: COCO file names)
    return _filler(feature, i)


def _rows(card, n: int = 3) -> dict:
    features = card.datasets_features()
    roles = {}
    for role, column in card.columns.items():
        if not (role == "image" and "{" in str(column)):
            roles[column] = role
    return {name: [_mapped_value(card, roles[name], feature, i) if name in roles else _filler(feature, i)
                   for i in range(n)]
            for name, feature in features.items()}


def _expected_images(card, features, i: int) -> int:
    column = card.columns.get("image")
    if column is None or "{" in column:
        return 1 if column else 0
    feature = features[column]
    if isinstance(feature, datasets.Image):
        return 0 if i == 1 else 1
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        return 2
    return 1


def _serve(monkeypatch, folder: Path, calls: list):
    """A load_dataset that records the call and reads ``folder/<split>.parquet`` with the real loader."""
    real = datasets.load_dataset

    def fake(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        split = kwargs["split"]
        return real("parquet", data_files={split: str(folder / f"{split}.parquet")}, split=split,
                    streaming=kwargs.get("streaming", False))

    monkeypatch.setattr(datasets, "load_dataset", fake)


def _text(message) -> str:
    return "".join(entry["text"] for entry in message["content"] if entry["type"] == "text")


SCHEMA_CARDS = [card for card in CARDS if card.task != "zero_shot"]  # zero_shot cards: their own test below


@pytest.mark.parametrize("card", SCHEMA_CARDS, ids=[card.name for card in SCHEMA_CARDS])
def test_every_card_loads_a_dataset_with_its_schema(card, tmp_path, monkeypatch):
    features = card.datasets_features()
    assert features is not None, f"{card.name}: a card needs its features block"
    split = card.train_split or next(iter(card.splits))
    folder = tmp_path / "hub"
    folder.mkdir()
    datasets.Dataset.from_dict(_rows(card), features=features).to_parquet(str(folder / f"{split}.parquet"))
    calls = []
    _serve(monkeypatch, folder, calls)
    config = card.configs[0] if card.configs else None

    records = load_records(card.name, split=split, config=config)

    # The Hub call: the card's id, config, split, data files and revision (nothing else reaches the network).
    expected_kwargs = {"split": split, "streaming": False}
    if card.data_files is not None:
        expected_kwargs["data_files"] = card.data_files
    if card.revision is not None:
        expected_kwargs["revision"] = card.revision
    assert calls == [(card.hub_id, config or card.config, expected_kwargs)]
    assert isinstance(records, RecordDataset) and len(records) == 3
    for i in range(3):
        record = records[i]
        user, assistant = record["messages"][0], record["messages"][-1]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        n_images = _expected_images(card, features, i)
        assert len(record["images"]) == n_images
        assert sum(entry["type"] == "image" for entry in user["content"]) == n_images
        if card.format in ("llava", "messages", "cauldron"):
            assert _text(user).strip() == "What is this?" and _text(assistant) == "A cat."
        elif card.format == "vqa":
            assert f"What is in picture {i}?" in _text(user)
            assert _text(assistant) == "cat"  # the answer column, or the most common answer
            assert record["references"] == (ANSWERS if "answers" in card.columns and
                                            not isinstance(features[card.columns["answers"]], datasets.Value)
                                            else ["cat"])
        elif card.format == "caption":
            assert _text(user) == card.prompt
            assert _text(assistant) == CAPTIONS[0] and record["references"] == CAPTIONS
        elif card.format == "multiple_choice":
            assert "A. red\nB. green\nC. blue" in _text(user)
            assert _text(assistant) == "B" and record["references"] == ["B. green"]
        if card.columns.get("id"):
            assert record["id"] == str(_filler(features[card.columns["id"]], i))

    # The same card, streamed: the same records one by one.
    calls.clear()
    streamed = load_records(card.name, split=split, config=config, streaming=True)
    assert isinstance(streamed, RecordIterableDataset)
    assert calls[0][2]["streaming"] is True
    assert [r["messages"] for r in streamed] == [records[i]["messages"] for i in range(3)]


def test_cards_cover_the_issue_list_and_are_found_by_name_and_hub_id():
    names = {card.name for card in CARDS}
    assert len(names) >= 10
    assert {"llava-instruct-150k", "llava-instruct-mix-vsft", "the_cauldron", "vqav2", "textvqa", "docvqa",
            "chartqa", "coco-karpathy", "flickr30k", "scienceqa", "okvqa"} <= names
    for card in CARDS:
        assert find_card(card.name) == card
        assert find_card(card.hub_id.upper()) == card  # Hub ids compare case-insensitively
        assert card.license and card.citation and card.prose.strip()
        for metric in card.metrics:
            assert metric in available_metrics()  # every metric a bundled card names is a bundled metric
    assert find_card("HuggingFaceM4/ChartQA").name == "chartqa"
    assert find_card("nobody/nothing") is None
    assert metrics_for("docvqa") == ["anls"]
    assert metrics_for("HuggingFaceM4/ChartQA") == ["relaxed_accuracy"]
    assert metrics_for("coco-karpathy") == ["cider", "bleu"]
    assert metrics_for("data/my.jsonl") is None
    assert metrics_for(None) is None


def test_training_and_mmft_eval_take_the_same_default_metrics(tmp_path, monkeypatch):
    # One rule for both: the card's metrics, even none (instruction sets), else DEFAULT_METRICS. `mmft eval` once
    # fell back to the default for a card naming none, scoring metrics the run never reported.
    from mmft.evaluation import inference
    from mmft.metrics import DEFAULT_METRICS
    from mmft.workflow import default_metrics

    assert default_metrics("llava-instruct-150k") == ([], True)
    assert default_metrics("docvqa") == (["anls"], True)
    assert default_metrics("data/my.jsonl") == (list(DEFAULT_METRICS), False)
    seen = {}

    class Stop(Exception):
        pass

    def fake_build(model, processor, family, *, metrics, **kwargs):
        seen["metrics"] = metrics
        raise Stop

    monkeypatch.setattr("mmft.data.sources.load_records", lambda *a, **k: [{}])
    monkeypatch.setattr(inference, "load_for_inference", lambda *a, **k: (None, None, None))
    monkeypatch.setattr(inference, "build_inference_trainer", fake_build)
    with pytest.raises(Stop):
        inference.evaluate_model("some-model", "llava-instruct-150k", output_dir=str(tmp_path))
    assert seen["metrics"] == []


def test_card_config_and_split_are_checked_before_any_download(tmp_path, monkeypatch):
    calls = []
    _serve(monkeypatch, tmp_path, calls)
    with pytest.raises(CardError, match="--dataset_config") as info:
        load_records("the_cauldron")
    assert "the_cauldron.md" in str(info.value) and "chartqa" in str(info.value)
    with pytest.raises(CardError, match="no config 'nope'"):
        load_records("the_cauldron", config="nope")
    with pytest.raises(CardError, match="no split 'train'.*validation, testdev, test"):
        load_records("vqav2")  # lmms-lab/VQAv2 has no train split
    assert calls == []


# ---- card validation -----------------------------------------------------------------------------------------------
GOOD = """---
name: mine
hub_id: me/mine
task: vqa
format: vqa
columns: {image: image, question: q, answers: a}
metrics: [vqa_accuracy]
license: MIT
features:
  - name: image
    dtype: image
  - name: q
    dtype: string
  - name: a
    sequence: string
---
# prose
"""


@pytest.mark.parametrize("change, field", [
    (("hub_id: me/mine\n", ""), "hub_id"),
    (("format: vqa", "format: vqa2"), "format"),
    (("columns: {image: image, question: q, answers: a}", "columns: {image: image, question: question, answers: a}"),
     "columns.question"),
    (("license: MIT", "licence: MIT"), "licence"),
    (("name: mine", "name: yours"), "name"),
    (("metrics: [vqa_accuracy]", "metrics: [accuracy]"), "metrics"),
    (("metrics: [vqa_accuracy]\n", "metrics: [vqa_accuracy]\nprompt: '{question} {hint}'\n"), "prompt"),
    (("columns: {image: image, question: q, answers: a}", "columns: {image: image, captions: q}"), "columns.captions"),
])
def test_card_errors_name_the_file_and_the_field(tmp_path, change, field):
    path = tmp_path / "mine.md"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(CardError) as info:
        cards.load_card(path)
    assert str(path) in str(info.value) and field in str(info.value)


def test_a_user_card_folder_and_a_card_file_path(tmp_path, monkeypatch):
    (tmp_path / "mine.md").write_text(GOOD)
    assert cards.load_card(tmp_path / "mine.md").columns["question"] == "q"
    assert find_card(str(tmp_path / "mine.md")).hub_id == "me/mine"
    # Loading through a card file: its Hub id, its columns (q -> question, a -> answers).
    hub = tmp_path / "hub"
    hub.mkdir()
    datasets.Dataset.from_dict({"image": [{"bytes": PNG, "path": None}], "q": ["Why?"], "a": [["so", "so", "no"]]},
                               features=cards.load_card(tmp_path / "mine.md").datasets_features()).to_parquet(
        str(hub / "train.parquet"))
    calls = []
    _serve(monkeypatch, hub, calls)
    record = load_records(str(tmp_path / "mine.md"))[0]
    assert calls[0][:2] == ("me/mine", None)
    assert _text(record["messages"][1]) == "so" and record["references"] == ["so", "so", "no"]
    with pytest.raises(SourceError, match="No data card named 'nope'"):
        load_records("x.jsonl", card="nope")
    monkeypatch.setenv("MMFT_DATA_CARDS", str(tmp_path))
    assert find_card("mine").name == "mine" and find_card("me/mine").name == "mine"
    assert metrics_for("mine") == ["vqa_accuracy"]
    with pytest.raises(CardError, match="no YAML front matter"):
        parse_card("# just prose\n", "x.md")


# ---- row mapping ---------------------------------------------------------------------------------------------------
def test_vqa_target_is_the_most_common_answer_ties_to_the_first_and_references_keep_duplicates():
    mapping = ColumnMapping("vqa", {"question": "q", "answers": "a"}, source="t")
    record = mapping.to_record({"q": "Q?", "a": ["b", "a", "a", "b", "c"]}, 0)
    assert record["messages"][1]["content"][0]["text"] == "b"  # 2 votes each: "b" is listed first
    assert record["references"] == ["b", "a", "a", "b", "c"]
    dicts = [{"answer": "x"}, {"answer": "y"}, {"answer": "y"}, {"answer": ""}]  # VQAv2 / OK-VQA style
    record = mapping.to_record({"q": "Q?", "a": dicts}, 1)
    assert record["messages"][1]["content"][0]["text"] == "y" and record["references"] == ["x", "y", "y"]
    with pytest.raises(RecordError, match="t:2.*a: no answer.*hide their answers"):
        mapping.to_record({"q": "Q?", "a": ["", ""]}, 2)


def test_multiple_choice_answers_and_prompt_lines_without_values():
    mapping = ColumnMapping("multiple_choice", {"question": "q", "options": "o", "answer": "a"},
                            "Context: {hint}\n{question}\n{options}\nPick a letter.", source="mc")
    row = {"q": "Colour?", "o": ["red", "blue"], "hint": ""}
    for answer in (1, "B", "b", "blue", "1"):
        record = mapping.to_record({**row, "a": answer}, 0)
        assert record["messages"][1]["content"][0]["text"] == "B" and record["references"] == ["B. blue"]
    prompt = mapping.to_record({**row, "a": 0}, 0)["messages"][0]["content"][0]["text"]
    assert prompt == "Colour?\nA. red\nB. blue\nPick a letter."  # the empty hint's line is dropped
    assert mapping.to_record({**row, "hint": "Sky", "a": 0}, 0)["messages"][0]["content"][0]["text"].startswith(
        "Context: Sky\nColour?")
    with pytest.raises(RecordError, match="does not pick one of the 2 options"):
        mapping.to_record({**row, "a": 2}, 0)


# ---- detection for datasets without a card -------------------------------------------------------------------------
def _image_rows(n: int, **columns) -> datasets.Dataset:
    data = {"image": [{"bytes": PNG, "path": None}] * n, **{k: v[:n] for k, v in columns.items()}}
    features = datasets.Features({"image": datasets.Image(), **{
        k: datasets.List(datasets.Value("string")) if isinstance(v[0], list) else datasets.Value(
            "int64" if isinstance(v[0], int) else "string") for k, v in columns.items()}})
    return datasets.Dataset.from_dict(data, features=features)


def test_layouts_are_detected_from_the_columns():
    qa = load_records(_image_rows(2, question=["Q0?", "Q1?"], answers=[["a", "b", "a"], ["c"]]))
    assert qa[0]["messages"][1]["content"][0]["text"] == "a" and qa[0]["references"] == ["a", "b", "a"]
    assert qa[0]["messages"][0]["content"][0] == {"type": "image"} and len(qa[0]["images"]) == 1
    caption = load_records(_image_rows(2, captions=[["c0", "c00"], ["c1"]]))
    assert caption[0]["messages"][1]["content"][0]["text"] == "c0" and caption[0]["references"] == ["c0", "c00"]
    mc = load_records(_image_rows(2, question=["Q?", "Q?"], choices=[["x", "y"], ["x", "y"]], answer=[0, 1]))
    assert mc[1]["messages"][1]["content"][0]["text"] == "B"
    pair = {key: datasets.Value("string") for key in ("user", "assistant", "source")}
    cauldron = load_records(datasets.Dataset.from_dict({
        "images": [[{"bytes": PNG, "path": None}]] * 2,
        "texts": [[{"user": "U1", "assistant": "A1", "source": "s"}, {"user": "U2", "assistant": "A2", "source": "s"}]]
        * 2,
    }, features=datasets.Features({"images": datasets.List(datasets.Image()), "texts": datasets.List(pair)})))
    assert [m["role"] for m in cauldron[0]["messages"]] == ["user", "assistant"] * 2
    assert cauldron[0]["messages"][0]["content"][0] == {"type": "image"}
    llava = load_records([{"id": "l", "image": "a.png", "conversations": [
        {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}])
    assert llava[0]["images"] == ["a.png"]
    # Explicit columns and a prompt template.
    named = load_records(_image_rows(1, prompt_text=["Why?"], gold=["because"]),
                         columns={"question": "prompt_text", "answers": "gold"}, prompt_template="Q: {question}")
    assert named[0]["messages"][0]["content"][-1]["text"] == "Q: Why?"
    assert named[0]["messages"][1]["content"][0]["text"] == "because"


@pytest.mark.parametrize("columns, flags", [
    ({"question": ["q"], "answer": ["a"], "caption": ["c"]}, ["--column_caption", "--column_question"]),
    ({"question": ["q"], "answer": ["a"], "answers": [["a"]]}, ["--column_answer"]),
    ({"question": ["q"]}, ["--column_answer"]),
    ({"foo": ["x"]}, ["--column_messages", "--column_question", "--column_caption"]),
])
def test_ambiguous_or_unknown_layouts_name_the_flag_to_give(columns, flags):
    with pytest.raises(SourceError) as info:
        load_records(_image_rows(1, **columns))
    for flag in flags:
        assert flag in str(info.value)
    with pytest.raises(CardError, match="--column_image"):
        detect_mapping(["a", "b", "q", "answers"], features=datasets.Features(
            {"a": datasets.Image(), "b": datasets.Image(), "q": datasets.Value("string"),
             "answers": datasets.Value("string")}))
    with pytest.raises(CardError, match="no column 'nope'"):
        detect_mapping(["question", "answer"], overrides={"answers": "nope"})


def test_bad_mapped_rows_are_all_reported_at_load_and_per_record_when_streamed():
    dataset = _image_rows(4, question=["Q", "Q", "Q", "Q"], answers=[["a"], [""], ["b"], []])
    with pytest.raises(RecordError, match="2 of 4 records are invalid") as info:
        load_records(dataset)
    assert {error.record_id for error in info.value.errors} == {"Dataset:1", "Dataset:3"}
    stream = iter(load_records(dataset.to_iterable_dataset()))
    assert next(stream)["references"] == ["a"]
    with pytest.raises(RecordError, match="IterableDataset:1"):
        next(stream)


def test_hub_id_without_a_card_is_detected_and_goes_through_load_dataset(tmp_path, monkeypatch):
    folder = tmp_path / "hub"
    folder.mkdir()
    _image_rows(2, question=["Q0", "Q1"], answer=["a0", "a1"]).to_parquet(str(folder / "validation.parquet"))
    calls = []
    _serve(monkeypatch, folder, calls)
    records = load_records("someone/vqa-set", split="validation", config="en")
    assert calls == [("someone/vqa-set", "en", {"split": "validation", "streaming": False})]
    assert records[1]["messages"][1]["content"][0]["text"] == "a1"


# ---- local files and folders ---------------------------------------------------------------------------------------
def test_parquet_file_and_image_folder_with_metadata(tmp_path):
    parquet = tmp_path / "data.parquet"
    _image_rows(3, question=["Q0", "Q1", "Q2"], answer=["a0", "a1", "a2"]).to_parquet(str(parquet))
    records = load_records(parquet, max_samples=2)
    assert isinstance(records, RecordDataset) and len(records) == 2
    assert records[1]["messages"][1]["content"][0]["text"] == "a1"
    assert records[0]["images"][0]["bytes"] == PNG and records[0]["image_root"] == str(tmp_path)

    folder = tmp_path / "imagefolder"
    (folder / "pics").mkdir(parents=True)
    with open(folder / "metadata.jsonl", "w") as f:
        for i in range(3):
            PIL.Image.new("RGB", (5, 5), (i * 80, 0, 0)).save(folder / "pics" / f"{i}.png")
            f.write(json.dumps({"file_name": f"pics/{i}.png", "text": f"a red square {i}"}) + "\n")
    records = load_records(str(folder))
    assert len(records) == 3
    record = records[2]
    assert record["messages"][1]["content"][0]["text"] == "a red square 2"  # image + text: a captioning set
    # Paths come back relative to the folder, so the image loader (which refuses absolute paths) can read them.
    from mmft.data.images import load_image

    ref = record["images"][0]
    assert not Path(ref["path"]).is_absolute()
    assert load_image(ref, root=record["image_root"]).size == (5, 5)

    streamed = list(load_records(str(folder), streaming=True))
    assert sorted(_text(r["messages"][1]) for r in streamed) == [f"a red square {i}" for i in range(3)]


def test_streaming_a_local_jsonl_shards_across_workers(shapes_dir):
    import torch

    stream = load_records(shapes_dir["train"], streaming=True, max_samples=10)
    assert isinstance(stream, RecordIterableDataset)
    ids = [r["id"] for r in stream]
    assert len(ids) == 10 and len(set(ids)) == 10
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2, collate_fn=lambda r: r)
    assert sorted(r["id"] for r in loader) == sorted(ids)  # each record exactly once over two workers


# ---- streaming end to end ------------------------------------------------------------------------------------------
@pytest.mark.slow  # about 10 s alone, 30 s on a busy machine: a real (tiny) training run
def test_streaming_training_runs_max_steps_and_needs_max_steps(tiny_llava_dir, shapes_dir, tmp_path):
    data_args = DataArguments(dataset_name=str(shapes_dir["train"]), eval_dataset_name=str(shapes_dir["test"]),
                              eval_split="test", streaming=True, max_eval_samples=6, max_length=256)
    without = VLMTrainingArguments(output_dir=str(tmp_path / "no"), report_to="none")
    with pytest.raises(ValueError, match="--max_steps"):
        load_datasets(data_args, training_args=without)

    args = VLMTrainingArguments(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4,
                                per_device_eval_batch_size=6, learning_rate=1e-3, logging_steps=1,
                                save_strategy="no", report_to="none", disable_tqdm=True, generation_max_new_tokens=2)
    train, evaluation = load_datasets(data_args, training_args=args)
    assert isinstance(train, RecordIterableDataset)
    assert isinstance(evaluation, RecordDataset) and len(evaluation) == 6  # streamed, then kept for generation
    trainer = build_trainer(ModelArguments(model_name_or_path=str(tiny_llava_dir), use_peft=False), data_args, args,
                            train, evaluation)
    result = trainer.train()
    assert trainer.state.global_step == 3
    assert len([e for e in trainer.state.log_history if "loss" in e]) == 3 and result.metrics["train_loss"] > 0
    assert "eval_vqa_accuracy" in trainer.evaluate()


def test_data_arguments_columns_reach_the_loader(tmp_path, caplog):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"ask": f"Q{i}", "reply": f"R{i}"}) for i in range(2)))
    data_args = DataArguments(dataset_name=str(path), column_question="ask", column_answer="reply",
                              prompt_template="{question} (one word)")
    with caplog.at_level(logging.INFO):
        train, _ = load_datasets(data_args)
    assert train[1]["messages"][0]["content"] == [{"type": "text", "text": "Q1 (one word)"}]
    assert train[1]["messages"][1]["content"] == [{"type": "text", "text": "R1"}]


def test_mapping_rows_decodes_no_image(monkeypatch):
    import PIL.ImageFile

    dataset = _image_rows(3, question=["Q0", "Q1", "Q2"], answers=[["a"], ["b"], ["c"]])
    stream = dataset.to_iterable_dataset()

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded while loading records")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", refuse)
    records = [load_records(dataset)[i] for i in range(3)] + list(load_records(stream))
    assert [r["images"][0]["bytes"] for r in records] == [PNG] * 6


def test_metrics_default_to_the_data_cards_and_an_explicit_flag_wins(tmp_path):
    from mmft.config.parsing import parse_args
    from mmft.workflow import resolve_metrics

    def resolved(*flags):
        _, data_args, training_args = parse_args(["--model_name_or_path", "m", "--output_dir", str(tmp_path), *flags])
        return resolve_metrics(training_args, data_args)

    assert resolved("--dataset_name", "docvqa") == ["anls"]
    assert resolved("--dataset_name", "chartqa") == ["relaxed_accuracy"]
    assert resolved("--dataset_name", "docvqa", "--metrics", "exact_match") == ["exact_match"]
    assert resolved("--dataset_name", str(tmp_path / "mine.jsonl")) == ["vqa_accuracy", "exact_match"]  # no card


ZERO_SHOT_CARDS = [card for card in CARDS if card.task == "zero_shot"]


@pytest.mark.parametrize("card", ZERO_SHOT_CARDS, ids=[card.name for card in ZERO_SHOT_CARDS])
def test_zero_shot_cards_load_labelled_images_through_their_own_columns(card, tmp_path, monkeypatch):
    from mmft.contrastive.workflow import load_zero_shot_tasks

    features = card.datasets_features()
    label_column = card.columns["captions"]
    assert isinstance(features[label_column], datasets.ClassLabel)
    assert features[label_column].names == card.class_names  # label index i is class_names[i]
    labels = [3, 0, len(card.class_names) - 1]
    rows = {name: [_filler(feature, i) for i in range(3)] for name, feature in features.items()}
    rows[label_column] = labels
    rows[card.columns["image"]] = [{"bytes": _png((40 * i, 0, 0)), "path": None} for i in range(3)]
    split = card.eval_split
    folder = tmp_path / "hub"
    folder.mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / f"{split}.parquet"))
    calls = []
    _serve(monkeypatch, folder, calls)
    # The training data's column flags describe the training set: they must not remap the card's dataset.
    data_args = DataArguments(column_image="not_a_column", column_caption="nor_this")
    (task,) = load_zero_shot_tasks([card.name], data_args)
    assert calls == [(card.hub_id, card.config, {"split": split, "streaming": False})]
    assert task.name == card.name and task.labels == labels and task.class_names == card.class_names
    assert task.templates == card.templates and all("{}" in t for t in task.templates)
    from mmft.data.images import load_image

    pixels = [load_image(item["image"], record_id=item["id"]).getpixel((0, 0))[0] for item in task.items]
    assert pixels == [0, 40, 80]  # the card's image column, rows in order
    (first,) = load_zero_shot_tasks([card.name], data_args, max_samples=1)
    assert first.labels == labels[:1]


def test_a_builtin_zero_shot_card_reads_the_dataset_it_names(tmp_path, monkeypatch):
    from mmft.contrastive.workflow import load_zero_shot_tasks

    assert find_card("shapes-shape-names").dataset == "shapes"
    text = (Path(find_card("shapes-shape-names").path).read_text()
            .replace("name: shapes-shape-names", "name: mine").replace("dataset: shapes ", "dataset: shapez "))
    (tmp_path / "mine.md").write_text(text)
    with pytest.raises(UsageError, match="'shapez' is not a built-in dataset"):
        load_zero_shot_tasks([str(tmp_path / "mine.md")], DataArguments())
