"""Idefics2 (``HuggingFaceM4/idefics2-8b``, ``-8b-chatty``): a SigLIP vision tower, a perceiver-resampler connector
and a Mistral text model.

Where the parts live (``modeling_idefics2.py``): ``model.vision_model``, ``model.connector`` (perceiver resampler +
``modality_projection``), ``model.text_model`` and the top-level ``lm_head``.

The quirk: ``Idefics2Processor`` rewrites text, not only the image placeholders. After expanding each ``<image>``
into ``<fake_token_around_image><image>*image_seq_len<fake_token_around_image>`` it inserts a space after a closing
``<fake_token_around_image>`` that is directly followed by a character other than whitespace or ``<``
(``closing_fake_pattern`` in ``processing_idefics2.py``, so that the next word keeps a word boundary). The question
``<image>What colour...`` is therefore tokenised as `` What`` by the processor, not as ``What``, and the label
builder, which finds the text between placeholders in the processor's ids, would not find it. ``rewrite_text``
makes the same insertion in the rendered conversation before labels are built (and the processor, finding the
space already there, adds none), so both tokenise the same text; the assistant spans are shifted past every
inserted space, and since images sit in user turns, no space ever lands inside an answer.

Several images per sample and text-only samples in a batch with image samples both work: pixels are zero-padded
per sample to the batch's most images and the model drops the all-zero padding images (as in Idefics3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import CONNECTOR_PARTS, Family, register

# The Idefics2 instruction checkpoints' template (idefics2-8b / -8b-chatty), plus string content.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


@dataclass(frozen=True)
class Idefics2Family(Family):
    def rewrite_text(self, processor, text: str, spans: list[tuple[int, int]]):
        # The processor's closing_fake_pattern, seen from the unexpanded text: the closing fake token of an image
        # block sits where the placeholder ends (adjacent images merge into one block, so `<image><image>` inserts
        # nothing between them).
        image_token = re.escape(getattr(processor, "image_token", None) or "<image>")
        inserts = [match.end() for match in re.finditer(rf"{image_token}(?=[^\s<])", text)]
        if not inserts:
            return text, spans
        pieces, previous = [], 0
        for position in inserts:
            pieces += [text[previous:position], " "]
            previous = position
        pieces.append(text[previous:])

        def shifted(offset: int) -> int:
            return offset + sum(1 for position in inserts if position <= offset)

        return "".join(pieces), [(shifted(start), shifted(end)) for start, end in spans]


# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
IDEFICS2 = register(
    Idefics2Family(
        name="idefics2",
        model_types=("idefics2",),
        processor_classes=("Idefics2Processor",),
        **CONNECTOR_PARTS,
        lm_head=("lm_head",),
        chat_template=CHAT_TEMPLATE,
    )
)
