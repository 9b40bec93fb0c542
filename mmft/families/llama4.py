"""Llama 4 (``meta-llama/Llama-4-Scout-17B-16E(-Instruct)``, ``-Maverick-17B-128E-``): a ViT with 2-D rotary
positions and a pixel-shuffle adapter, a linear projector, and a mixture-of-experts Llama 4 text model.

Where the parts live (``modeling_llama4.py``): ``Llama4ForConditionalGeneration`` has no ``model`` wrapper:
``vision_model`` (``Llama4VisionModel``, its pixel-shuffle ``vision_adapter`` included), ``multi_modal_projector``
(one Linear) and ``language_model`` (a whole ``Llama4ForCausalLM``), whose own ``lm_head`` is the LM head, so it is
named here (``language_model.lm_head``) to keep LoRA off it. The routed experts are 3-D parameters
(``Llama4TextExperts.gate_up_proj`` / ``down_proj``), not ``nn.Linear``, so LoRA lands on the attention, the
shared expert and the dense layers' MLP. Not on the router (``Llama4Router`` is an ``nn.Linear`` that returns a
tuple, which a LoRA layer cannot wrap: ``lora_exclude``); routing is usually left alone in LoRA anyway.

The quirk: ``Llama4ImageProcessor`` rescales and normalises in bfloat16 "as in the original implementation"
(``rescale_and_normalize``), so ``pixel_values`` are always bfloat16, and ``Llama4VisionModel`` feeds them to its
patch embedding (``Llama4UnfoldConvolution``: ``nn.Unfold`` + a Linear) without casting them to its own dtype as
most vision towers do. A model in float32 (the CPU default, ``--dtype float32``) or float16 then fails with
"expected scalar type Float but found BFloat16". ``prepare_model`` (run by mmft's loaders) gives the vision model a
forward pre-hook that casts floating ``pixel_values`` to the dtype of its patch embedding weights, whatever that is
when it runs (bfloat16 checkpoints see no change). Casting in the collator instead would break bfloat16 models, and
the collator does not know the model's dtype.

Chat template: the real one (``processing_llama4.chat_template``, also the processor's default) renders every
prefix the same way (no date block without a system turn), so prefix-diff labels work. Each ``<|image|>`` is
expanded to ``<|image_start|>`` (tiles, ``<|tile_x_separator|>`` / ``<|tile_y_separator|>``) ``<|image|>`` (the
global view) ``<|patch|>`` x n ``<|image_end|>``; the ``<|patch|>`` tokens get the image features.

Several images per sample and text-only samples in a batch with image samples both work (the processor flattens the
batch's images; the model fills ``<|patch|>`` positions in order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import Family, register


def _cast_pixels_to_weights(vision_model):
    def hook(module, args, kwargs):
        weight = module.patch_embedding.linear.weight  # read at call time: after .to(), PEFT, kbit preparation
        if args and torch.is_tensor(args[0]) and args[0].is_floating_point() and args[0].dtype != weight.dtype:
            args = (args[0].to(weight.dtype), *args[1:])
        pixels = kwargs.get("pixel_values")
        if torch.is_tensor(pixels) and pixels.is_floating_point() and pixels.dtype != weight.dtype:
            kwargs["pixel_values"] = pixels.to(weight.dtype)
        return args, kwargs

    return hook


@dataclass(frozen=True)
class Llama4Family(Family):
    def prepare_model(self, model) -> None:
        vision_model = model.get_submodule(self.vision_tower[0])
        if getattr(vision_model, "_mmft_casts_pixels", False):
            return
        vision_model.register_forward_pre_hook(_cast_pixels_to_weights(vision_model), with_kwargs=True)
        vision_model._mmft_casts_pixels = True


# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
LLAMA4 = register(
    Llama4Family(
        name="llama4",
        model_types=("llama4",),
        processor_classes=("Llama4Processor",),
        vision_tower=("vision_model",),
        projector=("multi_modal_projector",),
        language_model=("language_model",),
        lm_head=("language_model.lm_head",),
        lora_exclude=("router",),  # Llama4Router(nn.Linear) returns (scores, logits): PEFT's Linear cannot wrap it
    )
)
