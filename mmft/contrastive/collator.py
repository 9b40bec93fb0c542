"""Pair items (``mmft.contrastive.pairs``) -> a dual-encoder batch: pixels, tokenised captions, groups, text keys.

No labels: the positives are implicit (pair ``i``'s image and caption) plus the ``groups`` / ``text_keys`` that
mark extra positives (``mmft.contrastive.losses``). In training each image is paired with one of its captions per
epoch, drawn from ``(seed, epoch, record id)`` (the same in any worker or process), the way open_clip samples one
of COCO's five captions per image and epoch. Images are loaded by ``mmft.data.images`` (safe paths, pixel caps).
"""

from __future__ import annotations

import torch

from ..data import images as images_lib
from ..data.augment import sample_rng
from .pairs import text_key

NUM_DROPPED_KEY = "num_dropped_pairs"


class ContrastiveCollator:
    def __init__(self, adapter, processor, *, max_pixels=None, max_image_pixels=images_lib.DEFAULT_MAX_IMAGE_PIXELS,
                 allow_images_outside_root=False, allow_remote_images=False, seed: int = 0):
        # Plain attributes on purpose, laid out like the length-grouped sampler's (mmft.data.lengths): seed and epoch
        # (set_epoch) draw each record's caption reproducibly per epoch.
        self.adapter = adapter
        self.processor = processor
        self.max_pixels = max_pixels
        self.max_image_pixels = max_image_pixels
        self.allow_images_outside_root = allow_images_outside_root
        self.allow_remote_images = allow_remote_images
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load_image(self, item):
        return images_lib.load_image(item["image"], root=item.get("image_root"),
                                     allow_outside_root=self.allow_images_outside_root,
                                     allow_remote=self.allow_remote_images, max_pixels=self.max_pixels,
                                     max_image_pixels=self.max_image_pixels, record_id=item["id"])

    def caption(self, item) -> str:
        texts = item["texts"]
        return texts[0] if len(texts) == 1 else sample_rng(self.seed, self.epoch, item["id"], "caption").choice(texts)

    def image_batch(self, items) -> dict[str, torch.Tensor]:
        return self.adapter.image_inputs(self.processor, [self.load_image(item) for item in items])

    def text_batch(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.adapter.text_inputs(self.processor, texts)

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        kept = [item for item in items if "pair_error" not in item]  # --pair_policy drop on a lazy dataset
        captions = [self.caption(item) for item in kept]
        batch = {**self.image_batch(kept), **self.text_batch(captions)} if kept else {}
        batch["groups"] = torch.tensor([item["group"] for item in kept], dtype=torch.long)
        batch["text_keys"] = torch.tensor([text_key(text) for text in captions], dtype=torch.long)
        batch[NUM_DROPPED_KEY] = torch.tensor(len(items) - len(kept))
        return batch
