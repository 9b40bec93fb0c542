"""`mmft data check` and `mmft data show`: every problem found with its record id, exit codes, JSON, lengths from
the real collator, and a sample rendered with exactly the assistant answers supervised."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mmft.commands.cli import main
from mmft.commands.datascan import _SeenIds
from mmft.commands.datashow import use_colour
from mmft.data.records import to_canonical
from mmft.train.collator import VLMCollator

# record id -> the kind `data check` must file it under
EXPECTED = {
    "roles-1": "bad_roles",
    "empty-1": "empty_turn",
    "mismatch-1": "placeholder_mismatch",
    "malformed-1": "malformed_record",
    "missing-1": "missing_image",
    "corrupt-1": "unreadable_image",
    "big-1": "image_too_large",
    "escape-1": "image_outside_root",
    "good-1": "duplicate_id",  # the second record with this id
}


def _qa(record_id, image, question="<image>\nWhat is it?", answer="a square"):
    turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    record = {"id": record_id, "conversations": turns}
    if image is not None:
        record["image"] = image
    return record


def write_problem_file(root: Path) -> Path:
    """A JSONL with one clean record and one of each problem (an invalid JSON line at line 2)."""
    data = root / "data"
    (data / "images").mkdir(parents=True)
    Image.new("RGB", (32, 24), "red").save(data / "images" / "ok.png")
    Image.new("RGB", (100, 100), "blue").save(data / "images" / "big.png")  # over --max_image_pixels 5000
    (data / "images" / "corrupt.png").write_bytes(b"this is not a png at all")
    Image.new("RGB", (8, 8)).save(root / "outside.png")  # exists, but outside the image root
    rows = [
        _qa("good-1", "images/ok.png"),
        "{not json",
        {
            "id": "roles-1",
            "image": "images/ok.png",
            "conversations": [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "<image>\nhi"}],
        },
        _qa("empty-1", "images/ok.png", answer="   "),
        _qa("mismatch-1", "images/ok.png", question="<image>\nCompare with <image>"),
        {"id": "malformed-1", "conversations": "What is it?"},
        _qa("missing-1", "images/nope.png"),
        _qa("corrupt-1", "images/corrupt.png"),
        _qa("big-1", "images/big.png"),
        _qa("escape-1", "../outside.png"),
        _qa("good-1", "images/ok.png"),
    ]
    path = data / "bad.jsonl"
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def run_cli(argv, capsys):
    """Run `mmft ...` in-process; return (exit code, stdout)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().out


