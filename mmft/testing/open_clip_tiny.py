"""A tiny open_clip architecture, ``open_clip:mmft-tiny``, registered with open_clip on first use (no weights).

ViT image tower (32 px, 8 px patches, width 32, 2 layers) and text transformer (context 16, width 32, 2 heads,
2 layers) into a 32-d space; ~1.6 M parameters, almost all of them the 49408 x 32 token embedding of open_clip's own
BPE vocabulary (``SimpleTokenizer``, shipped inside the package: nothing is downloaded). Deliberately no
``DUAL_ENCODER`` / ``FIXTURE`` here: it is an open_clip config, not a transformers folder.
"""

from __future__ import annotations

import copy

TINY_OPEN_CLIP = "mmft-tiny"
# + a learnable logit bias (the SigLIP loss). No "siglip" in the name: open_clip would then pick its T5 SentencePiece
# tokenizer, a download.
TINY_OPEN_CLIP_SIGMOID = "mmft-tiny-sigmoid"

_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 2},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
CONFIGS = {
    TINY_OPEN_CLIP: _CONFIG,
    # SigLIP's initialisation: temperature 10 (log 10 = 2.3026), bias -10
    TINY_OPEN_CLIP_SIGMOID: {**_CONFIG, "init_logit_scale": 2.302585, "init_logit_bias": -10.0},
}


def register_tiny_open_clip(name: str) -> bool:
    """Register ``name`` with open_clip if it is one of :data:`CONFIGS` (idempotent); whether it was one."""
    if name not in CONFIGS:
        return False
    from open_clip import factory

    factory._MODEL_CONFIGS.setdefault(name, copy.deepcopy(CONFIGS[name]))
    return True
