"""The pieces a recipe (or a notebook) assembles: datasets, collators, model, trainer.

A recipe reads as a story over these calls (``mmft.recipe.run_recipe``); ``mmft.recipe.finetune`` (``mmft.finetune``)
runs the same story from Python with keyword arguments::

    from mmft import finetune
    results = finetune(model="mmft:tiny-llava", train_dataset=my_dataset, eval_dataset=my_eval,
                       output_dir="out", num_train_epochs=3)
"""

from __future__ import annotations

import contextlib
import logging
import sys

import torch
from transformers import set_seed

from .config.data_args import DataArguments
from .config.model_args import ModelArguments
from .config.training_args import VLMTrainingArguments
from .data.augment import ImageAugmenter, PromptParaphraser
from .data.badrecords import BadRecordLedger, check_policy, scan_dataset
from .data.cards import default_metrics
from .data.record_datasets import materialise
from .data.sources import load_records
from .errors import UsageError
from .families import Family, check_records_fit_family, family_for
from .train.collator import VLMCollator
from .train.liger import check_liger
from .train.modeling import load_model, load_processor, log_parameter_report, prepare_model_for_training
from .train.replay import ReplayEpochCallback, ReplayMixture, mix_in_replay
from .train.starting_adapter import describe_start, load_starting_processor, resolve_starting_adapter
from .train.trainer import VLMTrainer

logger = logging.getLogger("mmft")


def setup_logging(training_args=None):
    """Readable logs: mmft at INFO on the main process (WARNING elsewhere), transformers as configured."""
    level = logging.INFO
    if training_args is not None and not training_args.should_log:
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("mmft")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def load_datasets(data_args: DataArguments, train_source=None, eval_source=None, training_args=None):
    """The training and evaluation record datasets (evaluation may be ``None``).

    Sources default to ``data_args.dataset_name`` / ``eval_dataset_name`` (built-in names, data cards, local files
    and folders, Hub ids: see ``mmft.data.sources.load_records``); a notebook passes ``datasets`` objects or lists of
    records instead. The ``--column_*`` flags and ``--prompt_template`` apply to both.

    With ``--streaming`` the training data is an ``IterableDataset`` (pass ``training_args`` to get the missing
    ``--max_steps`` error here, before anything is loaded); evaluation records are streamed too and then kept in
    memory, because generation-based evaluation needs to index them (bound them with ``--max_eval_samples``).
    """
    train_source = train_source if train_source is not None else data_args.dataset_name
    if train_source is None:
        raise UsageError("No training data: pass --dataset_name (a data card name such as 'chartqa', a "
                         ".json/.jsonl/.parquet file or folder, a Hub id, or 'shapes').")
    if data_args.streaming and training_args is not None and (training_args.max_steps is None
                                                              or training_args.max_steps <= 0):
        raise UsageError(
            "--streaming reads the training data as a stream of unknown length, so the number of training steps "
            "cannot be derived from epochs: pass --max_steps N (optimizer steps), or drop --streaming."
        )
    check_policy(data_args.on_bad_record, data_args.max_bad_fraction)
    # Invalid records are set aside, not raised, so that the start-up scan reports them with the bad images, in one
    # report, and --on_bad_record decides (scan_for_bad_records).
    common = dict(config=data_args.dataset_config, image_root=data_args.image_root,
                  columns=data_args.column_overrides(), prompt_template=data_args.prompt_template, drop_invalid=True)
    train = load_records(train_source, split=data_args.train_split, max_samples=data_args.max_train_samples,
                         streaming=data_args.streaming, **common)
    evaluation = None
    if eval_source is not None or data_args.eval_dataset_name is not None or data_args.eval_split is not None:
        if eval_source is None:
            eval_source = data_args.eval_dataset_name or data_args.dataset_name
        evaluation = load_records(eval_source, split=data_args.eval_split or "train",
                                  max_samples=data_args.max_eval_samples, streaming=data_args.streaming, **common)
        if isinstance(evaluation, torch.utils.data.IterableDataset):
            if data_args.max_eval_samples is None:
                logger.warning("Streaming evaluation without --max_eval_samples keeps the whole evaluation split in "
                               "memory.")
            evaluation = materialise(evaluation)
    scan_for_bad_records(train, evaluation, data_args, training_args)
    if data_args.replay_dataset_name:  # old-task records rehearsed in every epoch (mmft.train.continual)
        seed = 42 if training_args is None else (training_args.data_seed if training_args.data_seed is not None
                                                 else training_args.seed)
        scan = getattr(train, "bad_record_scan", None)
        train = mix_in_replay(train, data_args, seed)
        train.bad_record_scan = scan  # the scan covered the new records (the replayed ones are not scanned)
    return train, evaluation


def scan_for_bad_records(train, evaluation, data_args: DataArguments, training_args=None) -> None:
    """The start-up scan (``mmft.data.badrecords.scan_dataset``) of the training and evaluation records, before the
    model
    loads: under ``--on_bad_record error`` every bad record is named, training and evaluation in one report; under
    ``drop`` they are left out (too many of them stop the run). What was found is kept on each dataset as
    ``bad_record_scan`` for the trainer's counts. Under several processes each process scans a share."""
    shard = {}
    if training_args is not None and training_args.world_size > 1:
        from accelerate import PartialState
        from accelerate.utils import gather_object

        state = PartialState()
        shard = dict(process_index=state.process_index, num_processes=state.num_processes, gather=gather_object)
    if data_args.on_bad_record == "error":
        # Collect both datasets' findings before raising: scan each with drop semantics held back, then report.
        from .data.badrecords import BadRecordError

        problems = []
        for dataset, what in ((train, "training"), (evaluation, "evaluation")):
            if dataset is None:
                continue
            try:
                scan_dataset(dataset, data_args, what=what, **shard)
            except BadRecordError as error:
                problems.append(str(error))
        if problems:
            raise BadRecordError("\n\n".join(problems))
        return
    for dataset, what in ((train, "training"), (evaluation, "evaluation")):
        if dataset is not None:
            with contextlib.suppress(AttributeError):  # a user's own dataset class may refuse attributes
                dataset.bad_record_scan = scan_dataset(dataset, data_args, what=what, **shard)


