"""Fine-tune a dual encoder (CLIP, SigLIP / SigLIP 2, open_clip) for image-text retrieval and zero-shot
classification, scored by Recall@1/5/10 in both directions and zero-shot accuracy, before and after training.

Usage:
    # The embedded demo: a tiny CLIP built locally + the shapes captions ("a red circle on the left"). Offline, CPU,
    # about a minute; prints text->image Recall@1 and zero-shot shape/colour accuracy before -> after training.
    accelerate launch recipes/retrieval.py

    # The same with a tiny SigLIP (sigmoid loss) and LoRA on both towers:
    accelerate launch recipes/retrieval.py --config recipes/configs/retrieval/tiny-siglip_shapes-captions_lora.yaml

    # CLIP ViT-B/32 on COCO (Karpathy split), full fine-tuning on one GPU, LiT or LoRA via flags:
    accelerate launch --config_file accelerate_configs/single_gpu.yaml recipes/retrieval.py \\
        --config recipes/configs/retrieval/clip-vit-b-32_coco-karpathy_full.yaml --image_root /data/coco2014

    # An open_clip model (pip install -e '.[openclip]'):
    accelerate launch recipes/retrieval.py --model_name_or_path open_clip:ViT-B-32 \\
        --open_clip_pretrained laion2b_s34b_b79k --dataset_name flickr30k --eval_split test

Every ``transformers.TrainingArguments`` flag works; `python recipes/retrieval.py --help` lists them all. Embed a
dataset with the trained model for a search index: `mmft embed OUTPUT_DIR --dataset_name ... --out emb.safetensors`.
"""

from pathlib import Path

from mmft.contrastive.workflow import parse_retrieval_args, run_retrieval
from mmft.errors import report_usage_errors

DEMO_CONFIG = Path(__file__).parent / "configs" / "retrieval" / "tiny-clip_shapes-captions_full.yaml"


def parse(argv=None):
    """``(model_args, data_args, training_args, contrastive_args)``: --config and flags, or the demo config."""
    return parse_retrieval_args(argv, default_config=DEMO_CONFIG)


def main(argv=None):
    with report_usage_errors("retrieval"):
        return run_retrieval(*parse(argv))


if __name__ == "__main__":
    main()
