"""Sharing: the model card states what the run used and measured, its usage code works, ``--push_to_hub`` uploads
model + processor + card from the main process only, and the Hub token is written nowhere.

The Hub is never contacted: ``HfApi.create_repo`` and ``HfApi.upload_folder`` (the two calls
``Trainer.push_to_hub`` makes, through ``transformers.utils.hub.hf_api()``) are replaced by recorders; any other
Hub call fails, as the tests run with ``HF_HUB_OFFLINE=1``.
"""

import copy
import pickle
import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS, RepoUrl
from huggingface_hub.utils import filter_repo_objects

from mmft.config.data_args import DataArguments
from mmft.config.model_args import ModelArguments
from mmft.config.training_args import VLMTrainingArguments
from mmft.data.sources import load_records
from mmft.hub.card import card_data
from mmft.hub.card_text import card_text
from mmft.hub.hub_token import TOKEN_PLACEHOLDER, SecretToken
from mmft.hub.run_summary import RunSummary, dataset_source, model_source
from mmft.recipe import finetune
from mmft.workflow import build_trainer

ARG_TOKEN = "hf_ArgSentinelToken0123456789abcdef"
ENV_TOKEN = "hf_EnvSentinelToken0123456789abcdef"
REPO_ID = "tester/tiny-vqa"


@pytest.fixture
def hub(monkeypatch):
    """Record what would be sent to the Hub: ``calls`` holds ``(method, kwargs)``; each upload also records the
    files ``upload_folder`` would send (its own filtering, from its patterns) and the README.md sent with them."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, allow_patterns=None, **kwargs):
        folder = Path(folder_path)
        files = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
        ignore = list(ignore_patterns or []) + DEFAULT_IGNORE_PATTERNS
        sent = list(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore))
        readme = (folder / "README.md").read_text() if "README.md" in sent else None
        calls.append(("upload_folder", {"repo_id": repo_id, "files": sent, "readme": readme, **kwargs}))
        return None

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


@pytest.fixture
def builtin_tiny_llava(tiny_llava_dir, tmp_path, monkeypatch):
    """``mmft:tiny-llava`` resolves to the session's tiny model (MMFT_CACHE pointed at it: no second build)."""
    cache = tmp_path / "mmft-cache"
    cache.mkdir()
    (cache / "models").symlink_to(Path(tiny_llava_dir).parent, target_is_directory=True)
    monkeypatch.setenv("MMFT_CACHE", str(cache))
    return "mmft:tiny-llava"


def _run(model, shapes_dir, out, **overrides):
    values = dict(dataset_name=str(shapes_dir["train"]), eval_dataset_name=str(shapes_dir["test"]),
                  max_train_samples=8, max_eval_samples=4, max_length=256, output_dir=str(out), max_steps=2,
                  per_device_train_batch_size=4, per_device_eval_batch_size=4, generation_max_new_tokens=2,
                  save_strategy="no", report_to="none", disable_tqdm=True, seed=0)
    values.update(overrides)
    return finetune(model=model, **values)


def _code_blocks(card_text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card_text, flags=re.S)


def _run_snippet(code: str, repo_dir: Path, image: Path, local_base: Path | None = None) -> dict:
    """Execute the card's usage code with the repository id pointing at the local output folder."""
    code = code.replace(f'"{REPO_ID}"', repr(str(repo_dir))).replace('"photo.png"', repr(str(image)))
    if local_base is not None:
        code = code.replace(f'"path/to/{local_base.name}"', repr(str(local_base)))
    namespace = {}
    exec(compile(code, "<model card>", "exec"), namespace)  # noqa: S102 - our own card's code, on a local model
    return namespace


def _lora_b(model) -> dict[str, torch.Tensor]:
    # Keys differ by wrapper (PeftModel vs transformers' injected adapter); the part from the language model on
    # names the same layer in both.
    return {name[name.index("language_model."):]: p.detach().clone()
            for name, p in model.named_parameters() if "lora_B" in name}


def _metrics_in_model_index(card: ModelCard) -> dict[str, float]:
    return {result.metric_type: result.metric_value for result in card.data.eval_results or []}


