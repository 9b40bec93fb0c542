"""What ``mmft data check`` and ``mmft data show`` share: their source and data flags, the source they open and the
training collator they build.

The data flags are generated from the training dataclasses (``DataArguments``, and ``ModelArguments`` for
``--trust_remote_code``): name, type, choices, default and help come from the field, so a flag means here exactly
what it means for training and cannot drift from it. Where a command needs another default (no length budget
unless one is asked for) or says what it does with the flag, that is written next to the flag's name below, with
its reason. The collator is training's own (``mmft.workflow.build_collators``), built from the same
``DataArguments``.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from dataclasses import MISSING, fields

from .datastream import Source, open_source

__all__ = ["add_field_arguments", "add_source_arguments", "collator_for_args", "column_overrides", "data_arguments",
           "open_or_exit"]

# The DataArguments fields both commands take, with the training meaning (the --column_* flags are added as a group).
SOURCE_FIELDS = ("image_root", "allow_images_outside_root", "allow_remote_images", "max_pixels", "max_image_pixels")
# What either command says about a flag, after the training help.
SOURCE_NOTES = {
    "allow_remote_images": "The check does not fetch them.",
    "max_pixels": "Used with --model.",
    "max_image_pixels": "The check reports such images as errors.",
}
# --max_length: training's default budget (2048) would make every check of a model-less run warn and every check
# with a model judge a budget nobody asked for; both commands measure lengths against a budget only when given one.
MAX_LENGTH_DEFAULT = {"max_length": None}


def _field_type(annotation) -> tuple[type, list | None]:
    """``(type, choices)`` of a field annotation: ``X | None`` -> X; ``Literal[...]`` -> its values."""
    if typing.get_origin(annotation) is typing.Literal:
        choices = list(typing.get_args(annotation))
        return type(choices[0]), choices
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (inner,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _field_type(inner)
    if annotation in (bool, int, float, str):
        return annotation, None
    raise TypeError(f"no command-line form for a field of type {annotation!r}")


def add_field_arguments(parser, dataclass_type, names, *, defaults=None, notes=None) -> None:
    """Add ``--<name>`` for each field ``name`` of ``dataclass_type``: its type (``X | None`` as X), choices
    (``Literal``), default and help. ``defaults`` overrides a default, ``notes`` is appended to a help. A ``bool``
    field (default False) is a switch (``store_true``), as these commands always had it."""
    hints = typing.get_type_hints(dataclass_type)
    by_name = {f.name: f for f in fields(dataclass_type)}
    defaults, notes = defaults or {}, notes or {}
    for name in names:
        spec = by_name[name]
        kind, choices = _field_type(hints[name])
        default = defaults.get(name, spec.default)
        if default is MISSING:
            raise TypeError(f"{dataclass_type.__name__}.{name} has no plain default for a command-line flag")
        help_text = " ".join(filter(None, (spec.metadata.get("help", ""), notes.get(name))))
        if kind is bool:
            if default is not False:
                raise TypeError(f"{dataclass_type.__name__}.{name}: a switch must default to False")
            parser.add_argument(f"--{name}", action="store_true", help=help_text)
        else:
            parser.add_argument(f"--{name}", type=kind, choices=choices, default=default, help=help_text)


def _column_flags() -> list[str]:
    """The training loader's ``--column_*`` flags: every ``column_*`` field of ``DataArguments``."""
    from ..config.data_args import DataArguments

    return [f.name for f in fields(DataArguments) if f.name.startswith("column_")]


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The source and its image, model-loading and column-mapping flags (both commands)."""
    from ..config.data_args import DataArguments
    from ..config.model_args import ModelArguments

    parser.add_argument(
        "source",
        help="A local .jsonl/.json file (LLaVA or messages format), 'shapes', a folder "
        "saved with save_to_disk, a Parquet file or folder, or a Hub dataset id.",
    )
    # --split and --config name training's --train_split / --dataset_config by what they mean for one source.
    parser.add_argument(
        "--split",
        default="train",
        help="Split to read (Hub datasets and saved folders; default: train). A single file is one split.",
    )
    parser.add_argument(
        "--config", default=None, help="Configuration name of a Hub dataset (load_dataset's second argument)."
    )
    add_field_arguments(parser, DataArguments, SOURCE_FIELDS, notes=SOURCE_NOTES)
    add_field_arguments(parser, ModelArguments, ("trust_remote_code",))
    mapping = parser.add_argument_group(
        "column mapping",
        "The training loader's flags, with the same meaning: give the ones you train with, so rows are mapped "
        "into records exactly as in training.",
    )
    add_field_arguments(mapping, DataArguments, (*_column_flags(), "prompt_template"))


def data_arguments(args):
    """The ``DataArguments`` of a parsed ``data check`` / ``data show`` command: every data flag it has, training's
    defaults for the rest."""
    from ..config.data_args import DataArguments

    names = {f.name for f in fields(DataArguments) if f.init}
    return DataArguments(**{name: value for name, value in vars(args).items() if name in names})


def column_overrides(args) -> dict[str, str | None]:
    """The ``--column_*`` flags of a parsed command as ``{role: column}``, through
    ``DataArguments.column_overrides()`` itself, so the flags reach the same roles as in training."""
    return data_arguments(args).column_overrides()


def collator_for_args(args):
    """The training collator (``mmft.workflow.build_collators``) for ``--model`` and the data flags, with no length
    limit (the caller compares lengths itself) and no bad-record policy: a record whose image fails to load raises
    the loader's own error, which the check reports as that record's problem."""
    from dataclasses import replace

    from ..config.model_args import ModelArguments
    from ..train.modeling import load_processor
    from ..workflow import build_collators

    processor = load_processor(ModelArguments(model_name_or_path=args.model, trust_remote_code=args.trust_remote_code))
    collator, _ = build_collators(processor, replace(data_arguments(args), max_length=None))
    collator.on_bad_record = None
    return collator


def open_or_exit(args, command: str) -> Source:
    """``open_source`` for the parsed command, or exit with the reason (``mmft data <command>: ...``)."""
    try:
        return open_source(
            args.source,
            split=args.split,
            config=args.config,
            image_root=args.image_root,
            columns=column_overrides(args),
            prompt_template=args.prompt_template,
        )
    except (OSError, ValueError) as error:  # missing file, SourceError/CardError, Hub unreachable ...
        sys.exit(f"mmft data {command}: {error}")
