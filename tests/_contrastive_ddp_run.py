"""One rank of the two-process contrastive loss check (torchrun, gloo, CPU).

Every rank builds the same global batch of image/text features from two small linear encoders (seeded), keeps its
half, computes the loss (``clip`` or ``siglip``) against every rank's features gathered with gradients, backpropagates,
and averages the encoder gradients as DDP does. It writes ``OUT/rank<r>.json``: the local loss, the averaged loss, the
encoder gradients and the gradient of its own features.

    torchrun --nproc_per_node 2 tests/_contrastive_ddp_run.py OUT clip|siglip
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from mmft.contrastive.losses import clip_loss, siglip_loss


def global_batch(n: int = 8, d_in: int = 6, d: int = 4):
    """The fixed problem both the ranks and the one-process reference use."""
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(n, d_in, generator=generator), torch.randn(n, d_in, generator=generator)
    image_encoder = torch.nn.Linear(d_in, d)
    text_encoder = torch.nn.Linear(d_in, d)
    with torch.no_grad():
        for p in (*image_encoder.parameters(), *text_encoder.parameters()):
            p.copy_(torch.randn(p.shape, generator=generator))
    # Pairs 1 and 6 are two captions of one image (one on each rank); pairs 2 and 5 share a sentence.
    groups = torch.tensor([0, 1, 2, 3, 4, 5, 1, 7])
    keys = torch.tensor([10, 11, 12, 13, 14, 12, 16, 17])
    return images, texts, image_encoder, text_encoder, groups, keys


def loss_of(kind, image_features, text_features, groups, keys):
    scale = torch.tensor(2.0, requires_grad=True)
    if kind == "clip":
        return clip_loss(image_features, text_features, scale, groups, keys)
    return siglip_loss(image_features, text_features, scale, torch.tensor(-1.0), groups, keys)


def main():
    out, kind = Path(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    images, texts, image_encoder, text_encoder, groups, keys = global_batch()
    local = slice(rank * len(images) // world, (rank + 1) * len(images) // world)
    image_features = torch.nn.functional.normalize(image_encoder(images[local]), dim=-1)
    text_features = torch.nn.functional.normalize(text_encoder(texts[local]), dim=-1)
    image_features.retain_grad()
    loss = loss_of(kind, image_features, text_features, groups[local], keys[local])
    loss.backward()
    grads = {}
    for name, p in [*(("image." + n, p) for n, p in image_encoder.named_parameters()),
                    *(("text." + n, p) for n, p in text_encoder.named_parameters())]:
        dist.all_reduce(p.grad)
        grads[name] = (p.grad / world).tolist()  # DDP averages gradients
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps({
        "loss": loss.item(), "mean_loss": mean_loss.item() / world, "grads": grads,
        "feature_grad": image_features.grad.tolist(), "world": world}))
    dist.barrier()  # both ranks are done with the collectives before either tears the group down
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Leave without the interpreter's teardown: after the autograd-enabled all_gather's backward, gloo's worker
    # threads can still be joinable when Python finalises, and their destructor aborts the process ("terminate
    # called without an active exception", SIGABRT; seen once in CI after the results were written). Everything
    # this driver produces is on disk and the process group is destroyed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
