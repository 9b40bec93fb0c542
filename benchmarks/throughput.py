"""Training throughput: mmft's ``VLMTrainer`` vs TRL's ``SFTTrainer`` (completion-only loss), same model and data.

Both train the same tiny LLaVA (``mmft:tiny-llava``, the demo's settings: full fine-tuning of the random model,
lr 5e-4, batch 16, fp32, no gradient checkpointing: TRL's SFTConfig defaults to bf16 and checkpointing, which are
turned off for it), initialised identically (same seed, same ``mmft.train.modeling`` preparation), for one epoch, on

- ``uniform``: the shapes demo data (one image, one-word answers: every sample about the same length);
- ``mixed``: generated data like real sets: 1-3 images of different sizes and formats (PNG/JPEG, 48 to 160 px),
  half short questions (one-word answers), half descriptions (one to several sentences per image).

Contenders: ``mmft`` (``--group_by_length true``), ``trl``, ``mmft-default`` (no grouping flag: the
``--train_sampling_strategy auto`` default decides, issue #16) and, on the mixed data, ``mmft-random``
(``--group_by_length false``). Runs are interleaved (mmft, TRL, mmft, TRL, ...) so machine drift cancels; medians
over ``--repeats``. tokens/s is the real (non-pad) tokens of the epoch (the same count for both:
``mmft.data.lengths.record_lengths``; TRL's own ``num_tokens`` agrees) over the wall time of ``train()``; tokens/CPU-s
divides by the CPU seconds this process spent instead, the figure to trust on a shared, contended machine (torch
runs ``--threads`` threads, 1 by default, so CPU time is work, not spin-waiting). After the timed runs, each trainer
trains ``--accuracy_epochs`` epochs once more and every model is scored by the same code (mmft's) on held-out
one-word questions (generated answers' vqa_accuracy and teacher-forced answer loss) and, on the mixed data, on
held-out descriptions (answer loss), so a speed-up is never bought with quality unseen. ``--init_from`` starts every
trainer from a model that already answers shapes questions (the VQA demo's output): from random init the tiny model
stays at chance on the mixed data in the time a CPU has.

    pip install -e '.[bench]'
    python benchmarks/throughput.py                        # both datasets, 3 repeats, accuracy after 6 epochs
    python recipes/vqa.py --output_dir /tmp/pretrained --eval_before_train false      # ~2-5 min on 2 cores
    python benchmarks/throughput.py --data mixed --train_size 512 --eval_size 200 --repeats 5 --accuracy_epochs 3 \
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
import tempfile
import time
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIZES = ((48, 48), (96, 72), (64, 128), (160, 120))
FILLERS = (
    "The background is light grey with a little noise.",
    "The {shape} has a flat {colour} fill and sharp edges.",
    "Nothing else appears in the picture.",
    "It is the only object, drawn small compared with the frame.",
)
ORDINALS = ("first", "second", "third")


def letterbox(image, size):
    """``image`` (square) scaled to fit ``size`` = (width, height) and centred on a canvas of its background colour.

    Not a plain resize: CLIP-style processors (the tiny LLaVA's: shortest edge to 48 px, then a centre crop) would
    cut off the outer cells of a stretched 64x128 or 160x120 image, where the shape sits, leaving 3 of the 4 sizes
    without the answer (the first version of this data did that, and every trainer stayed at chance). Letterboxed,
    the centre crop is the drawing itself, and files still differ in size, aspect and format.
    """
    from PIL import Image

    side = min(size)
    canvas = Image.new("RGB", size, image.getpixel((0, 0)))
    canvas.paste(image.resize((side, side)), ((size[0] - side) // 2, (size[1] - side) // 2))
    return canvas


def write_mixed(out_dir: str | os.PathLike, split: str, size: int, seed: int = 0, short_only: bool = False,
                long_only: bool = False) -> Path:
    """Write ``<out_dir>/<split>.jsonl`` (LLaVA format) and its images; return the JSONL path.

    Each record holds 1-3 shape images (``mmft.data.shapes.draw_shape``) letterboxed to one of ``SIZES``, saved as PNG
    or JPEG. Half the records ask for the colour/shape/side of one image (a one-word answer); the other half ask for a
    description: one sentence per image plus 0-3 filler sentences (up to ~80 words). ``short_only`` /
    ``long_only`` write only one kind (the held-out sets).
    """
    from mmft.data.shapes import COLOURS, SHAPES, SIDE_PHRASES, SIDES, draw_shape

    out = Path(out_dir) / split
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(zlib.crc32(f"{split}-{seed}".encode()))
    lines = []
    for i in range(size):
        n = rng.choice((1, 1, 2, 3))
        facts, names = [], []
        for k in range(n):
            colour, shape, side = rng.choice(tuple(COLOURS)), rng.choice(SHAPES), rng.choice(SIDES)
            facts.append({"colour": colour, "shape": shape, "side": side})
            image = letterbox(draw_shape(colour, shape, side, rng), rng.choice(SIZES))
            name = f"images/{split}-{i:06d}-{k}.{'jpg' if (i + k) % 2 else 'png'}"
            image.save(out / name, quality=92) if name.endswith("jpg") else image.save(out / name)
            names.append(name)
        if short_only or (not long_only and rng.random() < 0.5):
            k = rng.randrange(n)
            kind = rng.choice(("colour", "shape", "side"))
            which = "the shape" if n == 1 else f"the shape in the {ORDINALS[k]} image"
            question = {"colour": f"What colour is {which}?", "shape": f"What shape is {which}?",
                        "side": f"Where is {which}?"}[kind]
            answer = facts[k][kind]
        else:
            question = "Describe the image." if n == 1 else "Describe the images."
            sentences = []
            for k, f in enumerate(facts):
                where = SIDE_PHRASES[f["side"]]
                lead = "The image shows" if n == 1 else f"The {ORDINALS[k]} image shows"
                sentences.append(f"{lead} a {f['colour']} {f['shape']} {where}.")
                sentences += [s.format(**f) for s in rng.sample(FILLERS, rng.randint(0, 3))]
            answer = " ".join(sentences)
        lines.append({"id": f"mixed-{split}-{i:06d}", "image": names,
                      "conversations": [{"from": "human", "value": "<image>\n" * n + question},
                                        {"from": "gpt", "value": answer}]})
    path = out / f"{split}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def trl_dataset(records):
    """The same records as a TRL prompt-completion conversational dataset with an ``images`` column (decoded
    lazily by ``datasets``, as TRL's vision-language collator expects)."""
    import datasets

    def content(message):
        return [dict(part) for part in message["content"]]

    rows = {"images": [], "prompt": [], "completion": []}
    for record in records:
        rows["images"].append([str(Path(record["image_root"]) / ref) for ref in record["images"]])
        rows["prompt"].append([{"role": m["role"], "content": content(m)} for m in record["messages"][:-1]])
        rows["completion"].append([{"role": "assistant", "content": content(record["messages"][-1])}])
    dataset = datasets.Dataset.from_dict(rows)
    return dataset.cast_column("images", datasets.Sequence(datasets.Image()))


def common_training_kwargs(args, out: Path, epochs: float) -> dict:
    return dict(output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=args.batch_size,
                learning_rate=5e-4, lr_scheduler_type="cosine", warmup_steps=0.1, weight_decay=0.0, max_grad_norm=1.0,
                logging_steps=1000, save_strategy="no", eval_strategy="no", report_to="none", seed=args.seed,
                dataloader_num_workers=args.workers, disable_tqdm=True, bf16=False, gradient_checkpointing=False)


MODEL = dict(model_name_or_path="mmft:tiny-llava", use_peft=False, freeze_vision_tower=False)


GROUPING = {}  # the last mmft run's train_length_grouping (random, exact, buckets_<width>): what the planner chose


def timed_train(trainer):
    """(wall s, CPU s of this process, model): CPU seconds (all threads) are the robust figure on a shared machine;
    both cover the whole ``train()`` call, sampler set-up included."""
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    return time.perf_counter() - wall, time.process_time() - cpu, trainer.model


def run_mmft(args, train, out: Path, epochs: float, group_by_length: bool | None, accumulate: int = 1):
    """``group_by_length`` None passes no grouping flag at all: the default ``--train_sampling_strategy auto`` decides
    (issue #16: what a user gets without flags). ``accumulate`` > 1 splits each step's batch into that many grouped
    micro-batches (same samples per step): each micro-batch holds one length group, but a step mixes several."""
    from mmft.config.data_args import DataArguments
    from mmft.config.model_args import ModelArguments
    from mmft.config.training_args import VLMTrainingArguments
    from mmft.workflow import build_trainer

    kwargs = common_training_kwargs(args, out, epochs)
    kwargs.update(per_device_train_batch_size=args.batch_size // accumulate, gradient_accumulation_steps=accumulate)
    if group_by_length is not None:
        kwargs["group_by_length"] = group_by_length
    training_args = VLMTrainingArguments(**kwargs)
    trainer = build_trainer(ModelArguments(**MODEL), DataArguments(max_length=1024), training_args, train)
    result = timed_train(trainer)
    GROUPING["last"] = trainer._length_grouping_metrics()["train_length_grouping"]
    return result


def run_trl(args, train_hf, out: Path, epochs: float):
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from mmft.config.model_args import ModelArguments
    from mmft.train.modeling import load_model, load_processor, prepare_model_for_training

    model_args = ModelArguments(**MODEL)
    set_seed(args.seed)  # as build_trainer does: same initial weights
    processor = load_processor(model_args)
    model = prepare_model_for_training(load_model(model_args), model_args)
    config = SFTConfig(completion_only_loss=True, max_length=None, **common_training_kwargs(args, out, epochs))
    trainer = SFTTrainer(model=model, args=config, train_dataset=train_hf, processing_class=processor)
    return timed_train(trainer)


def score(model, evaluation, descriptions, out: Path) -> tuple[float, float, float]:
    """(vqa_accuracy, answer loss, description loss) of ``model``, by the same mmft code for every trainer.

    vqa_accuracy: generated answers to the held-out one-word questions (``evaluation``). The losses: mean
    cross-entropy of the held-out answers' supervised tokens (mmft's labels: answer + end-of-turn), teacher-forced,
    on ``evaluation`` and on ``descriptions`` (nan without): a continuous quality measure that still separates models
    whose generated answers are all near chance, and that covers long answers, which exact match cannot score.
    """
    import torch

    from mmft.config.model_args import ModelArguments
    from mmft.evaluation.inference import build_inference_trainer
    from mmft.families import family_for
    from mmft.train.collator import VLMCollator
    from mmft.train.modeling import load_processor

    processor = load_processor(ModelArguments(**MODEL))
    trainer = build_inference_trainer(model, processor, family_for(model), output_dir=str(out), batch_size=64,
                                      metrics=["vqa_accuracy"], max_new_tokens=8)  # what `mmft eval` runs
    accuracy = trainer.generate_and_score(evaluation)["eval_vqa_accuracy"]
    collate = VLMCollator(processor)  # training labels: answer + end-of-turn

    def answer_loss(dataset) -> float:
        records = [dataset[i] for i in range(len(dataset))]
        total = count = 0.0
        model.eval()
        with torch.no_grad():
            for start in range(0, len(records), 32):
                batch = collate(records[start:start + 32])
                tokens = int((batch["labels"][:, 1:] != -100).sum())
                total += float(model(**batch).loss) * tokens
                count += tokens
        return total / count

    return accuracy, answer_loss(evaluation), answer_loss(descriptions) if descriptions is not None else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("uniform", "mixed", "both"), default="both",
                        help="uniform: the demo's shapes records; mixed: 1-3 images, one-word answers or "
                             "descriptions of up to ~80 words.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed epochs per trainer (medians reported).")
    parser.add_argument("--train_size", type=int, default=256, help="Training records.")
    parser.add_argument("--eval_size", type=int, default=100, help="Held-out one-word questions scored.")
    parser.add_argument("--batch_size", type=int, default=16, help="Per-step batch, the same for both.")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers, the same for both.")
    parser.add_argument("--seed", type=int, default=0, help="Model initialisation and data order (both trainers).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the same for both).")
    parser.add_argument("--accuracy_epochs", type=float, default=6,
                        help="Epochs of the accuracy runs (0: none); the demo's 6 by default.")
    parser.add_argument("--accuracy_size", type=int, default=1000, help="Training records of the accuracy runs.")
    parser.add_argument("--init_from", default=None,
                        help="Model folder every trainer starts from, instead of the random tiny LLaVA: e.g. the VQA "
                             "demo's output (`python recipes/vqa.py --output_dir DIR`), a tiny LLaVA that already "
                             "answers shapes questions, so the mixed data is a fine-tuning task as in real use.")
    parser.add_argument("--accuracy_trainers", nargs="+", default=["mmft", "trl", "mmft-random"],
                        choices=["mmft", "trl", "mmft-random", "mmft-accum2", "mmft-default"],
                        help="Trainers of the accuracy runs; mmft-accum2: grouped, each step's batch split into 2 "
                             "micro-batches (gradient accumulation), so a step mixes two length groups; "
                             "mmft-default: no grouping flag (the auto default decides).")
    args = parser.parse_args()
    logging.getLogger("mmft").setLevel(logging.WARNING)
    if args.init_from:
        MODEL["model_name_or_path"] = args.init_from
    __import__("torch").set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    import trl

    from mmft.config.model_args import ModelArguments
    from mmft.data.lengths import record_lengths
    from mmft.data.shapes import write_split
    from mmft.data.sources import load_records
    from mmft.train.collator import VLMCollator
    from mmft.train.modeling import load_processor

    work = Path(tempfile.mkdtemp(prefix="mmft-throughput-"))
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
          f"torch threads {__import__('torch').get_num_threads()}, trl {trl.__version__}, "
          f"transformers {transformers.__version__}; {vars(args)}")
    collator = VLMCollator(load_processor(ModelArguments(**MODEL)))
    kinds = ("uniform", "mixed") if args.data == "both" else (args.data,)
    for kind in kinds:
        write = write_split if kind == "uniform" else write_mixed
        train = load_records(write(work / kind, "train", args.train_size))
        evaluation = load_records(write(work / kind, "test", args.eval_size, **({} if kind == "uniform" else
                                                                             {"seed": 1, "short_only": True})))
        descriptions = None if kind == "uniform" else load_records(
            write_mixed(work / kind, "test-descriptions", args.eval_size, seed=1, long_only=True))
        records = [train[i] for i in range(len(train))]
        train_hf = trl_dataset(records)
        tokens = sum(record_lengths(train, collator))
        contenders = {"mmft": lambda e, t=train: run_mmft(args, t, work / "o", e, group_by_length=True),
                      "trl": lambda e, t=train_hf: run_trl(args, t, work / "o", e),
                      # no grouping flag: the `auto` default plans (issue #16, "fast by default")
                      "mmft-default": lambda e, t=train: run_mmft(args, t, work / "o", e, group_by_length=None)}
        if kind == "mixed":
            contenders["mmft-random"] = lambda e, t=train: run_mmft(args, t, work / "o", e, group_by_length=False)
        times = {name: [] for name in contenders}
        cpu = {name: [] for name in contenders}
        grouping = {name: "-" for name in contenders}
        for _ in range(args.repeats):  # 0: accuracy runs only
            for name, run in contenders.items():
                GROUPING.pop("last", None)
                wall, cpu_seconds, _ = run(1)
                grouping[name] = GROUPING.get("last", "-")
                times[name].append(wall)
                cpu[name].append(cpu_seconds)
        if args.repeats:
            runs = json.dumps({k: [f"{w:.1f}/{c:.1f}" for w, c in zip(times[k], cpu[k])] for k in times})
            print(f"\n## {kind}: {len(train)} records, {tokens} real tokens, batch {args.batch_size}, "
                  f"{args.repeats} repeats (medians; every run as wall/CPU s: {runs})")
            print(f"{'trainer':<14}{'samples/s':>11}{'tokens/s':>10}{'vs trl':>8}{'tokens/CPU-s':>14}{'vs trl':>8}"
                  "  grouping")
            wall_median = {name: statistics.median(t) for name, t in times.items()}
            cpu_median = {name: statistics.median(t) for name, t in cpu.items()}
            for name in contenders:
                w, c = wall_median[name], cpu_median[name]
                print(f"{name:<14}{len(train) / w:>11.2f}{tokens / w:>10.0f}{wall_median['trl'] / w:>8.2f}"
                      f"{tokens / c:>14.0f}{cpu_median['trl'] / c:>8.2f}  {grouping[name]}", flush=True)
        if args.accuracy_epochs:
            big = load_records(write(work / f"{kind}-accuracy", "train", args.accuracy_size))
            big_hf = trl_dataset([big[i] for i in range(len(big))])
            scores = {}
            for name in args.accuracy_trainers:
                if name == "trl":
                    wall, _, model = run_trl(args, big_hf, work / "o", args.accuracy_epochs)
                else:
                    wall, _, model = run_mmft(args, big, work / "o", args.accuracy_epochs,
                                              group_by_length={"mmft-random": False,
                                                               "mmft-default": None}.get(name, True),
                                              accumulate=2 if name == "mmft-accum2" else 1)
                scores[name] = score(model, evaluation, descriptions, work / "eval")
                print(f"{name}: trained in {wall:.0f} s, vqa_accuracy {scores[name][0]:.3f}, answer loss "
                      f"{scores[name][1]:.3f}, description loss {scores[name][2]:.3f}", flush=True)
            print(f"eval vqa_accuracy / answer loss / description loss after {args.accuracy_epochs:g} epochs on "
                  f"{len(big)} records ({len(evaluation)} held-out one-word questions, {args.eval_size} held-out "
                  "descriptions): " + ", ".join(f"{k} {a:.3f} / {loss:.3f} / {d:.3f}"
                                                 for k, (a, loss, d) in scores.items()), flush=True)

if __name__ == "__main__":
    main()
