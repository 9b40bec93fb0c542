"""Fine-tune a vision-language model for visual question answering (VQA, document and chart QA).

Usage:
    # The embedded demo: a tiny model built locally + the synthetic shapes data. Offline, CPU, about 2 minutes.
    accelerate launch recipes/vqa.py

    # Your own LLaVA-format data (images beside the file), LoRA on a Hub model:
    accelerate launch recipes/vqa.py --model_name_or_path HuggingFaceTB/SmolVLM-256M-Instruct \\
        --dataset_name data/train.jsonl --eval_dataset_name data/val.jsonl --output_dir outputs/my-vqa

    # After a preemption, the same command plus --resume_from_checkpoint true continues from the newest complete
    # checkpoint (model or adapter, optimizer, scheduler, RNG and data position), or starts fresh if there is none.

    # Share the result: the same command plus --push_to_hub --hub_model_id <user>/<name> (HF_TOKEN set, or
    # `hf auth login` done): adapter or model, processor, results and the model card (README.md) are uploaded.

    # A full configuration, with any flag overridden:
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/vqa.py \\
        --config recipes/configs/vqa/<model>_<dataset>_<method>.yaml --learning_rate 1e-4

Every ``transformers.TrainingArguments`` flag works; `python recipes/vqa.py --help` lists them all. With no
--config, --model_name_or_path or --dataset_name, the demo configuration below is used.
"""

import logging
from pathlib import Path

from transformers import set_seed

from mmft.checkpoints import resolve_resume_checkpoint
from mmft.config import parse_args
from mmft.finetune import build_trainer, load_datasets, setup_logging

DEMO_CONFIG = Path(__file__).parent / "configs" / "vqa" / "tiny-llava_shapes_full.yaml"
logger = logging.getLogger("mmft")


def main(argv=None):
    model_args, data_args, training_args = parse_args(argv, default_config=DEMO_CONFIG)
    setup_logging(training_args)
    set_seed(training_args.seed)

    train_dataset, eval_dataset = load_datasets(data_args)
    logger.info("Training records: %s; evaluation records: %s", len(train_dataset),
                len(eval_dataset) if eval_dataset is not None else "none")
    trainer = build_trainer(model_args, data_args, training_args, train_dataset, eval_dataset)

    before = {}
    if training_args.eval_before_train and eval_dataset is not None:
        before = trainer.evaluate(metric_key_prefix="eval_before_train")
        trainer.save_metrics("eval_before_train", before)

    # --resume_from_checkpoint true: the newest *complete* checkpoint (a run killed mid-save resumes from the last).
    checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir,
                                           is_main_process=trainer.is_world_process_zero())
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.describe_run(model_args, data_args, metrics=before)  # the names as given, for the model card
    trainer.save_model()  # the adapter (LoRA) or the full model, plus the processor (and a push with --push_to_hub)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    if eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        if trainer.is_world_process_zero():
            for name in training_args.metrics:
                key = f"eval_{name}"
                start = before.get(f"eval_before_train_{name}")
                start_text = f"{start:.3f} -> " if start is not None else ""
                if key in metrics:
                    print(f"{name}: {start_text}{metrics[key]:.3f}  ({len(eval_dataset)} held-out records)")
        trainer.describe_run(metrics=metrics)
    # README.md: base model, data, settings, the metrics above and how to load the model. With --push_to_hub the
    # main process uploads the output folder (model, processor and chat template, results, this card) to
    # --hub_model_id; the token comes from HF_TOKEN or `hf auth login` and is never written anywhere.
    trainer.create_model_card()
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return trainer


if __name__ == "__main__":
    main()