def test_every_problem_listed_with_its_record_id(tmp_path, capsys):
    path = write_problem_file(tmp_path)
    code, out = run_cli(["data", "check", str(path), "--max_image_pixels", "5000", "--json", "--no_progress"], capsys)
    assert code == 1
    report = json.loads(out)
    assert report["records"] == 11
    assert report["ok"] is False
    assert report["records_with_problems"] == 10 and report["valid_records"] == 1
    listed = {kind: [example["id"] for example in entry["examples"]] for kind, entry in report["problems"].items()}
    for record_id, kind in EXPECTED.items():
        assert listed.get(kind) == [record_id], (kind, listed)
    # The invalid line has no id: it is named by file and line.
    assert [example["where"] for example in report["problems"]["invalid_json"]["examples"]] == ["bad.jsonl:2"]
    assert set(listed) == {*EXPECTED.values(), "invalid_json"}
    assert report["errors"] == 10
    # Only the two records with good images (the clean one and its duplicate) were measured; the size came from the
    # header.
    assert report["images"]["count"] == 2 and report["images"]["width"]["max"] == 32
    assert report["lengths"]["unit"] == "words" and report["lengths"]["measured"] == 2

    # The human-readable report names every id too, and so does a real `python -m mmft.commands.cli` process.
    code, text = run_cli(["data", "check", str(path), "--max_image_pixels", "5000", "--no_progress"], capsys)
    assert code == 1 and "FAILED" in text
    process = subprocess.run(
        [sys.executable, "-m", "mmft.commands.cli", "data", "check", str(path), "--max_image_pixels", "5000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1, process.stderr
    for output in (text, process.stdout):
        for record_id, kind in EXPECTED.items():
            assert re.search(rf"- {re.escape(record_id)}: ", output), (record_id, output)
            assert f"{kind} (1)" in output
        assert "bad.jsonl:2: not valid JSON" in output


def test_decoding_images_files_each_problem_under_the_same_kind(tmp_path, capsys):
    # With --decode_images the image loader itself refuses the over-cap image; its error's kind must still say
    # image_too_large (a message-text match once filed it as unreadable_image).
    path = write_problem_file(tmp_path)
    code, out = run_cli(["data", "check", str(path), "--max_image_pixels", "5000", "--decode_images", "--json",
                         "--no_progress"], capsys)
    assert code == 1
    report = json.loads(out)
    listed = {kind: [example["id"] for example in entry["examples"]] for kind, entry in report["problems"].items()}
    for record_id, kind in EXPECTED.items():
        assert listed.get(kind) == [record_id], (kind, listed)


def test_clean_file_exits_zero_with_summary(shapes_dir, capsys):
    code, out = run_cli(["data", "check", str(shapes_dir["train"]), "--json", "--no_progress"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True and report["errors"] == 0 and report["problems"] == {}
    assert report["records"] == report["valid_records"] == 64
    assert sum(report["turns_per_record"].values()) == 64
    assert set(report["turns_per_record"]) <= {"1", "2", "3"} and len(report["turns_per_record"]) > 1
    assert report["images_per_record"] == {"1": 64}
    assert report["images"]["count"] == 64
    assert sum(entry["count"] for entry in report["lengths"]["histogram"]) == 64
    code, text = run_cli(["data", "check", str(shapes_dir["train"]), "--no_progress"], capsys)
    assert code == 0 and "OK: 64 records" in text and "answers/record" in text


def test_max_listed_caps_ids_but_counts_all(tmp_path, capsys):
    data = tmp_path / "many.jsonl"
    data.write_text("".join(json.dumps(_qa(f"m{i}", f"missing-{i}.png")) + "\n" for i in range(7)))
    code, out = run_cli(["data", "check", str(data), "--json", "--max_listed", "3", "--no_progress"], capsys)
    assert code == 1
    entry = json.loads(out)["problems"]["missing_image"]
    assert entry["count"] == 7 and [e["id"] for e in entry["examples"]] == ["m0", "m1", "m2"]


def test_truncated_files_are_caught_by_end_marker_and_corrupt_pixels_need_decode_images(tmp_path, capsys):
    """The default check (no decoding) finds truncated PNG and JPEG files by their missing end marker (IEND, EOI);
    pixel data broken inside a complete file needs --decode_images."""
    from bad_corpus import encoded, noisy_image

    png, jpeg = encoded(noisy_image(0), "PNG"), encoded(noisy_image(1), "JPEG")
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])  # header intact, pixel data and IEND cut
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # header intact, scan data and EOI cut
    (tmp_path / "tail.jpg").write_bytes(jpeg + bytes(range(256)) * 8)  # complete, with an appended trailer
    broken = bytearray(png)
    start = broken.index(b"IDAT") + 8
    broken[start : start + 40] = b"\xff" * 40  # the zlib stream is broken, the file still ends with IEND
    (tmp_path / "broken.png").write_bytes(bytes(broken))
    rows = [_qa("cut-png", "cut.png", question="q"), _qa("cut-jpeg", "cut.jpg", question="q"),
            _qa("tail", "tail.jpg", question="q"), _qa("broken", "broken.png", question="q")]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, out = run_cli(["data", "check", str(tmp_path / "d.jsonl"), "--json", "--no_progress"], capsys)
    assert code == 1
    listed = {kind: [e["id"] for e in entry["examples"]] for kind, entry in json.loads(out)["problems"].items()}
    assert listed == {"truncated_image": ["cut-png", "cut-jpeg"]}  # the header read alone would pass all four
    code, out = run_cli(
        ["data", "check", str(tmp_path / "d.jsonl"), "--decode_images", "--json", "--no_progress"], capsys
    )
    assert code == 1
    listed = {kind: [e["id"] for e in entry["examples"]] for kind, entry in json.loads(out)["problems"].items()}
    assert listed == {"unreadable_image": ["cut-png", "cut-jpeg", "broken"]}


def test_bad_corpus_is_reported_as_training_scans_it(tmp_path, capsys):
    """`mmft data check` files the training bad-input corpus's records under the reasons the start-up scan uses."""
    from bad_corpus import EXPECTED_BAD, MAX_IMAGE_PIXELS, write_bad_corpus

    path = write_bad_corpus(tmp_path)
    code, out = run_cli(["data", "check", str(path), "--max_image_pixels", str(MAX_IMAGE_PIXELS), "--json",
                         "--no_progress"], capsys)
    assert code == 1
    listed = {kind: sorted(e["id"] for e in entry["examples"]) for kind, entry in json.loads(out)["problems"].items()}
    structural = listed.pop("bad_roles") + listed.pop("empty_turn")  # data check names the structural kind
    assert sorted(structural) == sorted(EXPECTED_BAD["invalid_record"])
    assert listed == {reason: sorted(ids) for reason, ids in EXPECTED_BAD.items() if reason != "invalid_record"}


def test_question_answer_columns_are_mapped_as_in_training(tmp_path, capsys):
    Image.new("RGB", (20, 10)).save(tmp_path / "x.png")
    rows = [
        {"id": "q1", "image": "x.png", "question": "What colour?", "answer": "black"},
        {"id": "q2", "image": "gone.png", "question": "What colour?", "answer": "black"},
        {"id": "q3", "image": "x.png", "question": "What colour?", "answer": None},
    ]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, out = run_cli(["data", "check", str(tmp_path / "qa.jsonl"), "--json", "--no_progress"], capsys)
    assert code == 1
    report = json.loads(out)
    listed = {kind: [e["id"] for e in entry["examples"]] for kind, entry in report["problems"].items()}
    assert listed == {"missing_image": ["q2"], "empty_turn": ["q3"]}
    assert report["images"]["width"] == {"min": 20, "median": 20, "max": 20}


def test_saved_dataset_folder_is_streamed(tmp_path, capsys):
    import datasets  # a dependency of mmft: a broken install must fail here, not skip

    image = tmp_path / "x.png"
    Image.new("RGB", (16, 16)).save(image)
    rows = [
        {"id": "a", "messages": [{"role": "user", "content": "<image>\nQ"}, {"role": "assistant", "content": "A"}]},
        {"id": "b", "messages": [{"role": "assistant", "content": "A"}, {"role": "user", "content": "<image>\nQ"}]},
    ]
    folder = tmp_path / "saved"
    datasets.Dataset.from_list([{**row, "image": "x.png"} for row in rows]).save_to_disk(str(folder))
    code, out = run_cli(
        ["data", "check", str(folder), "--image_root", str(tmp_path), "--json", "--no_progress"], capsys
    )
    assert code == 1
    report = json.loads(out)
    assert report["records"] == 2 and report["images"]["count"] == 1
    assert [e["id"] for e in report["problems"]["bad_roles"]["examples"]] == ["b"]


def test_seen_ids_survive_buffer_merges(monkeypatch):
    monkeypatch.setattr(_SeenIds, "_BUFFER", 4)
    seen = _SeenIds()
    assert not any(seen.add(f"id-{i}") for i in range(20))  # several merges into the sorted array
    assert all(seen.add(f"id-{i}") for i in range(20))
    assert not seen.add("id-20")


def _long_and_short(tmp_path):
    Image.new("RGB", (40, 30), "green").save(tmp_path / "a.png")
    Image.new("RGB", (30, 40), "blue").save(tmp_path / "b.png")
    short = _qa("short", "a.png", answer="yes")
    long = {
        "id": "long",
        "image": ["a.png", "b.png"],
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe the first picture in detail, please."},
            {"from": "gpt", "value": "A green rectangle, wider than it is tall, filling the frame."},
            {"from": "human", "value": "<image>\nAnd the second one?"},
            {"from": "gpt", "value": "A blue rectangle, taller than it is wide."},
        ],
    }
    path = tmp_path / "lengths.jsonl"
    path.write_text(json.dumps(short) + "\n" + json.dumps(long) + "\n")
    return path, short, long


def test_model_over_length_uses_the_collators_count(tmp_path, capsys, tiny_llava_dir, tiny_processor):
    path, short, long = _long_and_short(tmp_path)
    collator = VLMCollator(tiny_processor)
    expected = {}
    for raw in (short, long):
        record = {**to_canonical(raw), "image_root": str(tmp_path)}
        expected[raw["id"]] = int(collator([record])["attention_mask"].sum())
    assert expected["long"] > expected["short"] + 40  # two images of 36 tokens and more text
    limit = expected["short"] + 1
    code, out = run_cli(
        [
            "data",
            "check",
            str(path),
            "--model",
            str(tiny_llava_dir),
            "--max_length",
            str(limit),
            "--json",
            "--no_progress",
        ],
        capsys,
    )
    assert code == 1
    report = json.loads(out)
    over = report["problems"]["over_length"]
    assert over["count"] == 1 and over["examples"][0]["id"] == "long"
    assert f"is {expected['long']} tokens" in over["examples"][0]["message"]
    assert report["lengths"]["unit"] == "tokens"
    assert (report["lengths"]["min"], report["lengths"]["max"]) == (expected["short"], expected["long"])
    assert report["supervised_tokens"]["min"] > 0
    # Within budget: clean.
    code, out = run_cli(
        [
            "data",
            "check",
            str(path),
            "--model",
            str(tiny_llava_dir),
            "--max_length",
            str(expected["long"]),
            "--json",
            "--no_progress",
        ],
        capsys,
    )
    assert code == 0 and json.loads(out)["ok"] is True


ANSWERS = ["deep crimson", "pale turquoise", "seventeen"]
QUESTIONS = ["What colour is the first shape?", "And this one?", "How many shapes in total?"]


def test_show_highlights_exactly_the_answers(tmp_path, capsys, tiny_llava_dir, tiny_processor, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.png")
    Image.new("RGB", (30, 40), "cyan").save(tmp_path / "b.png")
    raw = {
        "id": "multi",
        "image": ["a.png", "b.png"],
        "conversations": [
            {"from": "system", "value": "Answer briefly."},
            {"from": "human", "value": f"<image>\n{QUESTIONS[0]}"},
            {"from": "gpt", "value": ANSWERS[0]},
            {"from": "human", "value": f"{QUESTIONS[1]} <image>"},
            {"from": "gpt", "value": ANSWERS[1]},
            {"from": "human", "value": QUESTIONS[2]},
            {"from": "gpt", "value": ANSWERS[2]},
        ],
    }
    (tmp_path / "other.jsonl").write_text(json.dumps(_qa("first", "a.png")) + "\n" + json.dumps(raw) + "\n")
    batch = VLMCollator(tiny_processor)([{**to_canonical(raw), "image_root": str(tmp_path)}])
    per_image = int((batch["input_ids"] == tiny_processor.image_token_id).sum()) // 2
    assert per_image > 1

    code, out = run_cli(
        ["data", "show", str(tmp_path / "other.jsonl"), "--model", str(tiny_llava_dir), "--index", "1"], capsys
    )
    assert code == 0
    assert "\x1b[" not in out  # captured stdout is not a terminal: plain markers
    body = out.split("-" * 80 + "\n", 1)[1]
    spans = re.findall(r"\[\[(.*?)\]\]", body, flags=re.S)
    assert spans == [f"{answer}<|im_end|>" for answer in ANSWERS]
    outside = re.sub(r"\[\[.*?\]\]", "", body, flags=re.S)
    for question in QUESTIONS:
        assert question in outside and not any(question in span for span in spans)
    assert "Answer briefly." in outside
    assert body.count(f"<image x{per_image}>") == 2 and "<image>" not in body
    assert f"image tokens per image: {per_image}, {per_image}" in out
    supervised = int((batch["labels"] != -100).sum())
    assert f"{supervised} supervised" in out and f"tokens: {batch['input_ids'].shape[1]} total" in out

    # --label_turn_suffix: the labels training with the flag builds, the newline after each <|im_end|> included.
    code, suffixed = run_cli(["data", "show", str(tmp_path / "other.jsonl"), "--model", str(tiny_llava_dir),
                              "--index", "1", "--label_turn_suffix"], capsys)
    assert code == 0
    body = suffixed.split("-" * 80 + "\n", 1)[1]
    assert re.findall(r"\[\[(.*?)\]\]", body, flags=re.S) == [f"{answer}<|im_end|>\n" for answer in ANSWERS]
    assert f"{supervised + len(ANSWERS)} supervised" in suffixed

    code, coloured = run_cli(
        [
            "data",
            "show",
            str(tmp_path / "other.jsonl"),
            "--model",
            str(tiny_llava_dir),
            "--index",
            "1",
            "--color",
            "always",
        ],
        capsys,
    )
    assert code == 0 and f"\x1b[1;32m{ANSWERS[0]}<|im_end|>\x1b[0m" in coloured and "[[" not in coloured


def test_colour_follows_terminal_and_no_color(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour("auto", Tty()) is True
    assert use_colour("auto", open(os.devnull, "w")) is False
    assert use_colour("never", Tty()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_colour("auto", Tty()) is False
    assert use_colour("always", Tty()) is True


@pytest.fixture(scope="module")
def tiny_qwen2_vl_dir(tmp_path_factory):
    """A family whose image token count follows the image size (so shrinking can make a sample fit)."""
    from mmft.testing import tiny_model_path

    return tiny_model_path("qwen2-vl", tmp_path_factory.getbasetemp() / "fam")


def test_overlength_policy_is_judged_as_training_would(tmp_path, capsys, tiny_qwen2_vl_dir):
    Image.new("RGB", (400, 300), "white").save(tmp_path / "big.png")
    (tmp_path / "s.jsonl").write_text(json.dumps(_qa("wide", "big.png")) + "\n")
    base = ["data", "check", str(tmp_path / "s.jsonl"), "--model", str(tiny_qwen2_vl_dir), "--json", "--no_progress"]
    code, out = run_cli(base, capsys)
    full = json.loads(out)["lengths"]["max"]
    budget = ["--max_length", str(full - 1), "--shrink_min_pixels", "64"]

    code, out = run_cli([*base, *budget], capsys)  # default policy: error
    assert code == 1 and [e["id"] for e in json.loads(out)["problems"]["over_length"]["examples"]] == ["wide"]

    code, out = run_cli([*base, *budget, "--overlength_policy", "drop"], capsys)
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["warnings"] == 1
    assert report["problems"]["over_length_dropped"]["severity"] == "warning"

    code, out = run_cli([*base, *budget, "--overlength_policy", "shrink"], capsys)
    report = json.loads(out)
    assert code == 0 and report["ok"], report["problems"]
    (example,) = report["problems"]["shrunk_to_fit"]["examples"]
    fitted = int(re.search(r"\((\d+) tokens\)", example["message"]).group(1))
    assert example["id"] == "wide" and fitted <= full - 1

    # A budget no shrinking can meet is still an error.
    code, out = run_cli([*base, "--max_length", "5", "--overlength_policy", "shrink"], capsys)
    assert (
        code == 1 and "shrinking cannot fix it" in json.loads(out)["problems"]["over_length"]["examples"][0]["message"]
    )


def _renamed_qa_file(tmp_path) -> Path:
    """Question/answer rows under non-standard column names (q, a, img) that training maps with --column_* flags."""
    Image.new("RGB", (16, 12), "green").save(tmp_path / "x.png")
    rows = [
        {"id": "r1", "img": "x.png", "q": "What colour?", "a": "green"},
        {"id": "r2", "img": "x.png", "q": "What shape?", "a": "square"},
    ]
    path = tmp_path / "renamed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


COLUMN_FLAGS = ["--column_question", "q", "--column_answer", "a", "--column_image", "img"]


def test_column_flags_map_rows_as_training_does(tmp_path, capsys):
    path = _renamed_qa_file(tmp_path)
    # Without the flags the layout cannot be detected: every record is an error that names the flags to give.
    code, out = run_cli(["data", "check", str(path), "--json", "--no_progress"], capsys)
    assert code == 1
    report = json.loads(out)
    assert report["valid_records"] == 0 and report["records_with_problems"] == 2
    messages = [e["message"] for e in report["problems"]["malformed_record"]["examples"]]
    assert len(messages) == 2 and all("--column_question" in m and "--column_answer" in m for m in messages)

    # With the training loader's flags: clean, and both images were found through the renamed image column.
    code, out = run_cli(["data", "check", str(path), "--json", "--no_progress", *COLUMN_FLAGS], capsys)
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] and report["valid_records"] == 2 and report["problems"] == {}
    assert report["images"]["width"] == {"min": 16, "median": 16, "max": 16}

    # A flag naming a column the file does not have is reported with the flag's name.
    code, out = run_cli(
        ["data", "check", str(path), "--json", "--no_progress", "--column_question", "query", "--column_answer", "a"],
        capsys,
    )
    assert code == 1
    assert "'query' (--column_question)" in out


def test_column_flags_and_prompt_template_reach_the_training_mapping(tmp_path):
    """`data check` and `data show` parse the same flags, and the record they build is the one training loads."""
    from mmft.commands.cli import build_parser
    from mmft.commands.dataargs import column_overrides, open_or_exit
    from mmft.commands.datashow import _find_record
    from mmft.config.data_args import DataArguments
    from mmft.data.sources import load_records

    path = _renamed_qa_file(tmp_path)
    template = ["--prompt_template", "{question} Answer in one word."]
    data_args = DataArguments(
        column_question="q", column_answer="a", column_image="img", prompt_template="{question} Answer in one word."
    )
    training = load_records(str(path), columns=data_args.column_overrides(), prompt_template=data_args.prompt_template)
    for command in (["data", "check", str(path)], ["data", "show", str(path), "--model", "unused", "--index", "1"]):
        args = build_parser().parse_args([*command, *COLUMN_FLAGS, *template])
        assert column_overrides(args) == data_args.column_overrides()
        index = getattr(args, "index", 0)
        record, _ = _find_record(open_or_exit(args, "show"), index)
        assert record == training[index]
        assert record["messages"][0]["content"][-1]["text"].endswith("? Answer in one word.")
