"""Padding-free batching: the samples of a batch concatenated into one row, for flash-attention's varlen kernels.

A padded batch spends compute on padding; a padding-free batch has none. ``PaddingFreeCollator`` wraps the
training ``VLMCollator``: it takes its padded batch and keeps only the real tokens of every sample, one after the
other in a single row, with

- ``position_ids`` restarting at 0 for each sample: transformers' flash-attention path (``attn_implementation=
  "flash_attention_2"`` / ``"flash_attention_3"``) finds the sample boundaries from them when there is no
  ``attention_mask``, and runs the varlen kernel so no token attends across a boundary;
- ``labels`` as the collator built them, except the first token of every sample, set to -100: the loss shifts
  labels by one, so that position would otherwise train the previous sample's last token to predict this sample's
  first one;
- pixels and every other key (``pixel_values``, ``image_sizes``, ``image_grid_thw``...) untouched: the images stay
  in the same order as their placeholders in the row, which is all the model needs to place their features.

Only for families whose language model takes 1-D positions: multimodal RoPE (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
GLM-4V) computes 3-D positions from the image grid and the attention mask, and PaliGemma attends bidirectionally
over its prefix, which the causal varlen kernel cannot express; they are refused with a clear message, as is a run
without a CUDA device or without flash attention (with SDPA or eager attention, one long row would let samples
attend to each other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UsageError
from .labels import IGNORE_INDEX

FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")
# Per-token keys laid out like input_ids: flattened with it. Everything else (pixels, image sizes, grids) is
# per image or per sample and passes through untouched.
TOKEN_KEYS = ("input_ids", "labels", "token_type_ids", "mm_token_type_ids")


class PaddingFreeError(UsageError):
    """Padding-free batching was asked for where it would be wrong or cannot run."""


def check_padding_free(model, device: torch.device | str | None) -> None:
    """Raise ``PaddingFreeError`` unless ``model`` on ``device`` can train on padding-free batches."""
    from ..families import GENERIC, family_for

    config = getattr(model, "config", None)
    family = family_for(model)
    refusal = family.padding_free_refusal  # the family's module says why, where it cannot
    if family is GENERIC:  # e.g. glm4v_moe: its position ids are unknown here, so packing could silently corrupt them
        refusal = "mmft has no family module for it, so whether its position ids allow packing is unknown"
    if refusal is not None:
        raise PaddingFreeError(
            f"--padding_free cannot be used with {config.model_type} models: {refusal}. "
            "Drop --padding_free; --group_by_length removes most padding for every family."
        )
    device_type = torch.device(device).type if device is not None else "cpu"
    if device_type != "cuda":
        raise PaddingFreeError(
            f"--padding_free needs a CUDA GPU with flash attention (this run is on {device_type}): without the "
            "varlen kernel the samples of a packed row would attend to each other. Drop --padding_free; "
            "--group_by_length removes most padding anywhere."
        )
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in FLASH_ATTENTION:
        raise PaddingFreeError(
            f"--padding_free needs flash attention, but the model uses {implementation!r} attention, with which "
            "the samples of a packed row would attend to each other. Pass --attn_implementation flash_attention_2 "
            "(`pip install flash-attn`), or drop --padding_free."
        )


def pack(batch: dict[str, Any]) -> dict[str, Any]:
    """Turn a right-padded training batch into one padding-free row (see the module docstring)."""
    mask = batch.get("attention_mask")
    if mask is None:
        raise PaddingFreeError("padding-free packing needs the collator's attention_mask to find the real tokens.")
    lengths = mask.sum(dim=1)
    if mask.shape[1] and not torch.equal(mask, (torch.arange(mask.shape[1]) < lengths[:, None]).to(mask.dtype)):
        raise PaddingFreeError("padding-free packing needs right-padded batches (the training collator's).")
    keep = mask.bool()
    packed = {key: value for key, value in batch.items() if key not in TOKEN_KEYS and key != "attention_mask"}
    for key in TOKEN_KEYS:
        if key in batch:
            packed[key] = batch[key][keep].unsqueeze(0)
    real = [int(n) for n in lengths if n > 0]
    packed["position_ids"] = torch.cat([torch.arange(n) for n in real]).unsqueeze(0) if real else \
        torch.zeros((1, 0), dtype=torch.long)
    if "labels" in packed and real:
        starts = torch.tensor([0, *real[:-1]]).cumsum(0)
        packed["labels"][0, starts] = IGNORE_INDEX
    return packed


@dataclass
class PaddingFreeCollator:
    """Wrap a training ``VLMCollator``: its batches, packed into one row (``pack``).

    Attribute access falls through to the wrapped collator (``processor``, ``max_length``, ``overlength_policy``...),
    so code that inspects the training collator keeps working.
    """

    collator: Any

    def __call__(self, records: list[dict]) -> dict[str, Any]:
        return pack(self.collator(records))

    def __getattr__(self, name):
        if name == "collator":  # not yet set (unpickling in a worker): avoid recursing
            raise AttributeError(name)
        return getattr(self.collator, name)
