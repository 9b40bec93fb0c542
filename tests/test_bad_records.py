"""Bad records in training (mmft.data.badrecords): the end-marker truncation check, the start-up scan over the
bad-input
corpus (tests/bad_corpus.py) under ``--on_bad_record drop`` and ``error``, images that break after start-up (dropped
in the data loader, counted from its workers), the ``--max_bad_fraction`` stop, and messages without tracebacks."""

import json
import logging

import pytest
import torch
from bad_corpus import EXPECTED_BAD, GOOD_IDS, MAX_IMAGE_PIXELS, bad_ids, encoded, noisy_image, write_bad_corpus
from PIL import Image, ImageFile

from mmft.config.data_args import DataArguments
from mmft.config.model_args import ModelArguments
from mmft.config.training_args import VLMTrainingArguments
from mmft.data import image_headers, images
from mmft.data.badrecords import BAD_RECORDS_KEY, BadRecordError, too_many
from mmft.data.records import to_canonical
from mmft.errors import format_usage_error, report_usage_errors
from mmft.recipe import finetune
from mmft.train.collator import VLMCollator
from mmft.workflow import build_trainer, load_datasets


@pytest.fixture(autouse=True)
def mmft_logs_reach_caplog(monkeypatch):
    """A recipe run earlier in the session (mmft.workflow.setup_logging) stops mmft's logs at the "mmft" logger."""
    monkeypatch.setattr(logging.getLogger("mmft"), "propagate", True)


def _args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=1e-3,
                  logging_steps=1, save_strategy="no", report_to="none", seed=0, disable_tqdm=True,
                  dataloader_num_workers=0, eval_generation=False)
    values.update(overrides)
    return VLMTrainingArguments(**values)


def _by_reason(bad) -> dict[str, list[str]]:
    found = {}
    for record in bad:
        found.setdefault(record.reason, []).append(record.record_id)
    return {reason: sorted(ids) for reason, ids in found.items()}


EXPECTED = {reason: sorted(ids) for reason, ids in EXPECTED_BAD.items()}