@pytest.mark.slow  # about 20 s: two evaluations, two checkpoints, two pushes, the card's code run twice
def test_push_uploads_adapter_processor_and_our_card_and_never_the_token(
        builtin_tiny_llava, shapes_dir, tmp_path, hub, monkeypatch, caplog, capfd):
    import transformers

    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    out = tmp_path / "out"
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_debug()  # the most transformers would ever log
    try:
        with caplog.at_level("DEBUG"):
            results = _run(builtin_tiny_llava, shapes_dir, out, lora_r=4, eval_before_train=True,
                           save_strategy="steps", save_steps=1,  # checkpoints hold training_args.bin too
                           push_to_hub=True, hub_model_id=REPO_ID, hub_private_repo=True, hub_strategy="end",
                           hub_token=ARG_TOKEN)
    finally:
        transformers.logging.set_verbosity(verbosity)
    logs = caplog.text + "".join(capfd.readouterr())

    # One repository, private, created with the token given.
    repos = [kwargs for name, kwargs in hub if name == "create_repo"]
    assert len(repos) == 1 and repos[0]["repo_id"] == REPO_ID and repos[0]["private"] is True
    assert repos[0]["token"] == ARG_TOKEN
    # transformers pushes on save_model ("Model save") and the recipe's final push carries the evaluated card.
    uploads = [kwargs for name, kwargs in hub if name == "upload_folder"]
    assert [u["commit_message"] for u in uploads] == ["Model save", "End of training"]
    final = uploads[-1]
    assert final["repo_id"] == REPO_ID and final["token"] == ARG_TOKEN
    expected = {"adapter_config.json", "adapter_model.safetensors", "processor_config.json", "chat_template.jinja",
                "tokenizer.json", "tokenizer_config.json", "generation_config.json", "README.md"}
    assert expected <= set(final["files"]), sorted(final["files"])
    assert not [f for f in final["files"] if f.startswith("checkpoint-")]
    assert (out / "checkpoint-2" / "training_args.bin").exists()  # kept locally, not uploaded

    card = ModelCard(final["readme"])  # parses the YAML and the model-index back
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "image-text-to-text"
    assert card.data.base_model is None  # a built-in model is not a Hub id: named in the text instead
    assert "`mmft:tiny-llava` (a tiny random-weight model built locally by mmft" in card.text
    assert {"mmft", "lora", "vision-language", "llava"} <= set(card.data.tags)
    assert card.data.datasets is None  # local files: not Hub datasets
    measured = _metrics_in_model_index(card)
    assert set(measured) == {"loss", "vqa_accuracy", "exact_match"}
    for name, value in measured.items():
        assert value == round(results[f"eval_{name}"], 4)
    # The before-training column holds what eval_before_train measured.
    loss_row = next(line for line in card.text.splitlines() if line.startswith("| Loss |"))
    assert f"{results['eval_before_train_loss']:.4f}" in loss_row and f"{results['eval_loss']:.4f}" in loss_row
    assert "| LoRA rank (r) | 4 |" in card.text and "| LoRA target | language |" in card.text
    assert str(tmp_path) not in final["readme"]

    # The token: used for the calls above, written to no file, no log line, not the card.
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert ARG_TOKEN.encode() not in data and ENV_TOKEN.encode() not in data, path
    for text in (logs, final["readme"]):
        assert ARG_TOKEN not in text and ENV_TOKEN not in text
    for saved in (out / "training_args.bin", out / "checkpoint-1" / "training_args.bin"):
        assert torch.load(saved, weights_only=False).hub_token == TOKEN_PLACEHOLDER

    # The card's usage code works, both ways, and loads the trained adapter (LoRA B starts at zero).
    trained = _lora_b(results["trainer"].model)
    assert trained and any(t.abs().sum() > 0 for t in trained.values())
    image = next((Path(shapes_dir["test"]).parent / "images").glob("*.png"))
    peft_block, transformers_block = _code_blocks(card.text)
    assert "PeftModel.from_pretrained" in peft_block and ".load_adapter(" in transformers_block
    for block in (peft_block, transformers_block):
        namespace = _run_snippet(block, out, image)
        loaded = _lora_b(namespace["model"])
        assert loaded.keys() == trained.keys()
        assert all(torch.equal(loaded[name], trained[name]) for name in trained)
        assert isinstance(namespace["output"], torch.Tensor)


def test_a_run_without_push_writes_a_card_with_its_metrics_and_settings(tiny_llava_dir, shapes_dir, tmp_path, hub):
    out = tmp_path / "full"
    results = _run(str(tiny_llava_dir), shapes_dir, out, use_peft=False, learning_rate=1e-3, seed=3)
    assert hub == []  # no push asked: no Hub call at all

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.base_model is None  # a local folder
    assert {"mmft", "full-fine-tuning", "llava"} <= set(card.data.tags)
    measured = _metrics_in_model_index(card)
    assert measured and measured == {name: round(results[f"eval_{name}"], 4) for name in measured}
    assert {"vqa_accuracy", "exact_match"} <= set(measured)
    assert "| learning rate | 0.001 |" in card.text and "| seed | 3 |" in card.text
    assert "| method | full fine-tuning |" in card.text
    assert "| optimizer steps run | 2 |" in card.text
    # Local paths never reach the card: only the model folder's and data files' own names.
    assert str(tmp_path) not in card.content and str(Path(tiny_llava_dir).parent) not in card.content
    assert f"`{Path(tiny_llava_dir).name}` (a local model" in card.text
    assert "`train.jsonl` (a local dataset" in card.text

    # The full-model usage code loads exactly the trained weights.
    [block] = _code_blocks(card.text)
    block = block.replace(f'"{out.name}"', repr(str(out)))  # no hub_model_id: the card names the folder
    image = next((Path(shapes_dir["test"]).parent / "images").glob("*.png"))
    namespace = _run_snippet(block, out, image)
    trained = results["trainer"].model.state_dict()
    loaded = namespace["model"].state_dict()
    assert all(torch.equal(loaded[name], trained[name]) for name in trained)


