"""``CONFLICTS``: pairs of settings that cannot hold together, and ``settle_conflicts``, which decides (after the
config file and the flags are merged) which side gives way, or stops the run naming both."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError
from .environment import rank


@dataclass(frozen=True)
class Conflict:
    """Two settings that cannot hold together: ``setting`` only makes sense under some values of ``depends_on``.

    ``conflicts(values, given)`` says whether the merged ``values`` clash; ``given`` holds the names set on the command
    line or in the config file (a value left at its default is not a choice anyone made).
    """

    setting: str
    depends_on: str
    conflicts: Callable[[dict, set], bool]
    reason: str


# Each pair is checked after the config file and the flags are merged. When only one side was given on the command
# line it wins and the other side falls back to its default (derived again later, see VLMTrainingArguments); when
# both were given on the command line, or both come from the config file, the run stops with one line naming both.
CONFLICTS = (
    Conflict("dataloader_persistent_workers", "dataloader_num_workers",
             lambda v, given: bool(v["dataloader_persistent_workers"]) and v["dataloader_num_workers"] == 0,
             "persistent workers need data-loader workers"),
    Conflict("dataloader_prefetch_factor", "dataloader_num_workers",
             lambda v, given: v["dataloader_prefetch_factor"] is not None and v["dataloader_num_workers"] == 0,
             "batches are prefetched by data-loader workers, and there are none"),
    Conflict("group_by_length", "train_sampling_strategy",
             lambda v, given: bool(v["group_by_length"]) and "train_sampling_strategy" in given
             and v["train_sampling_strategy"] != "group_by_length",
             "--group_by_length means --train_sampling_strategy group_by_length"),
    Conflict("group_by_length", "train_sampling_strategy",
             lambda v, given: v["group_by_length"] is False and "group_by_length" in given
             and "train_sampling_strategy" in given and v["train_sampling_strategy"] in ("auto", "group_by_length"),
             "--group_by_length false means --train_sampling_strategy random"),
)


def _shown(name: str, value) -> str:
    return f"--{name} {str(value).lower() if isinstance(value, bool) else value}"


def settle_conflicts(values: dict, explicit: set[str], from_config: set[str], defaults: dict,
                     config_path: str | None = None, conflicts=CONFLICTS) -> None:
    """Resolve ``conflicts`` in the merged ``values`` in place: an explicit flag beats the config file's value.

    Raises ``UsageError`` naming both settings when neither side gives way (both on the command line, both from the
    config file), or when the value left after giving way still clashes.
    """
    given = set(explicit) | set(from_config)
    for conflict in conflicts:
        a, b = conflict.setting, conflict.depends_on
        if a not in values or b not in values or not conflict.conflicts(values, given):
            continue
        if (a in explicit) != (b in explicit) and (b if a in explicit else a) in from_config:
            yielding, winner = (b, a) if a in explicit else (a, b)
            if rank() == 0:
                print(f"mmft: {_shown(yielding, values[yielding])} from {config_path} gives way to "
                      f"{_shown(winner, values[winner])} on the command line ({conflict.reason}).", file=sys.stderr)
            values[yielding] = defaults.get(yielding)
            given.discard(yielding)
            if not conflict.conflicts(values, given):
                continue
        if a in explicit and b in explicit:
            where = "both on the command line"
        elif a in from_config and b in from_config and not {a, b} & explicit:
            where = f"both in {config_path}"
        else:
            where = "together"
        raise UsageError(f"{_shown(a, values[a])} and {_shown(b, values[b])} conflict ({where}): {conflict.reason}. "
                         "Drop or change one of them.")