# ---- the end-marker check ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_end_marker_check_finds_truncated_files_without_decoding(image_format, monkeypatch):
    data = encoded(noisy_image(0), image_format)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the truncation check decoded pixels")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert image_headers.image_size(data, check_complete=True) == (64, 64)
    # Extra bytes after a complete image (zero padding, a phone's appended trailer) are not truncation.
    assert image_headers.image_size(data + b"\0" * 16, check_complete=True) == (64, 64)
    assert image_headers.image_size(data + bytes(range(256)) * 64, check_complete=True) == (64, 64)
    for cut in (len(data) - 1, len(data) - 2, len(data) // 2, len(data) - 13):
        assert image_headers.image_size(data[:cut]) == (64, 64)  # the header alone cannot tell
        for check in (lambda ref: image_headers.image_size(ref, check_complete=True, record_id="r1"),
                      lambda ref: image_headers.check_image_file(ref, record_id="r1")):  # the start-up scan's reader
            with pytest.raises(images.ImageLoadError) as info:
                check(data[:cut])
            assert info.value.kind == "truncated_image" and "r1" in str(info.value)
            assert "truncated" in str(info.value)


def test_start_up_reader_agrees_with_pil_on_sizes_and_refusals(tmp_path):
    wide = noisy_image(5, size=(48, 20))
    for image_format in ("PNG", "JPEG"):
        data = encoded(wide, image_format)
        assert image_headers.check_image_file(data) == image_headers.image_size(data) == (48, 20)
    (tmp_path / "x.gif").write_bytes(encoded(wide, "GIF"))  # another format: through PIL
    assert image_headers.check_image_file("x.gif", root=tmp_path) == (48, 20)
    (tmp_path / "text.png").write_text("not an image")
    for ref, kind in (("text.png", "unreadable_image"), ("gone.png", "missing_image"),
                      ("../x.png", "image_outside_root")):
        with pytest.raises(images.ImageLoadError) as info:
            image_headers.check_image_file(ref, root=tmp_path)
        assert info.value.kind == kind


# ---- the start-up scan over the corpus ----------------------------------------------------------------------------
def test_startup_scan_under_drop_leaves_out_exactly_the_corpus_bad_records(tmp_path):
    path = write_bad_corpus(tmp_path)
    data_args = DataArguments(dataset_name=str(path), max_image_pixels=MAX_IMAGE_PIXELS, max_bad_fraction=0.5)
    train, _ = load_datasets(data_args)
    assert sorted(train[i]["id"] for i in range(len(train))) == sorted(GOOD_IDS)
    assert train.bad_record_scan.scanned == len(GOOD_IDS) + len(bad_ids())
    assert _by_reason(train.bad_record_scan.bad) == EXPECTED


def test_startup_scan_stops_when_more_than_max_bad_fraction_is_bad(tmp_path):
    path = write_bad_corpus(tmp_path)
    with pytest.raises(BadRecordError) as info:  # 8 of 24 bad, over the default 1%
        load_datasets(DataArguments(dataset_name=str(path), max_image_pixels=MAX_IMAGE_PIXELS))
    message = str(info.value)
    assert "8 of 24 training records" in message and "--max_bad_fraction=0.01" in message
    assert all(record_id in message for record_id in bad_ids())


def test_corpus_under_error_stops_before_the_first_step_naming_every_bad_record(tmp_path, capsys, monkeypatch):
    import mmft.workflow

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded: the scan must stop the run before")

    monkeypatch.setattr(mmft.workflow, "load_model", no_model)
    path = write_bad_corpus(tmp_path)
    eval_path = path.parent / "eval.jsonl"
    eval_path.write_text(json.dumps({"id": "eval-missing", "image": "images/gone.png", "conversations": [
        {"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}]}) + "\n")
    with pytest.raises(SystemExit) as exit_, report_usage_errors("vqa.py"):
        finetune(model="mmft:tiny-llava", train_dataset=str(path), eval_dataset=str(eval_path),
                 output_dir=str(tmp_path / "out"), on_bad_record="error", max_image_pixels=MAX_IMAGE_PIXELS,
                 report_to="none", max_steps=2)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("vqa.py: error: 8 of 24 training records")
    for reason, ids in EXPECTED_BAD.items():
        for record_id in ids:
            assert f"[{reason}] record {record_id!r}" in err, (record_id, err)
    assert "record 'eval-missing'" in err  # the evaluation records are scanned and reported in the same message
    assert not (tmp_path / "out").exists()


def test_corpus_under_drop_trains_to_completion_with_a_matching_summary(tiny_llava_dir, tmp_path, capsys):
    path = write_bad_corpus(tmp_path)
    with report_usage_errors("vqa.py"):  # as the recipes run: a usage error here would end the test
        results = finetune(model=str(tiny_llava_dir), train_dataset=str(path), output_dir=str(tmp_path / "out"),
                           max_image_pixels=MAX_IMAGE_PIXELS, max_bad_fraction=0.5, max_length=256,
                           per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-3,
                           save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0)
    trainer = results["trainer"]
    assert trainer.state.global_step == len(GOOD_IDS) // 4  # every clean record trained, one epoch
    saved = json.loads((tmp_path / "out" / "train_results.json").read_text())
    assert saved["train_bad_records"] == len(bad_ids()) == saved["train_bad_records_at_startup"]
    for reason, ids in EXPECTED_BAD.items():
        assert saved[f"train_bad_records_{reason}"] == len(ids), reason
    card = (tmp_path / "out" / "README.md").read_text()
    assert "### Records left out" in card and f"{len(bad_ids())} bad training record(s)" in card
    assert all(f"`{record_id}`" in card for record_id in bad_ids())
    assert str(tmp_path) not in card  # ids only: the messages carry local paths
    logged = capsys.readouterr()
    assert "Traceback" not in logged.err + logged.out
    assert all(f"Leaving out training record {record_id!r}" in logged.out for record_id in bad_ids())
    assert "Left out 8 bad training records (8 at start-up, 0 in the data loader" in logged.out


# ---- after start-up: the data loader ----------------------------------------------------------------------------
def _small_set(tmp_path, n=8):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    for i in range(n):
        colour = "red" if i % 2 else "blue"
        Image.new("RGB", (32, 32), colour).save(folder / f"{i}.png")
        rows.append({"id": f"r{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": colour}]})
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _corrupt_after_startup(path, names):
    for name in names:  # header intact, so only decoding notices: what a scan cannot see
        file = path.parent / name
        data = bytearray(file.read_bytes())
        start = data.index(b"IDAT") + 8
        data[start:start + 40] = b"\xff" * 40  # the zlib stream is broken; IEND is still there
        file.write_bytes(bytes(data))
        image_headers.image_size(name, root=path.parent, check_complete=True)  # the scan would pass it
        with pytest.raises(images.ImageLoadError):
            images.load_image(name, root=path.parent)


@pytest.mark.parametrize("workers", [0, 1])
def test_image_broken_after_startup_costs_one_sample(tiny_llava_dir, tmp_path, workers, caplog):
    path = _small_set(tmp_path)
    data_args = DataArguments(dataset_name=str(path), max_length=256)
    train, _ = load_datasets(data_args)
    trainer = build_trainer(ModelArguments(model_name_or_path=str(tiny_llava_dir), use_peft=False), data_args,
                            _args(tmp_path, num_train_epochs=1, dataloader_num_workers=workers), train)
    _corrupt_after_startup(path, ["3.png"])
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    with caplog.at_level(logging.WARNING):
        result = trainer.train()
    assert trainer.state.global_step == 2  # the run completed
    assert result.metrics["train_bad_records"] == 1 and result.metrics["train_bad_records_unreadable_image"] == 1
    assert result.metrics["train_bad_records_at_startup"] == 0
    assert trainer.bad_records.seen == 8 and [r.record_id for r in trainer.bad_records.kept] == ["r3"]
    assert any(not torch.equal(p.detach(), before[name]) for name, p in trainer.model.named_parameters()
               if p.requires_grad)
    assert "1 unreadable_image: r3" in caplog.text  # the run's summary, in the main process
    if workers == 0:  # the drop itself is logged where the collator runs (a worker's log stays in the worker)
        assert "Dropping training record 'r3' (unreadable_image)" in caplog.text and "3.png" in caplog.text
    assert trainer.bad_record_summary["ids"] == {"unreadable_image": ["r3"]}


def test_on_bad_record_error_stops_at_the_first_one_naming_it(tiny_llava_dir, tmp_path):
    path = _small_set(tmp_path)
    data_args = DataArguments(dataset_name=str(path), max_length=256, on_bad_record="error")
    train, _ = load_datasets(data_args)
    trainer = build_trainer(ModelArguments(model_name_or_path=str(tiny_llava_dir), use_peft=False), data_args,
                            _args(tmp_path, num_train_epochs=1, dataloader_num_workers=1), train)
    _corrupt_after_startup(path, ["5.png"])
    with pytest.raises(BadRecordError) as info:
        trainer.train()
    # Raised in a DataLoader worker: PyTorch re-raises it with the worker's traceback as the message; the user
    # sees the original message only.
    shown = format_usage_error(info.value, "vqa.py")
    assert "Traceback" not in shown and "record 'r5'" in shown and "5.png" in shown
    assert "--on_bad_record error" in shown and "--on_bad_record drop" in shown


def test_too_many_bad_samples_in_the_loader_stop_the_run_with_a_report(tiny_llava_dir, tmp_path):
    path = _small_set(tmp_path)
    data_args = DataArguments(dataset_name=str(path), max_length=256)  # default --max_bad_fraction 0.01
    train, _ = load_datasets(data_args)
    trainer = build_trainer(ModelArguments(model_name_or_path=str(tiny_llava_dir), use_peft=False), data_args,
                            _args(tmp_path, num_train_epochs=1, train_sampling_strategy="sequential"), train)
    _corrupt_after_startup(path, ["0.png", "1.png", "2.png", "3.png"])  # the first batch holds all four
    with pytest.raises(BadRecordError) as info:
        trainer.train()
    message = str(info.value)
    assert message.startswith("4 of the 4 training samples the data loader has seen are bad")
    assert all(f"record 'r{i}'" in message for i in range(4))
    assert trainer.state.global_step == 0  # stopped at the first optimizer step (an all-dropped batch), before it


def test_fraction_is_judged_over_at_least_100_samples():
    assert not too_many(1, 4, 0.01)  # one bad sample among the first few: within 1% of 100
    assert too_many(2, 4, 0.01) and too_many(2, 199, 0.01) and not too_many(2, 200, 0.01)
    assert too_many(1, 1000, 0.0) and not too_many(0, 1000, 0.0)


# ---- the collator ----------------------------------------------------------------------------------------------
def _record(record_id, image, root):
    record = to_canonical({"id": record_id, "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "red"}]})
    record["image_root"] = str(root)
    return record


def _text_record(record_id):
    return to_canonical({"id": record_id, "conversations": [
        {"from": "human", "value": "Say red."}, {"from": "gpt", "value": "red"}]})


def test_collator_drops_bad_images_and_reports_them_in_the_batch(tiny_processor, tmp_path):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    collator = VLMCollator(tiny_processor, on_bad_record="drop")
    batch = collator([_record("a", "ok.png", tmp_path), _record("b", "bad.png", tmp_path),
                      _record("c", "gone.png", tmp_path)])
    assert batch["input_ids"].shape[0] == 1
    entry = batch[BAD_RECORDS_KEY]
    assert entry["seen"] == 3 and [(i, reason) for i, reason, _ in entry["bad"]] == [
        ("b", "unreadable_image"), ("c", "missing_image")]
    # The same batch with every record bad: an empty batch (the trainer's zero loss), not a crash.
    empty = collator([_record("b", "bad.png", tmp_path), _record("c", "gone.png", tmp_path)])
    assert empty["input_ids"].shape[0] == 0 and len(empty[BAD_RECORDS_KEY]["bad"]) == 2
    # Without a policy (data check, custom loops) the loader's error propagates unchanged.
    with pytest.raises(images.ImageLoadError):
        VLMCollator(tiny_processor)([_record("b", "bad.png", tmp_path)])


def test_keepalive_follows_the_records_kept(tiny_processor, tmp_path):
    """The one image record of a batch is dropped: the blank keep-alive image keeps the vision tower running."""
    collator = VLMCollator(tiny_processor, on_bad_record="drop", keep_vision_active=True)
    batch = collator([_record("b", "gone.png", tmp_path), _text_record("t")])
    assert batch["input_ids"].shape[0] == 2 and "pixel_values" in batch
    assert (batch["labels"][1] == -100).all()  # the keep-alive sample teaches nothing
    assert not (batch["labels"][0] == -100).all()


def test_worker_traceback_is_stripped_from_usage_errors(tmp_path):
    class Failing(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            raise BadRecordError("record 'x': image 'x.png' is corrupt.\nSecond line of the report.")

    loader = torch.utils.data.DataLoader(Failing(), num_workers=1)
    with pytest.raises(BadRecordError) as info:
        next(iter(loader))
    assert "Traceback" in str(info.value)  # what PyTorch makes of it
    assert format_usage_error(info.value, "mmft") == (
        "mmft: error: record 'x': image 'x.png' is corrupt.\nSecond line of the report.")


def test_flags_are_checked(tmp_path):
    from mmft.errors import UsageError

    path = _small_set(tmp_path)
    with pytest.raises(UsageError, match="--max_bad_fraction"):
        load_datasets(DataArguments(dataset_name=str(path), max_bad_fraction=1.5))
    with pytest.raises(UsageError, match="--on_bad_record"):
        load_datasets(DataArguments(dataset_name=str(path), on_bad_record="skip"))


def test_bytes_images_are_scanned_too(tmp_path):
    from mmft.data.sources import load_records
    from mmft.workflow import scan_for_bad_records

    data = encoded(noisy_image(3), "PNG")
    rows = [{"id": "full", "images": [data], "messages": [{"role": "user", "content": "<image>\nQ"},
                                                         {"role": "assistant", "content": "A"}]},
            {"id": "cut", "images": [data[:-20]], "messages": [{"role": "user", "content": "<image>\nQ"},
                                                              {"role": "assistant", "content": "A"}]}]
    train = load_records(rows, drop_invalid=True)
    scan_for_bad_records(train, None, DataArguments(max_bad_fraction=1.0))
    assert [train[i]["id"] for i in range(len(train))] == ["full"]
    assert _by_reason(train.bad_record_scan.bad) == {"truncated_image": ["cut"]}


def test_streamed_records_are_dropped_by_the_loader(tiny_llava_dir, tmp_path):
    """A stream has no start-up scan: its bad images are met, dropped and counted by the data loader."""
    path = _small_set(tmp_path)
    (path.parent / "6.png").unlink()
    _corrupt_after_startup(path, ["2.png"])
    data_args = DataArguments(dataset_name=str(path), max_length=256, streaming=True, max_bad_fraction=0.5)
    args = _args(tmp_path, max_steps=2)
    train, _ = load_datasets(data_args, training_args=args)
    assert getattr(train, "bad_record_scan", None) is None  # nothing scanned
    trainer = build_trainer(ModelArguments(model_name_or_path=str(tiny_llava_dir), use_peft=False), data_args, args,
                            train)
    result = trainer.train()
    assert trainer.state.global_step == 2
    assert result.metrics["train_bad_records"] == 2 and result.metrics["train_bad_records_at_startup"] == 0
    metrics = result.metrics
    assert metrics["train_bad_records_missing_image"] == metrics["train_bad_records_unreadable_image"] == 1
    assert sorted(r.record_id for r in trainer.bad_records.kept) == ["r2", "r6"]
