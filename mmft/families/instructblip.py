"""InstructBLIP (``Salesforce/instructblip-vicuna-*``, ``-flan-t5-*``): BLIP-2's vision tower, Q-former and projection,
with an instruction-aware Q-former: the Q-former also reads the instruction (through its own BERT tokenizer), so the
query tokens pick the image features the instruction asks about. A prompt model: instruction in, answer out.

Layout (transformers ``models/instructblip``)::

    language model:  <image> x num_query_tokens  <s>  instruction  |  ' ' answer </s>
    Q-former:        [CLS] instruction [SEP]  (qformer_input_ids, qformer_attention_mask)

Quirks, handled here:

- No chat template: the BLIP-2 prompt layout (``mmft.families.blip_2.CHAT_TEMPLATE``) renders the instruction then
  the answer; the processor prepends the query tokens, which count as image tokens and are never supervised.
- ``InstructBlipProcessor`` gives the Q-former tokenizer the *whole* text. In training that text holds the answer, and
  the Q-former is bidirectional: its query tokens, which sit before every text token, would carry the answer to the
  language model (a label leak: the loss falls without learning to answer). ``prompt_inputs`` re-tokenises the
  prompt alone (the text before the supervised answer, without the language model's BOS) for the Q-former, in
  training and generation alike, as InstructBLIP was trained.
- Prompt-style: multi-turn records are folded into one instruction and their last answer. One image per sample,
  always (the processor prepends query tokens to every row).
- Parts as in BLIP-2: ``vision_model``, ``language_projection`` (projector), ``language_model``; the Q-former is
  "other".
"""

from __future__ import annotations

from typing import Any

from . import register
from .blip_2 import BLIP_2_FIELDS, Blip2Family


class InstructBlipFamily(Blip2Family):
    def prompt_inputs(self, processor, prompts: list[str], mode: str) -> dict[str, Any]:
        bos = processor.tokenizer.bos_token or ""
        instructions = [prompt.removeprefix(bos) for prompt in prompts]
        encoded = processor.qformer_tokenizer(instructions, padding=True, return_tensors="pt")
        return {"qformer_input_ids": encoded["input_ids"], "qformer_attention_mask": encoded["attention_mask"]}


INSTRUCTBLIP = register(
    InstructBlipFamily(
        name="instructblip", model_types=("instructblip",), processor_classes=("InstructBlipProcessor",),
        **BLIP_2_FIELDS,
    )
)
