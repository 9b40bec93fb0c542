"""SmolVLM2 (``model_type: smolvlm``): Idefics3's architecture with its own processor (images and videos).

SmolVLM v1 checkpoints (``HuggingFaceTB/SmolVLM-Instruct`` ...) are ``model_type: idefics3`` with an
``Idefics3Processor``, so they are served by ``mmft.families.idefics3``; this module covers SmolVLM2 and later.

Where the parts live (``modeling_smolvlm.py``): ``model.vision_model`` (``SmolVLMVisionTransformer``),
``model.connector`` (``SmolVLMConnector``: pixel shuffle, ``scale_factor`` 3 or 4 in the real checkpoints, +
``modality_projection``), ``model.text_model`` and the top-level ``lm_head``.

Nothing in the collator path needs overriding: each ``<image>`` is expanded into tiles + a global image wrapped in
``<fake_token_around_image>`` / ``<row_i_col_j>`` / ``<global-img>``; pixels are zero-padded per sample to the batch's
most images and the model drops the all-zero padding images, so several images per sample and text-only samples in
a batch with image samples both work. Videos (``<video>``) are not a record type mmft trains on.

The processor needs the ``num2words`` package (``SmolVLMProcessor.__init__`` raises ImportError without it, even for
images only).

Chat template: the real checkpoints ship ``<|im_start|>User:<image>question<end_of_utterance>\\nAssistant: answer
<end_of_utterance>\\n`` (``processing_smolvlm.DEFAULT_CHAT_TEMPLATE``); the fallback below is that layout, used only
for a processor saved without one.
"""

from . import CONNECTOR_PARTS, Family, register

# processing_smolvlm.DEFAULT_CHAT_TEMPLATE, plus string content.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}"
    "{% elif line['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
SMOLVLM = register(
    Family(
        name="smolvlm",
        model_types=("smolvlm",),
        processor_classes=("SmolVLMProcessor",),
        **CONNECTOR_PARTS,
        lm_head=("lm_head",),
        chat_template=CHAT_TEMPLATE,
    )
)
