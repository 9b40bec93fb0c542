"""A sample longer than ``max_length`` (``--overlength_policy``): ``OverlengthError``, and ``ShrinkToFitMixin``,
``VLMCollator``'s ``shrink`` policy, which downscales the sample's images until it fits."""

from __future__ import annotations

import logging
import math

from ..data import images as images_lib
from ..data.imagetokens import counter_for
from ..errors import UsageError

# These methods are VLMCollator's: they log under its name, as they did when they were written inside it.
logger = logging.getLogger("mmft.train.collator")

OVERLENGTH_POLICIES = ("error", "drop", "shrink")
# Below ~224x224 pixels most vision towers see too little to answer about: a sample that only fits smaller is better
# dropped, or given a larger max_length. Per image, as width*height.
DEFAULT_SHRINK_MIN_PIXELS = 224 * 224

SHRINK_PRECISION = 1.15  # stop the search when the kept scale is within 15% (of pixels) of one known not to fit
MAX_SHRINK_PROBES = 8  # processor calls per shrunk sample besides the floor probe
# The same search by arithmetic (ImageTokenCounter, no processor call) costs ~1 ms per new size, so it can afford to
# go to within 2%: ~9 steps from a floor at 1/300 of the pixels.
PREDICTED_SHRINK_PRECISION = 1.02


class OverlengthError(UsageError):
    """A sample is longer than ``max_length`` after image expansion and the policy is ``error``."""


