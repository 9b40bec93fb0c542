"""Training through VLMTrainer on the tiny model: LoRA changes only what it should, the loss falls, the length
policy holds during training, evaluation generates and scores every record, and the notebook API works."""

import json
import logging

import pytest
import torch

from mmft.config.data_args import DataArguments
from mmft.config.model_args import ModelArguments
from mmft.config.training_args import VLMTrainingArguments
from mmft.data.sources import load_records
from mmft.recipe import finetune
from mmft.workflow import build_trainer


def _args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, per_device_eval_batch_size=16,
                  learning_rate=5e-3, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                  disable_tqdm=True)
    values.update(overrides)
    return VLMTrainingArguments(**values)


def _losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_lora_trains_only_language_model_adapters_and_loss_falls(tiny_llava_wide_dir, shapes_dir, tmp_path):
    model_args = ModelArguments(model_name_or_path=str(tiny_llava_wide_dir), use_peft=True, lora_r=8, lora_alpha=16,
                                lora_dropout=0.0)
    data_args = DataArguments(max_length=256)
    train = load_records(shapes_dir["train"], max_samples=8)  # one fixed batch, seen 20 times
    trainer = build_trainer(model_args, data_args, _args(tmp_path, max_steps=20), train)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    losses = _losses(trainer)
    assert len(losses) == 20 and losses[-1] < 0.8 * losses[0], losses

    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed, "no parameter changed"
    assert all("lora_" in name for name in changed), sorted(changed)[:5]
    assert all(".language_model." in name for name in changed), sorted(changed)[:5]
    # Every LoRA matrix of the language model moved (B starts at zero, so A moves from step 2 on).
    lora_b = [name for name in before if "lora_B" in name]
    assert lora_b and all(name in changed for name in lora_b)
    # Vision tower, projector and all base weights are bit-identical.
    untouched = [n for n in before if "lora_" not in n]
    assert any("vision_tower" in n for n in untouched) and any("multi_modal_projector" in n for n in untouched)
    assert not changed.intersection(untouched)

    trainer.save_model()
    saved = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "processor_config.json"} <= saved
    adapter_config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert "vision_tower" not in json.dumps(adapter_config["target_modules"])


def test_overlength_drop_completes_training_and_reports_the_count(tiny_llava_dir, shapes_dir, tmp_path, caplog):
    from mmft.train.collator import VLMCollator

    processor_args = ModelArguments(model_name_or_path=str(tiny_llava_dir), use_peft=True)
    train = load_records(shapes_dir["train"], max_samples=32)
    lengths = []
    from transformers import AutoProcessor

    collator = VLMCollator(AutoProcessor.from_pretrained(tiny_llava_dir))
    for record in train:
        lengths.append(collator([record])["input_ids"].shape[1])
    limit = sorted(lengths)[len(lengths) // 2]  # about half the records are longer
    expected_dropped = sum(length > limit for length in lengths)
    assert 0 < expected_dropped < len(lengths)

    data_args = DataArguments(max_length=limit, overlength_policy="drop")
    trainer = build_trainer(processor_args, data_args, _args(tmp_path, num_train_epochs=1), train)
    with caplog.at_level(logging.WARNING):
        result = trainer.train()
    assert result.metrics["train_dropped_samples"] == expected_dropped
    assert f"Dropped {expected_dropped} training samples" in caplog.text
    # An evaluation's drops are its own: reported with its metrics, never added to the training count.
    trainer.args.eval_generation = False
    metrics = trainer.evaluate(eval_dataset=train)
    assert metrics["eval_dropped_samples"] == expected_dropped and trainer.num_dropped == expected_dropped


def test_evaluation_generates_an_answer_for_every_record(tiny_llava_dir, shapes_dir, tmp_path):
    model_args = ModelArguments(model_name_or_path=str(tiny_llava_dir), use_peft=False)
    evaluation = load_records(shapes_dir["test"], max_samples=21)  # not a multiple of the batch size
    trainer = build_trainer(model_args, DataArguments(max_length=256),
                            _args(tmp_path, per_device_eval_batch_size=8, generation_max_new_tokens=4),
                            eval_dataset=evaluation)
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_vqa_accuracy", "eval_exact_match"} <= set(metrics)
    rows = [json.loads(line) for line in (tmp_path / "out" / "eval_predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [evaluation[i]["id"] for i in range(21)]
    assert all(row["reference"] and "question" in row and "prediction" in row for row in rows)
    # The score is the metric over exactly these predictions.
    accuracy = sum(row["prediction"] == row["reference"] for row in rows) / len(rows)
    assert metrics["eval_exact_match"] == pytest.approx(accuracy)


def test_notebook_api_trains_from_in_memory_dataset_of_pil_images(tiny_llava_dir, tmp_path):
    import datasets  # a hard dependency: a broken install must fail here, not skip

    from mmft.data.shapes import generate_records

    rows = []
    for record, image in generate_records("train", 24, turns=(1, 1)):
        question = record["conversations"][0]["value"].replace("<image>\n", "")
        answer = record["conversations"][1]["value"]
        rows.append({"id": record["id"], "images": [image],
                     "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                                  {"role": "assistant", "content": [{"type": "text", "text": answer}]}]})
    dataset = datasets.Dataset.from_list(rows)
    results = finetune(model=str(tiny_llava_dir), train_dataset=dataset, eval_dataset=dataset.select(range(8)),
                       output_dir=str(tmp_path / "nb"), max_steps=6, per_device_train_batch_size=8,
                       learning_rate=5e-3, report_to="none", save_strategy="no", disable_tqdm=True,
                       generation_max_new_tokens=4, eval_before_train=True)
    assert results["train_loss"] > 0
    assert "eval_vqa_accuracy" in results and "eval_before_train_vqa_accuracy" in results
    assert results["eval_loss"] < results["eval_before_train_loss"]
    assert (tmp_path / "nb" / "adapter_model.safetensors").exists()


def test_top_level_finetune_is_the_function_even_after_the_module_is_imported():
    import mmft.recipe  # recipes import this module; it must not shadow the function `from mmft import finetune`
    from mmft import finetune

    assert callable(finetune) and finetune is mmft.recipe.finetune
