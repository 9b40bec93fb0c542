"""Length-grouped batching (``mmft.data.lengths``) and padding-free batching (``mmft.train.packing``).

Lengths estimated from image headers must equal the collator's real lengths (else grouping is built on sand); the
sampler must be a permutation per epoch, group by length, stay random, and shard evenly over processes; packing
must lay tokens, positions and labels out exactly as flash-attention varlen expects, and be refused where wrong.
"""

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from PIL import Image
from torch.utils.data import BatchSampler
from transformers import AutoProcessor

from mmft.data.lengths import (
    LengthGroupedSampler,
    estimated_real_token_fraction,
    plan_length_grouping,
    record_lengths,
)
from mmft.data.record_datasets import RecordDataset
from mmft.testing import tiny_model_path
from mmft.train.collator import VLMCollator
from mmft.train.labels import IGNORE_INDEX
from mmft.train.packing import PaddingFreeCollator, PaddingFreeError, check_padding_free, pack

SIZES = [(48, 48), (200, 120), (90, 300), (640, 480), (33, 71)]


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory):
    """Records with 0-3 images of five different sizes (PNG and JPEG) and answers of different lengths."""
    root = tmp_path_factory.mktemp("mixed")
    for i, (w, h) in enumerate(SIZES):
        Image.new("RGB", (w, h), (40 * i, 90, 0)).save(root / f"{i}.{'jpg' if i % 2 else 'png'}")
    rows = []
    for k in range(11):
        n = k % 4
        images = [f"{(k + j) % 5}.{'jpg' if (k + j) % 5 % 2 else 'png'}" for j in range(n)]
        rows.append({"id": f"r{k}", "image": images, "conversations": [
            {"from": "human", "value": "<image>\n" * n + "What is shown? " * (k % 3 + 1)},
            {"from": "gpt", "value": "A red square. " * (k + 1)},
        ]})
    return RecordDataset(rows, source="mixed", image_root=str(root))


def _real_lengths(collator, dataset):
    return [int(collator([dataset[i]])["attention_mask"].sum()) for i in range(len(dataset))]


