"""Florence-2 (``microsoft/Florence-2-base``/``-large`` and their ``-ft`` versions): a DaViT vision tower, a linear
projector over pooled spatial + temporal features, and a BART encoder-decoder. A task-prompt model: the encoder
reads the image and a task prompt (``<CAPTION>``, ``<OCR>``, ``<OD>``... or free text), the decoder writes the answer.

Layout (transformers ``models/florence2``)::

    encoder:  <image> x image_seq_length  <s> prompt </s>        (Florence2Processor writes all of it)
    decoder:  </s>(decoder start)  answer  </s>                  labels: answer </s>

Quirks, handled here and by the collator's ``encoder_decoder`` path:

- No chat template: ``CHAT_TEMPLATE`` renders the user text (the prompt) then the answer and ``</s>``. The collator
  gives the processor the prompt alone (the text before the answer), which ``Florence2Processor`` turns into the
  encoder input: task tokens become their prompts (``<CAPTION>`` -> "What does the image describe?"), and it writes
  the image tokens, ``<s>`` and ``</s>`` itself, so the template writes none of them.
- Labels are the decoder's: the answer plus ``</s>``, right-padded with -100; the model shifts them right from its
  ``decoder_start_token_id`` (``</s>``), exactly as generation starts, so the decoder never sees a token at training
  time that it would not produce or be given at inference. (The original checkpoints emit a ``<s>`` after the
  decoder start; fine-tuned here, the model learns to answer right away.)
- Prompt-style: multi-turn records are folded into one prompt and their last answer. One image per sample, always:
  the processor writes the image tokens into every prompt of a batch.
- Parts: ``model.vision_tower``, ``model.multi_modal_projector``, ``model.language_model`` (the BART encoder and
  decoder: LoRA lands on both), ``lm_head``.
"""

from __future__ import annotations

from . import MESSAGE_TEXT_TEMPLATE, STANDARD_PARTS, Family, register

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    + MESSAGE_TEXT_TEMPLATE
    + "{%- if message['role'] == 'user' -%}{{ text }}"
    "{%- elif message['role'] == 'assistant' -%}{{ text }}{{ eos_token }}"
    "{%- else -%}{{ raise_exception('Florence-2 takes a prompt and an answer, got a ' + message['role'] + ' turn.') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
FLORENCE2 = register(
    Family(
        name="florence2",
        model_types=("florence2",),
        processor_classes=("Florence2Processor",),
        **STANDARD_PARTS,
        max_images=1,
        text_only=False,
        chat_template=CHAT_TEMPLATE,
        prompt_style=True,
        encoder_decoder=True,
        padding_free_refusal="it is an encoder-decoder model; padding-free packing is for decoder-only models",
    )
)
