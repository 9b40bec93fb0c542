"""Contrastive step throughput: mmft's ContrastiveTrainer vs a plain loop over transformers' ``CLIPModel``.

Both train the same model (loaded fresh from the same folder, so the same initial weights), on the same in-memory
(image, caption) pairs, at the same batch size, precision, optimizer (AdamW, same learning rate) and device. Each
side's step includes making its batch from PIL images and captions: mmft's ``ContrastiveCollator`` through the
Trainer's DataLoader; the peer's one ``processor(text=..., images=...)`` call, then
``model(**inputs, return_loss=True)`` (CLIP's own symmetric loss), ``backward``, ``step``, ``zero_grad``.
Samples/s is timed from the end of the first step to the end of the last (start-up, optimizer creation and the
first step's warm-up left out). Runs are interleaved (mmft, peer, mmft, peer, ...) so machine drift cancels;
medians over ``--repeats``; the ratio is mmft samples/s over peer samples/s (1.0: no overhead).

    python benchmarks/contrastive.py                          # tiny CLIP, CPU, batch 16, 12 steps, 5 repeats
    python benchmarks/contrastive.py --model openai/clip-vit-base-patch32 --batch_size 128 --bf16   # a GPU
"""

import argparse
import statistics
import time

import torch


def pairs(n: int, seed: int = 0):
    """``n`` records: a random-colour 96x96 image and a distinct caption each."""
    import random

    from PIL import Image

    from mmft.data.records import to_canonical

    rng = random.Random(seed)
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "grey", "white"]
    records = []
    for i in range(n):
        image = Image.new("RGB", (96, 96), tuple(rng.randrange(256) for _ in range(3)))
        caption = f"a {colours[i % len(colours)]} square, number {i}"
        records.append(to_canonical({"id": f"p{i}", "images": [image], "references": [caption], "messages": [
            {"role": "user", "content": "<image>Describe."}, {"role": "assistant", "content": caption}]}))
    return records


class StepClock:
    """Wall time at the end of every optimizer step (the Trainer's ``on_step_end``)."""

    def __init__(self):
        self.ends = []

    def mark(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def samples_per_second(self, batch_size: int) -> float:
        return batch_size * (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])


def run_mmft(args, records) -> float:
    from transformers import TrainerCallback

    from mmft.config.data_args import DataArguments
    from mmft.config.model_args import ModelArguments
    from mmft.contrastive.config import ContrastiveArguments, ContrastiveTrainingArguments
    from mmft.contrastive.workflow import build_contrastive_trainer

    clock = StepClock()

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            clock.mark()

    training = ContrastiveTrainingArguments(
        output_dir=args.work, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=args.learning_rate, lr_scheduler_type="constant", weight_decay=0.0, report_to="none",
        save_strategy="no", logging_strategy="no", disable_tqdm=True, bf16=args.bf16, use_cpu=args.device == "cpu",
        dataloader_num_workers=0, seed=0)
    trainer = build_contrastive_trainer(ModelArguments(model_name_or_path=args.model, dtype="float32"),
                                        DataArguments(), ContrastiveArguments(gallery_queries=0), training, records)
    trainer.add_callback(Clock())
    trainer.train()
    return clock.samples_per_second(args.batch_size)


def run_peer(args, records) -> float:
    from transformers import AutoProcessor, CLIPModel

    from mmft.contrastive.models import resolve_model_name

    path = resolve_model_name(args.model)
    processor = AutoProcessor.from_pretrained(path)
    model = CLIPModel.from_pretrained(path, dtype=torch.float32).to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    images = [record["images"][0] for record in records]
    captions = [record["references"][0] for record in records]
    max_length = min(getattr(processor.tokenizer, "model_max_length", 77), 77)
    clock = StepClock()
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(0)).tolist()
    for step in range(args.steps):
        chosen = order[step * args.batch_size:(step + 1) * args.batch_size]
        inputs = processor(text=[captions[i] for i in chosen], images=[images[i] for i in chosen], padding=True,
                           truncation=True, max_length=max_length, return_tensors="pt").to(args.device)
        with torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(**inputs, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.mark()
    return clock.samples_per_second(args.batch_size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mmft:tiny-clip", help="A CLIP model: Hub id, folder or mmft:tiny-clip.")
    parser.add_argument("--batch_size", type=int, default=16, help="Pairs per step (both sides).")
    parser.add_argument("--steps", type=int, default=12, help="Optimizer steps per run (the first is warm-up).")
    parser.add_argument("--repeats", type=int, default=5, help="Interleaved runs of each side (medians reported).")
    parser.add_argument("--learning_rate", type=float, default=1e-5, help="AdamW learning rate (both sides).")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast on both sides (Trainer's --bf16).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default: cuda when available).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import tempfile

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    args.work = tempfile.mkdtemp(prefix="mmft-bench-contrastive-")
    records = pairs(args.batch_size * args.steps)
    results = {"mmft": [], "peer": []}
    for _ in range(args.repeats):
        results["mmft"].append(run_mmft(args, records))
        results["peer"].append(run_peer(args, records))
    mmft, peer = (statistics.median(results[name]) for name in ("mmft", "peer"))
    print(f"model {args.model}, batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats, device "
          f"{args.device}, {'bf16' if args.bf16 else 'fp32'}, torch threads {torch.get_num_threads()}")
    for name in ("mmft", "peer"):
        print(f"{name:<5} samples/s median {statistics.median(results[name]):8.1f}  runs: "
              + ", ".join(f"{value:.1f}" for value in results[name]))
    print(f"ratio mmft/peer samples/s: {mmft / peer:.3f}")


if __name__ == "__main__":
    main()
