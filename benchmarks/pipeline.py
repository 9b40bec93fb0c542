"""Data pipeline: training-collator samples/s on one CPU core, on real-size JPEGs and real-size image processors.

What a DataLoader worker does per sample: read and decode the JPEG (``mmft.data.images``; with ``max_pixels``, libjpeg
decodes at a reduced scale first), render and tokenise the conversation, run the processor (resize, normalise,
patchify) and build the labels. Measured with one torch thread, as in a worker, for

- photos of ~1 MP (1155x866) and ~4 MP (2310x1732), JPEG quality 90, with and without ``--max_pixels``;
- two real processor configurations with the tiny tokenizer (the text side is cheap either way): LLaVA-1.5's
  (CLIP, 336x336 crop, 576 image tokens) and Qwen2-VL's (dynamic resolution, 14-px patches merged 2x2, up to 12.8 MP);
- the slow (PIL/numpy) and fast (torchvision) image processor classes.

Configurations are interleaved repeat by repeat; medians printed. The goal (issue #8): >= 10 samples/s per core at
1 MP with max_pixels, enough for an H100 at ~0.2 s per 7B sample step with a few workers.

    python benchmarks/pipeline.py
    python benchmarks/pipeline.py --max_pixels 200704 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PHOTO_SIZES = {"1MP": (1155, 866), "4MP": (2310, 1732)}


def write_photo(path: Path, size: tuple[int, int], seed: int) -> None:
    """A photo-like JPEG: smooth random colour fields plus sensor noise (compresses and decodes like a photo)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(small, dtype=np.int16) + rng.integers(-10, 11, (size[1], size[0], 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def llava15_processor(fast: bool):
    """A LLaVA-1.5-configured processor (CLIP 336 px, 14-px patches: 576 image tokens) over the tiny tokenizer."""
    import transformers
    from transformers import AutoProcessor, LlavaProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from mmft.testing import tiny_llava_path

    tiny = AutoProcessor.from_pretrained(tiny_llava_path())
    clip = getattr(transformers, "CLIPImageProcessor" if fast else "CLIPImageProcessorPil")(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_center_crop=True,
        image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    return LlavaProcessor(image_processor=clip, tokenizer=tiny.tokenizer, patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=tiny.chat_template, image_token="<image>")


def processors(fast: bool):
    """LLaVA-1.5- and Qwen2-VL-configured processors over the tiny tokenizers (no download)."""
    import transformers
    from transformers import AutoProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from mmft.testing import tiny_model_path

    qwen = AutoProcessor.from_pretrained(tiny_model_path("qwen2-vl"))
    qwen.image_processor = getattr(transformers, "Qwen2VLImageProcessor" if fast else "Qwen2VLImageProcessorPil")(
        patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=56 * 56, max_pixels=28 * 28 * 16384,
        image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    return {"llava-1.5": llava15_processor(fast), "qwen2-vl": qwen}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=4, help="Records per collated batch.")
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved repeats (medians reported).")
    parser.add_argument("--max_pixels", type=int, default=401_408,
                        help="The cap tried (default 401,408: 512 Qwen2-VL tokens of 28x28 px).")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker: one core
    import transformers

    transformers.logging.set_verbosity_error()
    from mmft.data.record_datasets import RecordDataset
    from mmft.train.collator import VLMCollator

    work = Path(tempfile.mkdtemp(prefix="mmft-pipeline-"))
    datasets = {}
    for name, size in PHOTO_SIZES.items():
        rows = []
        for i in range(args.batch_size):
            write_photo(work / f"{name}-{i}.jpg", size, seed=i)
            rows.append({"id": f"{name}-{i}", "image": f"{name}-{i}.jpg", "conversations": [
                {"from": "human", "value": "<image>\nWhat is in the picture?"},
                {"from": "gpt", "value": "A blurry field of colours with some noise."}]})
        datasets[name] = RecordDataset(rows, source=name, image_root=str(work))
    configs = []
    for fast in (False, True):
        for family, processor in processors(fast).items():
            for photo in PHOTO_SIZES:
                for cap in (None, args.max_pixels):
                    collator = VLMCollator(processor, max_pixels=cap, max_length=None)
                    batch = [datasets[photo][i] for i in range(args.batch_size)]
                    configs.append(((family, "fast" if fast else "slow", photo, cap), collator, batch))
    times = {key: [] for key, _, _ in configs}
    cpu = {key: [] for key, _, _ in configs}
    tokens = {}
    for _key, collator, batch in configs:  # warm-up
        collator(batch)
    for _ in range(args.repeats):
        for key, collator, batch in configs:
            start, start_cpu = time.perf_counter(), time.process_time()
            out = collator(batch)
            times[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
            tokens[key] = int(out["attention_mask"].sum()) // len(batch)
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, one thread, batch {args.batch_size}, "
          f"{args.repeats} repeats, transformers {transformers.__version__}")
    print("samples/s/core: per wall second; per CPU second of this process (robust to a contended machine)")
    print(f"{'processor':<11}{'impl':<6}{'photo':<6}{'max_pixels':>11}{'tokens/sample':>15}{'wall':>8}{'cpu':>8}")
    for key, _, _ in configs:
        family, impl, photo, cap = key
        wall = args.batch_size / statistics.median(times[key])
        per_cpu = args.batch_size / statistics.median(cpu[key])
        print(f"{family:<11}{impl:<6}{photo:<6}{cap or '-':>11}{tokens[key]:>15}{wall:>8.1f}{per_cpu:>8.1f}")


if __name__ == "__main__":
    main()
