"""``VLMTrainer``: ``transformers.Trainer`` plus evaluation by generation and the length-policy bookkeeping.

Evaluation runs the usual loss loop, then generates an answer for every evaluation record (greedy by default,
batched, left-padded by the generation collator), scores the answers with the task's metrics and reports
them next to ``eval_loss`` under the same prefix (``eval_vqa_accuracy``), so logging, callbacks and
``metric_for_best_model`` treat them like any other metric. Under several processes each record is generated
once and the answers are gathered to every process; only the main process writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import Trainer

from ..config.training_args import metric_names
from ..data.augment import CollatorEpochCallback
from ..data.badrecords import BAD_RECORDS_KEY, REASONS, BadRecordError, BadRecordLedger, summary_for_card, too_many
from ..data.lengths import (
    AUTO_SAMPLE_RECORDS,
    MIN_GROUPING_BATCHES,
    LengthGroupedSampler,
    length_sorted_order,
    lengths_cached,
    plan_length_grouping,
    record_lengths,
    sampled_lengths,
)
from ..data.records import first_user_text, reference_answers
from ..hub.card import protect_hub_token, save_generation_config, write_model_card
from ..metrics import load_metric
from .checkpoints import (
    CompleteCheckpointsMixin,
    holds_full_model,
    last_complete_checkpoint,
    load_full_model_weights,
    schedule_depends_on_total,
)
from .collator import NUM_DROPPED_KEY, NUM_SHRUNK_KEY

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "eval_predictions.jsonl"


def _peak_memory_gib(device: torch.device) -> float:
    """Peak accelerator memory of this process (GPU), or its peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


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


def own_generator(loader, seed: int):
    """Give ``loader`` its own seeded generator (unless it has one), so that iterating it never draws from the global
    torch generator that dropout draws from.

    Every new DataLoader iterator draws the seed of its workers from ``loader.generator``, by default the global
    generator; a persistent-workers loader draws once, at its first epoch, and never again. So a resumed run, whose
    first epoch runs on a separate skip-ahead loader, made the original loader draw at the next epoch where the
    uninterrupted run did not, and every dropout mask after it changed. With a generator of its own, iterating any
    loader leaves the training randomness alone (the workers' own seeds come from it; mmft's collators draw nothing
    from them: augmentation hashes seed, epoch and record id)."""
    # Accelerate's DataLoaderShard iterates an inner ``base_dataloader``; the shard's own attribute is what
    # ``skip_first_batches`` copies into the skip-ahead loader. Set both, one generator.
    loaders = [loader, getattr(loader, "base_dataloader", None)]
    loaders = [x for x in loaders if isinstance(x, DataLoader) and x.generator is None]
    if loaders:
        generator = torch.Generator().manual_seed(int(seed))
        for x in loaders:
            x.generator = generator
    return loader


