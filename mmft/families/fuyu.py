"""Fuyu (``adept/fuyu-8b``): no vision encoder at all. Each image is cut into patches (30x30 on the Hub checkpoint),
and one linear layer (``vision_embed_tokens``) maps each raw patch into the width of a Persimmon decoder
(``language_model``), which reads them in place of image tokens. A prompt model, not a chat model: the processor
writes the patch stream, the BOS and the boundary-of-answer token (``<0x04>``, the byte ``\\x04``) around the prompt,
and the model answers after it.

Layout (``FuyuProcessor``)::

    |SPEAKER| x row_width |NEWLINE|  (one per patch row)  <s> prompt \\n <0x04>  |  answer |ENDOFTEXT|
    '------------- the processor writes these -------------'          '-- ours --'  '-- supervised ---'

Quirks, handled here:

- No chat template: ``CHAT_TEMPLATE`` writes the prompt (the user text with a newline, as Adept's prompts end) and
  then ``<0x04>`` and the answer with ``|ENDOFTEXT|`` (the tokenizer's EOS). The ``<0x04>`` is the generation
  prompt, so it stays out of the supervised span: the model is taught the answer and its EOS, never the boundary.
- The processor appends ``<0x04>`` to every text it is given (its generation layout). ``rewrite_text`` hands a
  generation prompt over without the template's own ``<0x04>``, so the prompt ends with exactly one; a training text
  comes back with one more after the EOS, which ``finalize_batch`` removes (it is the last column of every row: the
  processor pads on the left).
- The processor pads on the left in training too (it ignores ``padding_side``); ``finalize_batch`` moves each
  training row's padding to the right, as the trainer expects (the labels are built on the real tokens, wherever
  they sit). Generation rows stay left-padded.
- ``processor_kwargs``: ``return_legacy_image_output=False``, so patches come back as ``pixel_values`` (the legacy
  ``image_patches`` key is deprecated and warns on every batch).
- The patch stream is ``|SPEAKER|`` tokens (whose embeddings the model replaces with the projected patches) and
  ``|NEWLINE|`` tokens ending each patch row: both are image tokens, never supervised.
- Parts: ``model.vision_embed_tokens`` is the whole vision path (a linear patch embedding): the vision tower here,
  frozen by default (``--freeze_vision_tower false`` trains it in full fine-tuning; under LoRA only
  ``--lora_target all-linear`` reaches it). No separate projector. The language model is ``model.language_model``
  (``PersimmonModel``), the head ``lm_head``.
- One image per sample, always: the processor writes one patch stream per text, and writes ``<s>`` and the
  boundary only for samples with an image, so a text-only sample would be laid out unlike anything the model saw.
- Prompt-style: multi-turn records are folded into one prompt and their last answer.
"""

from __future__ import annotations

from typing import Any

from . import MESSAGE_TEXT_TEMPLATE, Family, move_padding, register

BOUNDARY_OF_ANSWER = "<0x04>"  # transformers.models.fuyu.processing_fuyu.BEGINNING_OF_ANSWER_STRING

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    + MESSAGE_TEXT_TEMPLATE
    + "{%- if message['role'] == 'user' -%}{{ text + '\\n' if text else '' }}"
    "{%- elif message['role'] == 'assistant' -%}" + BOUNDARY_OF_ANSWER + "{{ text }}{{ eos_token }}"
    "{%- else -%}{{ raise_exception('Fuyu takes a prompt and an answer, got a ' + message['role'] + ' turn.') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}" + BOUNDARY_OF_ANSWER + "{%- endif -%}"
)

ROW_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids")


class FuyuFamily(Family):
    def image_placeholders(self, processor) -> list[str]:
        return [processor.image_token, processor.image_newline_token]  # "|SPEAKER|", "|NEWLINE|"

    def rewrite_text(self, processor, text: str, spans: list[tuple[int, int]]) -> tuple[str, list[tuple[int, int]]]:
        if not spans and text.endswith(BOUNDARY_OF_ANSWER):  # a generation prompt: the processor appends it itself
            text = text.removesuffix(BOUNDARY_OF_ANSWER)
        return text, spans

    def processor_kwargs(self, mode: str) -> dict[str, Any]:
        return {"return_legacy_image_output": False}

    def finalize_batch(self, batch: dict, mode: str) -> dict:
        if mode != "train" or batch["input_ids"].shape[1] == 0:
            return batch
        mask = batch["attention_mask"]
        last = batch["input_ids"][:, -1]
        # Left-padded rows, each ending with the processor's extra boundary token (one id, never supervised).
        if bool(mask[:, -1].all()) and bool((last == last[0]).all()) and bool((batch["labels"][:, -1] < 0).all()):
            for key in ROW_KEYS:
                if key in batch:
                    batch[key] = batch[key][:, :-1]
        return move_padding(batch, ROW_KEYS, to="right")  # left padding -> right: real tokens to the front


# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
FUYU = register(
    FuyuFamily(
        name="fuyu",
        model_types=("fuyu",),
        processor_classes=("FuyuProcessor",),
        vision_tower=("model.vision_embed_tokens", "vision_embed_tokens"),
        projector=(),
        language_model=("model.language_model", "language_model"),
        lm_head=("lm_head",),
        max_images=1,
        text_only=False,
        chat_template=CHAT_TEMPLATE,
        prompt_style=True,
        padding_free_refusal="its processor writes each row's image patch stream and pads every row on the left",
    )
)
