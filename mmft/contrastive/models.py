"""One small adapter per dual-encoder implementation: transformers' CLIP, SigLIP / SigLIP 2, and open_clip.

An adapter knows what differs between them, and nothing else does: how a model and its processor are loaded, how
images and texts become tensors (SigLIP pads every text to its fixed length, since its text tower pools the last
position), how features are computed, where each tower lives (for LoRA targets, freezing and the parameter report),
which loss the model was trained with, and how it is saved and loaded back. The trainer and the collator only call
these methods, as the generative code calls ``mmft.families``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UsageError
from .outputs import ModelOutputs, unwrap  # noqa: F401  (unwrap: part of this module's interface)

TOWERS = ("image", "text")
OPEN_CLIP_PREFIXES = ("open_clip:", "hf-hub:")
HEAD_FILE = "contrastive_head.safetensors"  # logit scale (and bias) trained beside a LoRA adapter
RUN_FILE = "mmft_contrastive.json"  # what a saved folder needs to be loaded back: adapter kind, base model


class HFDualEncoder:
    """transformers' ``CLIPModel``: symmetric InfoNCE, texts padded to the batch's longest."""

    kind = "clip"
    loss = "clip"
    model_types = ("clip",)
    tower_paths = {"image": ("vision_model", "visual_projection"), "text": ("text_model", "text_projection")}
    pad_to_max_length = False
    use_attention_mask = True

    # ---- loading -----------------------------------------------------------------------------------------------
    def load(self, path: str, *, revision=None, dtype="auto", trust_remote_code=False, attn_implementation=None):
        from transformers import AutoModel, AutoProcessor

        kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
        processor = AutoProcessor.from_pretrained(path, **kwargs)
        model_kwargs = dict(kwargs, dtype=_dtype(dtype))
        if attn_implementation:
            model_kwargs["attn_implementation"] = attn_implementation
        model = AutoModel.from_pretrained(path, **model_kwargs)
        return model, processor

    # ---- tensors -------------------------------------------------------------------------------------------------
    def image_inputs(self, processor, images) -> dict[str, torch.Tensor]:
        return dict(processor.image_processor(images=images, return_tensors="pt"))

    def text_inputs(self, processor, texts: list[str]) -> dict[str, torch.Tensor]:
        tokenizer = processor.tokenizer
        max_length = self.max_text_length(processor)
        encoded = tokenizer(texts, padding="max_length" if self.pad_to_max_length else True, truncation=True,
                            max_length=max_length, return_tensors="pt")
        keys = ("input_ids", "attention_mask") if self.use_attention_mask else ("input_ids",)
        return {key: encoded[key] for key in keys if key in encoded}

    def max_text_length(self, processor) -> int:
        length = getattr(processor.tokenizer, "model_max_length", None)
        return length if isinstance(length, int) and 0 < length < 100_000 else 77  # CLIP's context length

    # ---- features ------------------------------------------------------------------------------------------------
    def forward(self, model, batch: dict) -> ModelOutputs:
        """Both towers in one call of ``model`` itself (under DDP the wrapper's forward must run)."""
        outputs = model(**batch, return_dict=True)
        return ModelOutputs(image_embeds=outputs.image_embeds, text_embeds=outputs.text_embeds)

    def image_features(self, model, inputs: dict) -> torch.Tensor:
        return F.normalize(model.get_image_features(**inputs).pooler_output, dim=-1)

    def text_features(self, model, inputs: dict) -> torch.Tensor:
        return F.normalize(model.get_text_features(**inputs).pooler_output, dim=-1)

    def logit_parameters(self, model) -> dict[str, torch.nn.Parameter]:
        base = unwrap(model)
        return {name: getattr(base, name) for name in ("logit_scale", "logit_bias") if hasattr(base, name)}

    # ---- saving --------------------------------------------------------------------------------------------------
    def save_full(self, model, out_dir: str) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load_saved_full(self, folder: str, dtype="auto"):
        from transformers import AutoModel

        return AutoModel.from_pretrained(folder, dtype=_dtype(dtype))


class SiglipDualEncoder(HFDualEncoder):
    """transformers' ``SiglipModel``: sigmoid loss with a learnable bias; texts padded to the model's fixed length
    and no attention mask, as the released checkpoints were trained (the text tower pools the last position)."""

    kind = "siglip"
    loss = "siglip"
    model_types = ("siglip",)
    tower_paths = {"image": ("vision_model",), "text": ("text_model",)}
    pad_to_max_length = True
    use_attention_mask = False

    def max_text_length(self, processor) -> int:
        length = getattr(processor.tokenizer, "model_max_length", None)
        return length if isinstance(length, int) and 0 < length < 100_000 else 64  # SigLIP's text length


class Siglip2DualEncoder(SiglipDualEncoder):
    """SigLIP 2 (``Siglip2Model``, where transformers has it): SigLIP's loss and text side; NaFlex images come with
    ``pixel_attention_mask`` and ``spatial_shapes``, which the image processor returns and the model takes."""

    kind = "siglip2"
    model_types = ("siglip2",)


ADAPTERS = {adapter.kind: adapter for adapter in (HFDualEncoder(), SiglipDualEncoder(), Siglip2DualEncoder())}


def _dtype(name):
    if name in (None, "auto"):
        return "auto"
    return getattr(torch, name)


def is_open_clip_name(name: str) -> bool:
    return any(str(name).startswith(prefix) for prefix in OPEN_CLIP_PREFIXES)


def resolve_model_name(name: str) -> str:
    """``mmft:tiny-clip`` / ``mmft:tiny-siglip`` -> the local folder of that tiny model (built once); others pass."""
    if name.startswith("mmft:"):
        from ..testing.dual_encoders import dual_encoder_names, tiny_dual_encoder_path

        if name not in dual_encoder_names():
            raise UsageError(f"Unknown built-in dual encoder {name!r}; built-in: {', '.join(dual_encoder_names())}.")
        return str(tiny_dual_encoder_path(name))
    return name


def adapter_for_config(config) -> HFDualEncoder:
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types:
            return adapter
    known = ", ".join(t for a in ADAPTERS.values() for t in a.model_types)
    raise UsageError(f"model type {model_type!r} is not a dual encoder the contrastive recipe knows ({known}, or an "
                     "open_clip model named 'open_clip:<arch>' / 'hf-hub:<id>').")


def load_dual_encoder(model_args, open_clip_pretrained: str | None = None):
    """``(adapter, model, processor)`` for ``--model_name_or_path`` (a Hub id or folder of a CLIP / SigLIP /
    SigLIP 2 model, ``mmft:tiny-clip`` / ``mmft:tiny-siglip``, or ``open_clip:<arch>[@<tag>]`` / ``hf-hub:<id>``,
    built through open_clip with ``open_clip_pretrained`` as the tag)."""
    name = model_args.model_name_or_path
    if name is None:
        raise UsageError("No model: pass --model_name_or_path (a CLIP or SigLIP Hub id or folder, 'mmft:tiny-clip', "
                         "or 'open_clip:ViT-B-32').")
    if is_open_clip_name(name):
        from .openclip import OpenClipDualEncoder

        return OpenClipDualEncoder.load(name, pretrained=open_clip_pretrained, dtype=model_args.dtype)
    from transformers import AutoConfig

    path = resolve_model_name(name)
    config = AutoConfig.from_pretrained(path, revision=model_args.model_revision,
                                        trust_remote_code=model_args.trust_remote_code)
    adapter = adapter_for_config(config)
    model, processor = adapter.load(path, revision=model_args.model_revision, dtype=model_args.dtype,
                                    trust_remote_code=model_args.trust_remote_code,
                                    attn_implementation=model_args.attn_implementation)
    return adapter, model, processor


# ---- saving and loading a trained folder ---------------------------------------------------------------------
def save_trained(adapter, model, processor, out_dir: str, base_name: str | None) -> None:
    """Write the trained model into ``out_dir``: the LoRA adapter (+ any fully trained tower, as PEFT's
    ``modules_to_save``) with the trained logit scale/bias in ``contrastive_head.safetensors``, or the full model;
    the processor; and ``mmft_contrastive.json`` (adapter kind, base model) for :func:`load_trained`."""
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    model = getattr(model, "module", model)
    is_peft = hasattr(model, "peft_config")
    if is_peft:
        model.save_pretrained(out_dir, safe_serialization=True)
        head = {name: p.detach().cpu().contiguous() for name, p in adapter.logit_parameters(model).items()}
        save_file(head, os.path.join(out_dir, HEAD_FILE))
    else:
        adapter.save_full(model, out_dir)
    if processor is not None and hasattr(processor, "save_pretrained"):
        processor.save_pretrained(out_dir)
    base_name = getattr(adapter, "base_name", None) or base_name  # open_clip: the name with its pretrained tag
    Path(out_dir, RUN_FILE).write_text(json.dumps({"adapter": adapter.kind, "base_model": base_name,
                                                   "lora": is_peft}, indent=2) + "\n")


def load_trained(folder: str, dtype="auto"):
    """``(adapter, model, processor)`` of a folder written by :func:`save_trained` (or any CLIP/SigLIP folder)."""
    run_file = Path(folder, RUN_FILE)
    run = json.loads(run_file.read_text()) if run_file.exists() else {}
    if run.get("adapter") == "open_clip" and not run.get("lora"):
        from .openclip import OpenClipDualEncoder

        return OpenClipDualEncoder.load_saved_full(folder, run.get("base_model"), dtype=dtype)
    if not run.get("lora"):
        from types import SimpleNamespace

        args = SimpleNamespace(model_name_or_path=folder, model_revision=None, trust_remote_code=False,
                               dtype=dtype, attn_implementation=None)
        return load_dual_encoder(args)
    from types import SimpleNamespace

    from peft import PeftModel
    from safetensors.torch import load_file

    base = SimpleNamespace(model_name_or_path=run["base_model"], model_revision=None, trust_remote_code=False,
                           dtype=dtype, attn_implementation=None)
    adapter, model, processor = load_dual_encoder(base)
    model = PeftModel.from_pretrained(model, folder)
    head = Path(folder, HEAD_FILE)
    if head.exists():
        with torch.no_grad():
            for name, value in load_file(str(head)).items():
                adapter.logit_parameters(model)[name].copy_(value)
    return adapter, model, processor
