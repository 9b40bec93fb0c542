"""Continual retraining: a run continues an adapter trained earlier (its exact weights, on its recorded base),
rehearses the old task by replay, reports what the old task kept, and pushes the new version with its lineage.

The two tasks: shapes VQA (one-word answers; the "old" task) then shapes captions (the "new" one), over the same
kind of images. The Hub is never contacted: ``snapshot_download``, ``create_repo`` and ``upload_folder`` are
recorders, as in ``test_hub.py``.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.hf_api import RepoUrl

from mmft.config.data_args import DataArguments
from mmft.config.model_args import ModelArguments
from mmft.config.training_args import VLMTrainingArguments
from mmft.errors import USAGE_ERROR_EXIT_CODE, UsageError, report_usage_errors
from mmft.recipe import finetune
from mmft.train.replay import ReplayMixture, replay_count
from mmft.train.retention import RetentionDropError
from mmft.train.starting_adapter import ADAPTER_FILES, BaseModelMismatchError, resolve_starting_adapter
from mmft.workflow import load_datasets

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PARENT_REPO = "tester/tiny-vqa"
COMMON = dict(max_eval_samples=8, max_length=256, per_device_train_batch_size=4, per_device_eval_batch_size=8,
              generation_max_new_tokens=2, save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
              learning_rate=1e-3)


@pytest.fixture(scope="module")
def captions_dir(tmp_path_factory):
    """The second task: shapes captions, small splits on disk."""
    from mmft.data.shapes import write_split

    root = tmp_path_factory.mktemp("captions")
    return {"train": write_split(root, "train", 32, task="captions"),
            "test": write_split(root, "test", 8, task="captions")}


@pytest.fixture(scope="module")
def first_adapter(tiny_llava_dir, shapes_dir, tmp_path_factory):
    """The adapter a team trained last month: LoRA r=4 on shapes VQA, evaluated on its test set."""
    out = tmp_path_factory.mktemp("first") / "vqa-lora"
    results = finetune(model=str(tiny_llava_dir), dataset_name=str(shapes_dir["train"]),
                       eval_dataset_name=str(shapes_dir["test"]), output_dir=str(out), max_steps=6, lora_r=4,
                       lora_dropout=0.0, max_train_samples=24, **COMMON)
    return out, {k: v for k, v in results.items() if k != "trainer"}


@pytest.fixture
def hub(monkeypatch):
    """Record the Hub calls a push makes (``create_repo``, ``upload_folder``) and the README.md each upload sends."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        readme = Path(folder_path) / "README.md"
        calls.append(("upload_folder", {"repo_id": repo_id, "readme": readme.read_text() if readme.exists() else None,
                                        **kwargs}))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


@pytest.fixture
def hub_adapter(first_adapter, tmp_path, monkeypatch):
    """``tester/tiny-vqa`` on the "Hub": ``snapshot_download`` serves the first adapter as commit ``COMMIT``."""
    downloads = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None, token=None, **kwargs):
        downloads.append({"repo_id": repo_id, "revision": revision, "allow_patterns": allow_patterns})
        snapshot = tmp_path / "hub-cache" / "snapshots" / COMMIT
        if not snapshot.exists():
            shutil.copytree(first_adapter[0], snapshot)
        return str(snapshot)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return downloads


def _continue(first, captions_dir, shapes_dir, out, **overrides):
    values = dict(adapter_name_or_path=str(first), dataset_name=str(captions_dir["train"]),
                  eval_dataset_name=str(captions_dir["test"]), retention_eval_dataset_name=[str(shapes_dir["test"])],
                  output_dir=str(out), max_steps=6, max_train_samples=24, **COMMON)
    values.update(overrides)
    return finetune(**values)


def _lora_b(model) -> dict[str, torch.Tensor]:
    return {name[name.index("language_model."):]: p.detach().clone()
            for name, p in model.named_parameters() if "lora_B" in name}


