"""mmft: fine-tuning recipes for vision-language models (image + text -> text), built on Hugging Face.

The data path: records (``mmft.data.records``) from sources (``mmft.data.sources``) become batches in the collator
(``mmft.train.collator``); ``mmft.train.modeling`` decides what trains; ``mmft.train.trainer.VLMTrainer`` trains and
evaluates by
generation. ``mmft.workflow`` holds the pieces and ``mmft.recipe`` the story (``finetune`` runs it from Python);
``recipes/*.py`` run it from the command line.
"""

__version__ = "0.1.0"

__all__ = ["finetune", "load_records", "VLMCollator", "VLMTrainer", "ModelArguments", "DataArguments",
           "VLMTrainingArguments", "__version__"]


def __getattr__(name):
    # Lazy imports: `import mmft` stays fast (torch and transformers load only when used).
    if name == "finetune":
        from .recipe import finetune

        return finetune
    if name == "load_records":
        from .data.sources import load_records

        return load_records
    if name == "VLMCollator":
        from .train.collator import VLMCollator

        return VLMCollator
    if name == "VLMTrainer":
        from .train.trainer import VLMTrainer

        return VLMTrainer
    if name in ("ModelArguments", "DataArguments", "VLMTrainingArguments"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'mmft' has no attribute {name!r}")
