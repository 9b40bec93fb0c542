"""Gemma 3 (4B / 12B / 27B, MedGemma): SigLIP vision tower, a pooling projector, Gemma 3 text model.

Quirks (transformers ``models/gemma3``):

- The chat template writes ``<start_of_image>`` (the tokenizer's ``boi_token``) for an image, and the processor
  replaces each one with ``\\n\\n<start_of_image>`` + ``image_seq_length`` x ``<image_soft_token>`` +
  ``<end_of_image>\\n\\n``. So the placeholder the label builder splits the text at is the boi token, not the soft
  token the model fills with image features. ``Gemma3Processor`` sets ``image_token = boi_token``, so the default
  hook would find it too; it is spelled out here because the two differ.
- The processor returns ``token_type_ids`` (1 on the soft image tokens): the model uses them to let the tokens of
  one image attend to each other bidirectionally. They are passed through to the model as is, in training and in
  generation (``prepare_inputs_for_generation`` uses them on the prefill step only).
- Several images per sample and text-only samples both work: the processor takes a nested image list with empty
  entries, and ``token_type_ids`` are simply all 0 for a text-only row.
- ``gemma3_text`` (Gemma 3 1B, text only) is a ``Gemma3ForCausalLM`` and is not a VLM, so it is not listed.
"""

from . import STANDARD_PARTS, Family, register


class Gemma3Family(Family):
    def image_placeholders(self, processor) -> list[str]:
        # The template's image marker is <start_of_image>; <image_soft_token> only appears after expansion.
        return [getattr(processor, "boi_token", None) or processor.tokenizer.boi_token]


# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
GEMMA3 = register(
    Gemma3Family(
        name="gemma3",
        model_types=("gemma3",),
        processor_classes=("Gemma3Processor",),
        **STANDARD_PARTS,
    )
)
