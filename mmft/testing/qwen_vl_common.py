"""What the tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL fixtures build the same way: the tokenizer (the checkpoints'
special tokens and roles), the processor (``Qwen2VLImageProcessorPil`` plus the family's video processor, sized in
pixels), the vision token ids of the model config and the generation config. Each fixture keeps its sizes and its
config; this module holds only the procedure they share.
"""

from __future__ import annotations

from .fixture import save_tiny_model
from .tokenizer import train_tokenizer

SPECIAL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def qwen_vl_tokenizer(chat_template: str):
    """As the Instruct checkpoints': eos ``<|im_end|>`` (the turn end), pad ``<|endoftext|>``, no BOS."""
    return train_tokenizer(
        640,
        chat_template=chat_template,
        special_tokens=SPECIAL_TOKENS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )


def qwen_vl_processor(processor_class, video_processor_class, tokenizer, chat_template: str, *, min_pixels: int,
                      max_pixels: int, **pixels):
    """The processor: images resized to between ``min_pixels`` and ``max_pixels`` of area; ``pixels`` (patch,
    temporal patch and merge sizes, mean/std) go to the image and the video processor alike (videos are unused, but
    the processor requires a video processor)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels, **pixels)
    video_processor = video_processor_class(size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, **pixels)
    return processor_class(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=chat_template,
    )


def vision_token_ids(tokenizer) -> dict:
    """The model config's ids of the image/video placeholders and of the tokens around them."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"), "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"), "vision_end_token_id": ids("<|vision_end|>"),
    }


def save_qwen_vl_model(model_class, config, processor, out_dir, tokenizer):
    """``save_tiny_model`` with the Instruct checkpoints' generation_config.json (but greedy): stop at ``<|im_end|>``
    or ``<|endoftext|>``, pad with ``<|endoftext|>``, no BOS."""
    ids = tokenizer.convert_tokens_to_ids
    save_tiny_model(
        model_class, config, processor, out_dir,
        eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")], pad_token_id=ids("<|endoftext|>"), bos_token_id=None,
    )
