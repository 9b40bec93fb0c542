"""Configuration: three dataclasses parsed by ``HfArgumentParser``, with ``--config file.yaml`` for defaults.

Precedence, lowest to highest: the dataclass defaults, the YAML file, explicit command-line flags. So a recipe
YAML is a complete, reviewable description of a run, and any flag can still be overridden for one run:

    accelerate launch recipes/vqa.py --config recipes/configs/vqa/x.yaml --learning_rate 1e-4

``VLMTrainingArguments`` subclasses ``transformers.TrainingArguments``, so every standard flag works
(``--output_dir``, ``--learning_rate``, ``--report_to``, ``--push_to_hub``, ``--deepspeed``, ...).

The pieces: ``model_args``, ``data_args`` and ``training_args`` hold the three dataclasses, ``parsing`` reads
``--config`` and the flags into them, ``conflicts`` settles settings that contradict each other, ``environment``
answers what the launch looks like (rank, processes, cores, accelerator). The names below are re-exported so that
``from mmft.config import ModelArguments`` (the documented path, and ``mmft.ModelArguments``) keeps working; code in
this repository imports from the module that defines a name.
"""

from .conflicts import CONFLICTS, Conflict, settle_conflicts
from .data_args import DataArguments
from .model_args import ModelArguments
from .parsing import CONFIG_FLAG, load_yaml_config, parse_args
from .training_args import VLMTrainingArguments, metric_names

__all__ = ["CONFIG_FLAG", "CONFLICTS", "Conflict", "DataArguments", "ModelArguments", "VLMTrainingArguments",
           "load_yaml_config", "metric_names", "parse_args", "settle_conflicts"]
