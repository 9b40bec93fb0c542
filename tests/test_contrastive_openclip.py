"""open_clip models through the contrastive recipe: a tiny open_clip architecture registered without weights
(``open_clip:mmft-tiny``, ``mmft.testing.open_clip_tiny``), offline. Skipped when open_clip_torch is not installed."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _requirements import require_installed

require_installed("open_clip", "pip install -e '.[test]' brings open_clip_torch")

from mmft.config.data_args import DataArguments  # noqa: E402
from mmft.config.model_args import ModelArguments  # noqa: E402
from mmft.contrastive.config import ContrastiveArguments, ContrastiveTrainingArguments  # noqa: E402
from mmft.contrastive.evaluation import embed_images, embed_texts  # noqa: E402
from mmft.contrastive.models import load_dual_encoder, load_trained  # noqa: E402
from mmft.contrastive.openclip import parse_name  # noqa: E402
from mmft.contrastive.pairs import PairDataset  # noqa: E402
from mmft.contrastive.towers import tower_linear_names  # noqa: E402
from mmft.contrastive.workflow import build_contrastive_trainer, run_retrieval  # noqa: E402
from mmft.data.records import to_canonical  # noqa: E402
from mmft.errors import UsageError  # noqa: E402

TINY = "open_clip:mmft-tiny"
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 200, 20)}


def _records(n=8):
    """As tests/test_contrastive.py: coloured 48 px squares, two captions each."""
    from PIL import Image

    return [to_canonical({"id": f"r{i}", "images": [Image.new("RGB", (48, 48), COLOURS[name])], "messages": [
        {"role": "user", "content": "<image>Describe the image."},
        {"role": "assistant", "content": f"a {name} square"}],
        "references": [f"a {name} square", f"a square in {name}"]})
        for i, name in ((i, list(COLOURS)[i % 4]) for i in range(n))]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _training_args(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-2,
                    report_to="none", save_strategy="no", logging_steps=1, use_cpu=True, disable_tqdm=True)
    return ContrastiveTrainingArguments(**{**settings, **overrides})


def _trainer(tmp_path, model=TINY, use_peft=False, **contrastive):
    return build_contrastive_trainer(
        ModelArguments(model_name_or_path=model, use_peft=use_peft, lora_r=4, lora_alpha=8, lora_dropout=0.0),
        DataArguments(), ContrastiveArguments(**contrastive), _training_args(tmp_path), _records(), _records(4))


def _snapshot(model):
    return {n.removeprefix("base_model.model."): p.detach().clone() for n, p in model.named_parameters()}


def _moved(before, after):
    return {n for n in before if not torch.equal(before[n], after[n])}


def test_names_tags_and_usage_errors():
    assert parse_name("open_clip:ViT-B-32@laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_name("open_clip:ViT-B-32", "openai") == ("ViT-B-32", "openai")
    assert parse_name("hf-hub:timm/ViT-B-16-SigLIP") == ("hf-hub:timm/ViT-B-16-SigLIP", None)
    with pytest.raises(UsageError, match="give one"):
        parse_name("open_clip:ViT-B-32@openai", "laion2b_s34b_b79k")
    with pytest.raises(UsageError, match="no architecture 'no-such-arch'"):
        load_dual_encoder(ModelArguments(model_name_or_path="open_clip:no-such-arch"))


def test_collator_uses_open_clips_transform_and_tokenizer(tmp_path):
    trainer = _trainer(tmp_path)
    adapter, processor = trainer.adapter, trainer.processing_class
    assert adapter.kind == "open_clip" and adapter.loss == "clip"
    batch = trainer.data_collator([PairDataset(_records(3))[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, 32, 32)  # 48 px images -> the model's 32 px
    assert batch["input_ids"].shape == (3, 16) and batch["groups"].tolist() == [0, 1, 2]
    # open_clip's BPE: <start_of_text> a ... <end_of_text>, then zeros
    sot, eot = processor.tokenizer.sot_token_id, processor.tokenizer.eot_token_id
    first = batch["input_ids"][0].tolist()
    assert first[0] == sot and eot in first and all(t == 0 for t in first[first.index(eot) + 1:])


@pytest.mark.parametrize("modes,trains,frozen", [
    (dict(lock_image_tower=True), ["text."], ["visual."]),  # LiT
    (dict(image_tower="full", text_tower="frozen"), ["visual."], ["text."]),
])
def test_only_the_chosen_tower_trains(tmp_path, modes, trains, frozen):
    trainer = _trainer(tmp_path, **modes)
    before = _snapshot(trainer.model)
    trainer.train()
    moved = _moved(before, _snapshot(trainer.model))
    for prefix in trains:
        assert any(n.startswith(prefix) for n in moved), prefix
    for prefix in frozen:
        assert not any(n.startswith(prefix) for n in moved), prefix
    assert "logit_scale" in moved


@pytest.mark.parametrize("tower,other", [("image", "text"), ("text", "image")])
def test_lora_on_one_tower_trains_every_adapter_there_and_nothing_else(tmp_path, tower, other):
    trainer = _trainer(tmp_path, use_peft=True, **{f"{other}_tower": "frozen"})
    roots = {"image": "visual.", "text": "text."}
    adapter, fresh, _ = load_dual_encoder(ModelArguments(model_name_or_path=TINY))
    targets = tower_linear_names(fresh, adapter, tower)
    # the MLPs only: nn.MultiheadAttention's out_proj is read as a weight, never called, so LoRA there never trains
    assert targets and all(name.endswith(("mlp.c_fc", "mlp.c_proj")) for name in targets), targets
    before = _snapshot(trainer.model)
    trainer.train()
    moved = _moved(before, _snapshot(trainer.model))
    lora_b = [n for n in before if "lora_B" in n]
    assert lora_b and all(n.startswith(roots[tower]) for n in lora_b)  # no adapter in the other tower
    assert set(lora_b) <= moved  # every adapter got gradients (none bypassed)
    assert all("lora_" in n or n == "logit_scale" for n in moved)  # base weights untouched


@pytest.mark.parametrize("use_peft", [False, True])
def test_saved_model_reloads_with_identical_embeddings(tmp_path, use_peft):
    trainer = _trainer(tmp_path, use_peft=use_peft)
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    assert (out / ("adapter_model.safetensors" if use_peft else "open_clip_model.safetensors")).exists()
    assert not list(out.glob("*.bin")) or [p.name for p in out.glob("*.bin")] == ["training_args.bin"]
    assert json.loads((out / "mmft_contrastive.json").read_text())["base_model"] == TINY
    adapter, model, processor = load_trained(str(out))
    model.eval()
    trained = trainer.model.eval()
    collator = trainer.data_collator
    items = [PairDataset(_records(4))[i] for i in range(4)]
    texts = ["a red square", "a square in blue"]
    reloaded_images = embed_images(adapter, model, collator, items)
    torch.testing.assert_close(reloaded_images, embed_images(adapter, trained, collator, items))
    torch.testing.assert_close(embed_texts(adapter, model, collator, texts),
                               embed_texts(adapter, trained, collator, texts))
    scale = adapter.logit_parameters(model)["logit_scale"].item()
    assert scale == pytest.approx(adapter.logit_parameters(trained)["logit_scale"].item())
    assert scale != pytest.approx(math.log(1 / 0.07), abs=1e-6)  # it trained, and was saved
    if not use_peft:  # open_clip's own loader reads the folder, without mmft
        import open_clip

        plain = open_clip.create_model(f"local-dir:{out}").eval()
        with torch.no_grad():
            pixels = collator.image_batch(items)["pixel_values"]
            torch.testing.assert_close(torch.nn.functional.normalize(plain.encode_image(pixels), dim=-1),
                                       reloaded_images)


def test_siglip_style_model_trains_its_bias_with_the_sigmoid_loss(tmp_path):
    trainer = _trainer(tmp_path, model="open_clip:mmft-tiny-sigmoid")
    assert trainer.adapter.loss == "siglip"
    bias = trainer.adapter.logit_parameters(trainer.model)["logit_bias"]
    start = bias.item()
    trainer.train()
    assert bias.item() != pytest.approx(start, abs=1e-7)


def test_recipe_run_writes_recall_at_k(tmp_path, capsys):
    from mmft.commands.cli import main

    training = _training_args(tmp_path, max_steps=4, eval_before_train=True)
    trainer = run_retrieval(ModelArguments(model_name_or_path=TINY), DataArguments(), training,
                            ContrastiveArguments(gallery_queries=2), train_source=_records(), eval_source=_records(4))
    out = tmp_path / "out"
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_t2i_recall@1"] == trainer.run_metrics["eval_t2i_recall@1"]
    assert 0 <= results["eval_t2i_recall@1"] <= 1 and results["eval_retrieval_images"] == 4
    assert "open_clip" in (out / "README.md").read_text()
    # mmft embed reads the folder back
    data = tmp_path / "data.jsonl"
    from PIL import Image

    (tmp_path / "img").mkdir()
    for i in range(2):
        Image.new("RGB", (40, 40), (60 * i, 20, 200)).save(tmp_path / "img" / f"{i}.png")
    data.write_text("".join(json.dumps({"id": f"e{i}", "image": f"img/{i}.png", "conversations": [
        {"from": "human", "value": "<image>"}, {"from": "gpt", "value": f"thing {i}"}]}) + "\n" for i in range(2)))
    main(["embed", str(out), "--dataset_name", str(data), "--output", str(tmp_path / "e.safetensors"),
          "--device", "cpu"])
    assert "Wrote 2 image embeddings of dimension 32" in capsys.readouterr().out