# ---- starting from the adapter ------------------------------------------------------------------------------------
def test_a_continued_run_starts_from_the_adapters_weights_and_reports_the_old_task(
        tiny_llava_dir, shapes_dir, captions_dir, first_adapter, tmp_path, monkeypatch, capfd):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    import mmft.train.modeling

    first, first_results = first_adapter
    captured = {}
    load = mmft.train.modeling.load_starting_adapter

    def load_and_watch(model, adapter):  # record the inputs and logits of the first *training* forward pass
        peft_model = load(model, adapter)

        def hook(module, args, kwargs, output):
            if module.training and "logits" not in captured:
                captured["inputs"] = {k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)}
                captured["logits"] = output.logits.detach().clone()

        peft_model.register_forward_hook(hook, with_kwargs=True)
        return peft_model

    monkeypatch.setattr(mmft.train.modeling, "load_starting_adapter", load_and_watch)
    out = tmp_path / "month-2"
    # lora_r=16 is ignored: the adapter keeps its own shape (r=4).
    # --metrics bleu scores the new task; the old one keeps its own (no card: vqa_accuracy, exact_match).
    results = _continue(first, captions_dir, shapes_dir, out, lora_r=16, metrics=["bleu"])
    logs = capfd.readouterr().out

    # Where it started: the adapter's base, its weights, its shape; a fresh optimizer, said in one line.
    assert results["trainer"].starting_adapter.base == json.loads((first / "adapter_config.json").read_text())[
        "base_model_name_or_path"]
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert sum("optimizer and learning-rate schedule start fresh (not a resume" in line
               for line in logs.splitlines()) == 1

    # The first training step's logits are the first adapter's, on the same batch (dropout is 0 in that adapter).
    inputs = {k: v for k, v in captured["inputs"].items() if k != "labels"}
    base = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir).eval()
    with torch.no_grad():
        base_logits = base(**inputs).logits
        reference = PeftModel.from_pretrained(base, first).eval()(**inputs).logits
    assert not torch.allclose(base_logits, reference, atol=1e-4)  # the adapter matters: the check can fail
    torch.testing.assert_close(captured["logits"], reference, rtol=1e-5, atol=1e-5)
    # ...and training moved on from there.
    trained = _lora_b(results["trainer"].model)
    started = _lora_b(PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_llava_dir), first))
    assert trained.keys() == started.keys() and any(not torch.equal(trained[k], started[k]) for k in trained)

    # The old task, before (= the first adapter's own score on that set) and after; the new task beside it.
    retention = json.loads((out / "retention_results.json").read_text())
    [old] = retention["old_tasks"]
    assert old["dataset"] == "test.jsonl" and old["records"] == 8 and old["primary_metric"] == "vqa_accuracy"
    assert set(old["metrics"]) == {"loss", "vqa_accuracy", "exact_match"}  # the shapes data's default metrics
    loss = old["metrics"]["loss"]
    assert loss["before"] == pytest.approx(first_results["eval_loss"], abs=1e-5)
    assert loss["after"] != loss["before"] and loss["change"] == pytest.approx(loss["after"] - loss["before"])
    assert retention["parent_adapter"] == {"id": None, "name": first.name, "revision": None}
    new = retention["new_task"]
    assert new["dataset"] == "test.jsonl" and set(new["metrics"]) == {"loss", "bleu"}
    assert new["metrics"]["loss"]["before"] is not None and new["metrics"]["loss"]["change"] is not None
    eval_results = json.loads((out / "eval_results.json").read_text())
    assert eval_results["retention_test_jsonl_before_train_loss"] == loss["before"]
    assert eval_results["retention_test_jsonl_loss"] == loss["after"]
    assert "eval_bleu" in eval_results and "retention_test_jsonl_vqa_accuracy" in eval_results

    # The model card names the parent and shows both tasks; so does the HTML report.
    card = ModelCard.load(out / "README.md")
    assert card.data.parent_adapter == {"name": first.name}
    assert f"Continued from the adapter `{first.name}` (a local adapter" in card.text
    old_row = next(line for line in card.text.splitlines() if line.startswith("| old | test.jsonl (`test`) | Loss"))
    assert f"{loss['before']:.4f} | {loss['after']:.4f} | {loss['change']:+.4f}" in old_row
    assert any(r.dataset_name == "test.jsonl (retention)" and r.metric_type == "loss" for r in card.data.eval_results)
    report = (out / "eval_report.html").read_text()
    assert "Old and new tasks" in report and report.count("<td>old</td>") == 3 and "<td>new</td>" in report


