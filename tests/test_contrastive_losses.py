"""The contrastive losses against direct implementations of their formulas, and across two processes."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmft.contrastive.losses import MAX_LOGIT_SCALE, clip_loss, siglip_loss

DRIVER = Path(__file__).with_name("_contrastive_ddp_run.py")


def _features(n=6, d=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, d, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(n, d, generator=generator), dim=-1)
    return images, texts


def _clip_by_formula(images, texts, scale, positives):
    """CLIP's loss written out: for each row, -log(exp(s x_i.y_i) / sum over i itself and its negatives)."""
    n = len(images)
    total = 0.0
    for a, b in ((images, texts), (texts, images)):
        for i in range(n):
            numerator = math.exp(scale * float(a[i] @ b[i]))
            denominator = sum(math.exp(scale * float(a[i] @ b[j])) for j in range(n) if j == i or not positives[i][j])
            total += -math.log(numerator / denominator) / n
    return total / 2


def test_clip_loss_is_the_symmetric_info_nce_formula():
    images, texts = _features()
    log_scale = torch.tensor(math.log(7.0))
    expected = _clip_by_formula(images, texts, 7.0, [[i == j for j in range(6)] for i in range(6)])
    assert clip_loss(images, texts, log_scale).item() == pytest.approx(expected, rel=1e-5)


def test_clip_loss_never_uses_other_captions_of_an_image_or_the_same_sentence_as_negatives():
    images, texts = _features()
    groups = torch.tensor([0, 1, 0, 3, 4, 5])  # pairs 0 and 2: two captions of one image
    keys = torch.tensor([9, 8, 7, 6, 5, 8])  # pairs 1 and 5: the same sentence on two images
    positives = [[bool(groups[i] == groups[j] or keys[i] == keys[j]) for j in range(6)] for i in range(6)]
    expected = _clip_by_formula(images, texts, 7.0, positives)
    loss = clip_loss(images, texts, torch.tensor(math.log(7.0)), groups, keys)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() != pytest.approx(clip_loss(images, texts, torch.tensor(math.log(7.0))).item(), rel=1e-3)


def test_clip_logit_scale_is_capped_at_100():
    images, texts = _features()
    capped = clip_loss(images, texts, torch.tensor(math.log(1e4)))
    expected = _clip_by_formula(images, texts, MAX_LOGIT_SCALE, [[i == j for j in range(6)] for i in range(6)])
    assert capped.item() == pytest.approx(expected, rel=1e-5)


def test_siglip_loss_is_the_pairwise_sigmoid_formula_with_its_bias():
    images, texts = _features()
    groups = torch.tensor([0, 1, 0, 3, 4, 5])
    t, b = 3.0, -2.0
    expected = 0.0
    for i in range(6):
        for j in range(6):
            z = 1.0 if groups[i] == groups[j] else -1.0
            expected += -math.log(1 / (1 + math.exp(-z * (t * float(images[i] @ texts[j]) + b))))
    expected /= 6
    loss = siglip_loss(images, texts, torch.tensor(math.log(t)), torch.tensor(b), groups)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def _one_process(kind):
    sys.path.insert(0, str(DRIVER.parent))
    from _contrastive_ddp_run import global_batch, loss_of

    images, texts, image_encoder, text_encoder, groups, keys = global_batch()
    image_features = F.normalize(image_encoder(images), dim=-1)
    image_features.retain_grad()
    text_features = F.normalize(text_encoder(texts), dim=-1)
    loss = loss_of(kind, image_features, text_features, groups, keys)
    loss.backward()
    grads = {"image." + n: p.grad for n, p in image_encoder.named_parameters()}
    grads.update({"text." + n: p.grad for n, p in text_encoder.named_parameters()})
    return loss.item(), grads, image_features.grad


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_two_processes_give_the_one_process_loss_and_gradients(kind, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [torchrun, "--standalone", "--nproc_per_node", "2", str(DRIVER), str(tmp_path), kind]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    loss, grads, feature_grad = _one_process(kind)
    assert ranks[0]["loss"] != pytest.approx(ranks[1]["loss"])  # each rank scores its own rows
    for rank in ranks:
        assert rank["mean_loss"] == pytest.approx(loss, rel=1e-5)
        for name, grad in grads.items():  # after DDP's averaging, both ranks hold the one-process gradient
            torch.testing.assert_close(torch.tensor(rank["grads"][name]), grad, rtol=1e-4, atol=1e-6)
    # Each rank's own features get the gradient of the whole loss (the other rank's part arrives through the
    # gather's backward), up to DDP's 1/world averaging.
    for r, rank in enumerate(ranks):
        local = feature_grad[r * 4:(r + 1) * 4]
        assert local.abs().sum() > 0
        torch.testing.assert_close(torch.tensor(rank["feature_grad"]) / 2, local, rtol=1e-4, atol=1e-6)
