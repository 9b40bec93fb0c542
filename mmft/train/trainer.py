"""``VLMTrainer``: ``transformers.Trainer`` plus evaluation by generation and the length-policy bookkeeping.

The trainer itself counts what the collator dropped or shrank, stops on non-finite steps and on too many bad
records, reloads full-model checkpoints, reports throughput and memory, and writes mmft's model card. Evaluation by
generation is ``mmft.train.generation_eval``; the length-ordered samplers are ``mmft.train.length_sampling``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys

import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from ..data.augment import CollatorEpochCallback
from ..data.badrecords import BAD_RECORDS_KEY, REASONS, BadRecordError, BadRecordLedger, summary_for_card, too_many
from ..hub.card import save_generation_config, write_model_card
from ..hub.hub_token import protect_hub_token
from .checkpoints import (
    CompleteCheckpointsMixin,
    holds_full_model,
    last_complete_checkpoint,
    load_full_model_weights,
    schedule_depends_on_total,
)
from .collator import NUM_DROPPED_KEY, NUM_SHRUNK_KEY
from .generation_eval import GenerationEvaluationMixin
from .length_sampling import LengthGroupedSamplingMixin

logger = logging.getLogger(__name__)


def _peak_memory_gib(device: torch.device) -> float:
    """Peak accelerator memory of this process (GPU), or its peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


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


class VLMTrainer(GenerationEvaluationMixin, LengthGroupedSamplingMixin, CompleteCheckpointsMixin, Trainer):
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

    # ---- data loading: seeded loaders, evaluation collators, padding-free batches ------------------------------
    def _get_dataloader(self, *args, **kwargs):
        return own_generator(super()._get_dataloader(*args, **kwargs), self.args.seed)

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
