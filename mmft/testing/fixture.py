"""``TinyFixture``: what a family's fixture module declares. Its own module, so that the fixture modules and the
package that discovers them (``mmft.testing``, which imports ``llava`` for the demo) both import it from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TinyFixture:
    """A tiny offline model of one family.

    Args:
        name: short name (``"qwen2-vl"``); the built-in model ``mmft:tiny-<name>``.
        build: writes the model (random weights, safetensors) and its processor into the folder it is given.
        end_of_turn: the text the chat template closes an assistant turn with (``"<|im_end|>"``,
            ``"<end_of_turn>"``): the label audit expects each supervised span to be the answer plus this.
        module: the defining module (its source is part of the cache key).
    """

    name: str
    build: Callable[[Path], None]
    end_of_turn: str
    module: str = ""
