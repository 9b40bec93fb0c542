"""``DataArguments``: where the data comes from, how records are read and how samples are budgeted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..data.images import DEFAULT_MAX_IMAGE_PIXELS
from ..errors import UsageError


# Every field below has the same shape, field(default=..., metadata={"help": ...}): one command-line flag, its
# default and its --help text. The repetition is deliberate (HfArgumentParser reads exactly this), not code to share.
@dataclass
class DataArguments:
    """Where the data comes from and how samples are budgeted."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Training data: 'shapes' (the built-in demo), a data card name (e.g. 'chartqa'; see "
                          "data_cards/) or card file (.md), a local .json/.jsonl/.parquet/.csv file, a folder saved "
                          "with save_to_disk, an image folder with metadata.jsonl/csv, or a Hub dataset id (its "
                          "card is used when there is one; otherwise the layout is detected from the columns)."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Evaluation data, same forms as --dataset_name. Default: --dataset_name with --eval_split."},
    )
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Split used for evaluation (e.g. 'validation', 'test'). Without it and without "
                          "--eval_dataset_name there is no evaluation."},
    )
    image_root: str | None = field(
        default=None,
        metadata={"help": "Folder that relative image paths resolve against. Default: the data file's folder."},
    )
    allow_images_outside_root: bool = field(
        default=False,
        metadata={"help": "Allow absolute image paths and paths leading outside the image root."},
    )
    allow_remote_images: bool = field(
        default=False, metadata={"help": "Allow http(s) image URLs in records (fetched at training time)."}
    )
    max_length: int | None = field(
        default=2048,
        metadata={"help": "Maximum tokens per sample after image expansion. Image tokens are never truncated; "
                          "longer samples follow --overlength_policy."},
    )
    overlength_policy: Literal["error", "drop", "shrink"] = field(
        default="error",
        metadata={"help": "What to do with a sample longer than --max_length: 'error' (stop, naming the record), "
                          "'drop' (skip it; the count is logged) or 'shrink' (downscale its images, aspect kept, "
                          "until it fits, never below --shrink_min_pixels; the count is logged). 'shrink' helps "
                          "only models whose image token count depends on the image size (Qwen2-VL-style dynamic "
                          "resolution, Pixtral/Mistral 3, InternVL tiles, LLaVA-NeXT/OneVision anyres down to their "
                          "smallest grid); where it does not (LLaVA 1.5, PaliGemma, Gemma 3, Idefics3/SmolVLM, whose "
                          "processor resizes every image to one longest edge) it stops with an error saying so."},
    )
    shrink_min_pixels: int = field(
        default=224 * 224,
        metadata={"help": "With --overlength_policy shrink: the floor, in pixels (width*height), below which no "
                          "image is shrunk (default 224*224 = 50176). A sample that does not fit even at the floor "
                          "stops training with an error naming it."},
    )
    augment_images: bool = field(
        default=False,
        metadata={"help": "Augment training images (never evaluation or generation): a random resized crop "
                          "(--augment_crop_scale, aspect within 10%, resized back to the original size) and colour "
                          "jitter (--augment_color_jitter). Deterministic: each draw depends only on the seed "
                          "(--data_seed, else --seed), the epoch and the record id."},
    )
    augment_crop_scale: list[float] = field(
        default_factory=lambda: [0.8, 1.0],
        metadata={"help": "With --augment_images: the range of the image area a crop keeps, two numbers "
                          "0 < min <= max <= 1 ('1 1' disables cropping)."},
    )
    augment_color_jitter: float = field(
        default=0.1,
        metadata={"help": "With --augment_images: brightness, contrast and saturation are each scaled by a factor "
                          "in [1 - x, 1 + x] (hue is never changed); 0 disables it."},
    )
    augment_hflip: bool = field(
        default=False,
        metadata={"help": "With --augment_images: also mirror images left-right half of the time. Off by default "
                          "because flips break text in images, charts and every left/right question; warns."},
    )
    prompt_paraphrases: str | None = field(
        default=None,
        metadata={"help": "A text file of question templates, one per line, each containing {question}: in "
                          "training, each user turn's question is put into a template drawn per sample "
                          "(deterministically, like --augment_images). Add a line '{question}' to keep the original "
                          "wording among the choices. Blank lines and lines starting with # are ignored."},
    )
    max_pixels: int | None = field(
        default=None,
        metadata={"help": "Downscale every image to at most this many pixels (width*height, aspect kept) before "
                          "the processor sees it. Fewer pixels: faster, and fewer image tokens for models with "
                          "dynamic resolution."},
    )
    max_image_pixels: int | None = field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metadata={"help": "Refuse images whose header claims more pixels than this (decompression bombs)."},
    )
    on_bad_record: Literal["drop", "error"] = field(
        default="drop",
        metadata={"help": "What to do with a bad record: one whose structure is invalid or whose image is missing, "
                          "outside the image root, over --max_image_pixels, truncated or unreadable, found by the "
                          "start-up scan (headers and PNG/JPEG end markers, nothing decoded) or when the data loader "
                          "decodes it. 'drop' (default): leave it out, log its id and reason, count it "
                          "(train_bad_records* in train_results.json and the model card), and stop with a report "
                          "once more than --max_bad_fraction of the records are bad. 'error': stop before the first "
                          "step naming every bad record the scan found, or at the first one the loader meets."},
    )
    max_bad_fraction: float = field(
        default=0.01,
        metadata={"help": "With --on_bad_record drop: stop with a report once more than this share of the records "
                          "scanned at start-up, or of the samples the data loader has seen, are bad. Judged over at "
                          "least 100 samples, so at the default 0.01 one bad sample among the first few does not "
                          "stop a run. 0 stops at the first bad record (with the report)."},
    )
    label_turn_suffix: bool = field(
        default=False,
        metadata={"help": "Also supervise what the chat template writes after each answer's end-of-turn token "
                          "(ChatML's newline after <|im_end|>; nothing for templates that write nothing there). "
                          "Default false: "
                          "labels cover the answer and its end-of-turn token, the token generation stops at, and "
                          "nothing the model never has to produce. true matches TRL's completion-only labels "
                          "(benchmarks/RESULTS.md, issue #16, measures both)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training records."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation records."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the training data instead of loading it all (Hub ids, cards and local files; an "
                          "IterableDataset, so --max_steps is required). Evaluation records are streamed too and "
                          "kept in memory (bound them with --max_eval_samples)."},
    )
    replay_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Old-task training data to rehearse while training on the new data (same forms as "
                          "--dataset_name, read with its own data card or detected layout: the --column_* flags and "
                          "--prompt_template apply to the new data only). Each epoch mixes in a fresh sample of its "
                          "records, --replay_fraction of the epoch, drawn from the seed (--data_seed, else --seed) "
                          "and the epoch number, so runs and resumes repeat the same draws."},
    )
    replay_split: str = field(default="train", metadata={"help": "Split of --replay_dataset_name to draw from."})
    replay_fraction: float = field(
        default=0.2,
        metadata={"help": "With --replay_dataset_name: the share of each epoch that is replayed old-task records, "
                          "in (0, 1). 0.2 with 800 new records adds 200 old ones (1,000 per epoch)."},
    )
    retention_eval_dataset_name: list[str] | None = field(
        default=None,
        metadata={"help": "Old-task evaluation data (one or more, same forms as --dataset_name), scored before "
                          "training (the starting model or adapter) and after, each with its own data card's "
                          "metrics (else vqa_accuracy exact_match), to measure what the new training made the "
                          "model forget. Results: retention_results.json, eval_results.json (retention_* keys), "
                          "the model card and eval_report.html. The new task's evaluation set is then scored "
                          "before training too, so both show their change."},
    )
    retention_eval_split: str | None = field(
        default=None,
        metadata={"help": "Split of the --retention_eval_dataset_name sets (default: --eval_split, else 'test'). "
                          "--max_eval_samples bounds them too."},
    )
    column_image: str | None = field(
        default=None,
        metadata={"help": "Column holding the image(s) (an Image, a path or a list). Default: the data card's, or "
                          "the Image-typed column / 'image' / 'images'. A template such as '{filepath}/{filename}' "
                          "builds a path relative to --image_root."},
    )
    column_id: str | None = field(default=None, metadata={"help": "Column used as the record id (default: 'id')."})
    column_question: str | None = field(
        default=None, metadata={"help": "Column holding the question (question answering and multiple choice)."}
    )
    column_answer: str | None = field(
        default=None,
        metadata={"help": "Column holding the answer(s): a string, a list of strings or a list of {answer: ...}. "
                          "All answers become references; the most common one is the training target. For "
                          "multiple choice: the correct option's index, letter or text."},
    )
    column_caption: str | None = field(
        default=None,
        metadata={"help": "Column holding the caption(s) (captioning; the first caption is the training target, "
                          "all are references)."},
    )
    column_options: str | None = field(
        default=None, metadata={"help": "Column holding the list of options (multiple choice; listed as A., B., ...)."}
    )
    column_messages: str | None = field(
        default=None,
        metadata={"help": "Column holding the conversation: role/content turns or LLaVA from/value turns."},
    )
    prompt_template: str | None = field(
        default=None,
        metadata={"help": "Prompt for question answering / captioning / multiple choice rows, with {question}, "
                          "{options} or any column name as fields, e.g. '{question}\\nAnswer with one word.'. "
                          "Default: the data card's prompt, else a generic one."},
    )

    def __post_init__(self):
        if not 0 < self.replay_fraction < 1:
            raise UsageError(f"--replay_fraction must be between 0 and 1 (the share of each epoch that is replayed "
                             f"old-task records, e.g. 0.2), got {self.replay_fraction}.")

    def column_overrides(self) -> dict[str, str | None]:
        """The ``--column_*`` flags as ``{role: column}`` (``mmft.data.cards`` role names)."""
        return {"image": self.column_image, "id": self.column_id, "question": self.column_question,
                "answers": self.column_answer, "captions": self.column_caption, "options": self.column_options,
                "messages": self.column_messages}
