"""GPU throughput, MFU and memory on real-size architectures, mmft vs TRL (written for one H100).

No weights are downloaded: each model is built with random weights (bf16, on the GPU) from its published config,
written inline below (``Qwen/Qwen2.5-VL-3B-Instruct`` and ``llava-hf/llava-1.5-7b-hf``, ``config.json`` values). The
processors are the tiny fixtures' (small tokenizers: ids stay valid in the large vocabularies) with the real image
processors' settings, so the image token counts are the real models' (Qwen2.5-VL: one token per 28x28 px; LLaVA-1.5:
576 per image). Each sample holds one ~1 MP JPEG (1155x866) and enough answer text to make it ~2,048 tokens.

Both trainers get the same model (rebuilt with the same seed), LoRA on the language model (r=16, bf16), the same
batch, data-loader settings and steps; each run times the steps after ``--warmup`` steps. Reported per run:

- tokens/s (real tokens; every sample is about the same length, so there is almost no padding for either);
- MFU against 989.4 TFLOP/s (H100 SXM dense bf16). FLOPs counted per *language-model* token: forward
  2·N_lm + 2·L·d·s (causal attention at context s), times 2 for a frozen base with LoRA (the forward pass plus
  the backward pass to the activations; no weight gradients except LoRA's, under 1%; gradient-checkpoint recompute
  not counted). "LM+vision" adds the vision tower's forward per patch, 2·N_vis + 4·L_v·d_v·s_v (no backward:
  frozen and first in the graph);
- peak GPU memory (``torch.cuda.max_memory_allocated``);
- host time spent waiting for the next batch (an upper bound on GPU idle time waiting for data).

    python benchmarks/gpu.py                             # both models, mmft and TRL interleaved, 2 repeats
    python benchmarks/gpu.py --models qwen2.5-vl-3b --steps 30 --batch_size 4
    python benchmarks/gpu.py --dry_run                   # scaled-down models on the CPU: checks the code path only
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

H100_BF16_DENSE_FLOPS = 989.4e12

# config.json of Qwen/Qwen2.5-VL-3B-Instruct (architecture fields).
QWEN25_VL_3B = dict(
    text_config=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                     num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000, rms_norm_eps=1e-6,
                     hidden_act="silu", tie_word_embeddings=True, max_window_layers=70, use_sliding_window=False,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31], in_channels=3, hidden_act="silu", tokens_per_second=2),
    tie_word_embeddings=True,
)
# config.json of llava-hf/llava-1.5-7b-hf: Llama-2-7B language model, CLIP ViT-L/14 at 336 px.
LLAVA_15_7B = dict(
    text_config=dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
                     rms_norm_eps=1e-5, hidden_act="silu"),
    vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                       num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
                       projection_dim=768, hidden_act="quick_gelu"),
    vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
)


def scaled_down(config: dict) -> dict:
    """For --dry_run: the same architecture, a few narrow layers (runs on a CPU in seconds)."""
    config = copy.deepcopy(config)
    text, vision = config["text_config"], config["vision_config"]
    text.update(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2 if text.get("num_key_value_heads", 0) < text["num_attention_heads"] else 4)
    if "rope_parameters" in text:
        text["rope_parameters"] = {**text["rope_parameters"], "mrope_section": [4, 6, 6]}
    if "depth" in vision:
        vision.update(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
                      fullatt_block_indexes=[1])
    else:
        vision.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    return config


def build(name: str, dry_run: bool):
    """(model factory, processor) for ``name``: the factory builds the random bf16 model on the GPU, same seed."""
    import transformers
    from pipeline import llava15_processor
    from transformers import AutoProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from mmft.testing import tiny_model_path

    if name == "qwen2.5-vl-3b":
        processor = AutoProcessor.from_pretrained(tiny_model_path("qwen2-5-vl"))
        processor.image_processor = transformers.Qwen2VLImageProcessor(
            patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=3136, max_pixels=12845056,
            image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
        spec, cls, config_cls = QWEN25_VL_3B, transformers.Qwen2_5_VLForConditionalGeneration, \
            transformers.Qwen2_5_VLConfig
        ids = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
               "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
    else:
        processor = llava15_processor(fast=True)
        spec, cls, config_cls = LLAVA_15_7B, transformers.LlavaForConditionalGeneration, transformers.LlavaConfig
        ids = {"image_token_id": "<image>"}
    spec = scaled_down(spec) if dry_run else copy.deepcopy(spec)
    tokenizer = processor.tokenizer
    for key, token in ids.items():
        spec[key] = tokenizer.convert_tokens_to_ids(token)
    spec["text_config"]["pad_token_id"] = tokenizer.pad_token_id
    config = config_cls(**spec)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def make(attn_implementation: str | None):
        config._attn_implementation = attn_implementation or "sdpa"
        torch.manual_seed(0)
        with torch.device(device):
            model = cls._from_config(config, dtype=dtype)
        return model

    return make, processor, config


def write_data(folder: Path, processor, collator_cls, size: int, target_tokens: int):
    """``size`` records, each one ~1 MP JPEG and a long answer making the sample ~``target_tokens`` tokens."""
    from pipeline import write_photo

    from mmft.lengths import record_lengths
    from mmft.sources import RecordDataset

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        write_photo(folder / f"photo-{i}.jpg", (1155, 866), seed=i)
    collator = collator_cls(processor, max_length=None)

    def records(words: int):
        answer = " ".join(f"word{i % 97}" for i in range(words))
        rows = [{"id": f"s{i}", "image": f"photo-{i % 4}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the picture in great detail."},
            {"from": "gpt", "value": answer}]} for i in range(size)]
        return RecordDataset(rows, source="gpu-bench", image_root=str(folder))

    words, low, high = 256, 1, 8192
    while low < high:  # the most words that keep a sample within target_tokens
        words = (low + high + 1) // 2
        if record_lengths(records(words), collator, progress=False)[0] <= target_tokens:
            low = words
        else:
            high = words - 1
    dataset = records(low)
    return dataset, record_lengths(dataset, collator, progress=False)[0]


def flops_per_token(config, seq_len: int, patches: int) -> tuple[float, float]:
    """(training FLOPs per LM token with a frozen base, forward FLOPs per vision patch) as in the module docstring.

    Vision attention spans the image's ``patches`` (CLIP), or 64-patch windows except in the full-attention blocks
    (Qwen2.5-VL's 112-px windows)."""
    text, vision = config.text_config, config.vision_config
    d, layers = text.hidden_size, text.num_hidden_layers
    kv = getattr(text, "num_key_value_heads", text.num_attention_heads) / text.num_attention_heads
    n_lm = layers * (d * d * (2 + 2 * kv) + 3 * d * text.intermediate_size) + d * text.vocab_size  # + LM head
    forward = 2 * n_lm + 2 * layers * d * seq_len
    dv = vision.hidden_size
    if hasattr(vision, "depth"):  # Qwen2.5-VL: gated MLP, windowed attention
        lv, mlp = vision.depth, 3 * dv * vision.intermediate_size
        full = len(getattr(vision, "fullatt_block_indexes", []) or [])
        attention = 4 * dv * (full * patches + (lv - full) * min(patches, 64))
    else:  # CLIP: plain MLP, global attention
        lv, mlp = vision.num_hidden_layers, 2 * dv * vision.intermediate_size
        attention = 4 * dv * lv * patches
    return 2 * forward, 2 * lv * (4 * dv * dv + mlp) + attention


class TimedLoader:
    """Wrap a DataLoader: host seconds spent waiting for each next batch (GPU idle waiting for data, at most)."""

    def __init__(self, loader):
        self.loader, self.waited = loader, 0.0

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.waited += time.perf_counter() - start
            yield batch


def run(name: str, which: str, make, processor, config, dataset, sample_tokens: int, args, out: Path) -> dict:
    from transformers import TrainerCallback

    from mmft.collator import VLMCollator
    from mmft.config import ModelArguments, VLMTrainingArguments
    from mmft.modeling import prepare_model_for_training

    model_args = ModelArguments(model_name_or_path=name, use_peft=True, lora_r=16, lora_alpha=32, lora_dropout=0.0,
                                attn_implementation=args.attn_implementation)
    model = prepare_model_for_training(make(args.attn_implementation), model_args)
    common = dict(output_dir=str(out), max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch_size,
                  learning_rate=1e-4, bf16=torch.cuda.is_available(), logging_steps=1000, save_strategy="no",
                  report_to="none", disable_tqdm=True, gradient_checkpointing=args.gradient_checkpointing,
                  dataloader_num_workers=args.workers, dataloader_persistent_workers=args.workers > 0,
                  dataloader_pin_memory=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available())
    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kwargs):
            if state.global_step in (args.warmup, args.warmup + args.steps):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                marks[state.global_step] = time.perf_counter()

    loaders = []
    if which == "mmft":
        from mmft.trainer import VLMTrainer

        class Trainer(VLMTrainer):
            def get_train_dataloader(self):
                loaders.append(TimedLoader(super().get_train_dataloader()))
                return loaders[-1]

        trainer = Trainer(model=model, args=VLMTrainingArguments(**common), train_dataset=dataset,
                          data_collator=VLMCollator(processor, max_length=None), processing_class=processor)
    else:
        from throughput import trl_dataset
        from trl import SFTConfig, SFTTrainer

        class Trainer(SFTTrainer):
            def get_train_dataloader(self):
                loaders.append(TimedLoader(super().get_train_dataloader()))
                return loaders[-1]

        records = [dataset[i] for i in range(len(dataset))]
        trainer = Trainer(model=model, args=SFTConfig(completion_only_loss=True, max_length=None, **common),
                          train_dataset=trl_dataset(records), processing_class=processor)
    trainer.add_callback(Clock())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    seconds = marks[args.warmup + args.steps] - marks[args.warmup]
    tokens = args.steps * args.batch_size * sample_tokens
    per_image = dataset_patches(processor)
    lm_flops, vision_flops_per_patch = flops_per_token(config, sample_tokens, per_image)
    patches = args.steps * args.batch_size * per_image
    result = {
        "tokens_per_s": tokens / seconds,
        "mfu_lm": lm_flops * tokens / seconds / H100_BF16_DENSE_FLOPS,
        "mfu_lm_vision": (lm_flops * tokens + vision_flops_per_patch * patches) / seconds / H100_BF16_DENSE_FLOPS,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan"),
        "data_wait_s_per_step": loaders[-1].waited / (args.warmup + args.steps) if loaders else float("nan"),
    }
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def dataset_patches(processor) -> int:
    """Vision-tower patches per ~1 MP image (before any merge)."""
    if hasattr(processor.image_processor, "merge_size"):
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        h, w = smart_resize(866, 1155, factor=28, min_pixels=3136, max_pixels=12845056)
        return (h // 14) * (w // 14)
    return 577


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["qwen2.5-vl-3b", "llava-1.5-7b"],
                        choices=["qwen2.5-vl-3b", "llava-1.5-7b"])
    parser.add_argument("--trainers", nargs="+", default=["mmft", "trl"], choices=["mmft", "trl"])
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=2048, help="Target tokens per sample.")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps (after the warm-up).")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers (the same for both trainers).")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--attn_implementation", default="sdpa", help="sdpa (default) or flash_attention_2.")
    parser.add_argument("--dry_run", action="store_true", help="Scaled-down models, CPU allowed: code path only.")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.dry_run:
        sys.exit("benchmarks/gpu.py measures GPU throughput and MFU: no CUDA device is visible here. Run it on a GPU "
                 "machine (written for one H100), or pass --dry_run to check the code path on this CPU.")
    import transformers

    transformers.logging.set_verbosity_error()
    from mmft.collator import VLMCollator

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (dry run)"
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {device}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}; {vars(args)}")
    work = Path(tempfile.mkdtemp(prefix="mmft-gpu-"))
    for name in args.models:
        make, processor, config = build(name, args.dry_run)
        size = args.batch_size * (args.warmup + args.steps)
        dataset, sample_tokens = write_data(work / name, processor, VLMCollator, size, args.seq_len)
        results = {which: [] for which in args.trainers}
        for _ in range(args.repeats):
            for which in args.trainers:
                results[which].append(run(name, which, make, processor, config, dataset, sample_tokens, args,
                                          work / "out"))
        print(f"\n## {name}: LoRA r=16, batch {args.batch_size} x {sample_tokens} tokens (one 1155x866 JPEG each), "
              f"{args.steps} timed steps, {args.repeats} repeats (medians), attention {args.attn_implementation}, "
              f"gradient checkpointing {args.gradient_checkpointing}, {args.workers} workers")
        print(f"{'trainer':<8}{'tokens/s':>10}{'MFU LM':>8}{'MFU LM+vis':>11}{'peak GiB':>10}{'data wait s/step':>18}")
        for which, runs in results.items():
            m = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            print(f"{which:<8}{m['tokens_per_s']:>10.0f}{m['mfu_lm']:>8.1%}{m['mfu_lm_vision']:>11.1%}"
                  f"{m['peak_gib']:>10.2f}{m['data_wait_s_per_step']:>18.3f}")


if __name__ == "__main__":
    main()
