"""The embedded demo dataset: "shapes", a deterministic synthetic VQA task.

Each image is one coloured shape (circle, square or triangle) on a light, slightly noisy background, placed
on one side of the image (left, right, top or bottom). Questions ask for the colour, the shape or the side,
in several phrasings; every answer is one word and depends on the image alone, so a model that ignores the
image cannot beat the prior (about 0.27 accuracy over the three question kinds; see `chance_accuracy`).

The generator writes a LLaVA-format dataset to disk (PNG files beside a ``<split>.jsonl``), so the demo
loads it through exactly the same local-file path as a user's own data. Output is a pure function of
(split, size, seed): the same call always writes the same bytes. See ``data_cards/shapes.md``.

Two more tasks over the same images (``--dataset_name shapes-captions`` / ``shapes-multiturn``):

- **captions**: "Describe the image." answered by one phrasing of the scene ("a red circle on the left"), with every
  phrasing of it as ``references``, the way COCO records carry several human captions (for BLEU and CIDEr).
- **multi-turn**: two or three user/assistant turns per image (a description, then questions), answered in short
  sentences, for the instruction-tuning recipe.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from ..errors import UsageError

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
    for i, rng, truth, image in _draw(split, size, seed):
        kinds = rng.sample(tuple(QUESTIONS), k=rng.randint(*turns))
        conversations = []
        for turn, kind in enumerate(kinds):
            question = rng.choice(QUESTIONS[kind])
            conversations.append({"from": "human", "value": f"<image>\n{question}" if turn == 0 else question})
            conversations.append({"from": "gpt", "value": truth[kind]})
        record_id = f"shapes-{split}-{i:06d}"
        yield {"id": record_id, "image": f"images/{record_id}.png", "conversations": conversations}, image


# ---- captions and multi-turn conversations over the same images --------------------------------------------------
CAPTION_PROMPTS = ("Describe the image.", "Write a short caption for this picture.", "What does the image show?")
# Every phrasing describes the same three facts; a caption is right when it names all three, whichever words it uses.
SIDE_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
CAPTION_TEMPLATES = (
    "a {colour} {shape} {where}",
    "a {colour} {shape} {where} of the image",
    "the {shape} {where} is {colour}",
    "a {shape} in {colour}, {where}",
)


def caption_references(colour: str, shape: str, side: str) -> list[str]:
    """Every reference caption of one image (the first is the canonical one)."""
    return [template.format(colour=colour, shape=shape, where=SIDE_PHRASES[side]) for template in CAPTION_TEMPLATES]


def _draw(split: str, size: int, seed: int | None):
    """``(index, rng, facts, image)`` for each image of a split; the caller draws its text from the same ``rng``."""
    rng = random.Random(SPLIT_SEEDS.get(split, 0) * 1_000_003 + (seed or 0))
    for i in range(size):
        colour, shape, side = rng.choice(tuple(COLOURS)), rng.choice(SHAPES), rng.choice(SIDES)
        image = draw_shape(colour, shape, side, rng)
        yield i, rng, {"colour": colour, "shape": shape, "side": side}, image


def generate_caption_records(split: str, size: int, seed: int | None = None):
    """Yield ``(record, image)`` pairs of the captioning task: one caption to learn, all phrasings as references.

    The trained caption is one phrasing drawn at random, as when a COCO record with five human captions is trained on
    one of them; evaluation scores the generated caption against all of them.
    """
    for i, rng, facts, image in _draw(split, size, seed):
        references = caption_references(**facts)
        record_id = f"shapes-captions-{split}-{i:06d}"
        yield {
            "id": record_id,
            "image": f"images/{record_id}.png",
            "conversations": [
                {"from": "human", "value": f"<image>\n{rng.choice(CAPTION_PROMPTS)}"},
                {"from": "gpt", "value": rng.choice(references)},
            ],
            "references": references,
        }, image


MULTITURN_ANSWERS = {
    "colour": "The shape is {colour}.",
    "shape": "It is a {shape}.",
    "side": "It is {side_phrase}.",
}


def generate_multiturn_records(split: str, size: int, seed: int | None = None, turns: tuple[int, int] = (2, 3)):
    """Yield ``(record, image)`` pairs of multi-turn visual instructions: a description, then questions.

    Answers are short sentences ("It is a circle."): an instruction-tuned model answers in words, not labels. The
    first turn asks for a description half of the time, so the last turn is sometimes the first question.
    """
    for i, rng, facts, image in _draw(split, size, seed):
        n_turns = rng.randint(*turns)
        kinds = rng.sample(tuple(QUESTIONS), k=min(n_turns, len(QUESTIONS)))
        pairs = []
        if rng.random() < 0.5:
            caption = caption_references(**facts)[0]
            pairs.append((rng.choice(CAPTION_PROMPTS), caption[0].upper() + caption[1:] + "."))
            kinds = kinds[: max(1, n_turns - 1)]
        for kind in kinds:
            answer = MULTITURN_ANSWERS[kind].format(side_phrase=SIDE_PHRASES[facts["side"]], **facts)
            pairs.append((rng.choice(QUESTIONS[kind]), answer))
        conversations = []
        for turn, (question, answer) in enumerate(pairs):
            conversations.append({"from": "human", "value": f"<image>\n{question}" if turn == 0 else question})
            conversations.append({"from": "gpt", "value": answer})
        record_id = f"shapes-multiturn-{split}-{i:06d}"
        yield {"id": record_id, "image": f"images/{record_id}.png", "conversations": conversations}, image


TASKS = {"vqa": "shapes", "captions": "shapes-captions", "multiturn": "shapes-multiturn"}


def _records(task: str, split: str, size: int, seed: int | None, turns):
    if task == "vqa":
        return generate_records(split, size, seed, turns)
    if task == "captions":
        return generate_caption_records(split, size, seed)
    if task == "multiturn":
        return generate_multiturn_records(split, size, seed, turns)
    raise UsageError(f"Unknown shapes task {task!r}; choose one of {', '.join(TASKS)}.")


def write_split(out_dir: str | os.PathLike, split: str, size: int, seed: int | None = None, turns=(1, 1),
                task: str = "vqa") -> Path:
    """Write ``<out_dir>/<split>.jsonl`` and its images atomically (temp folder + rename); return the JSONL path.

    ``task`` picks the records written over the split's images: ``vqa`` (default), ``captions`` or ``multiturn``.
    """
    out_dir = Path(out_dir)
    prefix = "" if task == "vqa" else f"{task}-"
    final_dir = out_dir / f"{prefix}{split}-{size}-{seed or 0}-{turns[0]}-{turns[1]}"
    jsonl = final_dir / f"{split}.jsonl"
    if jsonl.exists():
        return jsonl
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=out_dir))
    try:
        (tmp / "images").mkdir()
        with open(tmp / f"{split}.jsonl", "w") as f:
            for record, image in _records(task, split, size, seed, turns):
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
# The caption and multi-turn sets: smaller, since their recipes' tiny configs train for about a minute on a CPU.
TASK_SPLITS = {
    "vqa": DEFAULT_SPLITS,
    "captions": {"train": (1000, (1, 1)), "validation": (100, (1, 1)), "test": (100, (1, 1))},
    "multiturn": {"train": (1000, (2, 3)), "validation": (100, (2, 3)), "test": (100, (2, 3))},
}
DATASET_TASKS = {name: task for task, name in TASKS.items()}  # "shapes-captions" -> "captions"


def shapes_split_path(split: str, size: int | None = None, root: str | os.PathLike | None = None,
                      dataset: str = "shapes") -> Path:
    """Return the JSONL of a built-in split (``dataset``: shapes, shapes-captions, shapes-multiturn), generating it
    into the mmft cache once."""
    from ..testing import cache_dir

    if dataset not in DATASET_TASKS:
        raise UsageError(f"Unknown built-in dataset {dataset!r}; choose one of {', '.join(DATASET_TASKS)}.")
    task = DATASET_TASKS[dataset]
    splits = TASK_SPLITS[task]
    if split not in splits:
        raise UsageError(f"The {dataset} dataset has splits {', '.join(splits)}; got {split!r}.")
    default_size, turns = splits[split]
    root = Path(root) if root is not None else cache_dir() / "datasets" / "shapes-v1"
    return write_split(root, split, size or default_size, turns=turns, task=task)
