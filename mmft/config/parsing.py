"""``parse_args``: ``--config file.yaml`` plus command-line flags into the argument dataclasses, flags winning."""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from ..errors import MissingPathError, UsageError
from .conflicts import settle_conflicts
from .data_args import DataArguments
from .model_args import ModelArguments
from .training_args import VLMTrainingArguments

CONFIG_FLAG = "--config"


def load_yaml_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"Config file {str(path)!r} does not exist.")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a config file must be a YAML mapping of argument names to values.")
    return data


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    rest, config = [], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == CONFIG_FLAG:
            if i + 1 >= len(argv):
                raise UsageError("--config needs a path to a YAML file.")
            config = argv[i + 1]
            i += 2
            continue
        if arg.startswith(CONFIG_FLAG + "="):
            config = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return config, rest


def parse_args(
    argv: list[str] | None = None,
    dataclass_types=(ModelArguments, DataArguments, VLMTrainingArguments),
    default_config: str | Path | None = None,
):
    """Parse ``--config file.yaml`` plus flags into the dataclasses; flags override the file.

    ``default_config`` is used when ``argv`` names neither a config nor a model nor a dataset: this is how a
    recipe run with no arguments becomes the embedded demo while staying an ordinary YAML configuration.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, rest = _split_config_flag(argv)
    names_run = any(a.split("=", 1)[0] in ("--model_name_or_path", "--dataset_name") for a in rest)
    if config_path is None and default_config is not None and not names_run:
        config_path = str(default_config)
    parser = HfArgumentParser(dataclass_types)
    for action in parser._actions:  # help texts are plain prose ("within 10%"); argparse %-formats them for --help
        if action.help and "%" in action.help:
            action.help = action.help.replace("%", "%%")
    if config_path is not None:
        values = load_yaml_config(config_path)
        known = {f.name for dataclass_type in dataclass_types for f in fields(dataclass_type) if f.init}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(
                f"{config_path}: unknown argument(s) {', '.join(unknown)}. Run the recipe with --help for the list."
            )
        # argparse never applies nargs to defaults: a YAML scalar for a list flag (``metrics: anls``) would stay a
        # string and later be iterated character by character. Wrap it, unless the field itself takes a string.
        takes_str = {f.name for t in dataclass_types for f in fields(t) if isinstance(f.default, str)}
        for action in parser._actions:
            value = values.get(action.dest)
            if action.nargs in ("+", "*") and isinstance(value, str) and action.dest not in takes_str:
                values[action.dest] = [value]
        parser.set_defaults(**values)
    else:
        values = {}
    namespace, unknown_flags = parser.parse_known_args(args=rest)
    if unknown_flags:
        raise UsageError(f"Unknown argument(s): {' '.join(unknown_flags)}. Run the recipe with --help for the list.")
    settle_conflicts(vars(namespace), explicit=_explicit_dests(parser, rest), from_config=set(values),
                     defaults={f.name: f.default for t in dataclass_types for f in fields(t) if f.init},
                     config_path=config_path)
    outputs = []
    for dataclass_type in dataclass_types:
        names = {f.name for f in fields(dataclass_type) if f.init}
        try:
            outputs.append(dataclass_type(**{k: v for k, v in vars(namespace).items() if k in names}))
        except ValueError as error:  # the dataclasses' (and TrainingArguments') own checks of the values given
            raise error if isinstance(error, UsageError) else UsageError(str(error)) from error
    return tuple(outputs)


def _explicit_dests(parser, argv: list[str]) -> set[str]:
    """The argument names given on the command line (``--flag value``, ``--flag=value``, ``--no_flag``)."""
    actions = parser._option_string_actions
    return {actions[a.split("=", 1)[0]].dest for a in argv if a.startswith("-") and a.split("=", 1)[0] in actions}