class ShrinkToFitMixin:
    """For ``VLMCollator``: uses its ``process``, ``max_length``, ``shrink_min_pixels`` and ``_shrink_counter``."""

    def shrink_to_fit(self, record, prepared, length: int) -> tuple[tuple[str, list, list], int]:
        """Downscale the images of an over-long sample until it fits ``max_length``; return it and its new length.

        All of the sample's images shrink together by one factor of their pixel count (aspect kept, never below
        ``shrink_min_pixels``; an image already smaller stays as it is), always from the loaded images, so
        resampling never compounds. The length the sample ends with is always the processor's own count of the
        shrunk sample, whatever the family's rule (dynamic resolution, anyres tiles, image splitting...).

        Where the processor's image token count is arithmetic (:class:`~mmft.data.imagetokens.ImageTokenCounter` with
        the ``helper`` method: Qwen2-VL and other dynamic-resolution processors), the largest factor that fits is
        found by that arithmetic (to within ``PREDICTED_SHRINK_PRECISION``), and one processor call on the shrunk
        sample confirms it: one call per shrink instead of up to ``1 + MAX_SHRINK_PROBES``. When the arithmetic
        says even the floor does not fit, or the confirming call disagrees, the search below runs, on real calls:

        1. one probe with every image at the floor. If that does not lower the token count, shrinking cannot help
           (a model with a fixed number of tokens per image, e.g. LLaVA 1.5 or PaliGemma; Idefics3/SmolVLM, whose
           processor resizes every image to one longest edge; a floor above the processor's own cap): raise, rather
           than loop. If the sample is still too long at the floor, raise too;
        2. otherwise bisect the factor (geometrically) between the floor, which fits, and the full size, which does
           not, keeping the largest size found that fits: at most ``MAX_SHRINK_PROBES`` more processor calls, and
           the result keeps within ``SHRINK_PRECISION`` of the largest size that fits (when token counts fall
           with size, as they do).

        Text tokens and labels are untouched: the collator builds labels from the re-processed sample as usual, so
        its image tokens are exactly the processor's expansion of the shrunk images and the label audit still holds.
        """
        text, images, spans = prepared
        record_id, budget = record["id"], self.max_length
        advice = (f"Raise --max_length, lower --shrink_min_pixels (now {self.shrink_min_pixels}), or pass "
                  "--overlength_policy drop.")
        if not images:
            raise OverlengthError(
                f"record {record_id!r} is {length} tokens long, over max_length={budget}, and has no image to shrink "
                "(its text alone is too long). Raise --max_length or pass --overlength_policy drop."
            )
        floor = self.shrink_min_pixels
        areas = [image.width * image.height for image in images]

        def sizes_at(scale: float) -> list[tuple[int, int]]:
            # Rounded up: a size at the floor is never below it.
            return [images_lib.fit_to_pixels(image.width, image.height, max(min(area, floor), scale * area),
                                             rounding="up") for image, area in zip(images, areas)]

        def resized(scale: float) -> list:
            return [image if size == image.size else images_lib.resize(image, size)
                    for image, size in zip(images, sizes_at(scale))]

        def measure(trial: list) -> int:
            return int(self.process([(text, trial, spans)])["attention_mask"].sum())

        sizes = [f"{image.width}x{image.height}" for image in images]
        if all(area <= floor for area in areas):
            raise OverlengthError(
                f"record {record_id!r} is {length} tokens long after image expansion, over max_length={budget}, and "
                f"its images ({', '.join(sizes)}) are already at or below --shrink_min_pixels={floor}. {advice}"
            )
        low = min(min(1.0, floor / area) for area in areas)  # every image at the floor (or its own size if smaller)
        counter = self._predictable_token_counter()
        if counter is not None:
            text_tokens = length - sum(counter(image.width, image.height) for image in images)

            def predicted(scale: float) -> int:
                return text_tokens + sum(counter(width, height) for width, height in sizes_at(scale))

            if predicted(low) <= budget:  # else the real probe at the floor below says why it cannot fit
                fits, misses = low, 1.0
                while misses / fits > PREDICTED_SHRINK_PRECISION:
                    middle = math.sqrt(fits * misses)
                    fits, misses = (middle, misses) if predicted(middle) <= budget else (fits, middle)
                best = resized(fits)
                best_length = measure(best)  # the processor's own count: the one the labels are built from
                if best_length <= budget:
                    self._log_shrink(record_id, sizes, best, areas, length, best_length)
                    return (text, best, spans), best_length
                logger.debug("Record %r: %d tokens predicted at the shrunk size, the processor made %d; searching "
                             "by processor calls.", record_id, predicted(fits), best_length)
        best = resized(low)
        best_length = measure(best)
        floor_sizes = [f"{image.width}x{image.height}" for image in best]
        if best_length >= length:
            raise OverlengthError(
                f"record {record_id!r} is {length} tokens long after image expansion, over max_length={budget}, and "
                f"shrinking its images from {', '.join(sizes)} to {', '.join(floor_sizes)} did not lower its token "
                "count: this model's image token count does not depend on the image size (fixed-token models such "
                "as LLaVA 1.5, PaliGemma and Gemma 3; Idefics3/SmolVLM, whose processor resizes every image to one "
                "longest edge), or --shrink_min_pixels is above the size its processor reduces images to. "
                "--overlength_policy shrink cannot help here: raise --max_length or pass --overlength_policy drop."
            )
        if best_length > budget:
            raise OverlengthError(
                f"record {record_id!r} is {length} tokens long after image expansion, and still {best_length} with "
                f"its images shrunk from {', '.join(sizes)} to the floor ({', '.join(floor_sizes)}), over "
                f"max_length={budget}. {advice}"
            )
        high = 1.0
        for _ in range(MAX_SHRINK_PROBES):
            if high / low <= SHRINK_PRECISION:
                break
            middle = math.sqrt(low * high)
            trial = resized(middle)
            trial_length = measure(trial)
            if trial_length <= budget:
                low, best, best_length = middle, trial, trial_length
            else:
                high = middle
        self._log_shrink(record_id, sizes, best, areas, length, best_length)
        return (text, best, spans), best_length

    def _log_shrink(self, record_id, sizes: list[str], best: list, areas: list[int], length: int, best_length: int):
        logger.debug(
            "Shrunk the images of record %r from %s to %s (%.0f%% of the pixels): %d -> %d tokens (max_length=%d).",
            record_id, ", ".join(sizes), ", ".join(f"{image.width}x{image.height}" for image in best),
            100 * sum(image.width * image.height for image in best) / sum(areas), length, best_length,
            self.max_length,
        )

    def _predictable_token_counter(self):
        """The processor's image token count as arithmetic (an ImageTokenCounter on its ``helper`` method, checked
        against real calls when built), or None where counts need a processor call per size anyway."""
        if self._shrink_counter is None:
            counter = counter_for(self)
            self._shrink_counter = counter if counter.method == "helper" else False
        return self._shrink_counter or None
