"""Kosmos-2 (``microsoft/kosmos-2-patch14-224``): a CLIP vision tower, an image-to-text projection whose 64 latent
queries attend over the patches, and a decoder-only text model (``text_model``: ``Kosmos2TextForCausalLM``). A
prompt model with grounding: ``<grounding>`` before a prompt asks for ``<phrase>...</phrase><object><patch_index_..>
</object>`` links; plain prompts ("Question: ... Answer:") get plain text.

Layout (``Kosmos2Processor``)::

    <s> <image> [64 image positions] </image> ' ' prompt  |  ' ' answer </s>
    '-------- the processor writes these -------'            '- supervised -'

Quirks, handled here:

- No chat template: ``CHAT_TEMPLATE`` writes the prompt (the user text as given, so a ``<grounding>`` prefix in the
  data stays the tag token the model knows) then the answer and ``</s>``, with a space before each, as the processor
  strips the text and joins it to ``</image>`` with one space.
- ``processor_kwargs``: ``add_special_tokens=True`` is how the processor writes ``<s>`` (as text, before the image
  block) and places ``image_embeds_position_mask`` (the 64 positions whose embeddings the model replaces with the
  projected image); with ``False`` the real checkpoints would lose their BOS.
- The processor pads by ``tokenizer.padding_side``, not by the ``padding_side`` argument, so generation batches come
  back right-padded; ``finalize_batch`` moves each row's padding to the left (ids, attention mask and image
  positions together).
- Parts: ``vision_model``, ``image_to_text_projection`` (projector), ``text_model.model`` (language model; its
  ``lm_head`` is ``text_model.lm_head``), so LoRA finds the text decoder (issue #19: "Cannot find the language
  model of Kosmos2ForConditionalGeneration").
- Prompt-style: multi-turn records are folded into one prompt and their last answer. One image per sample, always
  (a batch with images gives every row an image block).
"""

from __future__ import annotations

from typing import Any

from . import MESSAGE_TEXT_TEMPLATE, Family, move_padding, register

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    + MESSAGE_TEXT_TEMPLATE
    + "{%- if message['role'] == 'user' -%}{{ ' ' + text if text else '' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ ' ' + text }}{{ eos_token }}"
    "{%- else -%}{{ raise_exception('Kosmos-2 takes a prompt and an answer, got a ' + message['role'] + ' turn.') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

ROW_KEYS = ("input_ids", "attention_mask", "image_embeds_position_mask")


class Kosmos2Family(Family):
    def image_placeholders(self, processor) -> list[str]:
        return [processor.boi_token]

    def processor_kwargs(self, mode: str) -> dict[str, Any]:
        return {"add_special_tokens": True}

    def finalize_batch(self, batch: dict, mode: str) -> dict:
        if mode != "generate":
            return batch
        return move_padding(batch, ROW_KEYS, to="left")  # generation continues from each row's last token


# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
KOSMOS2 = register(
    Kosmos2Family(
        name="kosmos2",
        model_types=("kosmos-2",),
        processor_classes=("Kosmos2Processor",),
        vision_tower=("vision_model",),
        projector=("image_to_text_projection",),
        language_model=("text_model.model",),
        lm_head=("text_model.lm_head",),
        max_images=1,
        text_only=False,
        chat_template=CHAT_TEMPLATE,
        prompt_style=True,
        padding_free_refusal="its processor writes the image block and the image-embedding positions per row",
    )
)
