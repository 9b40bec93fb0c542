"""Fine-tune a vision-language model for image captioning, scored by CIDEr and BLEU-4 on generated captions.

Usage:
    # The embedded demo: a tiny model built locally + the synthetic shapes captions (several reference phrasings per
    # image). Offline, CPU, a few minutes; prints CIDEr before -> after training.
    accelerate launch recipes/caption.py

    # COCO captions (Karpathy split), LoRA on Gemma 3 on one GPU:
    accelerate launch --config_file accelerate_configs/single_gpu.yaml recipes/caption.py \\
        --config recipes/configs/caption/gemma-3-4b_coco-karpathy_lora.yaml

    # Your own data: LLaVA-format JSONL whose records carry "references" (every human caption of the image; the
    # assistant turn is the one trained on), any flag overriding the config:
    accelerate launch recipes/caption.py --model_name_or_path HuggingFaceTB/SmolVLM-256M-Instruct \\
        --dataset_name data/train.jsonl --eval_dataset_name data/val.jsonl --metrics cider bleu \\
        --output_dir outputs/my-captions

Every ``transformers.TrainingArguments`` flag works; `python recipes/caption.py --help` lists them all. Score a
trained folder again later with `mmft eval OUTPUT_DIR --dataset_name ... --metrics cider bleu`.
"""

from pathlib import Path

from mmft.errors import report_usage_errors
from mmft.recipe import parse_recipe_args, run_recipe

DEMO_CONFIG = Path(__file__).parent / "configs" / "caption" / "tiny-llava_shapes-captions_full.yaml"


def parse(argv=None):
    """``(model_args, data_args, training_args)``: --config file and flags, or the demo config when none is named."""
    return parse_recipe_args(argv, default_config=DEMO_CONFIG)


def main(argv=None):
    # Same story as the VQA recipe (mmft.recipe.run_recipe); captions differ by their data and metrics (config).
    return run_recipe(*parse(argv))


if __name__ == "__main__":
    # A bad flag, missing data or a bad record: one message and exit code 2, no traceback (MMFT_DEBUG=1 shows it).
    with report_usage_errors("recipes/caption.py"):
        main()
