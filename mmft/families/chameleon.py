"""Chameleon (``facebook/chameleon-7b``, ``-30b``): early fusion. A VQ-VAE turns each image into discrete codes, and
one decoder reads them as ordinary tokens of its vocabulary (``IMGIMG...`` BPE tokens).

Where the parts live (``modeling_chameleon.py``): ``ChameleonModel`` (``model``) holds the decoder itself
(``model.embed_tokens``, ``model.layers``, ``model.norm``) and, inside it, the image tokenizer ``model.vqmodel``;
``lm_head`` is top-level. There is no ``language_model`` submodule, which is why the generic discovery found none,
and no projector: the codes go through the decoder's own token embeddings. So the language model is ``model``, and
the vision tower ``model.vqmodel`` nested in it is kept out of it (LoRA targets skip linear layers under the vision
tower; the parameter report counts ``model.vqmodel`` as vision tower: the longest matching path wins).

No gradient reaches the VQ-VAE (``vision_tokens_discrete``): its output is an ``argmin`` over the codebook, so it
can neither train nor be kept in a gradient reduction; it only runs.

Processor: ``ChameleonProcessor`` expands ``<image>`` into ``<racm3:break><image>*image_seq_length<eoss>`` and, unless
``return_for_text_completion`` is set, appends the tokenizer's ``sep_token`` to every text ("chat mode"). In a
generation prompt that would put a separator between the prompt and the answer that training never had, so it is
turned off in both modes (``processor_kwargs``); the chat template decides the layout.

Chat template: ``CHAT_TEMPLATE``, used only when the processor has none, writes ``USER: <image>question\\nASSISTANT:
answer</s>\\n``: the answer closed with the tokenizer's EOS, which generation stops on (not checked against the Hub
checkpoints' processors, unreachable here; a template of theirs is used as it is). The model never predicts image
codes (``ChameleonForConditionalGeneration`` masks their logits), and they never get labels (they are image tokens).

Several images per sample and text-only samples in a batch with image samples both work: the processor stacks the
batch's images and the model fills the ``<image>`` positions in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import Family, register

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | upper }}:"
    "{% if message['content'] is string %}{{ ' ' + message['content'] }}"
    "{% else %}{{ ' ' }}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>' }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@dataclass(frozen=True)
class ChameleonFamily(Family):
    def processor_kwargs(self, mode: str) -> dict[str, Any]:
        return {"return_for_text_completion": True}  # no chat-mode sep_token after each text


# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
CHAMELEON = register(
    ChameleonFamily(
        name="chameleon",
        model_types=("chameleon",),
        processor_classes=("ChameleonProcessor",),
        vision_tower=("model.vqmodel",),
        projector=(),
        language_model=("model",),
        lm_head=("lm_head",),
        chat_template=CHAT_TEMPLATE,
        vision_tokens_discrete=True,
    )
)
