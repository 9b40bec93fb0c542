"""Multi-turn visual instruction tuning: every assistant turn is supervised; evaluation by loss and perplexity,
plus a handful of generated answers written to ``eval_samples_predictions.jsonl`` to read.

Usage:
    # The embedded demo: a tiny model built locally + synthetic multi-turn conversations about shapes (a description,
    # then questions, answered in sentences). Offline, CPU, a few minutes; prints perplexity before -> after.
    accelerate launch recipes/instruct.py

    # LLaVA-Instruct-150K on Idefics3-8B with LoRA, 8 GPUs under DeepSpeed ZeRO-2:
    accelerate launch --config_file accelerate_configs/deepspeed_zero2.yaml recipes/instruct.py \\
        --config recipes/configs/instruct/idefics3-8b_llava-instruct-mix-vsft_lora.yaml

    # Your own conversations (LLaVA format, several human/gpt turns per record), more samples to read:
    accelerate launch recipes/instruct.py --model_name_or_path HuggingFaceTB/SmolVLM-500M-Instruct \\
        --dataset_name data/train.jsonl --eval_dataset_name data/val.jsonl --num_sample_generations 32 \\
        --output_dir outputs/my-instruct

Every ``transformers.TrainingArguments`` flag works; `python recipes/instruct.py --help` lists them all.
eval_results.json holds eval_loss and eval_perplexity (exp of the mean per-token loss on assistant tokens).
"""

from pathlib import Path

from mmft.errors import report_usage_errors
from mmft.recipe import InstructArguments, parse_recipe_args, run_recipe

DEMO_CONFIG = Path(__file__).parent / "configs" / "instruct" / "tiny-llava_shapes-multiturn_full.yaml"


def parse(argv=None):
    """``(model_args, data_args, training_args, instruct_args)``: --config file and flags, or the demo config."""
    return parse_recipe_args(argv, default_config=DEMO_CONFIG, extra=(InstructArguments,))


def main(argv=None):
    model_args, data_args, training_args, instruct_args = parse(argv)
    return run_recipe(model_args, data_args, training_args, perplexity=True,
                      sample_generations=instruct_args.num_sample_generations)


if __name__ == "__main__":
    # A bad flag, missing data or a bad record: one message and exit code 2, no traceback (MMFT_DEBUG=1 shows it).
    with report_usage_errors("recipes/instruct.py"):
        main()
