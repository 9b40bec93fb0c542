"""Start-up: wall time from launch to the first optimizer step, and peak RSS, on 100,000 vs 1,000 records.

Each run is a fresh Python process (so imports and peak RSS are its own) that trains the tiny LLaVA for one step on
a LLaVA-format JSONL of N single-turn records (image paths cycle over 100 shapes PNGs: the cost measured is the
records', not the images'). The child reports when each phase ended; the parent measures from before the launch.
Phases: imports, ``load_records`` (read + validate every record), ``build_trainer`` (processor, model, collators),
then ``train()`` up to the end of step 1 (with ``--group_by_length`` this includes measuring every record's length).

    python benchmarks/startup.py                        # 1,000 and 100,000 records, with and without grouping
    python benchmarks/startup.py --sizes 1000 100000 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_jsonl(folder: Path, size: int) -> Path:
    from mmft.data.shapes import ANSWERS, QUESTIONS, generate_records

    path = folder / f"records-{size}.jsonl"
    if path.exists():
        return path
    images = []
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for record, image in generate_records("train", 100):
        image.save(folder / record["image"])
        images.append(record["image"])
    kinds = list(QUESTIONS)
    with open(path, "w") as f:
        for i in range(size):
            kind = kinds[i % 3]
            f.write(json.dumps({"id": f"r{i:07d}", "image": images[i % 100], "conversations": [
                {"from": "human", "value": f"<image>\n{QUESTIONS[kind][i % 3]}"},
                {"from": "gpt", "value": ANSWERS[kind][i % len(ANSWERS[kind])]}]}) + "\n")
    return path


def child(path: str, group_by_length: bool) -> None:
    def now():  # (wall, CPU seconds of this process): CPU time is robust to a contended machine
        return time.time(), time.process_time()

    marks = {"start": now()}
    from transformers import TrainerCallback

    from mmft.config.data_args import DataArguments
    from mmft.config.model_args import ModelArguments
    from mmft.config.training_args import VLMTrainingArguments
    from mmft.data.sources import load_records
    from mmft.workflow import build_trainer

    marks["imports"] = now()
    train = load_records(path)
    marks["load_records"] = now()

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.setdefault("first_step", now())

    args = VLMTrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=1, per_device_train_batch_size=8,
                                save_strategy="no", report_to="none", disable_tqdm=True,
                                group_by_length=group_by_length)
    trainer = build_trainer(ModelArguments(model_name_or_path="mmft:tiny-llava"), DataArguments(max_length=256),
                            args, train)
    marks["build_trainer"] = now()
    trainer.add_callback(FirstStep())
    trainer.train()
    import resource

    print("RESULT " + json.dumps({"marks": marks, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                  / 1024, "records": len(train)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000], help="Record counts timed.")
    parser.add_argument("--repeats", type=int, default=1, help="Fresh processes per size and mode.")
    parser.add_argument("--child", nargs=2, metavar=("JSONL", "GROUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1] == "1")
    from mmft.testing import tiny_llava_path

    tiny_llava_path()  # built once, outside the timings
    work = Path(tempfile.mkdtemp(prefix="mmft-startup-"))
    paths = {size: write_jsonl(work, size) for size in args.sizes}
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {os.cpu_count()} CPUs")
    phases = ("imports", "load_records", "build_trainer", "first_step")
    print("Wall seconds from launch to the end of step 1, then per phase 'wall/CPU' seconds of the child process.")
    print(f"{'records':>8}{'grouped':>8}{'launch->step1':>14}" + "".join(f"{p:>16}" for p in phases)
          + f"{'peak RSS MB':>12}")
    for _ in range(args.repeats):
        for group in (False, True):
            for size in args.sizes:
                launched = time.time()
                out = subprocess.run([sys.executable, __file__, "--child", str(paths[size]), str(int(group))],
                                     capture_output=True, text=True, check=True).stdout
                result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
                m = result["marks"]
                cells, previous = [], (launched, 0.0)
                for phase in phases:
                    cells.append(f"{m[phase][0] - previous[0]:.1f}/{m[phase][1] - previous[1]:.1f}")
                    previous = m[phase]
                print(f"{size:>8}{'yes' if group else 'no':>8}{m['first_step'][0] - launched:>14.1f}"
                      + "".join(f"{c:>16}" for c in cells) + f"{result['peak_rss_mb']:>12.0f}", flush=True)

if __name__ == "__main__":
    main()
