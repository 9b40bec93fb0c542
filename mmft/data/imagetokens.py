"""How many tokens one image of a given size adds to a sample, by the processor's own rules.

Used by :mod:`mmft.data.lengths` (each record's length before training, from image headers) and by the collator's
shrink
policy (the image size that fits ``max_length``, found by arithmetic where the processor's count is predictable). Its
own module because both need it and :mod:`mmft.data.lengths` imports the collator.
"""

from __future__ import annotations

import logging

from PIL import Image

from .image_geometry import fit_to_pixels

logger = logging.getLogger(__name__)

__all__ = ["ImageTokenCounter", "counter_for"]


class ImageTokenCounter:
    """How many tokens one image of a given size adds to a sample, by the processor's own rules.

    The count is the processor's expansion of one image placeholder *minus the placeholder itself*, so that
    ``len(tokenised rendered text) + sum(counter(size) for each image)`` is the sample's length after expansion.

    Two ways, the first that is right for this processor wins:

    - the processor's own helper, ``processor._get_num_multimodal_tokens(image_sizes=...)`` (LLaVA: a fixed count;
      Qwen2-VL, LLaVA-NeXT, Idefics3, ...: computed from the size, pure arithmetic). Trusted only after checking it
      against a real processor call on a few probe sizes (the helper may leave out wrapper tokens, which shows as a
      constant offset and is added; anything else disqualifies it);
    - otherwise, processing one blank image of each distinct size once and caching the result per size.

    Args:
        processor: the model's processor.
        placeholder: the image placeholder token the chat template writes (``VLMCollator``'s family knows it).
        processor_kwargs: extra processor-call arguments the collator passes (the family's), so counts match.
        max_pixels: the collator's ``max_pixels`` cap: sizes are capped the same way before counting.
    """

    PROBE_SIZES = ((64, 64), (200, 120), (90, 300), (37, 53))

    def __init__(self, processor, placeholder: str, processor_kwargs: dict | None = None,
                 max_pixels: int | None = None):
        self.processor = processor
        self.placeholder = placeholder
        self.processor_kwargs = dict(processor_kwargs or {})
        self.max_pixels = max_pixels
        tokenizer = getattr(processor, "tokenizer", processor)
        self._placeholder_len = len(tokenizer(placeholder, add_special_tokens=False)["input_ids"])
        self._measured: dict[tuple[int, int], int] = {}
        self._counted: dict[tuple[int, int], int] = {}
        self._offset: int | None = None
        self.method = self._choose_method()

    def capped(self, width: int, height: int) -> tuple[int, int]:
        """The size the processor will see: the collator's ``max_pixels`` downscale, aspect kept."""
        if self.max_pixels is not None and width * height > self.max_pixels:
            return fit_to_pixels(width, height, self.max_pixels)
        return width, height

    def measure(self, width: int, height: int) -> int:
        """Tokens added by one ``width`` x ``height`` image, from a real processor call on a blank image (cached)."""
        key = (width, height)
        if key not in self._measured:
            kwargs = {k: v for k, v in self.processor_kwargs.items() if k not in ("padding_side",)}
            out = self.processor(text=[self.placeholder], images=[[Image.new("RGB", key)]],
                                 add_special_tokens=False, **kwargs)
            self._measured[key] = len(out["input_ids"][0]) - self._placeholder_len
        return self._measured[key]

    def _helper(self, width: int, height: int) -> int:
        data = self.processor._get_num_multimodal_tokens(image_sizes=[[height, width]])
        return int(data["num_image_tokens"][0] if isinstance(data, dict) else data.num_image_tokens[0])

    def _choose_method(self) -> str:
        if not hasattr(self.processor, "_get_num_multimodal_tokens"):
            return "measured"
        try:
            offsets = {self.measure(w, h) - self._helper(w, h) for w, h in self.PROBE_SIZES}
        except Exception as error:  # noqa: BLE001 - a helper that cannot answer is simply not used
            logger.info("Image token counts: %s._get_num_multimodal_tokens unusable (%s); measuring per size.",
                        type(self.processor).__name__, error)
            return "measured"
        if len(offsets) != 1:
            logger.info("Image token counts: %s._get_num_multimodal_tokens disagrees with the processor on probe "
                        "sizes; measuring per size.", type(self.processor).__name__)
            return "measured"
        self._offset = offsets.pop()
        return "helper"

    def __call__(self, width: int, height: int) -> int:
        width, height = self.capped(width, height)
        if self.method == "helper":
            key = (width, height)
            if key not in self._counted:  # the helper merges processor kwargs on every call: ~1 ms
                self._counted[key] = self._helper(width, height) + self._offset
            return self._counted[key]
        return self.measure(width, height)


def counter_for(collator) -> ImageTokenCounter:
    """The counter for a ``VLMCollator``: its processor, family placeholder and processor kwargs, ``max_pixels``."""
    placeholders = collator.family.image_placeholders(collator.processor)
    return ImageTokenCounter(collator.processor, placeholders[0],
                             processor_kwargs=collator.family.processor_kwargs("train"),
                             max_pixels=collator.max_pixels)
