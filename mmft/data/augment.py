"""Opt-in training augmentation, deterministic under the seed: images (crop, colour) and question paraphrases.

Both kinds run in the training collator only (``VLMCollator`` in ``"train"`` mode), after an image is loaded and
before the chat template is rendered; evaluation loss batches use the collator's ``for_evaluation()`` copy and
generation never augments, so scores are always measured on the data as it is.

**Determinism.** The random draw for a sample depends only on ``(seed, epoch, record id)``: :func:`sample_rng`
hashes the three (plus the name of the stream, ``"image"`` or ``"prompt"``, so turning paraphrases on does not
change the image draws) with SHA-256 into the seed of a private ``random.Random``. Nothing is drawn from a global
or per-worker generator, so the result does not depend on which DataLoader worker collates the sample, on the
batch it lands in, on the number of processes, or on what was drawn before; a resumed run re-draws exactly what
the uninterrupted run drew. The epoch is set by the trainer at the start of each epoch (``CollatorEpochCallback``)
and kept in a one-element shared-memory tensor, so persistent DataLoader workers see it change too. A record id
that appears twice in a dataset gets the same draw twice per epoch (ids are meant to be unique).

**Image augmentation** (``--augment_images``): a random resized crop (area ``--augment_crop_scale``, aspect within
10% of the image's own) resized back to the image's original size, so the model's image token count and the length
budget are unchanged; colour jitter of brightness, contrast and saturation by factors in ``1 ± strength`` (hue is
left alone: "what colour is it?" answers must stay true). No flips by default: mirroring breaks text, charts and
every left/right question; ``--augment_hflip`` turns them on (p = 0.5) with a warning.

**Paraphrases** (``--prompt_paraphrases file.txt``): one template per line containing ``{question}``; blank lines
and lines starting with ``#`` are skipped; ``\\n`` in a line is a newline. For each user turn a template is drawn
uniformly and the turn's question (its last text entry) is put in its place. Include a line ``{question}`` to keep
the original wording among the choices. Assistant and system turns are never touched, so labels are unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageEnhance
from transformers import TrainerCallback

from ..errors import MissingPathError, UsageError

logger = logging.getLogger(__name__)

__all__ = ["CollatorEpochCallback", "ImageAugmenter", "PromptParaphraser", "sample_rng"]

QUESTION_FIELD = "{question}"
# Aspect ratio of the crop relative to the image's own: "near 1", so shapes and text are barely distorted.
CROP_RATIO = (0.9, 1 / 0.9)
_CROP_TRIES = 10


def sample_rng(seed: int, epoch: int, record_id, stream: str) -> random.Random:
    """A generator that depends only on ``(seed, epoch, record_id, stream)``: the same sample in the same epoch
    under the same seed draws the same augmentation in any worker, batch or process."""
    key = f"{int(seed)}\x1f{int(epoch)}\x1f{record_id}\x1f{stream}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


@dataclass(frozen=True)
class ImageAugmenter:
    """Random resized crop + colour jitter (+ an optional horizontal flip) for PIL RGB images.

    Args:
        crop_scale: (min, max) fraction of the image area kept by the crop, within (0, 1]; ``(1, 1)`` disables it.
        color_jitter: strength s: brightness, contrast and saturation each scaled by a factor drawn from
            [1 - s, 1 + s], in a random order; 0 disables it.
        hflip: mirror the image left-right with probability 0.5 (off by default; see the module docstring).
    """

    crop_scale: tuple[float, float] = (0.8, 1.0)
    color_jitter: float = 0.1
    hflip: bool = False

    def __post_init__(self):
        scale = tuple(float(v) for v in self.crop_scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise UsageError(
                f"--augment_crop_scale must be two numbers 0 < min <= max <= 1 (the fraction of the image area a "
                f"crop keeps), got {list(self.crop_scale)}. Example: --augment_crop_scale 0.8 1.0"
            )
        object.__setattr__(self, "crop_scale", scale)
        if not 0 <= self.color_jitter < 1:
            raise UsageError(f"--augment_color_jitter must be in [0, 1), got {self.color_jitter}.")
        if self.hflip:
            logger.warning(
                "--augment_hflip: images are mirrored half of the time. This breaks any text in the image, charts, "
                "and every question about left and right; use it only for data where none of these matter."
            )

    def __call__(self, image: Image.Image, rng: random.Random) -> Image.Image:
        """A new augmented image of the same size (the input is never modified)."""
        width, height = image.size
        if self.crop_scale != (1.0, 1.0) and width > 1 and height > 1:
            left, top, w, h = self._crop_box(width, height, rng)
            image = image.resize((width, height), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
        if self.color_jitter > 0:
            s = self.color_jitter
            enhancers = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
            rng.shuffle(enhancers)
            for enhancer in enhancers:
                image = enhancer(image).enhance(rng.uniform(1 - s, 1 + s))
        if self.hflip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image

    def _crop_box(self, width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
        """(left, top, w, h) of a crop of area in ``crop_scale`` and aspect within ``CROP_RATIO`` of the image's."""
        area = width * height
        log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
        for _ in range(_CROP_TRIES):
            target = area * rng.uniform(*self.crop_scale)
            aspect = (width / height) * math.exp(rng.uniform(log_lo, log_hi))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return rng.randint(0, width - w), rng.randint(0, height - h), w, h
        # Rare (scale near 1 with a stretched aspect): the image's own aspect always fits.
        keep = math.sqrt(rng.uniform(*self.crop_scale))
        w, h = max(1, round(width * keep)), max(1, round(height * keep))
        return rng.randint(0, width - w), rng.randint(0, height - h), w, h