@pytest.mark.parametrize("family", ["llava", "qwen2-vl"])
@pytest.mark.parametrize("max_pixels", [None, 5000])
def test_estimated_lengths_equal_the_collators(family, max_pixels, mixed_dataset, tiny_llava_dir, tmp_path_factory,
                                              monkeypatch, tmp_path):
    monkeypatch.setenv("MMFT_CACHE", str(tmp_path))  # the on-disk lengths cache
    path = tiny_llava_dir if family == "llava" else tiny_model_path(family, tmp_path_factory.getbasetemp() / "fam")
    collator = VLMCollator(AutoProcessor.from_pretrained(path), max_pixels=max_pixels)
    dataset = RecordDataset(mixed_dataset.rows, source="mixed", image_root=mixed_dataset.image_root)
    estimated = record_lengths(dataset, collator)
    assert estimated == _real_lengths(collator, dataset)
    if family == "qwen2-vl":
        assert len(set(estimated)) > 5  # dynamic resolution: the sizes really change the counts
    # Kept on the dataset for the next epoch / train(), and on disk for the next run over the same records.
    assert list(dataset._mmft_lengths.values()) == [estimated]
    again = RecordDataset(mixed_dataset.rows, source="mixed", image_root=mixed_dataset.image_root)
    monkeypatch.setattr("mmft.data.lengths._measure", lambda *a: pytest.fail("measured again despite the disk cache"))
    assert record_lengths(again, collator) == estimated
    other = VLMCollator(collator.processor, max_pixels=(max_pixels or 10**6) // 2)  # other settings: other entry
    with pytest.raises(pytest.fail.Exception, match="measured again"):
        record_lengths(again, other)


def test_measured_fallback_equals_the_processor_helper(mixed_dataset, tmp_path_factory):
    from mmft.data.lengths import ImageTokenCounter

    processor = AutoProcessor.from_pretrained(tiny_model_path("qwen2-vl", tmp_path_factory.getbasetemp() / "fam"))
    counter = ImageTokenCounter(processor, processor.image_token)
    assert counter.method == "helper"
    for w, h in SIZES + [(1000, 50)]:
        assert counter(w, h) == counter.measure(w, h) > 0


def _lengths(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(20, 60, n) + rng.integers(0, 2, n) * rng.integers(100, 900, n)).tolist()


def test_sampler_is_a_grouped_random_permutation_per_epoch():
    lengths = _lengths()
    sampler = LengthGroupedSampler(lengths, batch_size=8, megabatch_batches=10, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(len(lengths))) and len(sampler) == len(lengths)
    grouped = estimated_real_token_fraction(lengths, first, 8)
    shuffled = estimated_real_token_fraction(lengths, np.random.default_rng(1).permutation(len(lengths)), 8)
    assert grouped > 0.8 and grouped > shuffled + 0.3, (grouped, shuffled)
    assert lengths[first[0]] == max(lengths)  # the longest batch first: memory problems show at step 1
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == sorted(first) and second != first
    assert list(LengthGroupedSampler(lengths, 8, megabatch_batches=10, seed=2)) != first
    sampler.set_epoch(0)
    assert list(sampler) == first  # reproducible from seed and epoch alone: every process builds the same order


def test_sampler_keeps_records_of_nearly_equal_length_mixed():
    # Three kinds of record whose content fixes their length (50, 51, 52 tokens): sorting on exact lengths would make
    # every batch one kind (it trained to chance on shapes); 10% noisy sort keys keep batches mixed at ~2% padding
    # (2.4 kinds per batch of 8; random order 2.9, exact sorting 1.1).
    lengths = [50 + i % 3 for i in range(480)]
    kinds_per_batch = {}
    for tolerance in (0.1, 0.0):
        order = list(LengthGroupedSampler(lengths, batch_size=8, tolerance=tolerance, seed=0))
        kinds_per_batch[tolerance] = np.mean([len({lengths[i] for i in order[j:j + 8]}) for j in range(0, 480, 8)])
    assert kinds_per_batch[0.1] > 2.2 and kinds_per_batch[0.0] < 1.2, kinds_per_batch


def test_plan_keeps_random_order_on_near_uniform_lengths():
    # Shapes-like: 4 lengths within 10% of each other; random batches are ~95% real tokens already.
    lengths = [54 + i % 4 + (i % 7 == 0) * 5 for i in range(1000)]
    plan = plan_length_grouping(lengths, 16)
    assert plan.tolerance is None and plan.fraction == plan.random_fraction > 0.9
    assert plan.exact_fraction < 1.1 * plan.random_fraction
    assert "kept random order" in plan.describe()
    assert plan_length_grouping(lengths, 16, min_gain=1.0).tolerance is not None  # 1.0: always group


def test_plan_picks_the_widest_bucket_that_reaches_the_target():
    lengths = _lengths(2000)
    plans = {target: plan_length_grouping(lengths, 16, target=target) for target in (0.5, 0.95, 1.0)}
    assert plans[0.5].tolerance == 0.2  # the widest bucket already does
    assert plans[1.0].tolerance == 0.0  # unreachable: exact sorting, the densest order
    chosen = plans[0.95]
    assert chosen.fraction >= 0.95 and chosen.tolerance in (0.1, 0.05, 0.02)
    wider = [t for t in (0.2, 0.1, 0.05, 0.02) if t > chosen.tolerance]
    for tolerance in wider:  # every wider bucket misses the target: the chosen one is the widest that reaches it
        sampler = LengthGroupedSampler(lengths, 16, tolerance=tolerance, seed=0)
        assert estimated_real_token_fraction(lengths, list(sampler), 16) < 0.95
    assert chosen.random_fraction < 0.6 and "length buckets" in chosen.describe()
    with pytest.raises(ValueError, match="target"):
        plan_length_grouping(lengths, 16, target=1.5)


@pytest.mark.parametrize("n", [320, 333])
def test_two_ranks_get_disjoint_equal_shards_of_similar_length(n):
    lengths = _lengths(n)
    shards = []
    for rank in range(2):
        sampler = LengthGroupedSampler(lengths, batch_size=8, num_replicas=2, megabatch_batches=5, seed=3)
        shards.append(list(BatchSamplerShard(BatchSampler(sampler, 8, drop_last=False), num_processes=2,
                                             process_index=rank)))
    assert len(shards[0]) == len(shards[1])
    flat = [[i for batch in shard for i in batch] for shard in shards]
    if n % 16 == 0:
        assert not set(flat[0]) & set(flat[1]) and sorted(flat[0] + flat[1]) == list(range(n))
    else:  # the short last step is filled up from the start (Accelerate's even_batches): everything still covered
        assert set(flat[0]) | set(flat[1]) == set(range(n))
    # The two batches of one step come from the same sorted global batch: similar lengths on both processes.
    pairs = [a + b for a, b in zip(shards[0], shards[1])][:-1]
    shuffled = np.random.default_rng(3).permutation(n).tolist()
    random_pairs = [shuffled[i:i + 16] for i in range(0, n - 16, 16)]
    assert all(len(pair) == 16 for pair in pairs + random_pairs)  # whole steps: cut into 16s, as below
    flat_pairs, flat_random = [i for p in pairs for i in p], [i for p in random_pairs for i in p]
    assert (estimated_real_token_fraction(lengths, flat_pairs, 16)
            > estimated_real_token_fraction(lengths, flat_random, 16) + 0.3)


def test_pack_lays_out_one_row_with_restarting_positions(tiny_processor, shapes_dir):
    from mmft.data.sources import load_records

    records = [r for r in load_records(shapes_dir["train"], max_samples=4)]
    collator = VLMCollator(tiny_processor)
    batch = collator(records)
    packed = PaddingFreeCollator(collator)(records)
    assert torch.equal(packed["pixel_values"], batch["pixel_values"])
    lengths = batch["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) > 1  # really different lengths: padding existed
    assert "attention_mask" not in packed and packed["input_ids"].shape == (1, sum(lengths))
    assert packed["input_ids"][0].tolist() == [t for row, n in zip(batch["input_ids"].tolist(), lengths)
                                               for t in row[:n]]
    assert packed["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    expected_labels = []
    for row, n in zip(batch["labels"].tolist(), lengths):
        expected_labels += [IGNORE_INDEX] + row[1:n]
    assert packed["labels"][0].tolist() == expected_labels
    assert (packed["labels"] != IGNORE_INDEX).sum() == (batch["labels"] != IGNORE_INDEX).sum()  # starts unsupervised
    assert PaddingFreeCollator(collator).processor is tiny_processor  # attributes fall through
    with pytest.raises(PaddingFreeError, match="right-padded"):
        pack({**batch, "attention_mask": batch["attention_mask"].flip(1)})


class _Model(torch.nn.Module):
    def __init__(self, model_type, attention):
        super().__init__()
        self.config = type("Config", (), {"model_type": model_type, "_attn_implementation": attention})()


def test_padding_free_refusals_name_the_reason():
    for model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v"):
        with pytest.raises(PaddingFreeError, match="multimodal RoPE"):
            check_padding_free(_Model(model_type, "flash_attention_2"), "cuda")
    with pytest.raises(PaddingFreeError, match="bidirectionally"):
        check_padding_free(_Model("paligemma", "flash_attention_2"), "cuda")
    with pytest.raises(PaddingFreeError, match="no family module"):
        check_padding_free(_Model("glm4v_moe", "flash_attention_2"), "cuda")
    with pytest.raises(PaddingFreeError, match="CUDA GPU"):
        check_padding_free(_Model("llava", "flash_attention_2"), "cpu")
    with pytest.raises(PaddingFreeError, match="flash_attention_2"):
        check_padding_free(_Model("llava", "sdpa"), "cuda")
    check_padding_free(_Model("llava", "flash_attention_2"), "cuda")  # allowed


def test_group_by_length_is_wired_into_the_trainer(tiny_llava_dir, shapes_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MMFT_CACHE", str(tmp_path / "cache"))
    from mmft.config.data_args import DataArguments
    from mmft.config.model_args import ModelArguments
    from mmft.config.training_args import VLMTrainingArguments
    from mmft.data.sources import load_records
    from mmft.workflow import build_trainer

    model_args = ModelArguments(model_name_or_path=str(tiny_llava_dir))
    train = load_records(shapes_dir["train"])  # 1-3 turns: lengths vary
    args = VLMTrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2,
                                group_by_length=True, save_strategy="no", report_to="none", disable_tqdm=True)
    assert args.train_sampling_strategy == "group_by_length"
    trainer = build_trainer(model_args, DataArguments(max_length=512), args, train)
    loader = trainer.get_train_dataloader()
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    assert trainer.length_grouping_plan.fraction > trainer.length_grouping_plan.random_fraction
    lengths = train._mmft_lengths[next(iter(train._mmft_lengths))]
    assert lengths == _real_lengths(trainer.data_collator, train)
    fraction = [b["attention_mask"].sum().item() / b["attention_mask"].numel() for b in loader]
    assert np.mean(fraction) > estimated_real_token_fraction(lengths, range(len(lengths)), 4)
    assert trainer.train().global_step == 2

    with pytest.raises(PaddingFreeError, match="CUDA GPU"):
        build_trainer(model_args, DataArguments(), VLMTrainingArguments(
            output_dir=str(tmp_path / "pf"), padding_free=True, report_to="none"), train)


def test_group_by_length_keeps_random_order_on_uniform_data(tiny_llava_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MMFT_CACHE", str(tmp_path / "cache"))
    from mmft.config.data_args import DataArguments
    from mmft.config.model_args import ModelArguments
    from mmft.config.training_args import VLMTrainingArguments
    from mmft.data.shapes import write_split
    from mmft.data.sources import load_records
    from mmft.workflow import build_trainer

    train = load_records(write_split(tmp_path / "data", "train", 96))  # one turn each: lengths within ~10%
    args = VLMTrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, max_steps=1,
                                group_by_length=True, save_strategy="no", report_to="none", disable_tqdm=True)
    trainer = build_trainer(ModelArguments(model_name_or_path=str(tiny_llava_dir)), DataArguments(max_length=256),
                            args, train)
    with caplog.at_level("INFO", logger="mmft.train.trainer"):
        sampler = trainer._get_train_sampler()
    assert isinstance(sampler, torch.utils.data.RandomSampler) and trainer.length_grouping_plan.tolerance is None
    assert "kept random order" in caplog.text
    args.length_grouping_min_gain = 1.0  # always group
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
