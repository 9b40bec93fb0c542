"""Tests for mmft.data.sources: every kind of source becomes validated canonical records, lazily, without decoding
images.

All data is built in ``tmp_path``; the Hub is never contacted (the Hub code path is exercised with a monkeypatched
``datasets.load_dataset`` and with a real ``load_dataset`` call on a local folder, which is the same path up to the
network).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import PIL.Image
import PIL.ImageFile
import pytest

from mmft.data import shapes
from mmft.data.local_files import read_json_records
from mmft.data.record_datasets import RecordDataset, RecordIterableDataset
from mmft.data.record_errors import RecordError
from mmft.data.source_errors import SourceError
from mmft.data.sources import load_records


def _llava(record_id: str, image: str | None = "images/a.png", question: str = "What colour is it?",
           answer: str = "red") -> dict:
    record = {
        "id": record_id,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}" if image is not None else question},
            {"from": "gpt", "value": answer},
        ],
    }
    if image is not None:
        record["image"] = image
    return record


def _write_images(folder: Path, names) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        PIL.Image.new("RGB", (8, 8), (40 * k % 256, 0, 0)).save(folder / "images" / name)


def _write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def llava_folder(tmp_path):
    """A LLaVA-format dataset: 5 records (ids rec-0..rec-4) with PNGs beside the data files."""
    folder = tmp_path / "data"
    names = [f"img{i}.png" for i in range(5)]
    _write_images(folder, names)
    rows = [_llava(f"rec-{i}", image=f"images/{name}", answer=f"answer {i}") for i, name in enumerate(names)]
    return folder, rows


def _conversation_rows(n: int, prefix: str = "r"):
    return {
        "id": [f"{prefix}-{i}" for i in range(n)],
        "image": [PIL.Image.new("RGB", (8, 8), (i * 30, 0, 0)) for i in range(n)],
        "conversations": [
            [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": f"thing {i}"}]
            for i in range(n)
        ],
    }


def _all(records) -> list[dict]:
    if isinstance(records, RecordDataset):
        return [records[i] for i in range(len(records))]
    return list(records)


def _assert_canonical_llava(record: dict, record_id: str, answer: str) -> None:
    assert record["id"] == record_id
    assert record["messages"] == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]
    assert len(record["images"]) == 1


# ---- local JSON / JSONL -------------------------------------------------------------------------------------------
def test_jsonl_records_are_canonical_with_image_root_the_files_folder(llava_folder):
    folder, rows = llava_folder
    path = _write_jsonl(folder / "train.jsonl", rows)
    dataset = load_records(str(path))
    assert isinstance(dataset, RecordDataset)
    assert len(dataset) == 5
    for i in range(5):
        record = dataset[i]
        _assert_canonical_llava(record, f"rec-{i}", f"answer {i}")
        assert record["images"] == [f"images/img{i}.png"]  # the ref is kept as given: a path, not pixels
        assert record["image_root"] == str(folder.resolve())
        assert (Path(record["image_root"]) / record["images"][0]).is_file()


@pytest.mark.parametrize("wrapped", [False, True], ids=["list", "data-object"])
def test_json_list_and_data_object(llava_folder, wrapped):
    folder, rows = llava_folder
    path = folder / "train.json"
    path.write_text(json.dumps({"data": rows} if wrapped else rows, indent=2))
    dataset = load_records(path)  # a Path works as well as a str
    assert [dataset[i]["id"] for i in range(len(dataset))] == [f"rec-{i}" for i in range(5)]
    _assert_canonical_llava(dataset[3], "rec-3", "answer 3")
    assert dataset[0]["image_root"] == str(folder.resolve())


def test_image_root_override_and_max_samples(llava_folder, tmp_path):
    folder, rows = llava_folder
    path = _write_jsonl(folder / "train.jsonl", rows)
    other = tmp_path / "elsewhere"
    other.mkdir()
    dataset = load_records(path, image_root=other, max_samples=2)
    assert len(dataset) == 2
    assert [dataset[i]["id"] for i in range(2)] == ["rec-0", "rec-1"]
    assert all(dataset[i]["image_root"] == str(other.resolve()) for i in range(2))
    assert len(load_records(path, max_samples=100)) == 5  # more than there are: all of them


def test_missing_ids_get_a_stable_fallback_naming_the_file(tmp_path):
    path = _write_jsonl(tmp_path / "noid.jsonl", [{k: v for k, v in _llava("x").items() if k != "id"}] * 2)
    dataset = load_records(path)
    assert [dataset[0]["id"], dataset[1]["id"]] == ["noid.jsonl:0", "noid.jsonl:1"]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(_llava("a")) + "\n" + json.dumps(_llava("b")) + "\n" + '{"id": "c", "conv\n')
    with pytest.raises(SourceError) as info:
        load_records(path)
    assert f"{path}:3" in str(info.value)


def test_malformed_json_and_wrong_top_level_type(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"id": "a"},\n  {"id": \n]')
    with pytest.raises(SourceError, match="broken.json:4"):
        load_records(broken)
    scalar = tmp_path / "scalar.json"
    scalar.write_text('{"records": []}')
    with pytest.raises(SourceError, match="expected a JSON list"):
        read_json_records(scalar)


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.json"])
def test_missing_file_is_a_clear_error(tmp_path, name):
    with pytest.raises(SourceError, match="does not exist") as info:
        load_records(tmp_path / name)
    assert name in str(info.value)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="Could not find dataset"):
        load_records(str(tmp_path / "no" / "such" / "folder"))


def test_all_bad_records_are_reported_at_load_in_one_error(tmp_path):
    rows = [
        _llava("good-0", image=None, question="hi"),
        {"id": "bad-no-conversation", "image": "a.png"},
        _llava("good-1", image=None, question="hi"),
        {"id": "bad-ends-with-user", "conversations": [{"from": "human", "value": "question?"}]},
        _llava("bad-two-placeholders", image="a.png", question="<image> and <image>?"),
    ]
    path = _write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(RecordError) as info:
        load_records(path)  # at load, before any record is accessed (i.e. before training starts)
    message = str(info.value)
    assert "3 of 5 records are invalid" in message
    assert "mixed.jsonl" in message
    for bad in ("bad-no-conversation", "bad-ends-with-user", "bad-two-placeholders"):
        assert bad in message
    assert "good-0" not in message and "good-1" not in message
    assert sorted(err.record_id for err in info.value.errors) == [
        "bad-ends-with-user", "bad-no-conversation", "bad-two-placeholders"
    ]


# ---- datasets objects ---------------------------------------------------------------------------------------------
def test_in_memory_dataset_with_pil_images_and_conversations():
    dataset = datasets.Dataset.from_dict(_conversation_rows(4))
    assert isinstance(dataset.features["image"], datasets.Image)  # datasets inferred the Image feature
    records = load_records(dataset, max_samples=3)
    assert isinstance(records, RecordDataset)
    assert len(records) == 3
    record = records[2]
    assert record["id"] == "r-2"
    assert record["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "thing 2"}]}
    assert record["messages"][0]["content"][0] == {"type": "image"}
    (ref,) = record["images"]
    assert set(ref) == {"bytes", "path"} and ref["bytes"].startswith(b"\x89PNG")


def test_in_memory_dataset_with_messages_and_image_list():
    n = 3
    dataset = datasets.Dataset.from_dict({
        "images": [[PIL.Image.new("RGB", (8, 8), (i, 0, 0))] for i in range(n)],
        "messages": [
            [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"q{i}"}]},
                {"role": "assistant", "content": [{"type": "text", "text": f"a{i}"}]},
            ]
            for i in range(n)
        ],
    })
    records = load_records(dataset)
    # Arrow unifies struct fields ({"type": "image", "text": None}); the records come back canonical anyway.
    assert records[1]["messages"] == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q1"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a1"}]},
    ]
    assert records[1]["id"] == "Dataset:1"
    assert isinstance(records[1]["images"][0], dict)


def test_bad_rows_of_a_dataset_fail_at_load():
    rows = _conversation_rows(3)
    rows["conversations"][1] = [{"from": "gpt", "value": "answer first"}, {"from": "human", "value": "<image>\nq"}]
    with pytest.raises(RecordError, match="r-1"):
        load_records(datasets.Dataset.from_dict(rows))


def test_iterable_dataset_is_lazy_and_yields_canonical_records():
    produced = []

    def generate():
        for i in range(5):
            produced.append(i)
            turns = [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]
            yield {"id": f"s-{i}", "conversations": turns}

    stream = datasets.IterableDataset.from_generator(generate)
    records = load_records(stream)
    assert isinstance(records, RecordIterableDataset)
    assert produced == []  # loading read nothing
    iterator = iter(records)
    first = next(iterator)
    assert first["id"] == "s-0"
    assert first["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "q0"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
    ]
    assert len(produced) < 5  # one record at a time, not the whole stream
    assert [r["id"] for r in load_records(stream, max_samples=2)] == ["s-0", "s-1"]


def test_iterable_dataset_with_image_feature_yields_undecoded_refs():
    stream = datasets.Dataset.from_dict(_conversation_rows(3)).to_iterable_dataset()
    records = list(load_records(stream))
    assert [r["id"] for r in records] == ["r-0", "r-1", "r-2"]
    assert all(isinstance(r["images"][0], dict) and r["images"][0]["bytes"] for r in records)


def test_iterable_dataset_reports_a_bad_record_as_it_arrives():
    rows = _conversation_rows(3)
    rows["conversations"][2] = [{"from": "human", "value": "<image>\nq"}]
    records = iter(load_records(datasets.Dataset.from_dict(rows).to_iterable_dataset()))
    assert next(records)["id"] == "r-0"
    assert next(records)["id"] == "r-1"
    with pytest.raises(RecordError, match="r-2"):
        next(records)


def test_save_to_disk_folders_load(tmp_path):
    single = tmp_path / "single"
    datasets.Dataset.from_dict(_conversation_rows(3)).save_to_disk(str(single))
    records = load_records(str(single))
    assert isinstance(records, RecordDataset)
    assert [records[i]["id"] for i in range(3)] == ["r-0", "r-1", "r-2"]
    assert records[0]["image_root"] == str(single.resolve())
    assert records[0]["images"][0]["bytes"].startswith(b"\x89PNG")

    both = tmp_path / "dict"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(_conversation_rows(2, "train")),
        "test": datasets.Dataset.from_dict(_conversation_rows(2, "test")),
    }).save_to_disk(str(both))
    assert load_records(str(both), split="test")[1]["id"] == "test-1"
    with pytest.raises(SourceError, match="no split 'validation'"):
        load_records(str(both), split="validation")


# ---- no image is decoded by loading -------------------------------------------------------------------------------
class DecodeAttempt(AssertionError):
    pass


def test_loading_and_iterating_decodes_no_image(tmp_path, monkeypatch, llava_folder):
    folder, rows = llava_folder
    jsonl = _write_jsonl(folder / "train.jsonl", rows)
    with_pil = datasets.Dataset.from_dict(_conversation_rows(3))
    by_path = datasets.Dataset.from_dict({
        "image": [str(folder / "images" / f"img{i}.png") for i in range(3)],
        "conversations": _conversation_rows(3)["conversations"],
    }).cast_column("image", datasets.Image())
    saved = tmp_path / "saved"
    with_pil.save_to_disk(str(saved))

    decodes = []

    def refuse(*args, **kwargs):
        decodes.append(args)
        raise DecodeAttempt("an image was decoded while loading records")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", refuse)
    # The trap works: reading a decoded Image column does hit it.
    with pytest.raises(DecodeAttempt):
        with_pil[0]["image"]
    decodes.clear()

    refs = []
    for source in (jsonl, with_pil, by_path, str(saved), with_pil.to_iterable_dataset()):
        for record in _all(load_records(source)):
            refs.extend(record["images"])
    assert decodes == []
    assert len(refs) == 5 + 3 + 3 + 3 + 3
    assert refs[:5] == [f"images/img{i}.png" for i in range(5)]  # JSONL: the paths as written
    for ref in refs[5:]:
        assert isinstance(ref, dict) and set(ref) == {"bytes", "path"}
    assert [ref["path"] for ref in refs[8:11]] == [str(folder / "images" / f"img{i}.png") for i in range(3)]


# ---- the Hub code path --------------------------------------------------------------------------------------------
def test_hub_id_goes_through_load_dataset(monkeypatch):
    calls = []
    local = datasets.Dataset.from_dict(_conversation_rows(3, "hub"))

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return local.to_iterable_dataset() if kwargs.get("streaming") else local

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records = load_records("someuser/some-dataset", split="train")
    assert calls == [(("someuser/some-dataset", None), {"split": "train", "streaming": False})]
    assert isinstance(records, RecordDataset)
    assert [records[i]["id"] for i in range(3)] == ["hub-0", "hub-1", "hub-2"]
    assert records[0]["images"][0]["bytes"]  # embedded bytes, undecoded

    calls.clear()
    streamed = load_records("someuser/some-dataset", split="validation", config="en", streaming=True, max_samples=2)
    assert calls == [(("someuser/some-dataset", "en"), {"split": "validation", "streaming": True})]
    assert isinstance(streamed, RecordIterableDataset)
    assert [r["id"] for r in streamed] == ["hub-0", "hub-1"]


def test_real_load_dataset_on_a_local_parquet_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    folder = tmp_path / "hub-like"
    folder.mkdir()
    for split in ("train", "test"):
        datasets.Dataset.from_dict(_conversation_rows(3, split)).to_parquet(str(folder / f"{split}.parquet"))

    records = load_records(str(folder), split="test")
    assert isinstance(records, RecordDataset)
    assert [records[i]["id"] for i in range(3)] == ["test-0", "test-1", "test-2"]
    assert records[2]["messages"][1]["content"] == [{"type": "text", "text": "thing 2"}]
    assert records[0]["images"][0]["bytes"].startswith(b"\x89PNG")

    streamed = load_records(str(folder), split="train", streaming=True)
    assert isinstance(streamed, RecordIterableDataset)
    assert [r["id"] for r in streamed] == ["train-0", "train-1", "train-2"]

    with pytest.raises(SourceError, match="no split 'validation'"):
        load_records(str(folder), split="validation")


def test_real_load_dataset_on_a_local_jsonl_folder_streaming(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    folder = tmp_path / "jsonl-folder"
    _write_jsonl(folder / "train.jsonl", [_llava(f"j-{i}", image=None, answer=f"a{i}") for i in range(4)])
    streamed = load_records(str(folder), split="train", streaming=True, max_samples=3)
    assert isinstance(streamed, RecordIterableDataset)
    records = list(streamed)
    assert [r["id"] for r in records] == ["j-0", "j-1", "j-2"]
    assert records[1]["messages"][1]["content"] == [{"type": "text", "text": "a1"}]


# ---- the built-in demo dataset ------------------------------------------------------------------------------------
def test_builtin_shapes_name_writes_into_the_cache_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("MMFT_CACHE", str(tmp_path / "cache"))
    records = load_records("shapes", split="test", max_samples=50)
    assert len(records) == 50
    root = Path(records[0]["image_root"])
    assert root.is_relative_to((tmp_path / "cache").resolve())
    for i in range(len(records)):
        record = records[i]
        assert record["id"] == f"shapes-test-{i:06d}"
        assert (root / record["images"][0]).is_file()
        question, answer = record["messages"]
        assert question["content"][0] == {"type": "image"}
        assert answer["content"][0]["text"] in {a for answers in shapes.ANSWERS.values() for a in answers}
    # Already generated: the second call reuses the same files.
    assert shapes.shapes_split_path("test").resolve() == root / "test.jsonl"
    with pytest.raises(ValueError, match="splits"):
        shapes.shapes_split_path("dev")


def _digest(jsonl: Path) -> tuple[bytes, list[str]]:
    image_hashes = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in (jsonl.parent / "images").iterdir())
    return jsonl.read_bytes(), image_hashes


def test_shapes_generation_is_deterministic_and_splits_differ(tmp_path):
    first = shapes.write_split(tmp_path / "a", "train", 12, turns=(1, 3))
    second = shapes.write_split(tmp_path / "b", "train", 12, turns=(1, 3))
    assert first != second
    assert _digest(first) == _digest(second)  # same JSONL bytes and same image bytes

    test = shapes.write_split(tmp_path / "a", "test", 12)
    train_images, test_images = set(_digest(first)[1]), set(_digest(test)[1])
    assert train_images.isdisjoint(test_images)
    train_answers = [json.loads(line)["conversations"] for line in first.read_text().splitlines()]
    test_answers = [json.loads(line)["conversations"] for line in test.read_text().splitlines()]
    assert train_answers != test_answers
    records = load_records(test)
    assert len(records) == 12 and all((test.parent / records[i]["images"][0]).is_file() for i in range(12))


def test_list_of_records_is_validated_once_and_served_as_copies():
    from mmft.data.sources import load_records

    raw = [{"id": "a", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "hello"}]}]
    dataset = load_records(raw, image_root="/data")
    first = dataset[0]
    first["messages"] = []  # a caller editing its record must not change what the next access returns
    assert dataset[0]["messages"][1]["content"] == [{"type": "text", "text": "hello"}]
    assert dataset[0]["image_root"] == str(Path("/data").resolve())
