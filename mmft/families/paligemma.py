"""PaliGemma 1 and 2 (``google/paligemma-*``, ``google/paligemma2-*``, the ``-mix`` checkpoints): SigLIP vision tower,
a one-layer linear projector, a Gemma / Gemma 2 text model. A prefix-LM, not a chat model.

Its layout (``PaliGemmaProcessor`` with ``suffix=``) is::

    <image> x image_seq_length  <bos>  prompt  \\n  |  answer  <eos>
    '----------------- prefix (token_type_ids 0) ---'   '- suffix (1) -'

and the model (``PaliGemmaModel.forward``: ``block_sequence_ids = where(token_type_ids == 0, 0, -1)``) lets every
prefix token attend to every other prefix token, in both directions, while suffix tokens are causal.

Quirks, all handled here (transformers ``models/paligemma``):

- The processor ships no chat template: ``CHAT_TEMPLATE`` below renders the layout. It writes the image(s), the
  prompt, and for the answer ``\\n`` + answer + ``<eos>``; it writes neither ``<bos>`` nor a generation prompt,
  because ``PaliGemmaProcessor.prepare_inputs_layout`` rewrites every text that holds ``<image>``: it inserts
  ``<bos>`` right after the last ``<image>`` and appends ``\\n`` at the very end. A generation prompt therefore
  becomes exactly ``<image>...<bos>prompt\\n``; a training text gets one extra ``\\n`` after its final ``<eos>``
  (never attended to by earlier tokens, never labelled: harmless).
- ``token_type_ids``: without a ``suffix`` the processor marks every token 0 (prefix). Trained like that, the
  answer would sit in the bidirectional prefix and every position could see the tokens it must predict (a label
  leak: the loss falls to zero and nothing is learned). ``finalize_batch`` sets 1 from the first answer token on.
- The ``\\n`` between prompt and answer is part of the prefix (the processor writes it at inference, the model never
  has to produce it), so ``finalize_batch`` takes the label off the first supervised token of each turn, which is
  that separator: the template writes ``\\n`` right before each answer, and Gemma's tokenizer keeps newlines as
  tokens of their own.
- The processor always returns ``labels`` (all -100 without a suffix); they are dropped in generation batches.
- One image per sample (``max_images=1``): the checkpoints are trained with exactly one image, and all images must
  precede ``<bos>``, so the image must be in the first user turn. Every sample needs an image: the processor
  raises without images, and in a mixed batch it would insert ``<bos>`` at a wrong offset of an image-less text.
- Multi-turn is not PaliGemma's format. Records with several turns are trained as one prefix (image, ``<bos>``,
  first question, ``\\n``) followed by one causal suffix holding everything after it (``answer1<eos>question2\\n
  answer2<eos>``), with every answer supervised; nothing leaks, since each later question is causal too. When
  generating a later turn, the processor's prompt is all prefix (bidirectional over the earlier turns), which the
  training layout did not have; single-turn records, the format of every PaliGemma dataset, match exactly.
- No system turn (PaliGemma has no such thing; fold an instruction into the question).
"""

from __future__ import annotations

import torch

from . import STANDARD_PARTS, Family, UnsupportedRecordError, register

IGNORE_INDEX = -100  # mmft.train.labels.IGNORE_INDEX (not imported: the collator imports this package)

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}"
    "{%- for item in message['content'] if item['type'] == 'image' -%}<image>{%- endfor -%}"
    "{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}"
    "{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{%- endif -%}"
    "{{ eos_token }}"
    "{%- else -%}"
    "{{ raise_exception('PaliGemma takes only user and assistant turns, got a ' + message['role'] + ' turn.') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


class PaliGemmaFamily(Family):
    def finalize_batch(self, batch: dict, mode: str) -> dict:
        if mode != "train":
            batch.pop("labels", None)  # the processor's backward-compatibility labels, all -100
            return batch
        labels = batch["labels"]
        token_type_ids = torch.zeros_like(batch["input_ids"])
        for row in range(labels.shape[0]):
            supervised = (labels[row] != IGNORE_INDEX).nonzero().flatten().tolist()
            if not supervised:
                continue
            starts = [p for i, p in enumerate(supervised) if i == 0 or supervised[i - 1] != p - 1]
            for start in starts:
                labels[row, start] = IGNORE_INDEX  # the "\n" separator: prefix, written by the processor
            token_type_ids[row, starts[0] + 1:] = 1  # the suffix: causal, from the first answer token on
        batch["labels"] = labels
        batch["token_type_ids"] = token_type_ids
        return batch

    def check_record(self, record: dict) -> None:
        super().check_record(record)
        messages = record.get("messages") or []
        if any(message["role"] == "system" for message in messages):
            raise UnsupportedRecordError(
                f"record {record.get('id')!r} has a system turn; {self.name} models have no system prompt. "
                "Drop it or fold the instruction into the question."
            )
        user_turns = [message for message in messages if message["role"] == "user"]
        for message in user_turns[1:]:
            content = message["content"]
            if not isinstance(content, str) and any(item.get("type") == "image" for item in content):
                raise UnsupportedRecordError(
                    f"record {record.get('id')!r} has an image after its first question; {self.name} models take "
                    "the image before the (first) prompt. Move it to the first user turn."
                )


# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
PALIGEMMA = register(
    PaliGemmaFamily(
        name="paligemma",
        model_types=("paligemma",),
        padding_free_refusal=("it attends bidirectionally over the image and prompt prefix, which the causal "
                              "varlen kernel cannot express"),
        processor_classes=("PaliGemmaProcessor",),
        **STANDARD_PARTS,
        max_images=1,
        text_only=False,
        chat_template=CHAT_TEMPLATE,
    )
)
