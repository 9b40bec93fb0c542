"""``GenerationEvaluationMixin``: ``VLMTrainer``'s evaluation by generation.

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

from ..config.training_args import metric_names
from ..data.records import first_user_text, reference_answers
from ..metrics import load_metric

# These methods are VLMTrainer's: they log under its name, as they did when they were written inside it.
logger = logging.getLogger("mmft.train.trainer")

PREDICTIONS_FILE = "eval_predictions.jsonl"


class _Indexed(Dataset):
    """Tag each record with its position, so gathered answers can be matched back and de-duplicated."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return {**self.dataset[index], "_index": index}


def is_encoder_decoder(model) -> bool:
    """Whether ``model`` (or its language model: BLIP-2 on Flan-T5) is a seq2seq model, whose ``generate`` returns the
    decoder sequence alone rather than the prompt followed by the answer."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return bool(getattr(config, "is_encoder_decoder", False) or getattr(text_config, "is_encoder_decoder", False))


def stop_token_ids(model, tokenizer) -> list[int]:
    """Where generation stops: the checkpoint's own stop ids (often several: Llama 3's ``<|eot_id|>`` and
    ``<|end_of_text|>``, Gemma's ``<end_of_turn>`` and ``<eos>``) plus the tokenizer's EOS."""
    config = getattr(model, "generation_config", None)
    configured = getattr(config, "eos_token_id", None)
    ids = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(i for i in ids if i is not None))


class GenerationEvaluationMixin:
    """For ``VLMTrainer`` (before ``transformers.Trainer`` in its bases): ``evaluate`` also generates an answer for
    every record and scores it. Uses the trainer's ``generation_collator`` and ``_eval_length_order``
    (``LengthGroupedSamplingMixin``)."""

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        if isinstance(eval_dataset if eval_dataset is not None else self.eval_dataset, dict):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # recurses per dataset
        self._generation_dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        try:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._generation_dataset = None
        self._write_report(metrics, metric_key_prefix)  # after super().evaluate logged them: curves include them
        return metrics

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        self._eval_dropped = 0
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        if self._eval_dropped:  # --overlength_policy drop: the loss left these out; say how many
            output.metrics[f"{metric_key_prefix}_dropped_samples"] = self._eval_dropped
        dataset = self._generation_dataset
        if self.args.eval_generation and self.generation_collator is not None and dataset is not None:
            output.metrics.update(self.generate_and_score(dataset, metric_key_prefix))
        return output

    @torch.inference_mode()
    def generate_answers(self, dataset) -> list[tuple[int, str]]:
        """Generate an answer for every record of ``dataset``; returns ``(index, text)`` pairs in record order, on all
        processes (batches may run in length order: see ``_eval_length_order``)."""
        # Length-sorted batches under auto / group_by_length (generation pays for the longest prompt of its batch,
        # and runs until its longest answer ends); answers are matched back to records by index below.
        loader = DataLoader(
            _Indexed(dataset),
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=self._generation_collate,
            num_workers=self.args.dataloader_num_workers,
            sampler=self._eval_length_order(dataset),
            shuffle=False,
            generator=torch.Generator().manual_seed(self.args.seed),  # see mmft.train.trainer.own_generator
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
                # A decoder-only model returns prompt + answer; an encoder-decoder model (Florence-2, BLIP-2 on
                # Flan-T5) returns its decoder sequence alone, from its own decoder start token (a special token).
                prompt_length = 0 if is_encoder_decoder(model) else batch["input_ids"].shape[1]
                output = model.generate(
                    **batch,
                    max_new_tokens=self.args.generation_max_new_tokens,
                    num_beams=self.args.num_beams,
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
        for name in metric_names(self.args):
            metric = load_metric(name)
            result = metric.compute(predictions=predictions, references=references)
            for key, value in result.items():
                metrics[f"{metric_key_prefix}_{key}"] = float(value)
        if self.args.should_save:
            self._write_predictions(records, predictions, references, metric_key_prefix)
        return metrics

    def _write_predictions(self, records, predictions, references, metric_key_prefix):
        os.makedirs(self.args.output_dir, exist_ok=True)
        name = f"{metric_key_prefix}_predictions.jsonl"  # eval_predictions.jsonl (PREDICTIONS_FILE) for "eval"
        with open(os.path.join(self.args.output_dir, name), "w", encoding="utf-8") as f:
            for record, prediction, refs in zip(records, predictions, references):
                row = {"id": record["id"], "question": first_user_text(record), "reference": refs[0],
                       "references": refs, "prediction": prediction}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._report_samples = (records, predictions, references, name)  # for _write_report, main process only

    def _write_report(self, metrics, metric_key_prefix):
        """``eval_report.html`` (``mmft.evaluation.report``) beside the predictions file, once the evaluation is
        logged.

        Only where ``_write_predictions`` ran (the main process, with generation). A report that cannot be written
        is logged and skipped: it is a by-product and must not end a training run."""
        samples, self._report_samples = getattr(self, "_report_samples", None), None
        if samples is None:
            return
        from ..evaluation.report import report_file_name, write_report

        records, predictions, references, predictions_file = samples
        collator = self.generation_collator
        path = os.path.join(self.args.output_dir, report_file_name(metric_key_prefix))
        retention = getattr(self, "retention", None)  # --retention_eval_dataset_name: old and new tasks side by side
        comparison = retention.report_rows(metric_key_prefix, metrics) if retention is not None else None
        try:
            write_report(path, records=records, predictions=predictions, references=references, metrics=metrics,
                         log_history=self.state.log_history, metric_names=metric_names(self.args),
                         image_options=dict(allow_outside_root=collator.allow_images_outside_root,
                                            allow_remote=collator.allow_remote_images,
                                            max_image_pixels=collator.max_image_pixels),
                         details={"output_dir": self.args.output_dir, "step": self.state.global_step,
                                  "epoch": round(self.state.epoch or 0.0, 3)},
                         predictions_file=predictions_file, comparison=comparison)
        except Exception:
            logger.exception("Could not write the evaluation report %s; evaluation results are unaffected.", path)
