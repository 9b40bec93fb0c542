"""Peak memory of ``mmft data check`` on a small and a large LLaVA JSONL: the check must stream.

Writes a 1,000-record and a 200,000-record LLaVA JSONL (1-3 turns each, records sharing a small set of image
files, as real datasets share an image folder), runs ``python -m mmft.commands.cli data check FILE --json`` on each in
a subprocess, and reads the child's own peak RSS from ``os.wait4`` (``ru_maxrss``, so earlier children do not
count). Goal: the large file's peak within 100 MB of the small file's.

    python benchmarks/data_check_memory.py                      # 1,000 vs 200,000 records, no model
    python benchmarks/data_check_memory.py --sizes 1000 20000 --model mmft:tiny-llava   # with token counting

Not a test: figures go to benchmarks/RESULTS.md with the command, machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_IMAGES = 16
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star"]


def write_images(folder: Path) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(N_IMAGES):
        name = f"img-{i:02d}.png"
        Image.new("RGB", (64 + 8 * i, 48 + 4 * i), COLOURS[i % len(COLOURS)]).save(folder / name)
        names.append(f"images/{name}")
    return names


def write_jsonl(path: Path, n: int, images: list[str], seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            turns = []
            for t in range(rng.randint(1, 3)):
                question = f"What colour is the {rng.choice(SHAPES)} in the picture number {i}?"
                turns.append({"from": "human", "value": ("<image>\n" if t == 0 else "") + question})
                turns.append({"from": "gpt", "value": f"It is {rng.choice(COLOURS)}."})
            f.write(json.dumps({"id": f"rec-{i}", "image": rng.choice(images), "conversations": turns}) + "\n")


def measure(command: list[str]) -> tuple[float, float, dict]:
    """(peak RSS of the child in MB, wall seconds, its JSON report)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(command)} exited {code}; the generated data should be clean")
    return usage.ru_maxrss / 1024, wall, json.loads(out)  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 200_000], help="Small and large record counts.")
    parser.add_argument("--model", default=None, help="Also count tokens with this model's processor.")
    parser.add_argument("--keep", default=None, help="Write the data here and keep it (default: a temp folder).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        images = write_images(root / "images")
        rows = []
        for n in args.sizes:
            path = root / f"llava-{n}.jsonl"
            if not path.exists():
                write_jsonl(path, n, images)
            command = [sys.executable, "-m", "mmft.commands.cli", "data", "check", str(path), "--json",
                       "--no_progress"]
            if args.model:
                command += ["--model", args.model]
            peak, wall, report = measure(command)
            assert report["records"] == n and report["ok"], report["problems"]
            rows.append((n, path.stat().st_size / 1e6, peak, wall))
            print(
                f"{n:>9,} records ({rows[-1][1]:.1f} MB file): peak RSS {peak:.1f} MB, {wall:.1f} s "
                f"({n / wall:,.0f} records/s)",
                flush=True,
            )
    (small, _, small_peak, _), (large, _, large_peak, _) = rows
    difference = large_peak - small_peak
    print(
        f"difference {large:,} vs {small:,} records: {difference:+.1f} MB "
        f"({'within' if difference <= 100 else 'OVER'} the 100 MB goal)"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"date {time.strftime('%Y-%m-%d')}"
    )


if __name__ == "__main__":
    main()