def test_the_base_model_must_be_the_adapters(first_adapter, tiny_llava_dir, tmp_path, capsys):
    first, _ = first_adapter
    other = tmp_path / "another-model"
    other.mkdir()
    with pytest.raises(BaseModelMismatchError) as error:
        resolve_starting_adapter(ModelArguments(model_name_or_path=str(other), adapter_name_or_path=str(first)))
    message = str(error.value)
    recorded = json.loads((first / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert str(other) in message and recorded in message and str(first) in message
    # Through an entry point: one message, exit code 2, no traceback.
    with pytest.raises(SystemExit) as exit_info, report_usage_errors("mmft train"):
        resolve_starting_adapter(ModelArguments(model_name_or_path=str(other), adapter_name_or_path=str(first)))
    assert exit_info.value.code == USAGE_ERROR_EXIT_CODE
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "is not the base model of --adapter_name_or_path" in stderr

    # The same model named another way is not a mismatch; leaving it out takes the recorded one.
    same = ModelArguments(model_name_or_path=str(tiny_llava_dir), adapter_name_or_path=str(first))
    assert resolve_starting_adapter(same).base == str(tiny_llava_dir)
    implied = ModelArguments(adapter_name_or_path=str(first))
    resolve_starting_adapter(implied)
    assert implied.model_name_or_path == recorded
    # The revision recorded with the base is used, and another one is a mismatch.
    recorded_revision = tmp_path / "adapter-at-revision"
    shutil.copytree(first, recorded_revision)
    config = json.loads((recorded_revision / "adapter_config.json").read_text())
    (recorded_revision / "adapter_config.json").write_text(json.dumps({**config, "revision": "v1.2"}))
    at_revision = ModelArguments(adapter_name_or_path=str(recorded_revision))
    assert resolve_starting_adapter(at_revision).base_revision == "v1.2" and at_revision.model_revision == "v1.2"
    with pytest.raises(BaseModelMismatchError, match="--model_revision 'v2' is not the revision"):
        resolve_starting_adapter(ModelArguments(adapter_name_or_path=str(recorded_revision), model_revision="v2"))
    # Other misuses are usage errors too.
    with pytest.raises(UsageError, match="--use_peft is false"):
        resolve_starting_adapter(ModelArguments(adapter_name_or_path=str(first), use_peft=False))
    with pytest.raises(UsageError, match="pass it as --model_name_or_path"):
        resolve_starting_adapter(ModelArguments(adapter_name_or_path=str(tiny_llava_dir)))  # a full model
    with pytest.raises(UsageError, match="applies to Hub adapters"):
        resolve_starting_adapter(ModelArguments(adapter_name_or_path=str(first), adapter_revision="v2"))


# ---- replay ---------------------------------------------------------------------------------------------------------
def _records(prefix, n):
    return [{"id": f"{prefix}-{i}"} for i in range(n)]


def test_replay_mixes_a_fraction_of_old_records_into_each_epoch_deterministically():
    new, old = _records("new", 8), _records("old", 5)
    mixture = ReplayMixture(new, old, fraction=0.2, seed=3)
    assert replay_count(8, 0.2) == 2 and len(mixture) == 10  # 2 of 10 records per epoch are old
    assert [mixture[i]["id"] for i in range(8)] == [r["id"] for r in new]
    epochs = []
    for epoch in range(5):
        mixture.set_epoch(epoch)
        epochs.append([mixture[i]["id"] for i in range(8, 10)])
        assert all(record_id.startswith("old-") for record_id in epochs[-1])
    # Consecutive epochs walk through shuffled passes of the old set: no repeat before all 5 are seen.
    assert len(set(epochs[0] + epochs[1])) == 4
    assert {i for ids in epochs for i in ids} == {r["id"] for r in old}
    # A pure function of (seed, epoch): another object agrees, another seed does not.
    again = ReplayMixture(new, old, fraction=0.2, seed=3)
    assert [again.replay_indices(e) for e in range(5)] == [mixture.replay_indices(e) for e in range(5)]
    other = ReplayMixture(new, old, fraction=0.2, seed=4)
    assert [other.replay_indices(e) for e in range(5)] != [mixture.replay_indices(e) for e in range(5)]
    # DataLoader workers see the epoch set in the main process (shared memory), persistent workers included.
    loader = torch.utils.data.DataLoader(mixture, batch_size=10, num_workers=1, persistent_workers=True,
                                         collate_fn=lambda records: [r["id"] for r in records])
    for epoch in (0, 3):
        mixture.set_epoch(epoch)
        assert next(iter(loader))[8:] == [old[i]["id"] for i in mixture.replay_indices(epoch)]
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(UsageError, match="--replay_fraction must be between 0 and 1"):
            DataArguments(replay_fraction=bad)


def test_training_sees_the_replayed_records_drawn_for_each_epoch(tiny_llava_dir, shapes_dir, captions_dir, tmp_path,
                                                                 monkeypatch):
    from mmft.train.collator import VLMCollator

    seen = []
    call = VLMCollator.__call__

    def spy(self, records):
        if self.mode == "train":
            seen.extend(r["id"] for r in records)
        return call(self, records)

    monkeypatch.setattr(VLMCollator, "__call__", spy)
    data_args = DataArguments(dataset_name=str(captions_dir["train"]), max_train_samples=8,
                              replay_dataset_name=str(shapes_dir["train"]), replay_fraction=0.2, max_length=256)
    training = dict(output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=5,
                    save_strategy="no", report_to="none", disable_tqdm=True, seed=7)
    train, _ = load_datasets(data_args, training_args=VLMTrainingArguments(**training))
    assert isinstance(train, ReplayMixture) and len(train) == 10
    finetune(model=str(tiny_llava_dir), **{f: getattr(data_args, f) for f in (
        "dataset_name", "max_train_samples", "replay_dataset_name", "replay_fraction", "max_length")}, **training)
    replay_ids = [r["id"] for r in train.replay]
    assert len(seen) == 20
    for epoch, ids in enumerate((seen[:10], seen[10:])):
        replayed = [i for i in ids if i.startswith("shapes-train-")]
        assert sorted(replayed) == sorted(replay_ids[i] for i in train.replay_indices(epoch))
        assert len([i for i in ids if i.startswith("shapes-captions-")]) == 8
    assert train.replay_indices(0) != train.replay_indices(1)


# ---- the retention gate and the versioned push --------------------------------------------------------------------
def test_a_continued_hub_adapter_is_pushed_as_a_new_commit_of_its_repo_with_its_lineage(
        first_adapter, hub_adapter, hub, shapes_dir, captions_dir, tmp_path):
    out = tmp_path / "month-2"
    _continue(PARENT_REPO, captions_dir, shapes_dir, out, adapter_revision="v1", push_to_hub=True,
              hub_strategy="end", eval_generation=False)
    [download] = hub_adapter
    assert download["repo_id"] == PARENT_REPO and download["revision"] == "v1"
    assert download["allow_patterns"] == list(ADAPTER_FILES) and not any("bin" in p for p in ADAPTER_FILES)

    repos = [kwargs for name, kwargs in hub if name == "create_repo"]
    assert [r["repo_id"] for r in repos] == [PARENT_REPO] and repos[0]["exist_ok"] is True  # the same repository
    final = [kwargs for name, kwargs in hub if name == "upload_folder"][-1]
    assert final["repo_id"] == PARENT_REPO
    assert final["commit_message"] == f"Continue training from {PARENT_REPO}@{COMMIT[:12]} on train.jsonl"
    card = ModelCard(final["readme"])
    assert card.data.parent_adapter == {"id": PARENT_REPO, "revision": COMMIT, "requested_revision": "v1"}
    assert f"[{PARENT_REPO}](https://huggingface.co/{PARENT_REPO}/tree/{COMMIT}) at revision `{COMMIT}`" in card.text
    assert "(asked for as `v1`)" in card.text and "on new data: `train.jsonl`" in card.text
    assert "| old | test.jsonl (`test`) | Loss |" in card.text

    # --hub_model_id wins over the parent's repository.
    model_args = ModelArguments(adapter_name_or_path=PARENT_REPO)
    args = VLMTrainingArguments(output_dir=str(tmp_path / "x"), push_to_hub=True, hub_model_id="tester/new-repo",
                                report_to="none")
    resolve_starting_adapter(model_args, args)
    assert args.hub_model_id == "tester/new-repo"


def test_an_old_task_falling_past_the_limit_fails_the_run_after_writing_results_and_skips_the_push(
        first_adapter, hub, shapes_dir, captions_dir, tmp_path, capsys):
    out = tmp_path / "gated"
    with pytest.raises(SystemExit) as exit_info, report_usage_errors("recipes/vqa.py"):
        # Loss only (no generation): the gate reads the old task's loss, which training on captions raises.
        _continue(first_adapter[0], captions_dir, shapes_dir, out, eval_generation=False, max_retention_drop=0.0,
                  push_to_hub=True, hub_model_id="tester/gated", hub_strategy="end")
    assert exit_info.value.code == USAGE_ERROR_EXIT_CODE
    message = capsys.readouterr().err
    retention = json.loads((out / "retention_results.json").read_text())
    [old] = retention["old_tasks"]
    loss = old["metrics"]["loss"]
    assert retention["passed"] is False and old["primary_metric"] == "loss" and loss["after"] > loss["before"]
    assert f"test.jsonl loss {loss['before']:.4f} -> {loss['after']:.4f}" in message
    assert "--max_retention_drop 0.0" in message and "final push was skipped" in message
    assert (out / "README.md").is_file() and (out / "adapter_model.safetensors").is_file()
    assert "retention_test_jsonl_loss" in json.loads((out / "eval_results.json").read_text())
    assert [name for name, _ in hub if name == "upload_folder"] == []  # nothing reached the Hub

    with pytest.raises(RetentionDropError):  # the error itself, for callers that are not entry points
        _continue(first_adapter[0], captions_dir, shapes_dir, tmp_path / "gated-2", eval_generation=False,
                  max_retention_drop=0.0)


@pytest.mark.slow  # about 40 s: one first adapter and two continued runs, longer than the tests above
def test_replay_keeps_more_of_the_old_task(tiny_llava_wide_dir, shapes_dir, captions_dir, tmp_path):
    common = {**COMMON, "eval_generation": False, "learning_rate": 2e-3}
    first = tmp_path / "first"
    finetune(model=str(tiny_llava_wide_dir), dataset_name=str(shapes_dir["train"]), output_dir=str(first),
             max_steps=30, lora_r=8, lora_dropout=0.0, **common)
    changes = {}
    for name, replay in (("without", {}), ("with", {"replay_dataset_name": str(shapes_dir["train"]),
                                                   "replay_fraction": 0.3})):
        out = tmp_path / name
        finetune(model=None, adapter_name_or_path=str(first), dataset_name=str(captions_dir["train"]),
                 retention_eval_dataset_name=[str(shapes_dir["test"])], output_dir=str(out), max_steps=20,
                 **replay, **common)
        [old] = json.loads((out / "retention_results.json").read_text())["old_tasks"]
        changes[name] = old["metrics"]["loss"]["change"]
    print("old-task loss change:", changes)
    assert changes["without"] > 0  # training on captions alone made the VQA task worse
    assert changes["with"] < changes["without"]
