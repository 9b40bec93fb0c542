"""The open_clip adapter (optional extra ``openclip``: ``pip install -e '.[openclip]'``, open_clip_torch >= 3.0).

Names: ``open_clip:<architecture>`` (random weights, or ``open_clip:<architecture>@<pretrained tag>``, e.g.
``open_clip:ViT-B-32@laion2b_s34b_b79k``; ``--open_clip_pretrained`` gives the tag too) and ``hf-hub:<repo>`` (an
open_clip checkpoint on the Hub, its config and weights together). The model is built by
``open_clip.create_model_and_transforms`` with ``force_custom_text=True``: the text tower is then one module,
``text`` (token embedding, positional embedding, transformer, ln_final, text projection), beside ``visual``, so the
per-tower LoRA / full / frozen / LiT modes resolve exactly as for transformers models. open_clip converts a
pretrained checkpoint of the plain ``CLIP`` layout to this one when it loads it (``load_checkpoint``).

Images go through open_clip's own validation transform (resize, centre crop, normalise; no augmentation, as the
transformers path uses its image processor), texts through ``open_clip.get_tokenizer`` (fixed context length; the
text tower builds its own causal mask and pools the end-of-text position). The loss is CLIP's InfoNCE, or SigLIP's
sigmoid loss when the model has a ``logit_bias`` (open_clip's SigLIP models).

LoRA: open_clip's attention is ``nn.MultiheadAttention``, whose ``in_proj_weight`` is a bare parameter and whose
``out_proj`` (a ``Linear``) is read as weights by ``F.multi_head_attention_forward``, never called: LoRA there would
train nothing. ``mmft.contrastive.towers`` therefore leaves linear layers inside ``nn.MultiheadAttention`` out, and
LoRA targets the MLPs (``mlp.c_fc``, ``mlp.c_proj``) of each tower (and a ``Linear`` text projection where the
config has one).

Saving: a full model is ``open_clip_model.safetensors`` (the state dict) plus ``open_clip_config.json`` (model and
preprocess config), which is also open_clip's own ``local-dir:`` layout: ``open_clip.create_model_and_transforms(
"local-dir:OUTPUT_DIR")`` loads it without mmft. A LoRA run saves the adapter as for transformers models.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UsageError
from .outputs import ModelOutputs, unwrap

OPEN_CLIP_PREFIX = "open_clip:"
HF_HUB_PREFIX = "hf-hub:"
WEIGHTS_FILE = "open_clip_model.safetensors"  # open_clip's preferred name in a local-dir: folder
CONFIG_FILE = "open_clip_config.json"
RANDOM_INIT_SEED = 0
INSTALL_HINT = "pip install -e '.[openclip]' (open_clip_torch>=3.0)"
# --dtype -> open_clip's precision ("pure_*": weights in that dtype, as transformers' dtype= loads them)
PRECISIONS = {None: "fp32", "auto": "fp32", "float32": "fp32", "bfloat16": "pure_bf16", "float16": "pure_fp16"}


def import_open_clip():
    try:
        import open_clip
    except ImportError as error:
        raise UsageError(f"open_clip models need the optional extra open_clip_torch, which is not installed "
                         f"({error}). Install it with: {INSTALL_HINT}.") from None
    return open_clip


def parse_name(name: str, pretrained: str | None = None) -> tuple[str, str | None]:
    """``(open_clip model name, pretrained tag or None)`` of ``open_clip:<arch>[@<tag>]`` / ``hf-hub:<repo>``."""
    if name.startswith(HF_HUB_PREFIX):
        if pretrained:
            raise UsageError(f"--open_clip_pretrained {pretrained!r}: an 'hf-hub:' model carries its own weights; "
                             "pass the tag only with 'open_clip:<architecture>'.")
        if not name[len(HF_HUB_PREFIX):]:
            raise UsageError("--model_name_or_path 'hf-hub:' names no repository "
                             "(e.g. 'hf-hub:timm/ViT-B-16-SigLIP').")
        return name, None
    arch, _, tag = name[len(OPEN_CLIP_PREFIX):].partition("@")
    if not arch:
        raise UsageError(f"--model_name_or_path {name!r} names no architecture (e.g. 'open_clip:ViT-B-32').")
    if tag and pretrained and tag != pretrained:
        raise UsageError(f"--model_name_or_path {name!r} names the pretrained tag {tag!r} but --open_clip_pretrained "
                         f"says {pretrained!r}; give one.")
    return arch, (tag or pretrained or None)


class OpenClipProcessor:
    """open_clip's image transform and tokenizer, and the config that rebuilds the model (``save_pretrained``)."""

    def __init__(self, preprocess, tokenizer, model_cfg: dict, preprocess_cfg: dict):
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.preprocess_cfg = preprocess_cfg

    def save_pretrained(self, out_dir: str) -> None:
        config = {"model_cfg": self.model_cfg, "preprocess_cfg": self.preprocess_cfg}
        Path(out_dir, CONFIG_FILE).write_text(json.dumps(config, indent=2, default=list) + "\n")


