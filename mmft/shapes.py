"""The embedded demo dataset: "shapes", a deterministic synthetic VQA task.

Each image is one coloured shape (circle, square or triangle) on a light, slightly noisy background, placed
on one side of the image (left, right, top or bottom). Questions ask for the colour, the shape or the side,
in several phrasings; every answer is one word and depends on the image alone, so a model that ignores the
image cannot beat the prior (about 0.27 accuracy over the three question kinds; see `chance_accuracy`).

The generator writes a LLaVA-format dataset to disk (PNG files beside a ``<split>.jsonl``), so the demo
loads it through exactly the same local-file path as a user's own data. Output is a pure function of
(split, size, seed): the same call always writes the same bytes. See ``data_cards/shapes.md``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 40, 170),
}
SHAPES = ("circle", "square", "triangle")
SIDES = ("left", "right", "top", "bottom")

QUESTIONS = {
    "colour": ("What colour is the shape?", "What color is the object in the image?", "Which colour is the shape?"),
    "shape": ("What shape is shown?", "What shape is this?", "Which shape do you see in the picture?"),
    "side": ("Where is the shape?", "On which side of the image is the shape?", "Where is the object located?"),
}
ANSWERS = {"colour": tuple(COLOURS), "shape": SHAPES, "side": SIDES}

IMAGE_SIZE = 48  # pixels, the tiny model's input size: no resize blur; a 16-pixel cell is 2x2 of its 8-pixel patches
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}  # disjoint streams: no test image is in train


def chance_accuracy() -> float:
    """Accuracy of always answering the most common answer for each question kind (kinds equally likely)."""
    return sum(1 / len(ANSWERS[kind]) for kind in QUESTIONS) / len(QUESTIONS)


def draw_shape(colour: str, shape: str, side: str, rng: random.Random):
    """Draw one image. Size and exact position jitter so the model must look, not memorise pixels."""
    from PIL import Image, ImageDraw

    s = IMAGE_SIZE
    background = tuple(rng.randint(225, 255) for _ in range(3))
    img = Image.new("RGB", (s, s), background)
    draw = ImageDraw.Draw(img)
    # The image is a 3x3 grid of cells; the shape sits in the middle cell of one side. With the tiny model's
    # 8-pixel patches a cell is 2x2 patches: each patch sees a quarter of the shape (a corner or an edge).
    cell = s // 3
    radius = rng.randint(cell * 5 // 16, cell * 7 // 16)  # 5..7 px of a 16 px cell: the shape fills its cell
    jitter_x, jitter_y = rng.randint(-1, 1), rng.randint(-1, 1)
    column, row = {"left": (0, 1), "right": (2, 1), "top": (1, 0), "bottom": (1, 2)}[side]
    centre_x, centre_y = column * cell + cell // 2 + jitter_x, row * cell + cell // 2 + jitter_y
    box = (centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(centre_x, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fill)
    # Light pixel noise so a blank region is not a constant (closer to real photos, harder to shortcut).
    pixels = img.load()
    for _ in range(s * s // 8):
        x, y = rng.randrange(s), rng.randrange(s)
        r, g, b = pixels[x, y]
        d = rng.randint(-12, 12)
        pixels[x, y] = (min(255, max(0, r + d)), min(255, max(0, g + d)), min(255, max(0, b + d)))
    return img


def generate_records(split: str, size: int, seed: int | None = None, turns: tuple[int, int] = (1, 1)):
    """Yield ``(record, image)`` pairs: LLaVA-format records (image name relative to the split folder).

    ``turns`` is the (min, max) number of question/answer turns per record; evaluation data uses one.
    """
    rng = random.Random(SPLIT_SEEDS.get(split, 0) * 1_000_003 + (seed or 0))
    for i in range(size):
        colour, shape, side = rng.choice(tuple(COLOURS)), rng.choice(SHAPES), rng.choice(SIDES)
        image = draw_shape(colour, shape, side, rng)
        truth = {"colour": colour, "shape": shape, "side": side}
        kinds = rng.sample(tuple(QUESTIONS), k=rng.randint(*turns))
        conversations = []
        for turn, kind in enumerate(kinds):
            question = rng.choice(QUESTIONS[kind])
            conversations.append({"from": "human", "value": f"<image>\n{question}" if turn == 0 else question})
            conversations.append({"from": "gpt", "value": truth[kind]})
        record_id = f"shapes-{split}-{i:06d}"
        yield {"id": record_id, "image": f"images/{record_id}.png", "conversations": conversations}, image


def write_split(out_dir: str | os.PathLike, split: str, size: int, seed: int | None = None, turns=(1, 1)) -> Path:
    """Write ``<out_dir>/<split>.jsonl`` and its images atomically (temp folder + rename); return the JSONL path."""
    out_dir = Path(out_dir)
    final_dir = out_dir / f"{split}-{size}-{seed or 0}-{turns[0]}-{turns[1]}"
    jsonl = final_dir / f"{split}.jsonl"
    if jsonl.exists():
        return jsonl
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=out_dir))
    try:
        (tmp / "images").mkdir()
        with open(tmp / f"{split}.jsonl", "w") as f:
            for record, image in generate_records(split, size, seed, turns):
                image.save(tmp / record["image"], optimize=False)
                f.write(json.dumps(record) + "\n")
        try:
            tmp.rename(final_dir)
        except OSError:  # a concurrent writer won: its output is identical
            if not jsonl.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return jsonl


# Default sizes of the demo splits: one question per record. Multi-turn training records (turns=(1, 3)) made
# the tiny model slower to learn "side" (the distance from the answer to the image tokens varies more), so the
# demo keeps one turn; the label tests cover multi-turn masking.
DEFAULT_SPLITS = {"train": (3000, (1, 1)), "validation": (300, (1, 1)), "test": (300, (1, 1))}


def shapes_split_path(split: str, size: int | None = None, root: str | os.PathLike | None = None) -> Path:
    """Return the JSONL of a demo split, generating it into the mmft cache once."""
    from .testing import cache_dir

    if split not in DEFAULT_SPLITS:
        raise ValueError(f"The shapes dataset has splits {', '.join(DEFAULT_SPLITS)}; got {split!r}.")
    default_size, turns = DEFAULT_SPLITS[split]
    root = Path(root) if root is not None else cache_dir() / "datasets" / "shapes-v1"
    return write_split(root, split, size or default_size, turns=turns)
