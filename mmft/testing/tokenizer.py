"""A byte-level BPE tokenizer trained in-process, for tiny offline models of any family.

Real checkpoints ship tokenizers of several kinds (BPE, SentencePiece, tiktoken-style); the label code in
``mmft.train.collator`` only relies on a fast tokenizer with character offsets, so one small trained BPE stands in for
all of them. What differs between families is the *special tokens* (image placeholders, turn markers, BOS/EOS)
and the *chat template*; both are arguments here, and each family fixture passes its own.
"""

from __future__ import annotations

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


BASE_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<pad>"]
# Kept for callers of the first version of this module.
SPECIAL_TOKENS = BASE_SPECIAL_TOKENS
# The BOS/EOS/PAD tokens of SentencePiece-style tokenizers (Llama 2, Mistral, Vicuna, BART): train_tokenizer(...,
# **SENTENCEPIECE_ROLES).
SENTENCEPIECE_ROLES = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def train_tokenizer(
    vocab_size: int = 640,
    pad_is_eos: bool = False,
    chat_template: str = CHATML_TEMPLATE,
    *,
    special_tokens: list[str] | tuple[str, ...] = (),
    eos_token: str = "<|im_end|>",
    pad_token: str | None = None,
    bos_token: str | None = None,
    extra_special_tokens: dict[str, str] | None = None,
    model_max_length: int = 4096,
):
    """Train a byte-level BPE tokenizer in-process and wrap it in transformers' fast tokenizer class.

    Args:
        vocab_size: total vocabulary, special tokens included.
        pad_is_eos: pad with the EOS token (as many real checkpoints do) instead of ``<pad>``.
        chat_template: Jinja chat template stored on the tokenizer.
        special_tokens: the family's own special tokens (image, turn and wrapper tokens), added after the base
            ones; each is one id and is never split or merged with text.
        eos_token / pad_token / bos_token: which (special) tokens play these roles; ``pad_token`` defaults to
            ``<pad>`` (or EOS with ``pad_is_eos``).
        extra_special_tokens: named special tokens (``{"image_token": "<image>"}``) that processors read as
            ``tokenizer.image_token``; default: ``<image>`` as the image token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys([*BASE_SPECIAL_TOKENS, *special_tokens,
                                   *(t for t in (eos_token, pad_token, bos_token) if t)]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in _CORPUS.splitlines() if line.strip()]
    # Answers follow "assistant\n" with no leading space, so each word must also be learned bare (as real
    # tokenizers have it); otherwise "square" splits into s/qu/are and short answers share first pieces.
    bare_words = sorted({word.strip("?.,") for line in lines for word in line.split()})
    tok.train_from_iterator(lines * 4 + bare_words * 8, trainer=trainer)
    if pad_token is None:
        pad_token = eos_token if pad_is_eos else "<pad>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos_token,
        pad_token=pad_token,
        unk_token=None,
        bos_token=bos_token,
        extra_special_tokens=extra_special_tokens if extra_special_tokens is not None else {"image_token": "<image>"},
        chat_template=chat_template,
        model_max_length=model_max_length,
    )
