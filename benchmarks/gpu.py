"""GPU throughput, MFU and memory on real-size architectures, mmft vs TRL (written for one H100).

No weights are downloaded: each model is built with random weights (bf16, on the GPU) from its published config,
written inline below (``Qwen/Qwen2.5-VL-3B-Instruct`` and ``llava-hf/llava-1.5-7b-hf``, ``config.json`` values). The
processors are the tiny fixtures' (small tokenizers: ids stay valid in the large vocabularies) with the real image
processors' settings, so the image token counts are the real models' (Qwen2.5-VL: one token per 28x28 px; LLaVA-1.5:
576 per image). Each sample holds one synthetic document page, a ~1 MP JPEG (866x1155 portrait, ``--image_size``;
``--image_kind photo`` for a photo-like one), and enough answer text to make it ~2,048 tokens.

Both trainers get the same model (rebuilt with the same seed, prepared by ``mmft.train.modeling``), the same batch,
data-loader settings and steps; each run times the steps after ``--warmup`` steps. Rows, for each model:

- ``--methods``: ``lora`` (LoRA r=16 on the language model, base frozen) and ``full`` (full fine-tuning of the
  language model and projector; the vision tower frozen, mmft's default);
- ``--variants``: ``base`` (sdpa attention), ``padding_free`` (mmft's ``--padding_free`` with flash attention 2; TRL's
  ``padding_free``) and ``liger`` (``use_liger_kernel`` for both). A variant that cannot run here is a row saying why
  ("skipped: needs CUDA", the family's refusal, a missing package), never a crash; a run that fails is a row with
  its error.

Reported per run:

- tokens/s (real tokens; every sample is about the same length, so there is almost no padding for either);
- MFU = model FLOPs / time / peak, against the GPU's dense bf16 peak (989.4 TFLOP/s for H100/H200 SXM). Model
  FLOPs per *language-model* token: forward 2·N_lm + 2·L·d·s (N_lm: the language model's weights incl. the LM head;
  causal attention at context s, L layers of width d); training is 6·N per token for full fine-tuning (forward,
  backward to activations, weight gradients) and 4·N with LoRA (no weight gradients for the frozen base; LoRA's own
  are under 1%); gradient-checkpoint recompute is not counted. "LM+vision" adds the vision tower's forward per patch,
  2·N_vis + 4·L_v·d_v·s_v (frozen in both methods and first in the graph: no backward). The projector (under 1%) is
  not counted;
- peak GPU memory (``torch.cuda.max_memory_allocated``);
- host time spent waiting for the next batch (an upper bound on GPU idle time waiting for data).

``--dry_run`` checks the whole code path on a CPU in well under a minute (CI runs it): the same architecture
classes shrunk to 2 narrow layers and the tokenizer's vocabulary, ~256-token samples with a 168x224 page, batch 1,
1 warm-up and 1 timed step, 1 repeat, no workers; CUDA-only variants print as skipped. Its figures only prove the
path runs.

    python benchmarks/gpu.py                             # both models, LoRA and full, all variants, mmft and TRL
    python benchmarks/gpu.py --models qwen2.5-vl-3b --methods lora --variants base --steps 30 --repeats 3
    python benchmarks/gpu.py --dry_run                   # scaled-down models on the CPU: checks the code path only
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

H100_BF16_DENSE_FLOPS = 989.4e12  # H100 and H200 SXM: the same dense bf16 peak (H200 differs in memory only)
PEAK_BF16_DENSE_FLOPS = {"H100": H100_BF16_DENSE_FLOPS, "H200": H100_BF16_DENSE_FLOPS, "A100": 312e12}
MFU_FORMULA = ("MFU = (k * (2*N_lm + 2*L*d*s) * LM tokens [+ (2*N_vis + 4*L_v*d_v*s_v) * patches]) / seconds / peak; "
               "k = 3 for full fine-tuning (6*N per token: forward + backward + weight gradients), 2 for LoRA "
               "(frozen base: no weight gradients); the frozen vision tower runs forward only")
DRY_RUN_DEFAULTS = dict(seq_len=256, steps=1, warmup=1, repeats=1, workers=0, batch_size=1, image_size=[168, 224])
RUN_DEFAULTS = dict(seq_len=2048, steps=10, warmup=3, repeats=1, workers=4, batch_size=4, image_size=[866, 1155])


def peak_flops() -> float:
    """Dense bf16 peak of this GPU (the H100's on a CPU dry run, where MFU only proves the arithmetic runs)."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return next((peak for key, peak in PEAK_BF16_DENSE_FLOPS.items() if key in name), H100_BF16_DENSE_FLOPS)

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
    if dry_run:  # the tiny tokenizer's ids fit; a 152k-row embedding would dominate a CPU step
        spec["text_config"]["vocab_size"] = len(tokenizer)
    config = config_cls(**spec)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def make(attn_implementation: str | None, on_meta: bool = False):
        """The model; ``on_meta``: no memory or weights, for start-up checks that read only its type and config."""
        config._attn_implementation = attn_implementation or "sdpa"
        torch.manual_seed(0)
        with torch.device("meta" if on_meta else device):
            model = cls._from_config(config, dtype=dtype)
        return model

    return make, processor, config


def write_document(path: Path, size: tuple[int, int], seed: int) -> None:
    """A scanned-page-like JPEG: lines of black words on off-white paper, with scanner noise (quality 90)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    page = Image.new("L", size, 245)
    draw = ImageDraw.Draw(page)
    line_height = max(8, height // 60)
    margin = width // 12
    for y in range(margin, height - margin, line_height):
        x = margin
        while x < width - margin:
            word = "".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(2, 10)))
            draw.text((x, y), word, fill=int(rng.integers(0, 60)))
            x += 6 * len(word) + 6
    pixels = np.asarray(page, dtype=np.int16) + rng.integers(-8, 9, (height, width))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB").save(path, quality=90)


def write_data(folder: Path, processor, collator_cls, size: int, target_tokens: int, image_size: tuple[int, int],
               image_kind: str = "document"):
    """``size`` records, each one ``image_size`` JPEG and a long answer making the sample ~``target_tokens`` tokens
    (at least the image's tokens and the prompt: LLaVA-1.5's 576 image tokens exceed a dry run's 256)."""
    from pipeline import write_photo

    write_image = write_photo if image_kind == "photo" else write_document

    from mmft.data.lengths import record_lengths
    from mmft.data.record_datasets import RecordDataset

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        write_image(folder / f"page-{i}.jpg", tuple(image_size), seed=i)
    collator = collator_cls(processor, max_length=None)

    def records(words: int, count: int = size):
        answer = " ".join(f"word{i % 97}" for i in range(words))
        rows = [{"id": f"s{i}", "image": f"page-{i % 4}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nTranscribe this page."},
            {"from": "gpt", "value": answer}]} for i in range(count)]
        return RecordDataset(rows, source="gpu-bench", image_root=str(folder))

    words, low, high = 256, 1, 8 * target_tokens
    # Every page has the same size, so every sample the same length: search on one record (each try processes its
    # image; all ``size`` of them would cost ~13 tries x 52 1-MP images before the first step).
    while low < high:  # the most words that keep a sample within target_tokens
        words = (low + high + 1) // 2
        if record_lengths(records(words, 1), collator, progress=False)[0] <= target_tokens:
            low = words
        else:
            high = words - 1
    return records(low), record_lengths(records(low, 1), collator, progress=False)[0]