class NonFiniteTrainingError(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; training stopped before the optimizer step."""


class VLMTrainer(CompleteCheckpointsMixin, Trainer):
    """A ``Trainer`` for image-text-to-text models.

    Args (besides ``Trainer``'s):
        generation_collator: a ``VLMCollator`` in ``"generate"`` mode; without it, evaluation reports loss only.
        bad_records: the run's ``mmft.data.badrecords.BadRecordLedger`` (policy, ``--max_bad_fraction``, what the
            start-up scan left out); training records dropped by the collator are counted in it, the run stops once
            too many are bad, and the counts go into ``train_results.json`` (``train_bad_records*``) and the card.
    """

    def __init__(self, *args, generation_collator=None, bad_records: BadRecordLedger | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.generation_collator = generation_collator
        self.num_dropped = 0
        self.num_shrunk = 0  # training samples whose images were shrunk to fit max_length (overlength_policy=shrink)
        # Bad records (mmft.data.badrecords): build_trainer hands over the policy, --max_bad_fraction and the start-up
        # scan's findings; without it, the collator's policy (drops judged at the default fraction).
        if bad_records is None:
            bad_records = BadRecordLedger(getattr(self.data_collator, "on_bad_record", None) or "error")
        self.bad_records = bad_records
        self.bad_record_summary = None  # for the model card: filled at the end of train(), on every process
        self._eval_dropped = 0  # over-length samples left out of the current evaluation's loss (this process)
        self.run_metrics = {}  # every metric of a recipe run (mmft.recipe.run_recipe fills it)
        self._generation_dataset = None
        self._last_loss = None  # detached: read (synchronising) only when reporting a non-finite step
        self._nonfinite_loss = None  # any micro-batch of the current optimizer step had a non-finite loss
        self._tokens_trained = None  # non-pad tokens this process trained on (a tensor: no sync per step)
        self._run_description = {}  # what only the caller knows, for the model card (see describe_run)
        protect_hub_token(self.args)  # a --hub_token must not be pickled into training_args.bin
        if hasattr(self.data_collator, "set_epoch"):  # augmentation draws depend on (seed, epoch, record id)
            self.add_callback(CollatorEpochCallback(self.data_collator))
        if getattr(self.args, "padding_free", False):
            from .packing import check_padding_free

            check_padding_free(self.model, self.args.device)  # refuses families, CPU runs, non-flash attention

    # ---- training ---------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        shrunk, dropped = inputs.pop(NUM_SHRUNK_KEY, None), inputs.pop(NUM_DROPPED_KEY, None)
        bad = inputs.pop(BAD_RECORDS_KEY, None)
        if model.training:  # evaluation-loss batches are not training samples (train_dropped/shrunk_samples)
            self.num_shrunk += int(shrunk or 0)
            self.num_dropped += int(dropped or 0)
            if bad is not None:
                self.bad_records.add_batch(bad)
        else:  # reported as <prefix>_dropped_samples by evaluation_loop
            self._eval_dropped += int(dropped or 0) + (len(bad["bad"]) if bad is not None else 0)
        if inputs["input_ids"].numel() == 0:
            # Every sample of this batch was dropped (over max_length, or a bad record: mmft.data.badrecords). Return a
            # zero loss that still touches every trainable parameter, so distributed gradient reduction stays in step
            # across processes. The step is kept rather than refilled from other records: refilling would change
            # which records each process sees, and so the data order a resumed run replays.
            loss = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
            return (loss, None) if return_outputs else loss
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if "attention_mask" in inputs:
            tokens = inputs["attention_mask"].sum()
        else:  # a padding-free row (mmft.train.packing) holds real tokens only
            tokens = torch.tensor(inputs["input_ids"].numel()) if "position_ids" in inputs else None
        loss = super().training_step(model, inputs, num_items_in_batch)
        if tokens is not None:
            self._tokens_trained = tokens if self._tokens_trained is None else self._tokens_trained + tokens
        if self.args.stop_on_nonfinite:
            bad = ~torch.isfinite(loss)
            self._nonfinite_loss = bad if self._nonfinite_loss is None else self._nonfinite_loss | bad
            self._last_loss = loss
        return loss

    # ---- data loading: length-grouped sampling, padding-free batches ------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        """Under ``--train_sampling_strategy auto`` (the default) and ``group_by_length``:
        ``mmft.data.lengths.LengthGroupedSampler`` over the records' real token counts (text plus image tokens,
        computed from image headers) where ``plan_length_grouping`` finds padding worth removing, else random order.
        transformers' own grouped sampler would look for an ``input_ids`` column that records do not have. The plan
        is logged in one line, kept as ``length_grouping_plan`` and written to ``train_results.json``
        (``train_length_grouping``, ``train_expected_real_token_fraction``).

        ``auto`` differs from ``group_by_length`` in two ways: it keeps random order on fewer than
        ``MIN_GROUPING_BATCHES`` steps of records, and on a large dataset it decides from a sample of
        ``AUTO_SAMPLE_RECORDS`` lengths first, measuring every record only when the sample says to group."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        collator = getattr(self.data_collator, "collator", self.data_collator)  # unwrap a PaddingFreeCollator
        strategy = self.args.train_sampling_strategy
        measurable = dataset is not None and hasattr(dataset, "__len__") and hasattr(collator, "family")
        if strategy not in ("auto", "group_by_length") or not measurable:
            self.length_grouping_plan = None
            return super()._get_train_sampler(train_dataset)  # "auto" there: transformers' RandomSampler
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        settings = dict(num_replicas=self.args.world_size, seed=seed, target=self.args.length_grouping_target,
                        min_gain=self.args.length_grouping_min_gain,
                        min_batches=MIN_GROUPING_BATCHES if strategy == "auto" else 0)
        plan = None
        if strategy == "auto" and len(dataset) > AUTO_SAMPLE_RECORDS and not lengths_cached(dataset, collator):
            sample = plan_length_grouping(sampled_lengths(dataset, collator, AUTO_SAMPLE_RECORDS, seed),
                                          self._train_batch_size, **settings)
            if sample.tolerance is None:
                plan = dataclasses.replace(sample, measured=AUTO_SAMPLE_RECORDS)
        if plan is None:
            lengths = self.train_lengths(dataset, collator)
            plan = plan_length_grouping(lengths, self._train_batch_size, **settings)
        self.length_grouping_plan = plan
        if self.is_world_process_zero():
            logger.info("Length grouping (--train_sampling_strategy %s): %s; expected real-token fraction %.3f.",
                        strategy, plan.describe(), plan.fraction)
        if plan.tolerance is None:
            return torch.utils.data.RandomSampler(dataset)
        return LengthGroupedSampler(lengths, self._train_batch_size, num_replicas=self.args.world_size, seed=seed,
                                    tolerance=plan.tolerance)

    def _length_grouping_metrics(self) -> dict:
        """``train_length_grouping`` (``random``, ``exact``, ``buckets_0.05``, or the strategy when no length was
        measured: ``random``, ``sequential``) and ``train_expected_real_token_fraction`` for train_results.json."""
        plan = getattr(self, "length_grouping_plan", None)
        if plan is None:
            return {"train_length_grouping": self.args.train_sampling_strategy}
        return {"train_length_grouping": plan.decision,
                "train_expected_real_token_fraction": round(plan.fraction, 4),
                "train_random_order_real_token_fraction": round(plan.random_fraction, 4)}

    def train_lengths(self, dataset, collator) -> list[int]:
        """Every record's token length, computed once (kept on the dataset); under several processes each measures
        an equal share and the shares are gathered."""
        from accelerate.utils import gather_object

        return record_lengths(dataset, collator, progress=self.is_local_process_zero(),
                              process_index=self.accelerator.process_index,
                              num_processes=self.accelerator.num_processes, gather=gather_object)

    def _get_dataloader(self, *args, **kwargs):
        return own_generator(super()._get_dataloader(*args, **kwargs), self.args.seed)

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation-loss batches in length order (longest first) under ``auto`` / ``group_by_length``: the mean loss
        does not depend on the order, the padding does. transformers would length-group with its own sampler, which
        looks for an ``input_ids`` / ``pixel_values`` column that records do not have and fails before the first
        batch. Other strategies keep the records' order."""
        order = self._eval_length_order(eval_dataset)
        if order is not None:
            return order
        if self.args.train_sampling_strategy == "group_by_length" and eval_dataset is not None \
                and hasattr(eval_dataset, "__len__"):
            return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
        return super()._get_eval_sampler(eval_dataset)

    def _eval_length_order(self, dataset) -> list[int] | None:
        """Record positions longest first (``length_sorted_order``) when evaluation batches are length-sorted (the
        training strategy is ``auto`` or ``group_by_length``); ``None`` to keep the records' order. Lengths are
        measured as for training (text and image headers; cached on the dataset and on disk)."""
        collator = getattr(self.data_collator, "collator", self.data_collator)
        if (self.args.train_sampling_strategy not in ("auto", "group_by_length") or dataset is None
                or not hasattr(dataset, "__len__") or not hasattr(collator, "family") or len(dataset) < 2):
            return None
        return length_sorted_order(record_lengths(dataset, collator, progress=False))

    def get_eval_dataloader(self, eval_dataset=None):
        """Evaluation-loss batches never get training augmentation: they use the collator's ``for_evaluation()``."""
        with self._collator_swapped(self._evaluation_collator()):
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        with self._collator_swapped(self._evaluation_collator()):
            return super().get_test_dataloader(test_dataset)

    def get_train_dataloader(self):
        """With ``--padding_free``, the training collator's batches are packed into one row
        (``mmft.train.packing``)."""
        if not getattr(self.args, "padding_free", False):
            return super().get_train_dataloader()
        from .packing import PaddingFreeCollator

        with self._collator_swapped(PaddingFreeCollator(self.data_collator)):
            return super().get_train_dataloader()

    def _evaluation_collator(self):
        collator = self.data_collator
        return collator.for_evaluation() if hasattr(collator, "for_evaluation") else collator

    @contextlib.contextmanager
    def _collator_swapped(self, collator):
        """``Trainer`` builds each DataLoader from ``self.data_collator``: lend it another for that one call."""
        original, self.data_collator = self.data_collator, collator
        try:
            yield
        finally:
            self.data_collator = original

    # ---- the non-finite guard ------------------------------------------------------------------------
    def _get_grad_norm(self, model, grad_norm=None):
        # Called once per optimizer step, after backward and before ``optimizer.step()``: the place to stop before a
        # NaN reaches the weights. The gradient norm is computed here anyway (transformers logs it); checking it
        # costs one host sync per optimizer step. After DDP's all-reduce every process sees the same norm, so all
        # stop together; a non-finite loss on one process is shared with a one-element all-reduce.
        grad_norm = super()._get_grad_norm(model, grad_norm)
        if self.args.stop_on_nonfinite:
            self._stop_if_nonfinite(grad_norm)
        if self.bad_records.on_bad_record == "drop":
            self._stop_if_too_many_bad()
        return grad_norm

    # ---- bad records (mmft.data.badrecords) ------------------------------------------------------------------
    def _loader_bad_counts(self) -> tuple[torch.Tensor, int]:
        """(bad per reason, samples seen) by the data loader, summed over processes (a collective: all call it)."""
        ledger = self.bad_records
        counts = torch.tensor([ledger.bad[reason] for reason in REASONS] + [ledger.seen], dtype=torch.long)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts.to(self.accelerator.device), reduction="sum").cpu()
        return counts[:-1], int(counts[-1])

    def _loader_bad_kept(self) -> list:
        ledger = self.bad_records
        if self.accelerator.num_processes == 1:
            return list(ledger.kept)
        from accelerate.utils import gather_object

        return gather_object(list(ledger.kept))

    def _stop_if_too_many_bad(self) -> None:
        # Once per optimizer step. Under several processes the counts are summed first (one all-reduce of 7 integers
        # and a host sync per optimizer step, as the non-finite guard makes), so every process sees the same totals
        # and all stop at the same step; alone, nothing is synchronised until a record has been dropped.
        if self.accelerator.num_processes == 1 and not self.bad_records.num_bad:
            return
        counts, seen = self._loader_bad_counts()
        bad = int(counts.sum())
        if too_many(bad, seen, self.bad_records.max_bad_fraction):
            kept = self._loader_bad_kept()
            raise BadRecordError(self.bad_records.loader_report(bad, seen, kept))

    def _bad_record_metrics(self) -> dict:
        """``train_bad_records*`` for train_results.json, summed over processes; keeps the card's summary."""
        from collections import Counter

        counts, seen = self._loader_bad_counts()
        loader = Counter({reason: int(n) for reason, n in zip(REASONS, counts.tolist()) if n})
        kept = self._loader_bad_kept()
        self.bad_record_summary = summary_for_card(self.bad_records, loader, kept, seen)
        metrics = self.bad_records.metrics(loader)
        if metrics["train_bad_records"] and self.is_world_process_zero():
            summary = self.bad_record_summary
            counts_text = "; ".join(f"{n} {reason}: {', '.join(summary['ids'].get(reason, [])[:20])}"
                                    for reason, n in summary["counts"].items())
            logger.warning("Left out %d bad training records (%d at start-up, %d in the data loader; "
                           "--on_bad_record drop). By reason, with ids: %s", metrics["train_bad_records"],
                           metrics["train_bad_records_at_startup"], sum(loader.values()), counts_text)
        return metrics

    def _stop_if_nonfinite(self, grad_norm):
        bad_loss = self._nonfinite_loss
        self._nonfinite_loss = None
        flag = bad_loss.float().reshape(1) if bad_loss is not None else torch.zeros(1, device=self.args.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag.to(self.accelerator.device), reduction="sum")
        norm = float(grad_norm) if grad_norm is not None else 0.0
        if flag.item() == 0 and math.isfinite(norm):
            return
        loss = self._last_loss.item() if self._last_loss is not None else float("nan")
        last = last_complete_checkpoint(self.args.output_dir, set_aside_incomplete=False)
        kept = f"The last complete checkpoint, {last}, is intact." if last else "No checkpoint had been saved yet."
        raise NonFiniteTrainingError(
            f"Non-finite training at step {self.state.global_step + 1}: loss={loss}, grad_norm={norm} (loss "
            f"non-finite on {int(flag.item())} process(es)). Training stopped before this optimizer step, so no NaN "
            f"reached the weights. {kept} Usual causes: a learning rate too high, fp16 overflow (prefer bf16), or a "
            "broken sample in this step's batch. Pass --stop_on_nonfinite false to train on regardless."
        )

    # ---- resume: the weights really loaded, a changed total said ---------------------------------------------------
    def _plain_model_weights(self, checkpoint_dir) -> bool:
        """A full (non-PEFT) model whose weights ``Trainer`` would reload with a plain ``load_state_dict``: the case
        ``mmft.train.checkpoints.load_full_model_weights`` handles. DeepSpeed, FSDP and SageMaker keep their own
        loaders."""
        from transformers.trainer import _is_peft_model

        return (not _is_peft_model(self.model) and not self.is_deepspeed_enabled and not self.is_fsdp_enabled
                and checkpoint_dir is not None and holds_full_model(checkpoint_dir))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if (model is None or model is self.model) and self._plain_model_weights(resume_from_checkpoint):
            load_full_model_weights(self.model, resume_from_checkpoint)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        best = self.state.best_model_checkpoint
        if self._plain_model_weights(best):
            logger.info("Loading the best model from %s (score: %s).", best, self.state.best_metric)
            load_full_model_weights(self.model, best)
            return
        super()._load_best_model()

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint,
                             trial):
        """After transformers restores the checkpoint's state: say so when the resumed run's total number of steps
        differs from the one the checkpoint was trained towards and the learning-rate schedule depends on it."""
        planned = None
        state_file = os.path.join(resume_from_checkpoint, "trainer_state.json") if resume_from_checkpoint else None
        if state_file and os.path.isfile(state_file):
            with open(state_file) as f:
                planned = json.load(f).get("max_steps")
        trained = super()._init_training_state(max_steps, num_update_steps_per_epoch, num_train_epochs,
                                               resume_from_checkpoint, trial)
        done = self.state.global_step
        if (planned and planned != max_steps and self.is_world_process_zero()
                and schedule_depends_on_total(self.args, done, planned, max_steps)):
            schedule = getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)
            logger.warning(
                "Resuming at step %d of a run planned for %d steps, now %d: the learning-rate schedule (%s, warmup "
                "%s) depends on the total, so steps 1-%d followed the %d-step schedule and the rest follows the "
                "%d-step one; the result will differ from an uninterrupted %d-step run (a constant rate, with any "
                "warmup given in steps, would not).",
                done, planned, max_steps, schedule, self.args.warmup_steps, done, planned, max_steps, max_steps,
            )
        return trained

    # ---- the run summary ----------------------------------------------------------------------------------
    def _throughput_and_memory(self, metrics: dict) -> dict:
        tokens = self._tokens_trained if self._tokens_trained is not None else torch.zeros((), dtype=torch.long)
        tokens = tokens.to(self.accelerator.device).reshape(1)
        if self.accelerator.num_processes > 1:
            tokens = self.accelerator.reduce(tokens, reduction="sum")
        runtime = metrics.get("train_runtime") or float("nan")
        summary = {"train_tokens_per_second": round(tokens.item() / runtime, 2) if runtime else float("nan")}
        peak = torch.tensor([_peak_memory_gib(self.accelerator.device)], device=self.accelerator.device)
        per_process = self.accelerator.gather(peak).tolist() if self.accelerator.num_processes > 1 else peak.tolist()
        summary["train_peak_memory_gib"] = round(max(per_process), 3)
        if self.is_world_process_zero():
            where = "GPU" if self.accelerator.device.type == "cuda" else "RAM (peak RSS)"
            logger.info(
                "Trained in %.1f s: %.2f samples/s, %.1f tokens/s (non-pad); peak %s per process: %s GiB",
                runtime, metrics.get("train_samples_per_second", float("nan")), summary["train_tokens_per_second"],
                where, ", ".join(f"{gib:.2f}" for gib in per_process),
            )
        return summary

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        output.metrics.update(self._throughput_and_memory(output.metrics))
        output.metrics.update(self._length_grouping_metrics())
        if self.data_collator is not None and getattr(self.data_collator, "overlength_policy", None) == "drop":
            logger.warning(
                "Dropped %d training samples longer than max_length=%s (overlength_policy=drop).",
                self.num_dropped, self.data_collator.max_length,
            )
            output.metrics["train_dropped_samples"] = self.num_dropped
        if self.data_collator is not None and getattr(self.data_collator, "overlength_policy", None) == "shrink":
            logger.info(
                "Shrank the images of %d training samples to fit max_length=%s (overlength_policy=shrink).",
                self.num_shrunk, self.data_collator.max_length,
            )
            output.metrics["train_shrunk_samples"] = self.num_shrunk
        if self.bad_records.on_bad_record == "drop":
            self._stop_if_too_many_bad()  # the samples after the last optimizer step count too
            output.metrics.update(self._bad_record_metrics())
        return output

    # ---- sharing: mmft's model card instead of transformers' ---------------------------------------------
    def describe_run(self, model_args=None, data_args=None, metrics: dict | None = None) -> None:
        """Give the model card what only the caller knows: the arguments as typed (a Hub id rather than the folder
        it was cached in, ``--lora_target language`` rather than the resolved regex) and the measured metrics
        (``evaluate``'s results, including ``eval_before_train_*``). Later calls add to earlier ones."""
        if model_args is not None:
            self._run_description["model_args"] = model_args
        if data_args is not None:
            self._run_description["data_args"] = data_args
        if metrics:
            self._run_description["metrics"] = {**self._run_description.get("metrics", {}), **metrics}

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          dataset=None) -> None:
        """Write mmft's ``README.md`` (see ``mmft.hub.card``) into the output folder, on the main process only.

        ``Trainer.push_to_hub`` calls this after saving the model and before uploading the folder, so the pushed
        card is this one. Beside an adapter it also saves the base model's ``generation_config.json``.
        """
        if not self.is_world_process_zero():
            return
        save_generation_config(self, self.args.output_dir)
        write_model_card(self.args.output_dir, self, **self._run_description, model_name=model_name,
                         tags=tags or (), license=license, language=language, finetuned_from=finetuned_from,
                         datasets=dataset)

    # ---- evaluation -------------------------------------------------------------------------------
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
            generator=torch.Generator().manual_seed(self.args.seed),  # see own_generator
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
