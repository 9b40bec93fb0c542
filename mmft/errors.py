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
import sys

USAGE_ERROR_EXIT_CODE = 2  # argparse's code for a usage error; 1 stays "the run failed" (a data check found errors)


class UsageError(ValueError):
    """A problem in what the user asked for (flags, data, model choice), reported as one message, no traceback."""


def _is_main_process() -> bool:
    # torchrun / accelerate launch set RANK; every rank hits the same usage error, only one should say it.
    return int(os.environ.get("RANK", "0")) == 0


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


@contextlib.contextmanager
def report_usage_errors(prog: str):
    """Run the body; a usage error ends the process with one message and exit code 2 (``MMFT_DEBUG=1``: raise)."""
    try:
        yield
    except usage_error_types() as error:
        if os.environ.get("MMFT_DEBUG", "").strip() not in ("", "0"):
            raise
        if _is_main_process():
            print(format_usage_error(error, prog), file=sys.stderr, flush=True)
        # SystemExit, not sys.exit(message): the message is printed once above, by the main process only.
        raise SystemExit(USAGE_ERROR_EXIT_CODE) from None