def flops_per_token(config, seq_len: int, patches: int, method: str = "lora") -> tuple[float, float]:
    """(training FLOPs per LM token, forward FLOPs per vision patch) as in the module docstring: 3x the forward for
    ``method`` "full" (6·N), 2x for "lora" (4·N: the frozen base gets no weight gradients).

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
    return (3 if method == "full" else 2) * forward, 2 * lv * (4 * dv * dv + mlp) + attention


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


def skip_reason(variant: str, make, args) -> str | None:
    """Why ``variant`` cannot run here (None: it can), judged by mmft's own start-up checks."""
    if variant == "base":
        return None
    if not torch.cuda.is_available():
        return "skipped: needs CUDA"
    if variant == "liger":
        from mmft.train.liger import liger_available

        return None if liger_available() else "skipped: liger-kernel not installed (pip install -e '.[liger]')"
    from mmft.families import GENERIC, family_for

    model = make(None, on_meta=True)  # the family is judged from the model's type: no memory, no weights
    family = family_for(model)
    refusal = "mmft has no family module for it" if family is GENERIC else family.padding_free_refusal
    if refusal is not None:  # worded by the family's module, as --padding_free's start-up check words it
        return f"skipped: mmft refuses padding-free for {model.config.model_type}: {refusal}"
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return "skipped: needs flash-attn (pip install flash-attn)"
    return None