@dataclass(frozen=True)
class PromptParaphraser:
    """Put each user turn's question into a template drawn from a list (``{question}`` marks where)."""

    templates: tuple[str, ...]
    source: str = "<templates>"

    def __post_init__(self):
        templates = tuple(self.templates)
        if not templates:
            raise UsageError(f"{self.source}: no paraphrase templates (one per line, each with {QUESTION_FIELD}).")
        for number, template in enumerate(templates, 1):
            if QUESTION_FIELD not in template:
                raise UsageError(
                    f"{self.source}: template {number} ({template!r}) has no {QUESTION_FIELD}; every template must "
                    f"say where the question goes, e.g. 'Look at the image and answer: {QUESTION_FIELD}'."
                )
        object.__setattr__(self, "templates", templates)

    @classmethod
    def from_file(cls, path: str | Path) -> PromptParaphraser:
        path = Path(path)
        if not path.is_file():
            raise MissingPathError(f"--prompt_paraphrases: {str(path)!r} is not a file.")
        templates = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            templates.append(line.rstrip("\r").replace("\\n", "\n"))
        return cls(tuple(templates), source=str(path))

    def apply(self, template: str, question: str) -> str:
        return template.replace(QUESTION_FIELD, question.strip())

    def __call__(self, messages: Sequence[dict], rng: random.Random) -> list[dict]:
        """New messages (the input is not modified) with each user turn's last text entry paraphrased."""
        out = []
        for message in messages:
            if message.get("role") != "user":
                out.append(message)
                continue
            template = self.templates[rng.randrange(len(self.templates))]
            content = message["content"]
            if isinstance(content, str):
                out.append({**message, "content": self.apply(template, content)})
                continue
            content = [dict(entry) for entry in content]
            texts = [k for k, entry in enumerate(content) if entry.get("type") == "text" and entry["text"].strip()]
            if texts:
                content[texts[-1]]["text"] = self.apply(template, content[texts[-1]]["text"])
            out.append({**message, "content": content})
        return out


class CollatorEpochCallback(TrainerCallback):
    """Tell the training collator which epoch starts, so augmentation differs per epoch yet is reproducible.

    ``state.epoch`` is the fractional epoch reached so far (``1.5`` when resuming mid-way through the second), so its
    integer part is the index of the epoch that begins, in fresh and resumed runs alike.
    """

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_epoch(int(math.floor((state.epoch or 0) + 1e-9)))
