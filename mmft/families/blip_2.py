"""BLIP-2 (``Salesforce/blip2-opt-*``, ``blip2-flan-t5-*``): a ViT (EVA-CLIP) vision tower, a Q-former whose learned
query tokens read the image, a linear projection to the language model's width, and OPT (decoder-only) or Flan-T5.
A prompt model, not a chat model: it was trained on ``image -> caption`` and ``Question: ... Answer: ...`` prompts.

Layout (transformers ``models/blip_2``)::

    <image> x num_query_tokens  </s>(bos)  prompt  |  ' ' answer </s>(eos)
    '------------ the processor prepends these ----' '- supervised -'

Quirks, all handled here:

- ``Blip2Processor`` ships no chat template: ``CHAT_TEMPLATE`` renders the prompt (the user text; empty for plain
  captioning) then the answer, with a space between them only when there is a prompt, as the BLIP-2 VQA prompts
  have it. The space belongs to the answer: byte-level BPE (OPT's tokenizer) starts the answer's first word with
  it, so a generation prompt ending right after the prompt text tokenises exactly as the training prefix does.
- ``Blip2Processor.__call__`` tokenises the text, then prepends ``num_query_tokens`` image tokens to every row (after
  padding: with left padding the pads sit between the query tokens and the text, which the attention mask covers).
  The query tokens count as image tokens: they are in each sample's length, and never supervised.
- Prompt-style (``prompt_style``): multi-turn records are folded into one prompt and their last answer.
- One image per sample, always (``pixel_values`` is required by ``Blip2ForConditionalGeneration.forward``, and the
  processor prepends the query tokens to every row of a batch).
- Parts: ``vision_model`` (tower), ``language_projection`` (the projector: the one layer that maps the Q-former's
  output to the language model), ``language_model`` (an ``OPTForCausalLM``, its ``lm_head`` inside). The Q-former and
  its ``query_tokens`` count as "other": frozen under LoRA, trained in full fine-tuning.
- Flan-T5 checkpoints are encoder-decoder (``language_model`` is a ``T5ForConditionalGeneration``): their family is
  the same; evaluation slices generated sequences by ``mmft.train.generation_eval.is_encoder_decoder``. Training them
  needs decoder labels (``encoder_decoder``), which a Family cannot switch per checkpoint yet: not covered here.
"""

from __future__ import annotations

from . import MESSAGE_TEXT_TEMPLATE, Family, register

CHAT_TEMPLATE = (
    "{%- set ns = namespace(prompt='') -%}"
    "{%- for message in messages -%}"
    + MESSAGE_TEXT_TEMPLATE
    + "{%- if message['role'] == 'user' -%}{{ bos_token }}{{ text }}{%- set ns.prompt = text -%}"
    "{%- elif message['role'] == 'assistant' -%}{{ ' ' if ns.prompt else '' }}{{ text }}{{ eos_token }}"
    "{%- else -%}{{ raise_exception('BLIP-2 takes a prompt and an answer, got a ' + message['role'] + ' turn.') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


class Blip2Family(Family):
    def image_placeholders(self, processor) -> list[str]:
        return [str(processor.image_token)]  # an AddedToken on processors saved by older transformers


# What InstructBLIP shares with BLIP-2 (its tower, Q-former and projection, the prompt layout, one image per
# sample): mmft.families.instructblip registers its own names with these fields.
BLIP_2_FIELDS = {
    "vision_tower": ("vision_model",),
    "projector": ("language_projection",),
    "language_model": ("language_model.model", "language_model"),
    "lm_head": ("language_model.lm_head", "lm_head"),
    "max_images": 1,
    "text_only": False,
    "chat_template": CHAT_TEMPLATE,
    "prompt_style": True,
    "padding_free_refusal": "its processor prepends the Q-former's query tokens to every padded row",
}

BLIP_2 = register(
    Blip2Family(name="blip-2", model_types=("blip-2",), processor_classes=("Blip2Processor",), **BLIP_2_FIELDS)
)
