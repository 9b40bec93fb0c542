"""GOT-OCR 2.0 (``stepfun-ai/GOT-OCR-2.0-hf``): a SAM-style windowed ViT, a two-conv projector and a Qwen2 text model.

Where the parts live (``modeling_got_ocr2.py``): ``model.vision_tower``, ``model.multi_modal_projector``,
``model.language_model`` and the top-level ``lm_head`` (the generic layout, spelled out here).

Quirks (transformers ``models/got_ocr2``):

- ``GotOcr2Processor`` refuses images nested per sample (``[[image], [image]]``, what the collator passes) with
  "Nested images are only supported with `multi_page` set to `True`". In multi-page mode a sample's inner list is
  its pages and its one ``<imgpad>`` is replaced by all of their image tokens; with one image per sample this is
  exactly the single-image layout (``num_pages`` 1: ``<imgpad>`` x ``num_image_tokens``), so ``processor_kwargs``
  turns it on and each sample keeps its own image.
- One image per sample (``max_images=1``): the processor makes one replacement per sample, so a second
  ``<imgpad>`` in a sample finds none (``StopIteration`` in ``get_text_with_replacements``, transformers 5.25).
- Every sample needs an image (``text_only=False``): the processor raises "You must provide valid `images`" without
  any, and with a nested empty list the placeholder count no longer matches.
- The checkpoint ships no chat template ("ckpt has not chat template", the processor builds its OCR prompt by hand);
  ``CHAT_TEMPLATE`` is that prompt's layout (ChatML with no newline between turns, the checkpoint's default system
  prompt unless the record has one, ``<img><imgpad></img>\\n`` per image) with the question as the user text, and
  each answer closed with ``<|im_end|>``.
- The processor writes ``num_image_tokens`` (256, a class default ``save_pretrained`` does not store) image tokens
  per image, whatever the model: a checkpoint whose vision tower makes a different number fails in the model's
  feature count check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import STANDARD_PARTS, Family, register

SYSTEM_PROMPT = "You should follow the instructions carefully and explain your answers in detail."

CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + SYSTEM_PROMPT + "<|im_end|>' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<img><imgpad></img>\\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class GotOcr2Family(Family):
    def processor_kwargs(self, mode: str) -> dict[str, Any]:
        return {"multi_page": True}  # one page per sample: the single-image layout, with images nested per sample


# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
GOT_OCR2 = register(
    GotOcr2Family(
        name="got-ocr2",
        model_types=("got_ocr2",),
        processor_classes=("GotOcr2Processor",),
        **STANDARD_PARTS,
        lm_head=("lm_head",),
        max_images=1,
        text_only=False,
        chat_template=CHAT_TEMPLATE,
    )
)
