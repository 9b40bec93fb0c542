"""Llama 3.2 Vision (``meta-llama/Llama-3.2-11B-Vision(-Instruct)``, ``-90B-``): a tiled vision encoder, a linear
projector, and a Llama 3 text model that reads the image through gated cross-attention layers.

Quirks (transformers ``models/mllama``):

- An image is ONE ``<|image|>`` token in the text; it is not expanded. The processor instead returns
  ``cross_attention_mask`` (batch, text length, images, tiles): each text token after an ``<|image|>`` attends to
  that image's tiles. ``pixel_values`` are (batch, images, tiles, 3, tile, tile) with ``aspect_ratio_ids`` /
  ``aspect_ratio_mask`` per image. All of it passes through to the model unchanged.
- Parts: ``model.vision_model`` (tower), ``model.multi_modal_projector`` (a single Linear), ``model.language_model``
  (a ``MllamaTextModel``; its cross-attention layers, including their ``k_proj``/``v_proj`` over image states, are
  part of the language model and get LoRA like the self-attention layers).
- Several images per sample work (one cross-attention range per image).
- Text-only samples are refused (``text_only=False``), although the model runs them (a batch with no image at all
  skips the cross-attention layers): mixed in a batch with image samples they break ``MllamaImageProcessor``
  (transformers 5.23). ``image_transforms._reconstruct_nested_structure`` pops ``"_num_sublists"`` from the
  grouping index, and ``MllamaImageProcessor._preprocess`` calls ``reorder_images`` twice with that same index
  (pixels, then aspect ratios). So an image-less sample FIRST in the batch raises ``IndexError`` in
  ``pad_batches_and_tiles`` (``batch_images[0][0]``), and image-less samples LAST get pixel rows but no
  ``aspect_ratio_ids`` rows, and the vision model fails with ``shape '[2, -1]' is invalid for input of size 1``.
  Only an image-less sample between image samples works, so whether a shuffled batch trains would be luck.
- The chat template (the real one) writes a system block with the knowledge cutoff and today's date when the user
  gives a system message OR the conversation has no image. With no system turn, a conversation whose first image
  is in a later user turn would render its first turns differently depending on what follows, so its assistant
  spans cannot be found: such records are refused by ``check_record`` with a clear message.
"""

from . import Family, UnsupportedRecordError, register


def _has_image(message) -> bool:
    content = message["content"]
    return not isinstance(content, str) and any(item.get("type") == "image" for item in content)


class MllamaFamily(Family):
    def check_record(self, record: dict) -> None:
        super().check_record(record)
        messages = record.get("messages") or []
        if any(message["role"] == "system" for message in messages):
            return  # the system block is always written: every prefix renders the same way
        user_turns = [message for message in messages if message["role"] == "user"]
        if user_turns and not _has_image(user_turns[0]) and any(_has_image(m) for m in user_turns[1:]):
            raise UnsupportedRecordError(
                f"record {record.get('id')!r} has its first image after the first question; the {self.name} chat "
                "template writes a dated system block only for conversations without images, so the first turns "
                "would render differently once the image turn is added. Move the image to the first user turn or "
                "give the record a system message."
            )


# Declarative on purpose: every family registers one Family(...) with the same fields, spelt out here so that
# each family reads in one file; only the module layouts several families share are named in mmft.families.
MLLAMA = register(
    MllamaFamily(
        name="mllama",
        model_types=("mllama",),
        processor_classes=("MllamaProcessor",),
        vision_tower=("model.vision_model",),
        projector=("model.multi_modal_projector",),
        language_model=("model.language_model",),
        text_only=False,
    )
)
