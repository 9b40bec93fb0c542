"""``--train_sampling_strategy auto`` (the default, issue #16): length grouping decides itself from the measured
lengths, says what it chose (log line, train_results.json), never batches records by content, and evaluation runs in
length order with its results back in record order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmft.config.parsing import parse_args
from mmft.config.training_args import VLMTrainingArguments
from mmft.data.lengths import (
    MIN_GROUPING_BATCHES,
    LengthGroupedSampler,
    length_sorted_order,
    plan_length_grouping,
    record_lengths,
)
from mmft.errors import UsageError


def _mixed_lengths(n, seed=0):
    """Half one-word answers (~60-70 tokens), half paragraphs with 1-3 images (150-400): real VLM data's spread."""
    rng = np.random.default_rng(seed)
    short = rng.integers(60, 70, n // 2)
    return np.concatenate([short, rng.integers(150, 400, n - n // 2)])[rng.permutation(n)].tolist()


def test_auto_groups_mixed_lengths_and_keeps_random_order_where_grouping_cannot_help():
    settings = dict(min_batches=MIN_GROUPING_BATCHES)
    mixed = plan_length_grouping(_mixed_lengths(1024), 16, **settings)
    assert mixed.tolerance is not None and mixed.fraction >= 0.95 > mixed.random_fraction + 0.2
    assert mixed.decision.startswith("buckets_") or mixed.decision == "exact"
    uniform = plan_length_grouping(np.random.default_rng(1).integers(100, 106, 1024).tolist(), 16, **settings)
    assert uniform.tolerance is None and uniform.reason == "near-uniform lengths" and uniform.decision == "random"
    assert uniform.fraction == uniform.random_fraction
    few = plan_length_grouping(_mixed_lengths(16 * MIN_GROUPING_BATCHES - 1), 16, **settings)
    assert few.tolerance is None and few.reason == "too few records" and "too few records" in few.describe()
    # The same few records under an explicit --group_by_length: grouped (the record count is auto's rule only).
    assert plan_length_grouping(_mixed_lengths(16 * MIN_GROUPING_BATCHES - 1), 16).tolerance is not None


def test_auto_is_the_default_and_group_by_length_false_turns_it_off():
    assert VLMTrainingArguments(output_dir="o").train_sampling_strategy == "auto"
    *_, args = parse_args(["--model_name_or_path", "m", "--output_dir", "o"])
    assert args.train_sampling_strategy == "auto" and not args.group_by_length
    *_, args = parse_args(["--model_name_or_path", "m", "--output_dir", "o", "--group_by_length", "false"])
    assert args.train_sampling_strategy == "random"
    *_, args = parse_args(["--model_name_or_path", "m", "--output_dir", "o", "--train_sampling_strategy", "random"])
    assert args.train_sampling_strategy == "random"
    rebuilt = VLMTrainingArguments(output_dir="o", group_by_length=args.group_by_length,
                                   train_sampling_strategy=args.train_sampling_strategy)
    assert rebuilt.train_sampling_strategy == "random"  # deciding again from the decided values changes nothing
    default = VLMTrainingArguments(output_dir="o")
    assert VLMTrainingArguments(output_dir="o", group_by_length=default.group_by_length).train_sampling_strategy \
        == "auto"
    with pytest.raises(UsageError, match="--group_by_length false"):
        parse_args(["--model_name_or_path", "m", "--output_dir", "o", "--group_by_length", "false",
                    "--train_sampling_strategy", "group_by_length"])


def _phrasing(record):
    return next(part["text"] for part in record["messages"][0]["content"] if part["type"] == "text")


def _distinct_per_batch(batches, kinds):
    return float(np.mean([len({kinds[i] for i in batch}) for batch in batches if len(batch)]))


def test_grouping_never_batches_records_by_the_content_that_fixes_their_length(tiny_processor, tmp_path, monkeypatch):
    """The first-pass failure: exact-length sorting of the shapes data made batches of one question phrasing (its
    token count fixes the length), and held-out accuracy fell to chance. Here the length of a record is its phrasing
    (9 phrasings, one-word answers): every order the planner can choose must keep phrasings as mixed in a batch as
    random order does (within 20%: any grouping that removes padding puts longer phrasings together somewhat),
    while exact sorting (the failure) visibly does not."""
    monkeypatch.setenv("MMFT_CACHE", str(tmp_path / "cache"))
    from mmft.data.shapes import write_split
    from mmft.data.sources import load_records
    from mmft.train.collator import VLMCollator

    train = load_records(write_split(tmp_path / "data", "train", 256))
    lengths = record_lengths(train, VLMCollator(tiny_processor), progress=False)
    kinds = [_phrasing(train[i]) for i in range(len(train))]
    assert len(set(lengths)) > 1 and len(set(kinds)) == 9
    by_kind = {}
    for kind, length in zip(kinds, lengths):
        by_kind.setdefault(kind, set()).add(length)
    assert sum(len(v) for v in by_kind.values()) < 2 * len(by_kind)  # the phrasing (nearly) fixes the length

    batch = 16
    rng = np.random.default_rng(0)
    random_mix = np.mean([_distinct_per_batch(np.array_split(rng.permutation(len(lengths)), len(lengths) // batch),
                                              kinds) for _ in range(4)])
    exact = LengthGroupedSampler(lengths, batch, tolerance=0.0, seed=0)
    assert _distinct_per_batch(exact.global_batches(), kinds) < 0.6 * random_mix  # the guard can see the failure

    # The default keeps random order on these near-uniform lengths; forced grouping (min_gain 1: always group, the
    # first pass's setting) at the default target picks wide buckets: still mixed. (A tighter target, such as
    # --length_grouping_target 0.99, narrows the buckets and does sort phrasings apart: 4.3 per batch at 5%.)
    assert plan_length_grouping(lengths, batch, min_batches=MIN_GROUPING_BATCHES).tolerance is None
    plan = plan_length_grouping(lengths, batch, min_gain=1.0)
    assert plan.tolerance == 0.2
    sampler = LengthGroupedSampler(lengths, batch, tolerance=plan.tolerance, seed=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        mix = _distinct_per_batch(sampler.global_batches(), kinds)
        assert mix >= 0.8 * random_mix, (plan, epoch, mix, random_mix)


def _trainer(tiny_llava_dir, tmp_path, train, eval_dataset=None, **kwargs):
    from mmft.config.data_args import DataArguments
    from mmft.config.model_args import ModelArguments
    from mmft.workflow import build_trainer

    args = VLMTrainingArguments(output_dir=str(tmp_path / "out"), save_strategy="no", report_to="none",
                                disable_tqdm=True, **kwargs)
    return build_trainer(ModelArguments(model_name_or_path=str(tiny_llava_dir)), DataArguments(max_length=512),
                         args, train, eval_dataset)


def test_the_default_groups_mixed_data_and_writes_the_decision(tiny_llava_dir, shapes_dir, tmp_path, monkeypatch,
                                                               caplog):
    monkeypatch.setenv("MMFT_CACHE", str(tmp_path / "cache"))
    from mmft.data.sources import load_records

    train = load_records(shapes_dir["train"])  # 64 records of 1-3 turns: 16 steps of 4, lengths vary
    trainer = _trainer(tiny_llava_dir, tmp_path, train, per_device_train_batch_size=4, max_steps=2)
    assert trainer.args.train_sampling_strategy == "auto"
    with caplog.at_level("INFO", logger="mmft.train.trainer"):
        assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    metrics = trainer.train().metrics
    plan = trainer.length_grouping_plan
    assert metrics["train_length_grouping"] == plan.decision != "random"
    assert metrics["train_expected_real_token_fraction"] == round(plan.fraction, 4) > plan.random_fraction
    log = caplog.text
    assert "Length grouping (--train_sampling_strategy auto):" in log and "expected real-token fraction" in log

    fresh = load_records(shapes_dir["train"])
    random_order = _trainer(tiny_llava_dir, tmp_path, fresh, per_device_train_batch_size=4, max_steps=1,
                            train_sampling_strategy="random")
    assert isinstance(random_order._get_train_sampler(), torch.utils.data.RandomSampler)
    metrics = random_order.train().metrics
    assert metrics["train_length_grouping"] == "random" and "train_expected_real_token_fraction" not in metrics
    assert not hasattr(fresh, "_mmft_lengths")  # random order measures no length


def test_evaluation_runs_in_length_order_and_reports_in_record_order(tiny_llava_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MMFT_CACHE", str(tmp_path / "cache"))
    from mmft.data.shapes import write_split
    from mmft.data.sources import load_records

    evaluation = load_records(write_split(tmp_path / "data", "validation", 12, turns=(1, 3)))
    train = load_records(write_split(tmp_path / "data", "train", 8))
    answers = {}
    for strategy in ("auto", "random"):
        trainer = _trainer(tiny_llava_dir, tmp_path / strategy, train, evaluation, per_device_eval_batch_size=4,
                           generation_max_new_tokens=3, train_sampling_strategy=strategy, seed=0)
        seen = []
        collate = trainer._generation_collate
        trainer._generation_collate = lambda records, seen=seen, collate=collate: (
            seen.append([r["_index"] for r in records]) or collate(records))
        trainer.evaluate()
        rows = [json.loads(line) for line in (tmp_path / strategy / "out" / "eval_predictions.jsonl").open()]
        assert [row["id"] for row in rows] == [evaluation[i]["id"] for i in range(len(evaluation))]
        answers[strategy] = [row["prediction"] for row in rows]
        lengths = record_lengths(evaluation, trainer.data_collator, progress=False)
        order = [i for batch in seen for i in batch]
        if strategy == "auto":
            assert order == length_sorted_order(lengths) != list(range(len(evaluation)))
            assert [max(lengths[i] for i in b) for b in seen] == sorted((max(lengths[i] for i in b) for b in seen),
                                                                        reverse=True)
        else:
            assert order == list(range(len(evaluation)))
    # Same model, same records: the answers do not depend on the batch order (each is matched back by index).
    assert answers["auto"] == answers["random"]
