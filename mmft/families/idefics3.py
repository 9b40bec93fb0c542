"""Idefics3 (and SmolVLM v1, whose checkpoints are ``model_type: idefics3``): a SigLIP vision tower, a
pixel-shuffle connector and a Llama-style text model.

Where the parts live (``modeling_idefics3.py``): ``model.vision_model`` (``Idefics3VisionTransformer``),
``model.connector`` (``Idefics3Connector``: pixel shuffle + ``modality_projection``), ``model.text_model`` and the
top-level ``lm_head``.

Nothing in the collator path needs overriding: the processor expands each ``<image>`` the template writes into
``<fake_token_around_image><row_i_col_j><image>*image_seq_len ... <global-img><image>*image_seq_len
<fake_token_around_image>`` (tiles + global image), batches pixels as ``(batch, max_images, 3, H, W)`` zero-padded
with a ``pixel_attention_mask``, and the model drops the all-zero padding images, so several images per sample and
text-only samples in a batch with image samples both work. Only ``<image>`` is replaced by image features; the
wrapper tokens are ordinary text ids that never get labels because they are not in the rendered conversation.

Chat template: the real checkpoints ship ``User:<image>question<end_of_utterance>\\nAssistant: answer
<end_of_utterance>\\n``; the fallback below is the same layout (Idefics3-8B-Llama3's, which starts with
``<|begin_of_text|>``), used only for a processor saved without one.
"""

from . import CONNECTOR_PARTS, Family, register
from .idefics2 import CHAT_TEMPLATE as IDEFICS2_CHAT_TEMPLATE

# Idefics3-8B-Llama3's template is Idefics2's after Llama 3's BOS (plus string content, as there).
CHAT_TEMPLATE = "<|begin_of_text|>" + IDEFICS2_CHAT_TEMPLATE

# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
IDEFICS3 = register(
    Family(
        name="idefics3",
        model_types=("idefics3",),
        processor_classes=("Idefics3Processor",),
        **CONNECTOR_PARTS,
        lm_head=("lm_head",),
        chat_template=CHAT_TEMPLATE,
    )
)
