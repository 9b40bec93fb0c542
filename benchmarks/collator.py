"""Collator throughput: mmft's training collator vs the bare processor call, on the tiny model.

The peer is what every VLM collator does at its core (TRL's included): one batched ``processor(text, images)``
call on the rendered chat text, without labels. The ratio is the price of mmft's per-sample work: safe image
loading, prefix rendering for the label spans, the second (unexpanded) tokenisation and the alignment.
The two are interleaved, repeat by repeat, so machine drift cancels; medians are printed.

    python benchmarks/collator.py                  # 1-turn and 3-turn records, batch 16, 15 repeats
    python benchmarks/collator.py --repeats 30 --batch_size 32
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=16, help="Records per batch.")
    parser.add_argument("--repeats", type=int, default=15, help="Timed repeats of each side (medians reported).")
    args = parser.parse_args()
    torch.set_num_threads(1)  # collation runs in a DataLoader worker: one core

    from transformers import AutoProcessor

    from mmft.data.images import load_image
    from mmft.data.shapes import write_split
    from mmft.data.sources import load_records
    from mmft.testing import tiny_llava_path
    from mmft.train.collator import VLMCollator

    work = Path(tempfile.mkdtemp(prefix="mmft-bench-"))
    processor = AutoProcessor.from_pretrained(tiny_llava_path(root=work / "models"))
    collator = VLMCollator(processor, max_length=512)

    def peer(records):
        texts = [processor.apply_chat_template(r["messages"], tokenize=False) for r in records]
        images = [load_image(ref, root=r["image_root"]) for r in records for ref in r["images"]]
        return processor(text=texts, images=images, padding=True, return_tensors="pt", add_special_tokens=False)

    print(f"{'records':<10}{'mmft samples/s':>16}{'peer samples/s':>16}{'mmft/peer time':>16}")
    for turns in ((1, 1), (3, 3)):
        dataset = load_records(write_split(work / "data", "train", args.batch_size, turns=turns))
        batch = [dataset[i] for i in range(len(dataset))]
        collator(batch), peer(batch)  # warm-up
        ours, theirs = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            collator(batch)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            peer(batch)
            theirs.append(time.perf_counter() - start)
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"{f'{turns[0]}-turn':<10}{args.batch_size / a:>16.0f}{args.batch_size / b:>16.0f}{a / b:>16.2f}")


if __name__ == "__main__":
    main()
