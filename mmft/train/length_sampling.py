"""``LengthGroupedSamplingMixin``: the ``VLMTrainer`` samplers that order records by token length.

Training: under ``--train_sampling_strategy auto`` / ``group_by_length`` a plan (``mmft.data.lengths``) decides
whether grouping records of similar length removes padding worth removing, and the sampler follows it. Evaluation:
loss batches and generation batches run longest first under the same strategies.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

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

# These methods are VLMTrainer's: they log under its name, as they did when they were written inside it.
logger = logging.getLogger("mmft.train.trainer")


class LengthGroupedSamplingMixin:
    """For ``VLMTrainer`` (before ``transformers.Trainer`` in its bases): length-grouped training sampling and
    length-sorted evaluation order; the plan is kept as ``length_grouping_plan``."""

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
