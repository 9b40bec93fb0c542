"""Padding: the fraction of real (non-pad) tokens in training batches, on the mixed-length data.

Three ways to batch the same records (``throughput.write_mixed``: 1-3 images of different sizes, answers from one
word to several sentences), each collated for real and measured from the batches' attention masks:

- mmft with ``--group_by_length`` (``mmft.data.lengths.LengthGroupedSampler`` over ``record_lengths``) as the trainer
  plans it (``plan_length_grouping``: the widest length bucket whose batches reach 0.95 real tokens) and, for
  comparison, fixed 10% buckets and exact-length sorting (``tolerance`` 0);
- mmft in random order (``--train_sampling_strategy random``; the ``auto`` default groups this data);
- TRL's ``SFTTrainer`` batching: random order, its vision-language collator (completion-only loss, prompt-completion
  data: prompts left-padded, completions right-padded, then flushed left).

Also prints the planned fraction predicted from the estimated lengths alone, which should equal the measured one.

    python benchmarks/padding.py                    # 1024 records, batch sizes 8 and 16
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def measured_fraction(collate, batches) -> float:
    real = total = 0
    for batch in batches:
        mask = collate(batch)["attention_mask"]
        real += int(mask.sum())
        total += mask.numel()
    return real / total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="Records of mixed data.")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[8, 16],
                        help="Batch sizes whose padding fraction is measured.")
    parser.add_argument("--epochs", type=int, default=2, help="Sampler epochs averaged (different orders).")
    args = parser.parse_args()
    from throughput import MODEL, trl_dataset, write_mixed
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from mmft.config.model_args import ModelArguments
    from mmft.data.lengths import (
        LengthGroupedSampler,
        estimated_real_token_fraction,
        plan_length_grouping,
        record_lengths,
    )
    from mmft.data.sources import load_records
    from mmft.train.collator import VLMCollator
    from mmft.train.modeling import load_processor

    work = Path(tempfile.mkdtemp(prefix="mmft-padding-"))
    train = load_records(write_mixed(work, "train", args.size))
    processor = load_processor(ModelArguments(**MODEL))
    collator = VLMCollator(processor)
    start = time.perf_counter()
    lengths = record_lengths(train, collator)
    seconds = time.perf_counter() - start
    records = [train[i] for i in range(len(train))]
    trl_rows = trl_dataset(records)
    trl_collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; {len(train)} mixed records, lengths "
          f"{min(lengths)}-{max(lengths)} (median {int(np.median(lengths))}) measured in {seconds:.2f} s")
    print(f"{'batch':>6}{'planned bucket':>16}{'planned (est.)':>16}{'planned':>10}{'10% buckets':>13}"
          f"{'exact sort':>12}{'random':>10}{'trl':>10}")
    for batch_size in args.batch_sizes:
        plan = plan_length_grouping(lengths, batch_size, seed=0)
        if plan.tolerance is None:
            raise SystemExit(f"batch {batch_size}: the trainer would not group this data ({plan.describe()}).")
        planned_est, planned, grouped, exact, random_, trl = [], [], [], [], [], []
        for epoch in range(args.epochs):
            for tolerance, results in ((plan.tolerance, planned), (0.1, grouped), (0.0, exact)):
                sampler = LengthGroupedSampler(lengths, batch_size, seed=0, tolerance=tolerance)
                sampler.set_epoch(epoch)
                order = list(sampler)
                cut = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
                if results is planned:
                    planned_est.append(estimated_real_token_fraction(lengths, order, batch_size))
                results.append(measured_fraction(lambda b: collator([records[i] for i in b]), cut))
            shuffled = np.random.default_rng(epoch).permutation(len(records)).tolist()
            cut = [shuffled[i:i + batch_size] for i in range(0, len(shuffled), batch_size)]
            random_.append(measured_fraction(lambda b: collator([records[i] for i in b]), cut))
            trl.append(measured_fraction(lambda b: trl_collator([dict(trl_rows[i]) for i in b]), cut))
        print(f"{batch_size:>6}{plan.tolerance:>16.0%}{np.mean(planned_est):>16.3f}{np.mean(planned):>10.3f}"
              f"{np.mean(grouped):>13.3f}{np.mean(exact):>12.3f}{np.mean(random_):>10.3f}{np.mean(trl):>10.3f}")


if __name__ == "__main__":
    main()
