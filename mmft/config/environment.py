"""What the launch looks like to one process: its rank, how many processes were launched, the CPU cores it may use,
whether an accelerator is there; and the defaults both training-argument classes derive from that."""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def cores_per_process() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def accelerator_available() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return accelerator.is_available()
    return torch.cuda.is_available()


def trains_on_accelerator(use_cpu: bool) -> bool:
    """Whether a run with this ``--use_cpu`` trains on an accelerator."""
    return not use_cpu and accelerator_available()


def use_cpu_if_launched_without_accelerator(training_args) -> None:
    """Set ``training_args.use_cpu`` when several processes were launched on a machine without an accelerator.

    Launched on several processes (torchrun / accelerate launch) on a machine without an accelerator, Accelerate only
    goes distributed (gloo) when told the run is on the CPU; otherwise every process silently trains alone on all the
    data and writes the outputs. Tell it.
    """
    if launched_world_size() > 1 and not training_args.use_cpu and not accelerator_available():
        training_args.use_cpu = True


def default_num_workers(on_accelerator: bool) -> int:
    """``--dataloader_num_workers`` left unset: min(4, cores per process) on an accelerator, 0 on a CPU-only run
    (there the workers would take cores from the training threads)."""
    return min(4, cores_per_process()) if on_accelerator else 0
