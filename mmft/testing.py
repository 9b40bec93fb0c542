"""Tiny, offline vision-language models and processors for tests, the demo and the notebook.

Nothing here touches the network. A tiny model is built from scratch with the family's *real* classes:

- a byte-level BPE tokenizer trained in-process (``tokenizers``) on a small built-in corpus,
  wrapped in transformers' fast tokenizer class, with a ChatML chat template that renders
  ``{"type": "image"}`` content as the processor's image token;
- a tiny CLIP vision tower + Llama text model joined by LLaVA's projector (``LlavaForConditionalGeneration``);
- the real ``LlavaProcessor`` around a real CLIP image processor.

The result is saved to a folder and loaded back through ``AutoProcessor`` / ``AutoModelForImageTextToText``,
exactly like a Hub checkpoint, so every code path that serves a real model serves this one.

Sizes are chosen for a 2-core CPU: 48x48 images in 8x8 patches give 36 image tokens per image; the
text model has 2 layers of width 96. A training step on a batch of 16 takes tens of milliseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

# The chat template: ChatML (as used by Qwen and SmolLM), with typed content. Note what it does NOT
# have: generation markers ({% generation %}). Labels are derived by rendering prefixes, which works
# for any template; the tests exercise that path on this one.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<pad>"]

# Text the tokenizer is trained on: the words the demo data and tests use, plus ordinary English so
# that arbitrary user text still tokenises into sensible pieces (byte-level BPE never fails anyway).
_CORPUS = """
What colour is the shape? What color is the object in the image? Which colour is the shape?
What shape is shown? What shape is this? Which shape do you see in the picture?
Where is the shape? On which side of the image is the shape? Where is the object located?
How many shapes are there? Count the shapes in the image.
red green blue yellow purple orange white black grey gray circle square triangle star
left right top bottom middle centre center one two three four five
The quick brown fox jumps over the lazy dog. A picture is worth a thousand words.
Describe the image. The image shows a small red circle on the left side of a white background.
You are a helpful assistant that answers questions about images. Answer with a single word.
What is in the picture? There is a cat on the table and a dog under the chair.
Question Answer Caption Document Chart Table Figure Title Total Value Year 2024 2025 0 1 2 3 4 5 6 7 8 9
"""


@dataclass(frozen=True)
class TinyLlavaSpec:
    """Sizes of the tiny LLaVA. Changing any field changes the cache key, so old builds are never reused."""

    image_size: int = 48
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 96
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    vocab_size: int = 640
    pad_is_eos: bool = False
    position_init_std: float = 1.0
    seed: int = 0
    version: int = 2  # bump when the builder changes in a way the fields above do not capture

    def cache_key(self) -> str:
        fields = "-".join(f"{v}" for v in asdict(self).values())
        return f"tiny-llava-{fields}"


def train_tokenizer(vocab_size: int = 640, pad_is_eos: bool = False, chat_template: str = CHATML_TEMPLATE):
    """Train a byte-level BPE tokenizer in-process and wrap it in transformers' fast tokenizer class."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in _CORPUS.splitlines() if line.strip()]
    # Answers follow "assistant\n" with no leading space, so each word must also be learned bare (as real
    # tokenizers have it); otherwise "square" splits into s/qu/are and short answers share first pieces.
    bare_words = sorted({word.strip("?.,") for line in lines for word in line.split()})
    tok.train_from_iterator(lines * 4 + bare_words * 8, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>" if pad_is_eos else "<pad>",
        unk_token=None,
        bos_token=None,
        extra_special_tokens={"image_token": "<image>"},
        chat_template=chat_template,
        model_max_length=4096,
    )


def build_tiny_llava(out_dir: str | os.PathLike, spec: TinyLlavaSpec = TinyLlavaSpec()) -> Path:
    """Build the tiny LLaVA (random weights) and its processor into ``out_dir``; return the path."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(spec.vocab_size, pad_is_eos=spec.pad_is_eos)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        do_center_crop=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",  # drop CLS: (48/8)^2 = 36 image tokens
        num_additional_image_tokens=1,  # the CLS token the vision tower adds
        chat_template=CHATML_TEMPLATE,
        image_token="<image>",
    )
    vision_config = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_hidden * 4,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=4,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_hidden * 3,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(config)
    # CLIP initialises position embeddings with std 0.02 while a 16x16x3 patch embeds with a magnitude near 5:
    # position is ~250x weaker than content, and a model trained from scratch for a minute cannot tell where
    # things are. Pretrained CLIPs learned this over millions of steps; here we start position at content scale.
    with torch.no_grad():
        model.model.vision_tower.embeddings.position_embedding.weight.normal_(std=spec.position_init_std)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=32,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "mmft_tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2))
    return out_dir


def cache_dir() -> Path:
    """Where mmft keeps built tiny models and generated demo data: ``$MMFT_CACHE`` or ``~/.cache/mmft``."""
    return Path(os.environ.get("MMFT_CACHE", Path.home() / ".cache" / "mmft"))


def tiny_llava_path(spec: TinyLlavaSpec = TinyLlavaSpec(), root: str | os.PathLike | None = None) -> Path:
    """Return the folder of the tiny LLaVA for ``spec``, building it once (atomically) if needed.

    Built into a temporary sibling folder and renamed, so a process killed mid-build never leaves a
    half-written model that a later run would load.
    """
    root = Path(root) if root is not None else cache_dir() / "models"
    target = root / spec.cache_key()
    if (target / "mmft_tiny_spec.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        build_tiny_llava(tmp, spec)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: use its build
            if not (target / "mmft_tiny_spec.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# Names accepted by `--model_name_or_path` that resolve to a locally built tiny model. The "mmft:"
# prefix cannot collide with a Hub id (a colon is not allowed in repo names).
BUILTIN_MODELS = {
    "mmft:tiny-llava": TinyLlavaSpec(),
    "mmft:tiny-llava-pad-eos": TinyLlavaSpec(pad_is_eos=True),
}


def resolve_builtin_model(name: str) -> str:
    """Map ``mmft:<name>`` to the local folder of that tiny model (building it once); other names pass through."""
    if not name.startswith("mmft:"):
        return name
    if name not in BUILTIN_MODELS:
        raise ValueError(f"Unknown built-in model {name!r}. Built-in models: {', '.join(sorted(BUILTIN_MODELS))}.")
    return str(tiny_llava_path(BUILTIN_MODELS[name]))
