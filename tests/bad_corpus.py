"""The bad-input corpus: a small LLaVA JSONL with clean records and one or two of every kind of bad record training
can meet, with what the start-up scan must file each bad record under.

Used by tests/test_bad_records.py (training under ``--on_bad_record drop`` and ``error``) and tests/test_datacheck.py.
Run it with ``max_image_pixels=MAX_IMAGE_PIXELS`` so the oversized image counts as a decompression bomb.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

MAX_IMAGE_PIXELS = 5000  # clean images are 32x32, the cut ones 64x64 (4096 pixels); big.png is 100x100
NUM_GOOD = 16

# reason -> the ids of the corpus's bad records filed under it (by the start-up scan and by `mmft data check`)
EXPECTED_BAD = {
    "missing_image": ["missing-1"],
    "image_outside_root": ["escape-1"],
    "image_too_large": ["big-1"],
    "truncated_image": ["cut-png-1", "cut-jpeg-1"],
    "unreadable_image": ["not-an-image-1"],
    "invalid_record": ["roles-1", "no-answer-1"],
}
GOOD_IDS = [f"good-{i}" for i in range(NUM_GOOD)]
COLOURS = ["red", "green", "blue", "yellow"]


def _qa(record_id, image, answer, question="<image>\nWhat colour is the image?"):
    record = {"id": record_id, "conversations": [{"from": "human", "value": question},
                                                 {"from": "gpt", "value": answer}]}
    if image is not None:
        record["image"] = image
    return record


def noisy_image(seed: int, size=(64, 64)) -> Image.Image:
    """Random pixels: they compress badly, so a file cut in half loses pixel data, its header (under 1 KB) intact."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


def write_bad_corpus(root: Path) -> Path:
    """Write ``root/corpus/train.jsonl`` and its images; return the file's path."""
    data = root / "corpus"
    images = data / "images"
    images.mkdir(parents=True)
    rows = []
    for i, record_id in enumerate(GOOD_IDS):
        colour = COLOURS[i % len(COLOURS)]
        suffix = "jpg" if i % 2 else "png"
        Image.new("RGB", (32, 32), colour).save(images / f"good-{i}.{suffix}")
        rows.append(_qa(record_id, f"images/good-{i}.{suffix}", colour))
    full_png, full_jpeg = encoded(noisy_image(1), "PNG"), encoded(noisy_image(2), "JPEG")
    (images / "cut.png").write_bytes(full_png[: len(full_png) // 2])  # header intact, pixel data and IEND gone
    (images / "cut.jpg").write_bytes(full_jpeg[: len(full_jpeg) // 2])  # header intact, scan data and EOI gone
    (images / "not-an-image.jpg").write_text("this is a text file with an image's name")
    Image.new("RGB", (100, 100), "white").save(images / "big.png")  # 10,000 pixels > MAX_IMAGE_PIXELS
    Image.new("RGB", (32, 32), "red").save(root / "outside.png")  # exists, but outside the image root
    rows += [
        _qa("missing-1", "images/nope.png", "red"),
        _qa("escape-1", "../outside.png", "red"),
        _qa("big-1", "images/big.png", "white"),
        _qa("cut-png-1", "images/cut.png", "red"),
        _qa("cut-jpeg-1", "images/cut.jpg", "red"),
        _qa("not-an-image-1", "images/not-an-image.jpg", "red"),
        {"id": "roles-1", "image": "images/good-0.png",
         "conversations": [{"from": "gpt", "value": "red"}, {"from": "human", "value": "<image>\nWhat colour?"}]},
        _qa("no-answer-1", "images/good-0.png", "   "),
    ]
    # Bad records spread among the good ones, as they would be in a real file.
    order = sorted(range(len(rows)), key=lambda i: (i * 7) % len(rows))
    path = data / "train.jsonl"
    path.write_text("".join(json.dumps(rows[i]) + "\n" for i in order))
    return path


def bad_ids() -> set[str]:
    return {record_id for ids in EXPECTED_BAD.values() for record_id in ids}