def build_collators(processor, data_args: DataArguments, family: Family | None = None,
                    seed: int = 0) -> tuple[VLMCollator, VLMCollator]:
    """A training collator (right padding, labels, length policy, opt-in augmentation drawn from ``seed``) and a
    generation one (left padding, never augmented)."""
    common = dict(
        max_pixels=data_args.max_pixels,
        max_image_pixels=data_args.max_image_pixels,
        allow_images_outside_root=data_args.allow_images_outside_root,
        allow_remote_images=data_args.allow_remote_images,
        family=family,
        shrink_min_pixels=data_args.shrink_min_pixels,
    )
    augmenter = None
    if data_args.augment_images:
        augmenter = ImageAugmenter(crop_scale=tuple(data_args.augment_crop_scale),
                                   color_jitter=data_args.augment_color_jitter, hflip=data_args.augment_hflip)
    elif data_args.augment_hflip:
        raise UsageError("--augment_hflip is part of image augmentation: pass --augment_images too.")
    paraphraser = PromptParaphraser.from_file(data_args.prompt_paraphrases) if data_args.prompt_paraphrases else None
    train = VLMCollator(processor, mode="train", max_length=data_args.max_length,
                        overlength_policy=data_args.overlength_policy, augmenter=augmenter, paraphraser=paraphraser,
                        seed=seed, on_bad_record=data_args.on_bad_record,
                        label_turn_suffix=data_args.label_turn_suffix, **common)
    # Prompts are never dropped during evaluation: every record must get an answer to be scored. Shrinking drops
    # nothing, so prompts are shrunk as training samples are.
    policy = "shrink" if data_args.overlength_policy == "shrink" else "error"
    generate = VLMCollator(processor, mode="generate", max_length=data_args.max_length, overlength_policy=policy,
                           **common)
    return train, generate


def resolve_metrics(training_args: VLMTrainingArguments, data_args: DataArguments) -> list[str]:
    """Fill ``--metrics`` when it was not given (``default_metrics``)."""
    if training_args.metrics is None:
        training_args.metrics, from_card = default_metrics(data_args.dataset_name)
        logger.info("Metrics on generated answers: %s%s", ", ".join(training_args.metrics) or "none",
                    " (from the data card)" if from_card else "")
    return training_args.metrics


def build_trainer(model_args: ModelArguments, data_args: DataArguments, training_args: VLMTrainingArguments,
                  train_dataset=None, eval_dataset=None) -> VLMTrainer:
    """Load processor and model, decide what trains, and wire everything into a ``VLMTrainer``."""
    # --adapter_name_or_path: the base model and revision come from the adapter (mmft.train.continual).
    starting_adapter = resolve_starting_adapter(model_args, training_args)
    if model_args.model_name_or_path is None:
        raise UsageError("No model: pass --model_name_or_path (a Hub id, a local folder, or 'mmft:tiny-llava').")
    # Seed before the model exists: LoRA's initialisation draws from the global RNG, and a run must be reproducible
    # from its arguments alone (the notebook path too, not only the recipe).
    set_seed(training_args.seed)
    resolve_metrics(training_args, data_args)
    processor = load_processor(model_args) if starting_adapter is None else load_starting_processor(starting_adapter,
                                                                                                    model_args)
    model = load_model(model_args)
    check_liger(model, training_args)  # --use_liger_kernel: installed, on a GPU, for a model type Liger patches
    family = family_for(model)
    for dataset in (train_dataset, eval_dataset):
        check_records_fit_family(dataset, family)
    model = prepare_model_for_training(model, model_args, starting_adapter=starting_adapter)
    if starting_adapter is not None and training_args.should_log:
        logger.info(describe_start(starting_adapter))
    if training_args.should_log:
        log_parameter_report(model, print_fn=logger.info)
    data_seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    train_collator, generation_collator = build_collators(processor, data_args, family, seed=data_seed)
    # Several processes train in lockstep: a text-only batch on one of them must still run the vision tower and
    # projector (sharded parameters under ZeRO-3/FSDP, gradient reduction under DDP). Costs one small extra sample,
    # only in batches that hold no image at all.
    train_collator.keep_vision_active = training_args.world_size > 1
    bad_records = BadRecordLedger(data_args.on_bad_record, data_args.max_bad_fraction)
    bad_records.startup = getattr(train_dataset, "bad_record_scan", None)  # load_datasets' start-up scan
    bad_records.eval_startup = getattr(eval_dataset, "bad_record_scan", None)
    trainer = VLMTrainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=train_collator, generation_collator=generation_collator,
                         processing_class=processor, bad_records=bad_records)
    trainer.starting_adapter = starting_adapter  # the parent, for the model card's lineage
    if isinstance(train_dataset, ReplayMixture):  # a fresh replay draw each epoch, seen by the loader's workers
        trainer.add_callback(ReplayEpochCallback(train_dataset))
    return trainer
