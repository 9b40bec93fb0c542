"""The contrastive recipe's story, as calls a recipe or a notebook makes: data, model, trainer, evaluate, train,
save, evaluate, card, push. ``recipes/retrieval.py`` is argument parsing plus :func:`run_retrieval`.

Files written to ``--output_dir`` (main process only): the model (full) or the LoRA adapter with
``contrastive_head.safetensors``, the processor, ``mmft_contrastive.json`` (how to load it back),
``train_results.json``, ``eval_results.json`` (and ``eval_before_train_results.json``), ``all_results.json``,
``eval_report.html`` (top-5 galleries), ``trainer_state.json`` and the model card ``README.md``.
"""

from __future__ import annotations

import logging

from transformers import set_seed

from ..config.data_args import DataArguments
from ..config.model_args import ModelArguments
from ..config.parsing import parse_args
from ..data.cards import find_card, load_card
from ..data.sources import load_records
from ..errors import UsageError
from ..train.checkpoints import resolve_resume_checkpoint
from ..workflow import load_datasets, setup_logging
from .collator import ContrastiveCollator
from .config import ContrastiveArguments, ContrastiveTrainingArguments
from .evaluation import zero_shot_task
from .models import load_dual_encoder
from .pairs import PairDataset
from .towers import configure_towers, log_parameter_report
from .trainer import ContrastiveTrainer

logger = logging.getLogger("mmft")

# Training arguments third, as in the other recipes (``parse()[:3]`` is model, data, training everywhere).
ARGUMENTS = (ModelArguments, DataArguments, ContrastiveTrainingArguments, ContrastiveArguments)


def parse_retrieval_args(argv=None, default_config=None):
    """``(model_args, data_args, training_args, contrastive_args)`` from ``--config`` and flags."""
    return parse_args(argv, dataclass_types=ARGUMENTS, default_config=default_config)


def load_zero_shot_tasks(names, data_args: DataArguments, split: str | None = None, max_samples: int | None = None):
    """One ``ZeroShotTask`` per zero_shot card (name or ``.md`` path): its records, class names and templates.

    Each task's dataset loads through its own card: a Hub card's id, config, revision and column mapping (the
    training data's ``--column_*`` flags describe the training set, not these); a builtin card the built-in set it
    names in ``dataset:`` (``shapes-shape-names`` reads the shapes VQA set, whose records ask one of several
    questions; ``unlisted_labels: skip`` keeps those that ask this one). ``--image_root`` applies to all.
    """
    from ..data.sources import BUILTIN_DATASETS

    tasks = []
    for name in names or ():
        card = load_card(name) if str(name).endswith(".md") else find_card(name)
        if card is None or card.task != "zero_shot":
            raise UsageError(f"--zero_shot {name!r}: no zero_shot data card of that name (see data_cards/; a "
                             "zero_shot card lists class_names and templates).")
        card_split = split or card.eval_split or "test"
        if card.builtin:
            source = card.dataset or card.name
            if source not in BUILTIN_DATASETS:
                raise UsageError(f"zero_shot card {card.name!r}: dataset {source!r} is not a built-in dataset "
                                 f"({', '.join(sorted(BUILTIN_DATASETS))}).")
            records = load_records(source, split=card_split, image_root=data_args.image_root)
        else:
            # every record is a labelled image unless the card skips some: read no more than are used
            limit = max_samples if card.unlisted_labels == "error" else None
            records = load_records(card.name, split=card_split, image_root=data_args.image_root,
                                   max_samples=limit, card=card)
        tasks.append(zero_shot_task(card.name, records, card.class_names, card.templates or None,
                                    unlisted=card.unlisted_labels, max_samples=max_samples))
    return tasks


def build_contrastive_trainer(model_args: ModelArguments, data_args: DataArguments,
                              contrastive_args: ContrastiveArguments, training_args: ContrastiveTrainingArguments,
                              train_records=None, eval_records=None) -> ContrastiveTrainer:
    """Load the dual encoder, decide what trains per tower, and wire pairs, collator and trainer together."""
    set_seed(training_args.seed)  # LoRA's initialisation draws from the global RNG
    adapter, model, processor = load_dual_encoder(model_args, contrastive_args.open_clip_pretrained)
    modes = contrastive_args.tower_modes(model_args.use_peft)
    model = configure_towers(model, adapter, modes, lora_r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
                             lora_dropout=model_args.lora_dropout, use_dora=model_args.use_dora,
                             train_logit_scale=contrastive_args.train_logit_scale)
    if training_args.should_log:
        logger.info("Towers: image %s, text %s; loss: %s", modes["image"], modes["text"], adapter.loss)
        log_parameter_report(model, adapter, print_fn=logger.info)
    train = PairDataset(train_records, contrastive_args.pair_policy) if train_records is not None else None
    evaluation = PairDataset(eval_records, contrastive_args.pair_policy) if eval_records is not None else None
    data_seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    collator = ContrastiveCollator(adapter, processor, max_pixels=data_args.max_pixels,
                                   max_image_pixels=data_args.max_image_pixels,
                                   allow_images_outside_root=data_args.allow_images_outside_root,
                                   allow_remote_images=data_args.allow_remote_images, seed=data_seed)
    tasks = load_zero_shot_tasks(contrastive_args.zero_shot, data_args, contrastive_args.zero_shot_split,
                                 contrastive_args.zero_shot_max_samples)
    return ContrastiveTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
                              data_collator=collator, processing_class=processor, adapter=adapter,
                              zero_shot_tasks=tasks,
                              base_model_name=getattr(adapter, "base_name", None) or model_args.model_name_or_path,
                              retrieval_ks=contrastive_args.retrieval_ks,
                              gallery_queries=contrastive_args.gallery_queries)


def _evaluate(trainer, prefix: str) -> dict:
    metrics = trainer.evaluate(metric_key_prefix=prefix)
    trainer.log_metrics(prefix, metrics)
    trainer.save_metrics(prefix, metrics)
    return metrics


def _print_summary(before: dict, after: dict) -> None:
    for key, value in after.items():
        if not isinstance(value, float) or not key.startswith("eval_"):
            continue
        name = key.removeprefix("eval_")
        start = before.get(f"eval_before_train_{name}")
        print(f"{name}: {f'{start:.3f} -> ' if start is not None else ''}{value:.3f}")


def run_retrieval(model_args, data_args, training_args, contrastive_args, *, train_source=None, eval_source=None):
    """Train and evaluate a dual encoder as ``recipes/retrieval.py`` does; returns the trainer (its
    ``run_metrics``: before training, training, after training)."""
    setup_logging(training_args)
    set_seed(training_args.seed)
    train_records, eval_records = load_datasets(data_args, train_source, eval_source, training_args)
    trainer = build_contrastive_trainer(model_args, data_args, contrastive_args, training_args, train_records,
                                        eval_records)
    has_eval = trainer.eval_dataset is not None or trainer.zero_shot_tasks
    before = _evaluate(trainer, "eval_before_train") if training_args.eval_before_train and has_eval else {}
    # --resume_from_checkpoint true: the newest *complete* checkpoint (a fresh start when there is none)
    checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir,
                                           is_main_process=trainer.is_world_process_zero())
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    trainer.run_metrics = {**before, **train_result.metrics}
    if has_eval:
        metrics = _evaluate(trainer, "eval")
        trainer.run_metrics.update(metrics)
        if trainer.is_world_process_zero():
            _print_summary(before, metrics)
    if trainer.is_world_process_zero():
        from .card import write_contrastive_card

        write_contrastive_card(trainer, model_args, data_args, contrastive_args, trainer.run_metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return trainer