class OpenClipDualEncoder:
    """An open_clip ``CustomTextCLIP``; ``loss`` is ``siglip`` when the model has a logit bias, else ``clip``."""

    kind = "open_clip"
    library_name = "open_clip"
    tower_paths = {"image": ("visual",), "text": ("text",)}

    def __init__(self, base_name: str, loss: str = "clip"):
        self.base_name = base_name  # canonical name (with its tag): what a LoRA folder is loaded back onto
        self.loss = loss

    # ---- loading -----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, name: str, *, pretrained: str | None = None, dtype="auto"):
        """``(adapter, model, processor)`` for ``open_clip:<arch>[@tag]`` / ``hf-hub:<repo>``."""
        open_clip = import_open_clip()
        model_name, tag = parse_name(name, pretrained)
        from ..testing.open_clip_tiny import register_tiny_open_clip

        register_tiny_open_clip(model_name)
        if not model_name.startswith(HF_HUB_PREFIX) and open_clip.get_model_config(model_name) is None:
            raise UsageError(f"--model_name_or_path {name!r}: open_clip has no architecture {model_name!r} (see "
                             "open_clip.list_models(), e.g. 'ViT-B-32', 'ViT-B-16-SigLIP').")
        try:
            # Random weights (no tag) are drawn from seed 0 in a forked RNG: the same model every time (for one
            # open_clip version), so a LoRA folder trained on it loads back onto the same base; the run's RNG is
            # left as it was.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=tag, precision=_precision(dtype), force_custom_text=True,
                    output_dict=True)
            tokenizer = open_clip.get_tokenizer(model_name, context_length=model.context_length)
        except (RuntimeError, OSError, ValueError) as error:
            raise UsageError(f"--model_name_or_path {name!r}: open_clip could not build it: {error}") from None
        model_cfg = copy.deepcopy(open_clip.get_model_config(model_name) or {})
        model_cfg["custom_text"] = True  # the saved state dict has the CustomTextCLIP layout
        preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
        processor = OpenClipProcessor(preprocess, tokenizer, model_cfg, preprocess_cfg)
        canonical = name if model_name.startswith(HF_HUB_PREFIX) else OPEN_CLIP_PREFIX + model_name + (
            f"@{tag}" if tag else "")
        return cls.for_model(model, canonical), model, processor

    @classmethod
    def for_model(cls, model, base_name: str):
        return cls(base_name, loss="siglip" if getattr(model, "logit_bias", None) is not None else "clip")

    @classmethod
    def load_saved_full(cls, folder: str, base_name: str | None, dtype="auto"):
        """A folder :meth:`save_full` wrote, through open_clip's own ``local-dir:`` loader."""
        open_clip = import_open_clip()
        model, _, preprocess = open_clip.create_model_and_transforms(
            f"local-dir:{folder}", precision=_precision(dtype), output_dict=True)
        config = json.loads(Path(folder, CONFIG_FILE).read_text())
        arch = parse_name(base_name)[0] if base_name else ""
        if arch and not arch.startswith(HF_HUB_PREFIX):
            from ..testing.open_clip_tiny import register_tiny_open_clip

            register_tiny_open_clip(arch)
        tokenizer = open_clip.get_tokenizer(arch, context_length=model.context_length)
        processor = OpenClipProcessor(preprocess, tokenizer, config["model_cfg"], config.get("preprocess_cfg", {}))
        return cls.for_model(model, base_name or f"local-dir:{folder}"), model, processor

    # ---- tensors -------------------------------------------------------------------------------------------------
    def image_inputs(self, processor, images) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([processor.preprocess(image) for image in images])}

    def text_inputs(self, processor, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": processor.tokenizer(list(texts))}

    # ---- features ------------------------------------------------------------------------------------------------
    def forward(self, model, batch: dict):

        outputs = model(image=batch["pixel_values"], text=batch["input_ids"])  # normalised (open_clip's forward)
        return ModelOutputs(image_embeds=outputs["image_features"], text_embeds=outputs["text_features"])

    def image_features(self, model, inputs: dict) -> torch.Tensor:

        return F.normalize(unwrap(model).encode_image(inputs["pixel_values"]), dim=-1)

    def text_features(self, model, inputs: dict) -> torch.Tensor:

        return F.normalize(unwrap(model).encode_text(inputs["input_ids"]), dim=-1)

    def logit_parameters(self, model) -> dict[str, torch.nn.Parameter]:

        base = unwrap(model)
        return {name: getattr(base, name) for name in ("logit_scale", "logit_bias")
                if getattr(base, name, None) is not None}

    # ---- saving --------------------------------------------------------------------------------------------------
    def save_full(self, model, out_dir: str) -> None:
        from safetensors.torch import save_file

        state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, os.path.join(out_dir, WEIGHTS_FILE), metadata={"format": "pt"})


def _precision(dtype) -> str:
    if dtype not in PRECISIONS:
        raise UsageError(f"--dtype {dtype!r}: open_clip models take auto, float32, bfloat16 or float16.")
    return PRECISIONS[dtype]
