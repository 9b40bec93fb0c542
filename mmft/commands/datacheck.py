"""``mmft data check``: find every bad record of a dataset before training, in one streaming pass.

Hours of GPU time are lost when a bad record surfaces mid-run (a missing image at step 40,000, a conversation
that starts with the answer, a sample longer than ``max_length`` once its images are expanded). This command
reads the whole dataset once, in constant memory, and reports every problem by kind with the record ids, plus
the shape of the data (turns, images per record, a token-length histogram, image sizes). It exits 1 when it
found an error, so it can gate a training job: ``mmft data check train.jsonl --model M --max_length 2048 &&
accelerate launch recipes/instruct.py ...``.

How each check is made, and why:

- **Records** go through :func:`mmft.data.records.to_canonical`, the very conversion training uses, so "valid here"
  means "valid in training". Its :class:`~mmft.data.record_errors.RecordError` is sorted into a kind (bad roles,
  empty turn, placeholder/image mismatch, malformed record) by what it says.
- **Images** are checked with :func:`mmft.data.image_headers.image_size`: the same path rules as training (relative
  to the image root, nothing escaping it) and a header-only read, so no pixel is decoded and memory stays flat however
  large the images are. A truncated PNG or JPEG is caught too, by its missing end marker (``IEND`` / ``EOI``:
  a few bytes read at the end of the file). A file cut elsewhere, or corrupt inside its pixel data, passes;
  ``--decode_images`` (or ``--model``, which runs the real collator) decodes every image to catch those too.
- **Lengths** with ``--model`` come from the real :class:`~mmft.train.collator.VLMCollator` in train mode: the same
  chat template, image expansion and label construction as training, so the count is the collator's own (its
  ``attention_mask`` sum) rather than an estimate, and label problems (nothing to supervise, a template the label
  builder cannot follow) surface here too. Over-long samples are judged by the ``--overlength_policy`` training
  will use: errors under ``error``; warnings under ``drop`` (training skips them); under ``shrink`` the collator
  itself shrinks each one's images, so only samples that cannot fit are errors. Without ``--model`` there is no
  tokenizer: the histogram then counts whitespace-separated words of the text, which is only a rough guide.
- **Sources**: a local ``.jsonl`` is read here, line by line, so an invalid line is reported and the pass goes on;
  everything else (built-in names, data cards, Parquet/CSV files, saved or plain folders, Hub ids) is opened with
  :func:`mmft.data.sources.load_records` in streaming mode. Rows that are not LLaVA/chat records (question/answer,
  caption ... columns) go through the same column mapping as in training (the card's, or the detected one), with
  the training loader's ``--column_*`` and ``--prompt_template`` flags, which both commands accept.
- **Memory**: nothing is loaded whole except a ``.json`` file (one JSON document: convert big ones to ``.jsonl``).
  Per record only a few numbers are kept (an 8-byte hash of the id for the duplicate check, the length, the image
  sizes: about 20 bytes), so a million records add about 20 MB; the ids listed per problem kind are capped
  (``--max_listed``) while every problem is counted.

The pieces, one job each: :mod:`mmft.commands.datastream` opens a source and streams its raw rows,
:mod:`mmft.commands.datascan`
checks them, :mod:`mmft.commands.datareport` builds and prints the report, :mod:`mmft.commands.dataargs` holds the
flags and wiring
``data check`` shares with ``mmft data show`` (:mod:`mmft.commands.datashow`: one processed sample as the model sees
it); this module runs the check and registers both commands.
"""

from __future__ import annotations

import contextlib
import json
import sys

from .dataargs import MAX_LENGTH_DEFAULT, add_field_arguments, add_source_arguments, collator_for_args, open_or_exit
from .datareport import PROBLEM_KINDS, _bar_char, format_report
from .datascan import CheckOptions, DataChecker
from .datashow import show_command
from .datastream import Source, open_source

__all__ = ["PROBLEM_KINDS", "CheckOptions", "DataChecker", "add_data_commands", "check_source", "open_source"]


def check_source(
    source: Source, options: CheckOptions, *, collator=None, model_name: str | None = None, progress: bool = True
) -> dict:
    """Check every row of ``source`` and return the report dict."""
    from tqdm.auto import tqdm

    checker = DataChecker(options, collator=collator, model_name=model_name)
    by_bytes = source.unit == "B"
    bar = tqdm(
        total=source.total,
        unit=source.unit,
        unit_scale=by_bytes,
        desc=f"checking {source.name}",
        disable=not progress,
        file=sys.stderr,
        mininterval=0.5,
    )
    last = 0
    with bar:
        for row in source.rows:
            checker.check_row(row, source)
            if by_bytes:
                done = source.rows.bytes_read
                if done - last >= 1 << 20 or done == source.total:
                    bar.update(done - last)
                    last = done
                    bar.set_postfix(records=checker.records, refresh=False)
            else:
                bar.update(1)
    return checker.report(source)