def run(name: str, which: str, method: str, variant: str, make, processor, config, dataset, sample_tokens: int,
        args, out: Path) -> dict:
    from transformers import TrainerCallback

    from mmft.config.model_args import ModelArguments
    from mmft.config.training_args import VLMTrainingArguments
    from mmft.train.collator import VLMCollator
    from mmft.train.modeling import prepare_model_for_training

    attention = "flash_attention_2" if variant == "padding_free" else args.attn_implementation
    model_args = ModelArguments(model_name_or_path=name, use_peft=method == "lora", lora_r=16, lora_alpha=32,
                                lora_dropout=0.0, attn_implementation=attention)
    model = prepare_model_for_training(make(attention), model_args)
    common = dict(output_dir=str(out), max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch_size,
                  learning_rate=1e-4 if method == "lora" else 1e-5, bf16=torch.cuda.is_available(),
                  logging_steps=1000, save_strategy="no", report_to="none", disable_tqdm=True,
                  gradient_checkpointing=args.gradient_checkpointing, dataloader_num_workers=args.workers,
                  dataloader_persistent_workers=args.workers > 0, dataloader_pin_memory=torch.cuda.is_available(),
                  use_cpu=not torch.cuda.is_available(), use_liger_kernel=variant == "liger")
    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kwargs):
            if state.global_step in (args.warmup, args.warmup + args.steps):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                marks[state.global_step] = time.perf_counter()

    loaders = []
    if which == "mmft":
        from mmft.train.trainer import VLMTrainer

        class Trainer(VLMTrainer):
            def get_train_dataloader(self):
                loaders.append(TimedLoader(super().get_train_dataloader()))
                return loaders[-1]

        training_args = VLMTrainingArguments(padding_free=variant == "padding_free", **common)
        trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                          data_collator=VLMCollator(processor, max_length=None), processing_class=processor)
    else:
        from throughput import trl_dataset
        from trl import SFTConfig, SFTTrainer

        class Trainer(SFTTrainer):
            def get_train_dataloader(self):
                loaders.append(TimedLoader(super().get_train_dataloader()))
                return loaders[-1]

        records = [dataset[i] for i in range(len(dataset))]
        trainer = Trainer(model=model, args=SFTConfig(completion_only_loss=True, max_length=None,
                                                      padding_free=variant == "padding_free", **common),
                          train_dataset=trl_dataset(records), processing_class=processor)
    trainer.add_callback(Clock())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    seconds = marks[args.warmup + args.steps] - marks[args.warmup]
    tokens = args.steps * args.batch_size * sample_tokens
    per_image = dataset_patches(processor, args.image_size)
    lm_flops, vision_flops_per_patch = flops_per_token(config, sample_tokens, per_image, method)
    patches = args.steps * args.batch_size * per_image
    peak = peak_flops()
    result = {
        "tokens_per_s": tokens / seconds,
        "mfu_lm": lm_flops * tokens / seconds / peak,
        "mfu_lm_vision": (lm_flops * tokens + vision_flops_per_patch * patches) / seconds / peak,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan"),
        "data_wait_s_per_step": loaders[-1].waited / (args.warmup + args.steps) if loaders else float("nan"),
    }
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def dataset_patches(processor, image_size) -> int:
    """Vision-tower patches per image (before any merge): Qwen2.5-VL resizes to multiples of 28 px, CLIP to 336."""
    if hasattr(processor.image_processor, "merge_size"):
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        width, height = image_size
        h, w = smart_resize(height, width, factor=28, min_pixels=3136, max_pixels=12845056)
        return (h // 14) * (w // 14)
    return 577


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["qwen2.5-vl-3b", "llava-1.5-7b"],
                        choices=["qwen2.5-vl-3b", "llava-1.5-7b"],
                        help="Architectures built from their config with random weights (nothing downloaded).")
    parser.add_argument("--trainers", nargs="+", default=["mmft", "trl"], choices=["mmft", "trl"],
                        help="Trainers measured, interleaved in one run (default both).")
    parser.add_argument("--methods", nargs="+", default=["lora", "full"], choices=["lora", "full"],
                        help="lora: rank-16 adapters on the language model; full: language model + projector.")
    parser.add_argument("--variants", nargs="+", default=["base", "padding_free", "liger"],
                        choices=["base", "padding_free", "liger"],
                        help="base: padded batches; padding_free: packed, flash attention 2; liger: Liger kernels.")
    parser.add_argument("--batch_size", type=int, help="Default 4 (dry run: 1).")
    parser.add_argument("--seq_len", type=int, help="Target tokens per sample. Default 2048 (dry run: 256).")
    parser.add_argument("--image_size", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"),
                        help="The JPEG in every sample. Default 866 1155, ~1 MP (dry run: 168 224).")
    parser.add_argument("--image_kind", choices=["document", "photo"], default="document",
                        help="document: a page of text lines (default); photo: smooth colour fields and noise.")
    parser.add_argument("--steps", type=int, help="Timed steps (after the warm-up). Default 10 (dry run: 1).")
    parser.add_argument("--warmup", type=int, help="Untimed steps first (at least 1). Default 3 (dry run: 1).")
    parser.add_argument("--repeats", type=int, help="Interleaved repeats (medians). Default 1.")
    parser.add_argument("--workers", type=int, help="DataLoader workers (the same for both). Default 4 (dry run: 0).")
    parser.add_argument("--gradient_checkpointing", action="store_true",
                        help="Recompute activations in the backward pass (both trainers). Default off.")
    parser.add_argument("--attn_implementation", default="sdpa", help="sdpa (default) or flash_attention_2.")
    parser.add_argument("--dry_run", action="store_true", help="Scaled-down models, CPU allowed: code path only.")
    args = parser.parse_args()
    for key, value in (DRY_RUN_DEFAULTS if args.dry_run else RUN_DEFAULTS).items():
        if getattr(args, key) is None:  # an explicit flag wins
            setattr(args, key, value)
    if args.warmup < 1:
        sys.exit("--warmup must be at least 1: the clock starts at the end of the last warm-up step.")
    if not torch.cuda.is_available() and not args.dry_run:
        sys.exit("benchmarks/gpu.py measures GPU throughput and MFU: no CUDA device is visible here. Run it on a GPU "
                 "machine (written for one H100), or pass --dry_run to check the code path on this CPU.")
    import transformers

    transformers.logging.set_verbosity_error()
    from mmft.train.collator import VLMCollator

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (dry run)"
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {device}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}; {vars(args)}")
    print(f"# {MFU_FORMULA}; N_lm: language-model weights incl. the LM head, L/d: its layers/width, s: the sample's "
          f"tokens; N_vis, L_v, d_v, s_v: the vision tower's, per patch; peak {peak_flops() / 1e12:.1f} TFLOP/s "
          "dense bf16", flush=True)
    work = Path(tempfile.mkdtemp(prefix="mmft-gpu-"))
    for name in args.models:
        make, processor, config = build(name, args.dry_run)
        size = args.batch_size * (args.warmup + args.steps)
        dataset, sample_tokens = write_data(work / name, processor, VLMCollator, size, args.seq_len, args.image_size,
                                            args.image_kind)
        rows = []  # (method, variant, trainer, medians or a reason)
        for method in args.methods:
            for variant in args.variants:
                reason = skip_reason(variant, make, args)
                results = {which: [] for which in args.trainers}
                for _ in range(args.repeats if reason is None else 0):
                    for which in args.trainers:
                        if isinstance(results[which], str):
                            continue
                        try:
                            results[which].append(run(name, which, method, variant, make, processor, config,
                                                      dataset, sample_tokens, args, work / "out"))
                        except Exception as error:  # one failed row (OOM, an unsupported TRL path), not the table
                            results[which] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:150]}"
                            del error
                            gc.collect()  # an OOM's frames hold the model: free them before the next run
                            if torch.cuda.is_available():
                                torch.cuda.empty_cache()
                for which, runs in results.items():
                    if reason is not None or isinstance(runs, str):
                        rows.append((method, variant, which, reason or runs))
                    else:
                        rows.append((method, variant, which,
                                     {key: statistics.median(r[key] for r in runs) for key in runs[0]}))
        width, height = args.image_size
        print(f"\n## {name}: batch {args.batch_size} x {sample_tokens} tokens (one {width}x{height} "
              f"{args.image_kind} JPEG each), {args.steps} timed steps after {args.warmup}, {args.repeats} repeats "
              "(medians), attention "
              f"{args.attn_implementation} (padding_free: flash_attention_2), gradient checkpointing "
              f"{args.gradient_checkpointing}, {args.workers} workers; LoRA r=16 on the language model, full: "
              "language model + projector (vision tower frozen)")
        print(f"{'method':<7}{'variant':<14}{'trainer':<8}{'tokens/s':>10}{'MFU LM':>8}{'MFU LM+vis':>11}"
              f"{'peak GiB':>10}{'data wait s/step':>18}")
        for method, variant, which, m in rows:
            if isinstance(m, str):
                print(f"{method:<7}{variant:<14}{which:<8}  {m}")
            else:
                print(f"{method:<7}{variant:<14}{which:<8}{m['tokens_per_s']:>10.0f}{m['mfu_lm']:>8.1%}"
                      f"{m['mfu_lm_vision']:>11.1%}{m['peak_gib']:>10.2f}{m['data_wait_s_per_step']:>18.3f}",
                      flush=True)


if __name__ == "__main__":
    main()
