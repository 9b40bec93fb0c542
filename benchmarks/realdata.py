"""Accuracy on real images nobody here generated: scikit-learn's handwritten digits as VQA, mmft vs TRL.

The data: ``sklearn.datasets.load_digits`` (1,797 8x8 greyscale scans of digits written by 43 people, shipped inside
the scikit-learn wheel, so nothing is downloaded), each upscaled to 48x48 and saved as a PNG, turned into LLaVA-format
records: ``<image>\\nWhich digit is handwritten here? Answer with one word.`` -> ``seven``. The answer is the digit's
*name*, as a classification set cast as VQA has class names: in the tiny tokenizer the names take 1 to 4 tokens
(``one`` 1, ``seven`` 4), so a record's length depends on its class, the case where batching by length would batch
by label. A fixed permutation (``--split_seed``) holds out ``--eval_size`` records; the rest train.

The contenders train the same tiny LLaVA (``mmft:tiny-llava``: full fine-tuning of the random model, vision tower
included, fp32), prepared and initialised identically, for the same epochs, learning rate and batch:

- ``mmft``: ``VLMTrainer`` with mmft's defaults for everything else (``--train_sampling_strategy auto``, labels on
  the answer and its end-of-turn token, nothing after it);
- ``trl``: ``SFTTrainer`` (prompt-completion data, ``completion_only_loss``) with TRL's defaults for everything else
  (bf16 and gradient checkpointing off: this runs on a CPU);
- ablations, each mmft with one thing changed, to explain a gap: ``mmft-random`` (``--train_sampling_strategy
  random``), ``mmft-turn-suffix`` (``--label_turn_suffix true``: also supervise what the template writes after the
  end-of-turn token, ChatML's newline, which TRL's completion labels include);
- ``mmft-equal-time``: mmft's defaults for as many epochs as fit in TRL's training time of the same seed
  (``--epochs`` x TRL's CPU seconds / mmft's: runs after ``mmft`` and ``trl``, which it needs).

Every model is scored by the same code (mmft's ``generate_and_score``, greedy, what ``mmft eval`` runs): exact-match
accuracy of the generated answer on the held-out records (chance 0.10), and their teacher-forced answer loss. Each
contender runs once per ``--seeds`` seed (model initialisation and data order); medians and every run are printed, so
a gap can be told from seed noise. Wall and CPU seconds of ``train()`` are printed too (equal wall time: compare a
contender's accuracy at the epochs that take the other's time).

    pip install -e '.[bench]'
    python benchmarks/realdata.py                          # 5 seeds x (mmft, trl, mmft-equal-time), 3 epochs
    python benchmarks/realdata.py --epochs 3 --seeds 0 1 2 3 4 5 6 7 --contenders mmft trl mmft-equal-time
    python benchmarks/realdata.py --epochs 3 --seeds 0 1 2 3 4 5 6 7 --contenders mmft trl mmft-turn-suffix mmft-random
    python recipes/vqa.py --output_dir /tmp/pretrained --eval_before_train false      # ~2-5 min on 2 cores
    python benchmarks/realdata.py --epochs 3 --seeds 0 1 2 3 4 --contenders mmft trl mmft-turn-suffix mmft-equal-time \
        --init_from /tmp/pretrained
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUESTION = "<image>\nWhich digit is handwritten here? Answer with one word."
SIDE = 48  # the tiny LLaVA's CLIP crop: the whole scan survives its resize and centre crop


def write_digits(out_dir: Path, eval_size: int, split_seed: int) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``test.jsonl`` (LLaVA format) and one PNG per scan; return both paths."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = list(range(len(digits.images)))
    random.Random(split_seed).shuffle(order)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, indices in (("test", order[:eval_size]), ("train", order[eval_size:])):
        paths[split] = out_dir / f"{split}.jsonl"
        with open(paths[split], "w") as f:
            for index in indices:
                pixels = (digits.images[index] * (255 / 16)).astype("uint8")  # scans hold 0-16
                name = f"images/digit-{index:04d}.png"
                Image.fromarray(pixels, "L").convert("RGB").resize((SIDE, SIDE), Image.BILINEAR).save(out_dir / name)
                f.write(json.dumps({"id": f"digit-{index:04d}", "image": name, "conversations": [
                    {"from": "human", "value": QUESTION},
                    {"from": "gpt", "value": NAMES[int(digits.target[index])]}]}) + "\n")
    return paths["train"], paths["test"]


def training_kwargs(args, out: Path, seed: int) -> dict:
    """The settings both sides share; everything else is each trainer's own default."""
    return dict(output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                learning_rate=args.learning_rate, seed=seed, save_strategy="no", eval_strategy="no",
                report_to="none", logging_steps=10_000, disable_tqdm=True, dataloader_num_workers=args.workers)


def run_mmft(args, train, out: Path, seed: int, training_overrides=None, data_overrides=None):
    from throughput import MODEL, timed_train

    from mmft.config.data_args import DataArguments
    from mmft.config.model_args import ModelArguments
    from mmft.config.training_args import VLMTrainingArguments
    from mmft.workflow import build_trainer

    training_args = VLMTrainingArguments(**{**training_kwargs(args, out, seed), **(training_overrides or {})})
    trainer = build_trainer(ModelArguments(**MODEL), DataArguments(**(data_overrides or {})), training_args, train)
    return timed_train(trainer)


