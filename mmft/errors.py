"""The one base class for errors a user can fix, and how entry points report them.

A ``UsageError`` is a bad flag, missing or malformed data, a model family that cannot take a record, an unreachable
Hub while offline: something the user fixes by changing the command or the data, never by reading mmft's code. Every
recipe and ``mmft`` command runs under :func:`report_usage_errors`, which prints such an error as one message (on
the main process only, once per run, not once per rank) and exits non-zero. ``MMFT_DEBUG=1`` re-raises it with the
traceback. Anything else is a bug and keeps its traceback.

Subclasses keep ``ValueError`` as a base (most of them were plain ``ValueError`` before), so code that catches
``ValueError`` keeps working.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

USAGE_ERROR_EXIT_CODE = 2  # argparse's code for a usage error; 1 stays "the run failed" (a data check found errors)


class UsageError(ValueError):
    """A problem in what the user asked for (flags, data, model choice), reported as one message, no traceback."""


class MissingPathError(UsageError, FileNotFoundError):
    """A file or folder the user named does not exist (a config, a checkpoint, a paraphrase file, a dataset)."""


class MissingRequirementError(UsageError, RuntimeError):
    """What the user asked for needs a package or a device this machine lacks (QLoRA without CUDA, ...)."""


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))  # set by torchrun / accelerate launch on every process


def _parent_is_accelerate_launch() -> bool:
    """Whether this process was started by ``accelerate launch`` (Linux: the parent's command line says so)."""
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [Path(arg.decode(errors="replace")).name for arg in argv[:4]]
    # `accelerate launch ...` (the console script, maybe run by python) or `python -m accelerate.commands.launch ...`
    return "accelerate.commands.launch" in words or ("launch" in words and "accelerate" in words)


def _end_accelerate_launcher() -> None:
    """Stop the ``accelerate launch`` process that started this one, after the message has been printed.

    accelerate's launcher turns any non-zero exit of the script into a ``CalledProcessError`` traceback of its own
    (unless ``--quiet``), burying the one line that says what to fix under thirty that do not. Its SIGTERM handler
    instead ends it quietly (exit 143) after stopping every process it started, so the message stays the last thing
    printed. Only ever sent to a parent that is ``accelerate launch``: never to a shell, notebook or torchrun.
    """
    if _parent_is_accelerate_launch():
        # The single-process launcher copies our stderr through a pipe: give it time to pass the message on before
        # its SIGTERM handler interrupts the copying (a chunk read but not yet written would be lost).
        sys.stderr.flush()
        time.sleep(LAUNCHER_DRAIN_S)
        os.kill(os.getppid(), signal.SIGTERM)


def _hub_offline_errors() -> tuple[type[BaseException], ...]:
    """huggingface_hub's errors for a Hub that cannot be reached or a repo that does not exist: usage errors too."""
    try:
        from huggingface_hub import errors
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of transformers
        return ()
    names = ("OfflineModeIsEnabled", "RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError",
             "LocalEntryNotFoundError", "GatedRepoError")
    return tuple(getattr(errors, name) for name in names if hasattr(errors, name))


def usage_error_types() -> tuple[type[BaseException], ...]:
    return (UsageError, *_hub_offline_errors())


def without_worker_traceback(error: BaseException) -> str:
    """The message of ``error`` as it was raised, also when a DataLoader worker raised it.

    PyTorch re-raises a worker's exception in the main process as the same type, but with a new message: "Caught X
    in DataLoader worker process N. Original Traceback ..." followed by the worker's whole traceback, whose last
    lines are ``module.X: <the original message>``. A usage error (a bad record met by the collator) must still
    read as its one message, so the original is recovered from there."""
    message = str(error)
    if not message.startswith("Caught ") or "\nOriginal Traceback" not in message:
        return message
    kind = type(error)
    for name in (f"{kind.__module__}.{kind.__qualname__}: ", f"{kind.__qualname__}: "):
        start = message.rfind(name)
        if start >= 0:
            return message[start + len(name):].rstrip("\n")
    return message


def format_usage_error(error: BaseException, prog: str) -> str:
    message = without_worker_traceback(error).strip() or type(error).__name__
    return f"{prog}: error: {message}"


# Under several processes every rank usually meets the same usage error (they parse the same flags and data). The
# main process reports at once; another rank waits this long first (ranks start seconds apart on a loaded machine),
# so that when the main process met it too the launcher has stopped everything before a second copy is printed, and
# an error only that rank met is still reported.
OTHER_RANK_REPORT_DELAY_S = 20.0
LAUNCHER_DRAIN_S = 1.0


@contextlib.contextmanager
def report_usage_errors(prog: str):
    """Run the body; a usage error ends the process with one message and exit code 2 (``MMFT_DEBUG=1``: raise).

    Programming errors (anything not a usage error) propagate with their traceback, as they should.
    """
    try:
        yield
    except usage_error_types() as error:
        if os.environ.get("MMFT_DEBUG", "").strip() not in ("", "0"):
            raise
        rank = _rank()
        if rank != 0:
            time.sleep(OTHER_RANK_REPORT_DELAY_S)
        prefix = f"{prog} (rank {rank})" if rank != 0 else prog
        print(format_usage_error(error, prefix), file=sys.stderr, flush=True)
        _end_accelerate_launcher()
        # SystemExit, not sys.exit(message): the message is printed above, once.
        raise SystemExit(USAGE_ERROR_EXIT_CODE) from None