def test_only_the_main_process_writes_or_pushes(tiny_llava_dir, shapes_dir, tmp_path, hub, monkeypatch):
    out = tmp_path / "out"
    args = VLMTrainingArguments(output_dir=str(out), hub_model_id=REPO_ID, report_to="none", save_strategy="no",
                                disable_tqdm=True)
    trainer = build_trainer(ModelArguments(model_name_or_path=str(tiny_llava_dir), lora_r=4),
                            DataArguments(max_length=256), args, load_records(shapes_dir["train"], max_samples=4))
    with monkeypatch.context() as patch:
        # Process 1 of 2: should_save and is_world_process_zero are both false.
        patch.setattr(VLMTrainingArguments, "process_index", property(lambda self: 1))
        assert not trainer.args.should_save and not trainer.is_world_process_zero()
        trainer.push_to_hub()
        trainer.create_model_card()
    assert hub == [] and not any(out.rglob("*"))  # (Trainer creates the folder itself, empty)

    trainer.push_to_hub()  # the main process: the same call creates the repo and uploads the folder with our card
    assert [name for name, _ in hub] == ["create_repo", "upload_folder"]
    assert ModelCard(hub[-1][1]["readme"]).data.tags[0] == "mmft"


def test_secret_token_works_as_a_string_but_never_pickles_copies_or_prints():
    token = SecretToken(ARG_TOKEN)
    assert token == ARG_TOKEN and f"Bearer {token}" == f"Bearer {ARG_TOKEN}"
    assert ARG_TOKEN not in repr(token) and pickle.loads(pickle.dumps(token)) == TOKEN_PLACEHOLDER
    assert copy.deepcopy(token) == ARG_TOKEN  # a copied TrainingArguments still authenticates
    args = VLMTrainingArguments(output_dir="unused", hub_token=ARG_TOKEN, report_to="none")
    assert ARG_TOKEN not in str(args) and ARG_TOKEN not in args.to_json_string()  # transformers redacts these


def test_sources_are_named_by_what_may_be_published(tmp_path):
    local = tmp_path / "secret-folder" / "my-model"
    local.mkdir(parents=True)
    assert model_source("HuggingFaceTB/SmolVLM-256M-Instruct").hub_id == "HuggingFaceTB/SmolVLM-256M-Instruct"
    assert model_source(str(local)).kind == "local" and model_source(str(local)).name == "my-model"
    assert model_source("mmft:tiny-llava").kind == "builtin"
    assert dataset_source("HuggingFaceM4/ChartQA").hub_id == "HuggingFaceM4/ChartQA"
    assert dataset_source(str(tmp_path / "data" / "val.jsonl")).name == "val.jsonl"
    assert dataset_source("shapes").kind == "builtin" and dataset_source("records").kind == "memory"


def test_hub_base_model_and_datasets_reach_the_metadata():
    summary = RunSummary(model_name="chart-lora", repo_id="tester/chart-lora",
                         base=model_source("HuggingFaceTB/SmolVLM-256M-Instruct"),
                         train_data=dataset_source("HuggingFaceM4/ChartQA"),
                         eval_data=dataset_source("HuggingFaceM4/ChartQA"), eval_split="test", is_adapter=True,
                         method="dora", family="smolvlm", metrics={"vqa_accuracy": 0.61234})
    card = ModelCard(f"---\n{card_data(summary, license='apache-2.0').to_yaml()}\n---\n{card_text(summary)}")
    assert card.data.base_model == "HuggingFaceTB/SmolVLM-256M-Instruct" and card.data.library_name == "peft"
    assert card.data.datasets == ["HuggingFaceM4/ChartQA"] and card.data.license == "apache-2.0"
    assert {"dora", "smolvlm"} <= set(card.data.tags)
    [result] = card.data.eval_results
    assert (result.dataset_type, result.dataset_split) == ("HuggingFaceM4/ChartQA", "test")
    assert result.metric_value == 0.6123
    assert 'base_id = "HuggingFaceTB/SmolVLM-256M-Instruct"' in card.text
    assert 'model.load_adapter("tester/chart-lora")' in card.text
