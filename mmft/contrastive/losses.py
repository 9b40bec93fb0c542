"""Contrastive losses over in-batch negatives, gathered across processes with gradients kept on local features.

Two losses, each the paper's formula, with one generalisation: several positives per row. A batch carries, for each
pair, a *group* (the image it belongs to: several captions of one image share it) and a *text key* (a hash of the
normalised caption). Pair ``(i, j)`` is a positive when ``i == j``, or when ``i`` and ``j`` share a group or a text
key: two captions of one image are never each other's negatives, nor are two images with the same caption.

- :func:`clip_loss`: CLIP's symmetric InfoNCE (Radford et al. 2021): ``(CE(s * I T^T) + CE(s * T I^T)) / 2`` with the
  temperature ``s = exp(logit_scale)`` capped at 100 (CLIP's clip). Extra positives are left out of each row's
  denominator (their logits set to -inf), so with no extra positives this is exactly CLIP's loss.
- :func:`siglip_loss`: SigLIP's pairwise sigmoid loss (Zhai et al. 2023):
  ``-1/N * sum_ij log sigmoid(z_ij * (t * x_i . y_j + b))`` with ``z_ij = +1`` for positives, ``-1`` otherwise.

Across processes (open_clip's ``gather_with_grad`` + ``local_loss``): each process scores its *local* rows against the
*global* columns (every process's features, gathered with :func:`gather_with_grad`, whose backward sends each
process the gradient of its own features). The local losses average to the one-process loss on the global batch, and
with DDP's gradient averaging the gradients equal it too; the negatives per row grow with the world size while the
logits stay ``local x global``, not ``global x global``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = 100.0  # CLIP: "clipped to prevent scaling the logits by more than 100"
MAX_LOG_LOGIT_SCALE = math.log(MAX_LOGIT_SCALE)


# ---- across processes ----------------------------------------------------------------------------------------
def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_with_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(global, offset)``: every process's rows, concatenated in rank order, and where this process's start.

    Differentiable: the backward pass sums every process's gradient for these rows and hands each process the
    gradient of its own rows (``torch.distributed.nn.all_gather``). Processes may hold different row counts (a
    dropped record): rows are padded to the largest count for the collective, then the padding is cut off.
    """
    world, rank = _world()
    if world == 1:
        return local, 0
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_nn

    count = torch.tensor([local.shape[0]], device=local.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c.item()) for c in counts]
    largest = max(counts)
    padded = F.pad(local, (0, 0) * (local.dim() - 1) + (0, largest - local.shape[0])) if local.shape[0] < largest \
        else local
    pieces = dist_nn.all_gather(padded)
    return torch.cat([piece[:n] for piece, n in zip(pieces, counts)]), sum(counts[:rank])


def gather_no_grad(local: torch.Tensor) -> torch.Tensor:
    """Every process's entries of a 1-D tensor (groups, text keys; any dtype, exact), in rank order, no gradient."""
    world, _ = _world()
    if world == 1:
        return local
    import torch.distributed as dist

    count = torch.tensor([local.shape[0]], device=local.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c.item()) for c in counts]
    padded = F.pad(local, (0, max(counts) - local.shape[0]))
    pieces = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[:n] for piece, n in zip(pieces, counts)])


# ---- positives ------------------------------------------------------------------------------------------------
def positive_mask(row_groups: torch.Tensor, column_groups: torch.Tensor, row_keys: torch.Tensor | None = None,
                  column_keys: torch.Tensor | None = None) -> torch.Tensor:
    """``mask[i, j]``: row ``i`` and column ``j`` are a positive pair (same group, or same text key)."""
    mask = row_groups[:, None] == column_groups[None, :]
    if row_keys is not None and column_keys is not None:
        mask |= row_keys[:, None] == column_keys[None, :]
    return mask


# ---- the losses (one process: rows are local, columns global) ------------------------------------------------
def _info_nce(logits: torch.Tensor, targets: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row to its own column ``targets[i]``, other positives left out of the denominator."""
    others = positives.clone()
    others[torch.arange(len(targets), device=logits.device), targets] = False
    return F.cross_entropy(logits.masked_fill(others, float("-inf")), targets)


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
              groups: torch.Tensor | None = None, text_keys: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE of this process's pairs against every process's (see the module docstring).

    Args:
        image_features, text_features: ``(n, d)`` L2-normalised features of this process's pairs (row ``i`` of each
            is pair ``i``).
        logit_scale: the learnable log-temperature (a scalar tensor); ``exp`` is capped at 100.
        groups, text_keys: ``(n,)`` integers marking extra positives (default: pair ``i`` is row ``i``'s only one).
    """
    n = image_features.shape[0]
    device = image_features.device
    all_images, offset = gather_with_grad(image_features)
    all_texts, _ = gather_with_grad(text_features)
    local_groups = groups if groups is not None else torch.arange(n, device=device) + offset
    all_groups = gather_no_grad(local_groups) if groups is not None else torch.arange(all_images.shape[0],
                                                                                      device=device)
    all_keys = gather_no_grad(text_keys) if text_keys is not None else None
    targets = torch.arange(n, device=device) + offset
    scale = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    # Image i against every text: text j is a positive when it is i's caption, a caption of i's image (group), or
    # i's caption's very sentence attached to another image (key). The mask is symmetric, so it serves text rows too.
    positives = positive_mask(local_groups, all_groups, text_keys, all_keys)
    loss_images = _info_nce(scale * image_features @ all_texts.T, targets, positives)
    loss_texts = _info_nce(scale * text_features @ all_images.T, targets, positives)
    return (loss_images + loss_texts) / 2


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor, groups: torch.Tensor | None = None,
                text_keys: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's sigmoid loss of this process's images against every process's texts (see the module docstring).

    Normalised as the paper does, by the number of images (``-1/|B| sum_ij``): this process's share of the global
    loss is ``-1/n_local sum_{i local, j global}``, and the mean over processes is the one-process loss.
    """
    n = image_features.shape[0]
    device = image_features.device
    all_texts, offset = gather_with_grad(text_features)
    local_groups = groups if groups is not None else torch.arange(n, device=device) + offset
    all_groups = gather_no_grad(local_groups) if groups is not None else torch.arange(all_texts.shape[0],
                                                                                      device=device)
    all_keys = gather_no_grad(text_keys) if text_keys is not None else None
    positives = positive_mask(local_groups, all_groups, text_keys, all_keys)
    logits = logit_scale.exp() * image_features @ all_texts.T + logit_bias
    signs = positives.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / n
