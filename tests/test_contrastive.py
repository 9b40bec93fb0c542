"""The contrastive recipe: pairs from records, the collator, what trains per tower, training steps, save/reload with
identical embeddings, evaluation metrics, and usage errors. Tiny offline CLIP / SigLIP (``mmft.testing``)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmft.config.data_args import DataArguments
from mmft.config.model_args import ModelArguments
from mmft.contrastive.collator import ContrastiveCollator
from mmft.contrastive.config import ContrastiveArguments, ContrastiveTrainingArguments
from mmft.contrastive.evaluation import embed_images, embed_texts, recall_at_k
from mmft.contrastive.models import load_dual_encoder, load_trained
from mmft.contrastive.pairs import PairDataset, PairError
from mmft.contrastive.workflow import build_contrastive_trainer
from mmft.data.records import to_canonical
from mmft.testing import tiny_fixtures

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 200, 20)}


def _records(n=8):
    records = []
    for i in range(n):
        name = list(COLOURS)[i % 4]
        image = Image.new("RGB", (48, 48), COLOURS[name])
        records.append(to_canonical({"id": f"r{i}", "images": [image], "messages": [
            {"role": "user", "content": "<image>Describe the image."},
            {"role": "assistant", "content": f"a {name} square"}],
            "references": [f"a {name} square", f"a square in {name}"]}))
    return records


def _trainer(tmp_path, model="mmft:tiny-clip", use_peft=False, records=None, **contrastive):
    return build_contrastive_trainer(
        ModelArguments(model_name_or_path=model, use_peft=use_peft, lora_r=4, lora_alpha=8, lora_dropout=0.0),
        DataArguments(), ContrastiveArguments(**contrastive),
        ContrastiveTrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
                                     max_steps=3, learning_rate=1e-3, report_to="none", save_strategy="no",
                                     logging_steps=1, use_cpu=True, disable_tqdm=True),
        records if records is not None else _records(), _records(4))


def test_dual_encoders_stay_out_of_the_generative_family_matrix():
    assert not {"clip", "siglip"} & set(tiny_fixtures())


def test_pairs_take_references_else_the_one_turn_answer_and_name_bad_records():
    records = _records(2)
    one_turn = to_canonical({"id": "q", "images": [Image.new("RGB", (8, 8))],
                             "messages": [{"role": "user", "content": "<image>?"},
                                          {"role": "assistant", "content": "a cat"}]})
    pairs = PairDataset([*records, one_turn])
    assert pairs[0]["texts"] == ["a red square", "a square in red"] and pairs[2]["texts"] == ["a cat"]
    multi = to_canonical({"id": "multi-7", "images": [Image.new("RGB", (8, 8))], "messages": [
        {"role": "user", "content": "<image>a?"}, {"role": "assistant", "content": "x"},
        {"role": "user", "content": "b?"}, {"role": "assistant", "content": "y"}]})
    text_only = to_canonical({"id": "no-image-3", "messages": [{"role": "user", "content": "hi"},
                                                               {"role": "assistant", "content": "a dog"}]})
    with pytest.raises(PairError, match="multi-7.*no usable text") as error:
        PairDataset([*records, multi, text_only])
    assert "no-image-3" in str(error.value) and "has no image" in str(error.value)
    kept = PairDataset([*records, multi, text_only], policy="drop")
    assert len(kept) == 2 and kept.num_dropped == 2


def test_siglip_collator_pads_to_the_fixed_length_without_mask_and_marks_groups():
    adapter, model, processor = load_dual_encoder(ModelArguments(model_name_or_path="mmft:tiny-siglip"))
    collator = ContrastiveCollator(adapter, processor)
    batch = collator([PairDataset(_records(3))[i] for i in range(3)])
    assert batch["input_ids"].shape == (3, processor.tokenizer.model_max_length)
    assert "attention_mask" not in batch and batch["pixel_values"].shape == (3, 3, 48, 48)
    assert batch["groups"].tolist() == [0, 1, 2]
    # CLIP: padded to the longest, every caption ends with EOS (CLIP pools the first EOS)
    adapter, model, processor = load_dual_encoder(ModelArguments(model_name_or_path="mmft:tiny-clip"))
    batch = ContrastiveCollator(adapter, processor)([PairDataset(_records(2))[i] for i in range(2)])
    eos = processor.tokenizer.eos_token_id
    assert all(eos in row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"]))


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("model,modes,changed,unchanged", [
    ("mmft:tiny-clip", dict(use_peft=True, text_tower="frozen"), ["vision_model.", "lora_"], ["text_model."]),
    ("mmft:tiny-clip", dict(lock_image_tower=True), ["text_model.", "text_projection"],
     ["vision_model.", "visual_projection"]),
    ("mmft:tiny-siglip", dict(use_peft=False), ["vision_model.", "text_model.", "logit_bias"], []),
])
def test_only_the_chosen_towers_train(tmp_path, model, modes, changed, unchanged):
    use_peft = modes.pop("use_peft", False)
    trainer = _trainer(tmp_path, model, use_peft=use_peft, **modes)
    before = _snapshot(trainer.model)
    trainer.train()
    after = _snapshot(trainer.model)
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    for prefix in changed:
        assert any(prefix in n for n in moved), (prefix, sorted(moved)[:5])
    for prefix in unchanged:
        assert not any(n.removeprefix("base_model.model.").startswith(prefix) for n in moved), prefix
    if use_peft:  # LoRA: base weights untouched, only adapters (and the logit scale) moved
        assert all("lora_" in n or "logit" in n for n in moved)


@pytest.mark.parametrize("use_peft", [True, False])
def test_saved_model_reloads_with_identical_embeddings(tmp_path, use_peft):
    trainer = _trainer(tmp_path, use_peft=use_peft)
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    assert (out / ("adapter_model.safetensors" if use_peft else "model.safetensors")).exists()
    adapter, model, processor = load_trained(str(out))
    model.eval()
    trained = trainer.model.eval()
    collator = trainer.data_collator
    items = [PairDataset(_records(4))[i] for i in range(4)]
    texts = ["a red square", "a square in blue"]
    torch.testing.assert_close(embed_images(adapter, model, collator, items),
                               embed_images(adapter, trained, collator, items))
    torch.testing.assert_close(embed_texts(adapter, model, collator, texts),
                               embed_texts(adapter, trained, collator, texts))
    scale = adapter.logit_parameters(model)["logit_scale"]
    assert scale.item() == pytest.approx(adapter.logit_parameters(trained)["logit_scale"].item())
    assert scale.item() != pytest.approx(math.log(1 / 0.07), abs=1e-6)  # it trained, and was saved


def test_clip_logit_scale_is_clamped_after_each_step(tmp_path):
    trainer = _trainer(tmp_path)
    scale = trainer.adapter.logit_parameters(trainer.model)["logit_scale"]
    with torch.no_grad():
        scale.fill_(math.log(100) - 1e-4)
    trainer.args.learning_rate = 1.0
    trainer.train()
    assert scale.item() <= math.log(100) + 1e-6


def test_a_one_pair_batch_is_refused_at_start(tmp_path):
    with pytest.raises(Exception, match="needs negatives"):
        build_contrastive_trainer(
            ModelArguments(model_name_or_path="mmft:tiny-clip", use_peft=False), DataArguments(),
            ContrastiveArguments(), ContrastiveTrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                 per_device_train_batch_size=1, report_to="none"),
            _records(4), None)


def test_recall_at_k_counts_an_image_found_by_any_of_its_captions():
    images = torch.eye(3)
    texts = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0.1]])  # text 0 -> image 1 wrongly
    metrics = recall_at_k(images, texts, [0, 0, 1, 2], ks=(1, 2))
    assert metrics["t2i_recall@1"] == pytest.approx(1 / 4)  # only text 1 finds image 0 first
    assert metrics["i2t_recall@1"] == pytest.approx(1 / 3)  # image 0's best text (1) is its own
    # top 2: image 0 (text 1, own), image 1 (texts 0 and 3: not its text 2), image 2 (texts 2 and 3: 3 is its own)
    assert metrics["i2t_recall@2"] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_the_demo_learns_retrieval_and_zero_shot(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "recipes"))
    import retrieval

    trainer = retrieval.main(["--config", str(retrieval.DEMO_CONFIG), "--output_dir", str(tmp_path / "demo"),
                              "--disable_tqdm", "true"])
    metrics = trainer.run_metrics
    images = metrics["eval_retrieval_images"]
    assert metrics["eval_t2i_recall@1"] > 5 / images  # chance is 1 / images
    assert metrics["eval_t2i_recall@1"] > metrics["eval_before_train_t2i_recall@1"] + 0.05
    assert metrics["eval_zero_shot_shapes-shape-names_accuracy"] > 0.5  # chance 1/3
    assert metrics["eval_zero_shot_shapes-colour-names_accuracy"] > 0.5  # chance 1/5
    results = json.loads((tmp_path / "demo" / "eval_results.json").read_text())
    assert results["eval_t2i_recall@1"] == metrics["eval_t2i_recall@1"]
    card = (tmp_path / "demo" / "README.md").read_text()
    assert "model-index" in card and "t2i_recall@1" in card
    assert "Text &rarr; image" in (tmp_path / "demo" / "eval_report.html").read_text()


def test_resume_true_continues_from_the_newest_complete_checkpoint(tmp_path, monkeypatch):
    from mmft.contrastive.trainer import ContrastiveTrainer
    from mmft.contrastive.workflow import run_retrieval
    from mmft.train.checkpoints import is_complete

    steps_run = []
    real_step = ContrastiveTrainer.training_step

    def counting_step(self, *args, **kwargs):
        steps_run.append(self.state.global_step + 1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(ContrastiveTrainer, "training_step", counting_step)

    def run(max_steps, resume=None):
        model_args = ModelArguments(model_name_or_path="mmft:tiny-clip")
        training = ContrastiveTrainingArguments(
            output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, max_steps=max_steps, learning_rate=1e-3,
            report_to="none", save_strategy="steps", save_steps=2, logging_steps=1, use_cpu=True, disable_tqdm=True,
            resume_from_checkpoint=resume)
        return run_retrieval(model_args, DataArguments(), training, ContrastiveArguments(gallery_queries=0),
                             train_source=_records(), eval_source=_records(4))

    first = run(2)
    assert is_complete(tmp_path / "run" / "checkpoint-2") and steps_run == [1, 2]
    steps_run.clear()
    trainer = run(4, resume="true")
    assert steps_run == [3, 4]  # steps 1-2 came from checkpoint-2, not retrained
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[:2] == [entry["loss"] for entry in first.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 4 and is_complete(tmp_path / "run" / "checkpoint-4")
