"""``VLMTrainer``: ``transformers.Trainer`` plus evaluation by generation and the length-policy bookkeeping.

Evaluation runs the usual loss loop, then generates an answer for every evaluation record (greedy by default,
batched, left-padded by the generation collator), scores the answers with the task's metrics and reports
them next to ``eval_loss`` under the same prefix (``eval_vqa_accuracy``), so logging, callbacks and
``metric_for_best_model`` treat them like any other metric. Under several processes each record is generated
once and the answers are gathered to every process; only the main process writes files.
"""

from __future__ import annotations

import json
import logging
import os

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import Trainer

from .collator import NUM_DROPPED_KEY
from .metrics import load_metric
from .records import first_user_text, reference_answers

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "eval_predictions.jsonl"


class _Indexed(Dataset):
    """Tag each record with its position, so gathered answers can be matched back and de-duplicated."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return {**self.dataset[index], "_index": index}


def stop_token_ids(model, tokenizer) -> list[int]:
    """Where generation stops: the checkpoint's own stop ids (often several: Llama 3's ``<|eot_id|>`` and
    ``<|end_of_text|>``, Gemma's ``<end_of_turn>`` and ``<eos>``) plus the tokenizer's EOS."""
    config = getattr(model, "generation_config", None)
    configured = getattr(config, "eos_token_id", None)
    ids = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(i for i in ids if i is not None))


class VLMTrainer(Trainer):
    """A ``Trainer`` for image-text-to-text models.

    Args (besides ``Trainer``'s):
        generation_collator: a ``VLMCollator`` in ``"generate"`` mode; without it, evaluation reports loss only.
    """

    def __init__(self, *args, generation_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.generation_collator = generation_collator
        self.num_dropped = 0
        self._generation_dataset = None

    # ---- training ---------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        dropped = inputs.pop(NUM_DROPPED_KEY, None)
        if dropped is not None:
            self.num_dropped += int(dropped)
        if inputs["input_ids"].numel() == 0:
            # Every sample of this batch was over max_length and dropped. Return a zero loss that still touches
            # every trainable parameter, so distributed gradient reduction stays in step across processes.
            loss = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
            return (loss, None) if return_outputs else loss
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        if self.data_collator is not None and getattr(self.data_collator, "overlength_policy", None) == "drop":
            logger.warning(
                "Dropped %d training samples longer than max_length=%s (overlength_policy=drop).",
                self.num_dropped, self.data_collator.max_length,
            )
            output.metrics["train_dropped_samples"] = self.num_dropped
        return output

    # ---- evaluation -------------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        if isinstance(eval_dataset if eval_dataset is not None else self.eval_dataset, dict):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # recurses per dataset
        self._generation_dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        try:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._generation_dataset = None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        dataset = self._generation_dataset
        if self.args.eval_generation and self.generation_collator is not None and dataset is not None:
            output.metrics.update(self.generate_and_score(dataset, metric_key_prefix))
        return output

    @torch.inference_mode()
    def generate_answers(self, dataset) -> list[tuple[int, str]]:
        """Generate an answer for every record of ``dataset``; returns ``(index, text)`` pairs, all processes."""
        loader = DataLoader(
            _Indexed(dataset),
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=self._generation_collate,
            num_workers=self.args.dataloader_num_workers,
            shuffle=False,
        )
        loader = self.accelerator.prepare(loader)  # shards records across processes
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        tokenizer = self.generation_collator.tokenizer
        stop_ids = stop_token_ids(model, tokenizer)
        answers = []
        try:
            for batch in tqdm(loader, desc="Generating", disable=not self.is_local_process_zero(), leave=False):
                indices = batch.pop("indices")
                batch.pop("ids", None)
                prompt_length = batch["input_ids"].shape[1]
                output = model.generate(
                    **batch,
                    max_new_tokens=self.args.generation_max_new_tokens,
                    num_beams=self.args.generation_num_beams,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=stop_ids,
                )
                texts = tokenizer.batch_decode(output[:, prompt_length:], skip_special_tokens=True)
                # Gathered per batch: gather_for_metrics drops the samples repeated to even out the last batch.
                batch_answers = list(zip(indices, (t.strip() for t in texts)))
                answers.extend(self.accelerator.gather_for_metrics(batch_answers, use_gather_object=True))
        finally:
            model.train(was_training)
        by_index = dict(answers)  # keyed by position: one answer per record, in dataset order
        if len(by_index) != len(dataset):
            raise RuntimeError(f"Generated {len(by_index)} answers for {len(dataset)} evaluation records.")
        return sorted(by_index.items())

    def _generation_collate(self, records):
        batch = self.generation_collator(records)
        batch["indices"] = [r["_index"] for r in records]
        if len(batch["indices"]) != batch["input_ids"].shape[0]:
            raise RuntimeError("Evaluation samples may not be dropped: use overlength_policy='error' for eval.")
        return batch

    def generate_and_score(self, dataset, metric_key_prefix: str = "eval") -> dict[str, float]:
        answers = self.generate_answers(dataset)
        predictions = [text for _, text in answers]
        records = [dataset[index] for index, _ in answers]
        references = [reference_answers(record) for record in records]
        metrics = {}
        for name in self.args.metrics:
            metric = load_metric(name)
            result = metric.compute(predictions=predictions, references=references)
            for key, value in result.items():
                metrics[f"{metric_key_prefix}_{key}"] = float(value)
        if self.args.should_save:
            self._write_predictions(records, predictions, references, metric_key_prefix)
        return metrics

    def _write_predictions(self, records, predictions, references, metric_key_prefix):
        os.makedirs(self.args.output_dir, exist_ok=True)
        name = PREDICTIONS_FILE if metric_key_prefix == "eval" else f"{metric_key_prefix}_predictions.jsonl"
        with open(os.path.join(self.args.output_dir, name), "w", encoding="utf-8") as f:
            for record, prediction, refs in zip(records, predictions, references):
                row = {"id": record["id"], "question": first_user_text(record), "reference": refs[0],
                       "references": refs, "prediction": prediction}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