def run_trl(args, train_hf, out: Path, seed: int):
    from throughput import MODEL, timed_train
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from mmft.config.model_args import ModelArguments
    from mmft.train.modeling import load_model, load_processor, prepare_model_for_training

    model_args = ModelArguments(**MODEL)
    set_seed(seed)  # as build_trainer does: the same initial weights as mmft's run of this seed
    processor = load_processor(model_args)
    model = prepare_model_for_training(load_model(model_args), model_args)
    config = SFTConfig(completion_only_loss=True, max_length=None, bf16=False, gradient_checkpointing=False,
                       **training_kwargs(args, out, seed))
    trainer = SFTTrainer(model=model, args=config, train_dataset=train_hf, processing_class=processor)
    return timed_train(trainer)


CONTENDERS = {  # name: (training argument overrides, data argument overrides)
    "mmft": ({}, {}),
    "mmft-random": ({"train_sampling_strategy": "random"}, {}),
    "mmft-turn-suffix": ({}, {"label_turn_suffix": True}),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=3,
                        help="Training epochs, the same for every contender (at 8 every contender is at 0.97-0.98).")
    parser.add_argument("--learning_rate", type=float, default=5e-4, help="The same for every contender.")
    parser.add_argument("--batch_size", type=int, default=16, help="The same for every contender.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="One run per contender and seed (initial weights and data order).")
    parser.add_argument("--contenders", nargs="+", default=["mmft", "trl", "mmft-equal-time"],
                        choices=[*CONTENDERS, "trl", "mmft-equal-time"],
                        help="Who trains: mmft's defaults, TRL's, or one of the mmft ablations (module docstring).")
    parser.add_argument("--eval_size", type=int, default=500, help="Held-out scans scored (the rest train).")
    parser.add_argument("--split_seed", type=int, default=0, help="The permutation that picks the held-out scans.")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers, the same for every contender.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for every contender.")
    parser.add_argument("--init_from", default=None,
                        help="Model folder every contender starts from instead of the random tiny LLaVA: e.g. the VQA "
                             "demo's output (`python recipes/vqa.py --output_dir DIR`), a tiny LLaVA that already "
                             "answers questions in its chat format, as a pretrained VLM does.")
    args = parser.parse_args()
    if args.init_from:
        from throughput import MODEL

        MODEL["model_name_or_path"] = args.init_from
    logging.getLogger("mmft").setLevel(logging.WARNING)
    import torch
    import transformers
    import trl

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    from throughput import score, trl_dataset

    from mmft.data.sources import load_records

    work = Path(tempfile.mkdtemp(prefix="mmft-realdata-"))
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
          f"trl {trl.__version__}; {vars(args)}", flush=True)
    train_path, test_path = write_digits(work / "digits", args.eval_size, args.split_seed)
    train, evaluation = load_records(str(train_path)), load_records(str(test_path))
    train_hf = trl_dataset([train[i] for i in range(len(train))]) if "trl" in args.contenders else None
    if "mmft-equal-time" in args.contenders and not {"mmft", "trl"} <= set(args.contenders):
        parser.error("mmft-equal-time needs mmft and trl among --contenders (it trains for TRL's time)")
    order = sorted(args.contenders, key=lambda name: name == "mmft-equal-time")  # it needs this seed's times
    runs = {name: [] for name in order}
    for seed in args.seeds:  # seed-major: machine drift falls on every contender alike
        cpu_of = {}
        for name in order:
            epochs = args.epochs
            if name == "trl":
                wall, cpu, model = run_trl(args, train_hf, work / "o", seed)
            elif name == "mmft-equal-time":
                epochs = args.epochs * cpu_of["trl"] / cpu_of["mmft"]
                wall, cpu, model = run_mmft(args, train, work / "o", seed, {"num_train_epochs": epochs})
            else:
                wall, cpu, model = run_mmft(args, train, work / "o", seed, *CONTENDERS[name])
            cpu_of[name] = cpu
            accuracy, loss, _ = score(model, evaluation, None, work / "eval")
            runs[name].append((accuracy, loss, wall, cpu))
            print(f"seed {seed} {name:<18} accuracy {accuracy:.3f}  answer loss {loss:.3f}  train {wall:.0f} s wall "
                  f"/ {cpu:.0f} s CPU, {epochs:.2f} epochs", flush=True)
    print(f"\n## {len(train)} training scans, {len(evaluation)} held out, {args.epochs:g} epochs, lr "
          f"{args.learning_rate:g}, batch {args.batch_size}, seeds {args.seeds} (medians; chance accuracy 0.100)")
    print(f"{'contender':<18}{'accuracy':>10}{'min-max':>14}{'answer loss':>13}{'train wall s':>14}{'CPU s':>8}")
    for name, results in runs.items():
        accuracies = [r[0] for r in results]
        print(f"{name:<18}{statistics.median(accuracies):>10.3f}{min(accuracies):>8.3f}-{max(accuracies):.3f}"
              f"{statistics.median(r[1] for r in results):>13.3f}{statistics.median(r[2] for r in results):>14.0f}"
              f"{statistics.median(r[3] for r in results):>8.0f}")


if __name__ == "__main__":
    main()