# --------------------------------------------------------------------------------------------------------------------
# The command line (registered by mmft.commands.cli; heavy imports stay inside the handlers)


def _check_command(args) -> None:
    options = CheckOptions(
        max_image_pixels=args.max_image_pixels,
        allow_images_outside_root=args.allow_images_outside_root,
        allow_remote_images=args.allow_remote_images,
        decode_images=args.decode_images,
        max_length=args.max_length,
        overlength_policy=args.overlength_policy,
        shrink_min_pixels=args.shrink_min_pixels,
        max_listed=args.max_listed,
        batch_size=args.batch_size,
    )
    source = open_or_exit(args, "check")
    collator = None
    if args.model:
        collator = collator_for_args(args)
    elif args.max_length is not None:
        print(
            "mmft data check: --max_length needs --model (token counts come from the model's processor); "
            "lengths are not checked.",
            file=sys.stderr,
        )
    with _single_threaded(collator is not None):
        report = check_source(source, options, collator=collator, model_name=args.model, progress=not args.no_progress)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report, bar_char=_bar_char(sys.stdout)))
    if not report["ok"]:
        sys.exit(1)


@contextlib.contextmanager
def _single_threaded(active: bool):
    """Run torch on one thread, as in a DataLoader worker: the per-sample tensor work of the collator is small and
    intra-op threads only contend (3x slower with 2 threads on a 2-core machine). The setting is restored after,
    since ``main([...])`` may run inside a longer-lived process."""
    if not active:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def add_data_commands(commands) -> None:
    """Add ``mmft data check`` and ``mmft data show`` to the ``mmft`` subcommands."""
    from ..config.data_args import DataArguments
    data = commands.add_parser("data", help="Check a dataset before training, or show a sample as the model sees it.")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    check = data_commands.add_parser(
        "check",
        help="Stream a whole dataset and report every bad record by kind, with ids; exit 1 if any.",
        description="Stream a whole dataset in constant memory and report every problem by kind with the record ids "
        "(invalid JSON, bad roles, empty turns, <image> placeholder/image mismatch, missing, unreadable "
        "or oversized images, paths outside the image root, duplicate ids; with --model also samples over "
        "--max_length after image expansion), plus turns, images per record, a length histogram and "
        "image sizes. Exits 1 when it found an error, 0 when the data is clean.",
    )
    add_source_arguments(check)
    check.add_argument(
        "--model",
        default=None,
        help="Model (Hub id, local folder or mmft: name) whose processor counts each sample's tokens "
        "after image expansion, through the training collator.",
    )
    add_field_arguments(
        check, DataArguments, ("max_length", "overlength_policy", "shrink_min_pixels"), defaults=MAX_LENGTH_DEFAULT,
        notes={"max_length": "Here: with --model, each sample is measured through the training collator and judged by "
                             "--overlength_policy (the policy you will train with; 'drop' makes over-long samples "
                             "warnings, 'shrink' shrinks them as training would and only those that still do not fit "
                             "are errors). No default budget: lengths are judged only when given."},
    )
    check.add_argument(
        "--decode_images",
        action="store_true",
        help="Decode every image fully (slower) to catch files whose header is fine but whose pixel "
        "data is truncated; by default only headers are read.",
    )
    check.add_argument("--json", action="store_true", help="Print one machine-readable JSON object instead.")
    check.add_argument(
        "--max_listed", type=int, default=20, help="Record ids listed per problem kind (all are counted; default: 20)."
    )
    check.add_argument(
        "--batch_size", type=int, default=16, help="Records per collator call with --model (default: 16)."
    )
    check.add_argument("--no_progress", action="store_true", help="No progress bar (it goes to stderr).")
    check.set_defaults(func=_check_command)

    show = data_commands.add_parser(
        "show",
        help="Print one processed sample as the model sees it, supervised tokens highlighted.",
        description="Run one record through the training collator and print its token sequence: supervised "
        "(assistant) tokens highlighted (colour on a terminal, [[...]] markers otherwise; NO_COLOR "
        "respected), image tokens collapsed to <image xN>, with image-token counts and label statistics.",
    )
    add_source_arguments(show)
    show.add_argument(
        "--model",
        required=True,
        help="Model (Hub id, local folder or mmft: name) whose processor and chat template are used.",
    )
    show.add_argument("--index", type=int, default=0, help="Which record (0-based position in the source).")
    add_field_arguments(
        show, DataArguments, ("max_length", "label_turn_suffix"), defaults=MAX_LENGTH_DEFAULT,
        notes={"max_length": "Here: say whether the sample fits this budget (it is shown either way).",
               "label_turn_suffix": "Here: show the labels that training with the flag would build."},
    )
    show.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="Highlight with ANSI colour: auto (on a terminal, unless NO_COLOR is set), always, never.",
    )

    show.set_defaults(func=show_command)
