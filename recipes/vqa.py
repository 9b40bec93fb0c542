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

from pathlib import Path

from mmft.errors import report_usage_errors
from mmft.recipe import parse_recipe_args, run_recipe

DEMO_CONFIG = Path(__file__).parent / "configs" / "vqa" / "tiny-llava_shapes_full.yaml"


def parse(argv=None):
    """``(model_args, data_args, training_args)``: --config file and flags, or the demo config when none is named."""
    return parse_recipe_args(argv, default_config=DEMO_CONFIG)


def main(argv=None):
    # Evaluate (with --eval_before_train), train, save, evaluate by generating answers and scoring them with
    # --metrics, write the model card, push with --push_to_hub: mmft.recipe.run_recipe.
    return run_recipe(*parse(argv))


if __name__ == "__main__":
    # A bad flag, missing data or a bad record: one message and exit code 2, no traceback (MMFT_DEBUG=1 shows it).
    with report_usage_errors("recipes/vqa.py"):
        main()
