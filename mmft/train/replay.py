"""Replay: old-task records rehearsed in every epoch of a continued run (see ``mmft.train.continual``).

**Replay** (``--replay_dataset_name``, ``--replay_fraction``): :class:`ReplayMixture` appends old-task records to
the new training set, ``fraction`` of each epoch, a fresh sample per epoch drawn only from (seed, epoch), so the
old task is rehearsed and a resumed run draws what the uninterrupted one did.
"""

from __future__ import annotations

import logging
import random

import torch

from ..data.augment import CollatorEpochCallback
from ..errors import UsageError

logger = logging.getLogger("mmft")


# ---- replay ------------------------------------------------------------------------------------------------------
def replay_count(num_new: int, fraction: float) -> int:
    """Replayed records per epoch so that they are ``fraction`` of it: ``num_new * f / (1 - f)``, at least one."""
    return max(1, round(num_new * fraction / (1 - fraction)))


class ReplayMixture(torch.utils.data.Dataset):
    """The new training records followed by ``num_replay`` old-task records, drawn afresh each epoch.

    Positions ``[0, len(new))`` are the new records; the rest are replayed ones: epoch ``e`` takes the next
    ``num_replay`` records of a sequence of shuffled passes over the replay set, shuffled by a generator seeded by
    ``(seed, e)`` alone, so every epoch rehearses different old records (without repeats while the set lasts) and
    any process, worker or resumed run computes the same draw. The sampler shuffles the whole mixture, so replayed
    records spread over the batches. The epoch is set by the trainer (``CollatorEpochCallback``) in shared memory,
    so DataLoader workers see it. With ``--group_by_length`` the lengths are measured on epoch 0's draw.
    """

    def __init__(self, new, replay, fraction: float, seed: int, name: str | None = None):
        if not hasattr(new, "__len__") or not hasattr(replay, "__len__"):
            raise UsageError("--replay_dataset_name mixes old records into each epoch of the new data, which needs "
                             "both as map-style datasets: drop --streaming.")
        if len(replay) == 0:
            raise UsageError(f"The replay dataset {getattr(replay, 'source', '')!r} has no records.")
        self.new, self.replay = new, replay
        self.parts = (new, replay)
        self.fraction = fraction
        self.seed = int(seed)
        self.num_new = len(new)
        self.num_replay = replay_count(self.num_new, fraction)
        self.source = getattr(new, "source", "records")
        self.replay_name = name or getattr(replay, "source", "the replay set")
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()
        self._drawn: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return self.num_new + self.num_replay

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def replay_indices(self, epoch: int) -> list[int]:
        """Indices into the replay set that epoch ``epoch`` mixes in (a pure function of seed and epoch)."""
        if self._drawn is not None and self._drawn[0] == epoch:
            return self._drawn[1]
        pool = len(self.replay)
        # Epoch e continues the stream of shuffled passes where epoch e-1 stopped: pass p is shuffled by (seed, p).
        start = epoch * self.num_replay
        indices = []
        position = start
        while len(indices) < self.num_replay:
            pass_index, offset = divmod(position, pool)
            order = list(range(pool))
            random.Random(f"mmft-replay\x1f{self.seed}\x1f{pass_index}").shuffle(order)
            take = order[offset:offset + self.num_replay - len(indices)]
            indices.extend(take)
            position += len(take)
        self._drawn = (epoch, indices)
        return indices

    def __getitem__(self, index: int) -> dict:
        if index < self.num_new:
            return self.new[index]
        if index >= len(self):
            raise IndexError(index)
        return self.replay[self.replay_indices(self.epoch)[index - self.num_new]]

    def describe(self) -> str:
        return (f"Replay: {self.num_replay} records of {self.replay_name} (of "
                f"{len(self.replay)}) mixed into each epoch of {self.num_new} new records "
                f"({100 * self.num_replay / len(self):.0f}% of {len(self)}), drawn afresh each epoch from seed "
                f"{self.seed}.")

    def __repr__(self) -> str:
        return f"ReplayMixture(new={self.num_new}, replay={self.num_replay} per epoch of {len(self.replay)})"


class ReplayEpochCallback(CollatorEpochCallback):
    """Tell the ``ReplayMixture`` which epoch starts (its own class: transformers warns on a second callback of one
    class, and the collator already has one)."""


def mix_in_replay(train, data_args, seed: int):
    """``train`` with ``--replay_dataset_name`` mixed in (``ReplayMixture``), or ``train`` unchanged without it."""
    from ..data.sources import load_records

    if not data_args.replay_dataset_name:
        return train
    replay = load_records(data_args.replay_dataset_name, split=data_args.replay_split)
    mixture = ReplayMixture(train, replay, data_args.replay_fraction, seed, name=data_args.replay_dataset_name)
    logger.info(mixture.describe())
    return mixture

