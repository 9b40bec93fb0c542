"""Evaluation of a dual encoder: embed the held-out set once, then score retrieval and zero-shot classification.

- Retrieval (``recall_at_k``): image->text Recall@K is the fraction of images with at least one of their own captions
  among the K most similar texts; text->image Recall@K the fraction of captions whose own image is among the K most
  similar images (the COCO / Flickr30k protocol). Chance Recall@1 for text->image is 1 / number of images.
- Zero-shot classification (``zero_shot_accuracy``): each class's text embedding is the mean of its prompts'
  normalised embeddings (every template filled with the class name), normalised again: CLIP's prompt ensemble.
  An image is classified as its most similar class.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..data.records import reference_answers
from ..errors import UsageError

logger = logging.getLogger("mmft")

DEFAULT_KS = (1, 5, 10)
DEFAULT_TEMPLATES = ("a photo of a {}.",)


@torch.no_grad()
def embed_images(adapter, model, collator, items: Sequence[Mapping], batch_size: int = 64, device=None,
                 progress: bool = False) -> torch.Tensor:
    """``(n, d)`` normalised image features of pair items (``{"id", "image", "image_root"}``), in order."""
    chunks = []
    for start in tqdm(range(0, len(items), batch_size), desc="images", disable=not progress, unit="batch"):
        inputs = collator.image_batch(items[start:start + batch_size])
        inputs = {key: value.to(device) if device is not None else value for key, value in inputs.items()}
        chunks.append(adapter.image_features(model, inputs).float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


@torch.no_grad()
def embed_texts(adapter, model, collator, texts: Sequence[str], batch_size: int = 256, device=None,
                progress: bool = False) -> torch.Tensor:
    """``(n, d)`` normalised text features, in order."""
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc="texts", disable=not progress, unit="batch"):
        inputs = collator.text_batch(list(texts[start:start + batch_size]))
        inputs = {key: value.to(device) if device is not None else value for key, value in inputs.items()}
        chunks.append(adapter.text_features(model, inputs).float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


def recall_at_k(image_features: torch.Tensor, text_features: torch.Tensor, text_image: Sequence[int],
                ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"i2t_recall@K", "t2i_recall@K"}`` (see the module docstring); ``text_image[t]`` is text ``t``'s image."""
    similarity = image_features @ text_features.T  # (images, texts)
    owner = torch.as_tensor(list(text_image))
    metrics = {}
    n_images, n_texts = similarity.shape
    for k in ks:
        top_texts = similarity.topk(min(k, n_texts), dim=1).indices  # (images, k)
        hit = (owner[top_texts] == torch.arange(n_images)[:, None]).any(dim=1)
        metrics[f"i2t_recall@{k}"] = hit.float().mean().item()
        top_images = similarity.T.topk(min(k, n_images), dim=1).indices  # (texts, k)
        metrics[f"t2i_recall@{k}"] = (top_images == owner[:, None]).any(dim=1).float().mean().item()
    return metrics


def class_embeddings(adapter, model, collator, class_names: Sequence[str], templates: Sequence[str],
                     device=None) -> torch.Tensor:
    """``(classes, d)``: per class, the renormalised mean of its templates' normalised embeddings."""
    prompts = [template.format(name) for name in class_names for template in templates]
    features = embed_texts(adapter, model, collator, prompts, device=device)
    per_class = features.view(len(class_names), len(templates), -1).mean(dim=1)
    return torch.nn.functional.normalize(per_class, dim=-1)


@dataclass
class ZeroShotTask:
    """Images with class labels, and the class names and prompt templates to classify them with.

    ``labels[i]`` is the index of image ``i``'s class. Built from records by :func:`zero_shot_task` (the label is the
    record's answer: a class name, or a class index).
    """

    name: str
    items: list[dict]
    labels: list[int]
    class_names: list[str]
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))

    @property
    def chance(self) -> float:
        return 1 / len(self.class_names)


def _label_index(answer: str, lookup: Mapping[str, int], n_classes: int) -> int | None:
    text = answer.strip().lower().rstrip(".")
    if text in lookup:
        return lookup[text]
    if re.fullmatch(r"\d+", text) and int(text) < n_classes:
        return int(text)
    return None


def zero_shot_task(name: str, records, class_names: Sequence[str], templates: Sequence[str] | None = None,
                   unlisted: str = "error", max_samples: int | None = None) -> ZeroShotTask:
    """A zero-shot task from records whose answer is their class (a name among ``class_names``, or an index).

    ``unlisted``: what to do with a record whose answer is no class: ``error`` (stop, naming it) or ``skip`` (a
    dataset mixing several questions, like the shapes VQA set, keeps only the records that ask this one).
    """
    lookup = {c.strip().lower(): i for i, c in enumerate(class_names)}
    items, labels, skipped = [], [], 0
    for index in range(len(records)):
        record = records[index]
        if len(record.get("images") or []) != 1:
            raise UsageError(f"zero-shot task {name!r}: record {record.get('id')!r} needs exactly one image.")
        answers = reference_answers(record)
        label = next((i for i in (_label_index(a, lookup, len(class_names)) for a in answers) if i is not None), None)
        if label is None:
            if unlisted == "skip":
                skipped += 1
                continue
            raise UsageError(f"zero-shot task {name!r}: record {record.get('id')!r} has label {answers[0]!r}, which "
                             f"is none of the classes ({', '.join(class_names)}) nor a class index.")
        items.append({"id": record["id"], "image": record["images"][0], "image_root": record.get("image_root")})
        labels.append(label)
        if max_samples is not None and len(items) >= max_samples:
            break
    if not items:
        raise UsageError(f"zero-shot task {name!r}: no record has one of the classes {', '.join(class_names)}.")
    if skipped:
        logger.info("Zero-shot task %s: %d images; %d records answer another question and are left out.", name,
                    len(items), skipped)
    return ZeroShotTask(name, items, labels, list(class_names), list(templates or DEFAULT_TEMPLATES))


def zero_shot_accuracy(adapter, model, collator, task: ZeroShotTask, device=None,
                       image_features: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
    """``(accuracy, predicted class per image)`` of ``task``."""
    if image_features is None:
        image_features = embed_images(adapter, model, collator, task.items, device=device)
    classes = class_embeddings(adapter, model, collator, task.class_names, task.templates, device=device)
    predicted = (image_features @ classes.T).argmax(dim=1)
    accuracy = (predicted == torch.as_tensor(task.labels)).float().mean().item()
    return accuracy, predicted
