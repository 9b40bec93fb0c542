"""GLM-4.1V (GLM-4.1V-9B-Thinking / -Base): GLM-4V vision tower, patch merger, GLM-4 text model with 3D RoPE.

Layout (``modeling_glm4v.py``): ``model.visual`` (Glm4vVisionModel: patch embed, blocks, conv ``downsample``) whose
``merger`` (Glm4vVisionPatchMerger) maps the downsampled patches to the text width and is the projector (the
longest matching path wins, so ``model.visual.merger`` counts as projector, the rest of ``model.visual`` as vision
tower), ``model.language_model``, ``lm_head``.

What the generic path relies on here:

- the template writes ``<|begin_of_image|><|image|><|end_of_image|>`` per image and ``Glm4vProcessor`` expands
  ``<|image|>`` (``processor.image_token``) into one token per merged 2x2 patch group; the begin/end wrappers are
  ordinary special tokens of the rendered text;
- the processor also returns ``image_grid_thw`` and ``mm_token_type_ids``, which the model needs for its 3D RoPE
  positions (they are tensors, so the collator passes them on); several images per sample and text-only samples
  work (``image_grid_thw`` is per image, positions fall back to 1D without images).

The one quirk is the real chat template (GLM-4.1V-9B-Thinking's ``chat_template.jinja``), fixed in
``prepare_processor``:

1. it prints ``msg.content`` of system and assistant turns as is, so mmft's typed content (a list of parts) would
   be rendered as its Python repr and trained on;
2. an assistant turn has no end-of-turn token: ``<|assistant|>\\n{answer}`` is followed directly by the next
   ``<|user|>``, and generation stops on the generation config's eos ids ``[<|endoftext|>, <|user|>,
   <|observation|>]`` (151329, 151336, 151338). Labels come from the assistant turn's own text, so with that template
   no supervised token would ever teach a fine-tuned model to stop.

When a processor carries that template, it is replaced by ``GLM41V_TEMPLATE``: the same layout, typed content
accepted, and each assistant turn closed with ``<|endoftext|>`` (an eos id the real checkpoints already stop on).
Templates that are not recognised (GLM-4.5V's, which also uses ``Glm4vProcessor``, or a user's own) are left alone.
"""

from __future__ import annotations

import logging

from . import MERGER_PARTS, MROPE_PADDING_FREE_REFUSAL, Family, register

logger = logging.getLogger(__name__)

# GLM-4.1V's template, with typed content in system/assistant turns and <|endoftext|> closing assistant turns.
GLM41V_TEMPLATE = r"""[gMASK]<sop>
{%- for msg in messages %}
    {%- if msg.content is string %}
        {%- set text = msg.content %}
    {%- else %}
        {%- set text = msg.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}
    {%- endif %}
    {%- if msg.role == 'system' %}
<|system|>
{{ text }}
    {%- elif msg.role == 'user' %}
<|user|>{{ '\n' }}
        {%- if msg.content is string %}
{{ msg.content }}
        {%- else %}
            {%- for item in msg.content %}
                {%- if item.type == 'video' or 'video' in item %}
<|begin_of_video|><|video|><|end_of_video|>
                {%- elif item.type == 'image' or 'image' in item %}
<|begin_of_image|><|image|><|end_of_image|>
                {%- elif item.type == 'text' %}
{{ item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
    {%- elif msg.role == 'assistant' %}
        {%- if msg.metadata %}
<|assistant|>{{ msg.metadata }}
{{ text }}<|endoftext|>
        {%- else %}
<|assistant|>
{{ text }}<|endoftext|>
        {%- endif %}
    {%- endif %}
{%- endfor %}
{% if add_generation_prompt %}<|assistant|>
{% endif %}"""


def _is_glm41v_template(template) -> bool:
    """The GLM-4.1V checkpoints' template: GLM layout, assistant content printed raw, no turn-closing token."""
    return (
        isinstance(template, str)
        and template.lstrip().startswith("[gMASK]<sop>")
        and "<|assistant|>\n{{ msg.content }}" in template
        and "<|endoftext|>" not in template
    )


class Glm4vFamily(Family):
    def prepare_processor(self, processor) -> None:
        super().prepare_processor(processor)
        if _is_glm41v_template(processor.chat_template):
            logger.info(
                "GLM-4.1V chat template: rendering typed content and closing assistant turns with <|endoftext|> "
                "(the original writes no end-of-turn token, so a fine-tuned model would never learn to stop)."
            )
            processor.chat_template = GLM41V_TEMPLATE


# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
GLM4V = register(
    Glm4vFamily(
        name="glm4v",
        model_types=("glm4v",),
        padding_free_refusal=MROPE_PADDING_FREE_REFUSAL,
        processor_classes=("Glm4vProcessor",),
        **MERGER_PARTS,
    )
)
