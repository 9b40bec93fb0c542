"""The pair view of records: what a dual encoder trains and is evaluated on.

The same canonical records as the generative recipes (``mmft.data.records``), read as (image, captions):

- the image: the record's one image (a record with none, or with several, has no usable pair);
- the captions: the record's ``references`` when it has them (a caption card's column: COCO's five, every phrasing
  of a shapes caption), else the assistant answer of a one-turn record. A multi-turn record without references has
  no single text that describes its image, and is not a pair.

Several captions of one image are several positives, never each other's negatives: every caption carries its
image's *group* (the record's index), and the losses (``mmft.contrastive.losses``) treat a shared group, or the very
same sentence, as a positive.

A record without a usable pair follows ``policy``: ``error`` (stop, naming up to five records and what to do) or
``drop`` (leave it out; the count is logged), as ``--overlength_policy`` does for the generative recipes.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence

import torch

from ..data.record_errors import RecordError
from ..errors import UsageError

logger = logging.getLogger("mmft")

POLICIES = ("error", "drop")


class PairError(UsageError):
    """A record that cannot be read as an (image, caption) pair; the message names it and says what to do."""


def text_key(text: str) -> int:
    """A 63-bit hash of the caption, case and spacing normalised: two pairs with equal keys share their sentence."""
    normalised = re.sub(r"\s+", " ", text.strip().lower().rstrip("."))
    return int.from_bytes(hashlib.blake2b(normalised.encode(), digest_size=8).digest(), "big") >> 1


def record_pair(record: Mapping) -> tuple[object, list[str]]:
    """``(image_ref, captions)`` of a canonical record, or :class:`PairError` naming it."""
    record_id = record.get("id", "?")
    images = record.get("images") or []
    if len(images) != 1:
        problem = "has no image" if not images else f"has {len(images)} images"
        raise PairError(f"record {record_id!r} {problem}; a dual encoder pairs one image with its captions. Give "
                        "each record exactly one image, or pass --pair_policy drop to leave such records out.")
    return images[0], record_captions(record)


def record_captions(record: Mapping) -> list[str]:
    """A record's captions: its ``references``, else the answer of a one-turn record; :class:`PairError` if none."""
    record_id = record.get("id", "?")
    references = [text for text in record.get("references") or [] if text.strip()]
    if references:
        return references
    turns = [m for m in record.get("messages", []) if m["role"] != "system"]
    if len(turns) == 2 and turns[1]["role"] == "assistant":
        text = "".join(e["text"] for e in turns[1]["content"] if e.get("type") == "text")
        if text.strip():
            return [text]
    raise PairError(f"record {record_id!r} has no usable text: a dual encoder needs 'references' (captions) or a "
                    "one-turn record whose assistant answer is the caption, and this record has neither "
                    f"({len(turns) // 2} turns, no references). Add captions, or pass --pair_policy drop.")


class PairDataset(torch.utils.data.Dataset):
    """One item per usable record: ``{"id", "image", "image_root", "texts", "group"}``.

    Records held in memory (local files, lists) are checked here, at start, all at once; a lazy dataset (a Hub set)
    is checked per item: under ``drop`` a bad item comes back as ``{"id", "pair_error"}`` and the collator leaves it
    out and counts it.
    """

    def __init__(self, records: Sequence[Mapping], policy: str = "error", max_listed: int = 5):
        if policy not in POLICIES:
            raise UsageError(f"--pair_policy must be one of {', '.join(POLICIES)}, got {policy!r}.")
        self.records = records
        self.policy = policy
        self.source = getattr(records, "source", "the dataset")
        self.indices = range(len(records))
        self.num_dropped = 0
        canonical = getattr(records, "_canonical", None)
        if canonical is None and isinstance(records, list):
            canonical = records
        if canonical is not None:
            self._check_all(canonical, max_listed)

    def _check_all(self, canonical, max_listed: int) -> None:
        good, problems = [], []
        for index, record in enumerate(canonical):
            try:
                record_pair(record)
                good.append(index)
            except PairError as error:
                problems.append(str(error))
        if problems and self.policy == "error":
            more = f"\n... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
            raise PairError(f"{len(problems)} of {len(canonical)} records of {self.source} are not (image, caption) "
                            "pairs:\n" + "\n".join(problems[:max_listed]) + more)
        if problems:
            logger.warning("Dropped %d of %d records of %s that are not (image, caption) pairs (--pair_policy drop); "
                           "first: %s", len(problems), len(canonical), self.source, problems[0])
        self.indices = good
        self.num_dropped = len(problems)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        position = self.indices[index]
        record = self.records[position]
        try:
            image, texts = record_pair(record)
        except (PairError, RecordError) as error:
            if self.policy == "error":
                raise
            return {"id": record.get("id", str(position)), "pair_error": str(error)}
        return {"id": record["id"], "image": image, "image_root": record.get("image_root"), "texts": texts,
                "group": position}


def retrieval_pairs(dataset: PairDataset) -> tuple[list[dict], list[str], list[int]]:
    """The held-out retrieval set: ``(images, texts, text_image)``, one entry per image, every caption a text, and
    ``text_image[t]`` the index of text ``t``'s image (captions never shared between images: that is the standard
    COCO/Flickr protocol, where a text's one correct image is its own)."""
    images, texts, text_image = [], [], []
    for index in range(len(dataset)):
        item = dataset[index]
        if "pair_error" in item:
            continue
        for text in item["texts"]:
            texts.append(text)
            text_image.append(len(images))
        images.append(item)
    return images, texts, text_image
