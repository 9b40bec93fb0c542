"""Qwen3-VL (Qwen/Qwen3-VL-2B/4B/8B/32B-Instruct/-Thinking, model type ``qwen3_vl``; the MoE checkpoints
Qwen3-VL-30B-A3B / 235B-A22B, model type ``qwen3_vl_moe``, share the layout and the processor).

Layout (transformers' ``Qwen3VLForConditionalGeneration`` / ``Qwen3VLMoeForConditionalGeneration``): the vision
tower is ``model.visual`` and the projector, the ``PatchMerger`` that folds 2x2 patches into one language-model
token, lives *inside* it as ``model.visual.merger``; ``mmft.train.modeling.component_of`` matches the longest path
first, so the merger counts as projector. The DeepStack mergers (``model.visual.deepstack_merger_list``: one per tapped
vision layer, 3 in the real models, each adding projected intermediate features to the image positions of an early
text layer) are projectors too, but a family names one projector path, so they count as vision tower: frozen under
LoRA, also with ``freeze_projector=False`` (only the final merger then trains). That is safe (never a base weight
changing unasked), just narrower than "train the projector" might suggest.

For ``qwen3_vl_moe`` the experts are fused 3D parameters rather than ``nn.Linear`` layers, so the default LoRA
target (linear layers of the language model) adapts attention projections only there.

Nothing else to override: the template writes ``<|vision_start|><|image_pad|><|vision_end|>`` per image, the
processor expands ``<|image_pad|>`` (``processor.image_token``) and returns ``mm_token_type_ids``, which the model
needs for its interleaved multimodal RoPE positions. Several images per sample and text-only samples work, also
mixed in one batch.
"""

from . import MERGER_PARTS, MROPE_PADDING_FREE_REFUSAL, Family, register

# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
QWEN3_VL = register(
    Family(
        name="qwen3-vl",
        model_types=("qwen3_vl", "qwen3_vl_moe"),
        padding_free_refusal=MROPE_PADDING_FREE_REFUSAL,
        processor_classes=("Qwen3VLProcessor",),
        **MERGER_PARTS,
        lm_head=("lm_head",),
    )
)
