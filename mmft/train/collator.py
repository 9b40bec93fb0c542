"""Records → processor-ready batches, with labels that supervise the assistant and nothing else.

The collator runs in DataLoader workers. For each canonical record it

1. loads its images (``mmft.data.images``: safe paths, RGB, ``max_pixels`` cap); in training, a record whose image
   cannot be loaded is dropped and reported to the trainer, or stops the run (``on_bad_record``,
   ``mmft.data.badrecords``);
2. renders the conversation with the processor's own chat template;
3. finds the assistant spans in the rendered text by *rendering prefixes and diffing*: the text of turn i
   is what ``messages[:i+1]`` adds to ``messages[:i]`` + generation prompt. This works for any template,
   needs no model-specific marker strings, and includes the end-of-turn token the template writes
   (``<|im_end|>``, ``<end_of_turn>``, ``<|eot_id|>``, ``</s>``...), which the model must learn to emit to stop;
4. runs the processor once on the whole batch (it expands each image placeholder into the model's image
   tokens, pads, and batches pixels as its model expects) and maps the supervised text tokens onto the
   expanded ids of each row;
5. applies the length budget: image tokens are never truncated; a sample over ``max_length`` raises
   (``error``, naming the record and its length), is dropped and counted (``drop``), or has its images downscaled
   until it fits, never below a floor, and is counted (``shrink``, see ``VLMCollator.shrink_to_fit``).

In training it can also augment (opt-in, deterministic under the seed; ``mmft.data.augment``): images right after
loading, and user questions before rendering.

Labels never depend on token ids, so ``pad_token == eos_token`` cannot erase the EOS label: padding is
known from its position, not its id.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ..data import images as images_lib
from ..data.augment import ImageAugmenter, PromptParaphraser, sample_rng
from ..data.badrecords import BAD_RECORD_POLICIES, BAD_RECORDS_KEY, BadRecordError
from ..data.records import prompt_and_answer
from ..families import Family, family_for_processor
from .labels import IGNORE_INDEX, LabelAlignmentError, _token_mask, assistant_char_spans, map_labels, render
from .overlength import DEFAULT_SHRINK_MIN_PIXELS, OVERLENGTH_POLICIES, OverlengthError, ShrinkToFitMixin

logger = logging.getLogger(__name__)

KEEPALIVE_ID = "mmft-vision-keepalive"  # the unsupervised blank-image sample of ``keep_vision_active``
NUM_DROPPED_KEY = "mmft_num_dropped"  # popped by VLMTrainer before the forward pass
NUM_SHRUNK_KEY = "mmft_num_shrunk"  # likewise


@dataclass
class VLMCollator(ShrinkToFitMixin):
    """Turn canonical records into a padded batch for a VLM.

    Args:
        processor: the model's processor (``AutoProcessor``), with a chat template.
        mode: ``"train"`` (full conversations, right padding, labels) or ``"generate"`` (the conversation up to
            the last assistant turn plus the generation prompt, left padding, no labels).
        max_length: token budget per sample *after* image expansion; ``None`` for no limit.
        overlength_policy: ``"error"`` (raise, naming the record and its length), ``"drop"`` (skip and count) or
            ``"shrink"`` (downscale the sample's images until it fits; count; see ``shrink_to_fit``).
        shrink_min_pixels: with ``"shrink"``, no image is made smaller than this many pixels (width*height).
        max_pixels: cap on each image's width*height before the processor sees it (aspect ratio kept).
        max_image_pixels: refuse images whose header claims more pixels than this (decompression bombs).
        allow_images_outside_root: let image paths be absolute or escape the dataset root.
        allow_remote_images: let image refs be http(s) URLs.
        pad_to_multiple_of: round the padded length up (e.g. 8 or 64 for tensor cores).
        family: the model family's hooks (``mmft.families``); default: found from the processor's class.
        keep_vision_active: in training, give a batch without any image one extra, fully unsupervised sample holding
            a blank image, so the vision tower and projector run on every process at every step. Needed when
            processes train in lockstep over those parameters: under ZeRO-3 / FSDP a process that skips the vision
            tower never joins its parameter all-gathers and the others hang; under DDP a trainable projector left
            unused on one process breaks the gradient reduction. The extra sample has no labels, so the loss and
            its normalisation are unchanged. ``build_trainer`` turns it on when training on several processes.
        augmenter: training-only image augmentation (``mmft.data.augment.ImageAugmenter``), applied after loading.
        paraphraser: training-only question paraphrases (``mmft.data.augment.PromptParaphraser``) for user turns.
        seed: with ``epoch`` (``set_epoch``) and the record id, the only input of the augmentation draws.
        on_bad_record: in training, what to do with a record whose image cannot be loaded (``ImageLoadError``:
            missing, refused, truncated, corrupt). ``None`` (default): the error propagates as it is (``mmft data
            check`` sorts it by kind). ``"error"``: raise ``BadRecordError`` naming the record, the file and the
            flag. ``"drop"``: leave the sample out of the batch, log its id and reason, and report it to the trainer
            under ``BAD_RECORDS_KEY`` with the number of records the batch was given (``mmft.data.badrecords``).
    """

    processor: Any
    mode: str = "train"
    max_length: int | None = None
    overlength_policy: str = "error"
    max_pixels: int | None = None
    max_image_pixels: int | None = images_lib.DEFAULT_MAX_IMAGE_PIXELS
    allow_images_outside_root: bool = False
    allow_remote_images: bool = False
    pad_to_multiple_of: int | None = None
    family: Family | None = None
    keep_vision_active: bool = False
    shrink_min_pixels: int = DEFAULT_SHRINK_MIN_PIXELS
    augmenter: ImageAugmenter | None = None
    paraphraser: PromptParaphraser | None = None
    seed: int = 0
    on_bad_record: str | None = None
    label_turn_suffix: bool = False  # --label_turn_suffix
    _placeholder_ids: set[int] = field(init=False, repr=False)
    _epoch: torch.Tensor = field(init=False, repr=False)
    # The shrink policy's ImageTokenCounter, built at the first shrink; False when the counts are not predictable.
    _shrink_counter: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.mode not in ("train", "generate"):
            raise ValueError(f"mode must be 'train' or 'generate', got {self.mode!r}")
        if self.overlength_policy not in OVERLENGTH_POLICIES:
            raise ValueError(f"overlength_policy must be one of {OVERLENGTH_POLICIES}, got {self.overlength_policy!r}")
        if self.on_bad_record is not None and self.on_bad_record not in BAD_RECORD_POLICIES:
            raise ValueError(f"on_bad_record must be None or one of {BAD_RECORD_POLICIES}, got {self.on_bad_record!r}")
        if self.shrink_min_pixels is None or self.shrink_min_pixels < 1:
            raise ValueError(f"shrink_min_pixels must be a positive number of pixels, got {self.shrink_min_pixels!r}")
        # Shared memory: DataLoader workers (persistent ones included) hold copies of this collator, and must see the
        # epoch the trainer sets in the main process.
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()
        if self.family is None:
            self.family = family_for_processor(self.processor)
        self.family.prepare_processor(self.processor)  # raises when no chat template can be had
        tokenizer = self.tokenizer
        if not getattr(tokenizer, "is_fast", True):
            raise ValueError("mmft needs a fast tokenizer (character offsets are used to place labels).")
        if tokenizer.pad_token is None:
            # Padding positions are masked out of attention and labels, so any id will do; eos is the convention.
            tokenizer.pad_token = tokenizer.eos_token
            logger.info("The tokenizer has no pad token; padding with eos %r.", tokenizer.eos_token)
        self._placeholder_ids = set()
        for token in self.family.image_placeholders(self.processor):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is not None and token_id != tokenizer.unk_token_id:
                self._placeholder_ids.add(token_id)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    # ---- augmentation state --------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer (``mmft.data.augment.CollatorEpochCallback``) as each epoch begins."""
        self._epoch.fill_(int(epoch))

    @property
    def augments(self) -> bool:
        return self.mode == "train" and (self.augmenter is not None or self.paraphraser is not None)

    def for_evaluation(self) -> VLMCollator:
        """This collator without augmentation, for evaluation-loss batches (``self`` when it does not augment)."""
        if not self.augments:
            return self
        plain = copy.copy(self)
        plain.augmenter = plain.paraphraser = None
        return plain

    def _rng(self, record, stream: str):
        return sample_rng(self.seed, self.epoch, record["id"], stream)

    # ---- one sample: images, rendered text, assistant spans ------------------------------------------
    def load_images(self, record) -> list:
        return [
            images_lib.load_image(
                ref,
                root=record.get("image_root"),
                allow_outside_root=self.allow_images_outside_root,
                allow_remote=self.allow_remote_images,
                max_pixels=self.max_pixels,
                max_image_pixels=self.max_image_pixels,
                record_id=record["id"],
            )
            for ref in record["images"]
        ]

    def prepare(self, record) -> tuple[str, list, list[tuple[int, int]]]:
        """The rendered text, the decoded images and (in training) the assistant character spans.

        In training, augmentation (when configured) paraphrases user turns before rendering, so the assistant spans
        are found in the text the model actually sees, and transforms each image right after it is loaded.
        """
        self.family.check_record(record)
        if self.mode == "train":
            messages = record["messages"]
            if self.paraphraser is not None:
                messages = self.paraphraser(messages, self._rng(record, "prompt"))
            messages = self.family.conversation(messages)
            text, spans = assistant_char_spans(self.processor, messages, record["id"],
                                               include_turn_suffix=self.label_turn_suffix)
        else:
            messages, _ = prompt_and_answer(record)
            messages = self.family.conversation(messages)
            text, spans = render(self.processor, messages, add_generation_prompt=True), []
        text, spans = self.family.rewrite_text(self.processor, text, spans)
        images = self.load_images(record)
        if self.mode == "train" and self.augmenter is not None and images:
            rng = self._rng(record, "image")
            images = [self.augmenter(image, rng) for image in images]
        return text, images, spans

    def labels_for(self, record_id: str, text: str, spans, input_ids: list[int]) -> list[int]:
        plain = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        mask = _token_mask(plain["offset_mapping"], spans)
        labels = map_labels(plain["input_ids"], mask, self._placeholder_ids, input_ids, record_id)
        if all(label == IGNORE_INDEX for label in labels):
            raise LabelAlignmentError(f"record {record_id!r}: no assistant tokens to supervise.")
        return labels

    def decoder_labels(self, records, prepared) -> torch.Tensor:
        """Encoder-decoder families: each sample's answer (its assistant span, with the end-of-turn token the template
        writes) tokenised as decoder labels, right-padded with ``IGNORE_INDEX``. The model builds its decoder inputs
        by shifting them right from its own ``decoder_start_token_id``, as generation starts."""
        rows = []
        for record, (text, _, spans) in zip(records, prepared):
            if len(spans) != 1:  # prompt-style folding leaves exactly one answer
                raise LabelAlignmentError(f"record {record['id']!r}: expected one answer for the decoder, found "
                                          f"{len(spans)}.")
            start, end = spans[0]
            rows.append(self.tokenizer(text[start:end], add_special_tokens=False)["input_ids"])
        labels = torch.full((len(rows), max(map(len, rows), default=0)), IGNORE_INDEX, dtype=torch.long)
        for row, ids in enumerate(rows):
            labels[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return labels

    # ---- a batch -------------------------------------------------------------------------------
    @staticmethod
    def prompt_text(text: str, spans) -> str:
        """The rendered text before the last supervised answer (the whole text of a generation prompt)."""
        return text[: spans[-1][0]] if spans else text

    def process(self, prepared) -> dict[str, torch.Tensor]:
        """One batched processor call: the processor pads text and batches pixels the way its model expects.

        An encoder-decoder family's processor gets the prompts only: the answers are the decoder's labels."""
        if self.family.encoder_decoder:
            texts = [self.prompt_text(text, spans) for text, _, spans in prepared]
        else:
            texts = [text for text, _, _ in prepared]
        images = [imgs for _, imgs, _ in prepared]
        kwargs = dict(
            add_special_tokens=False,  # the chat template already wrote any BOS
            padding=True,
            padding_side="left" if self.mode == "generate" else "right",
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        kwargs.update(self.family.processor_kwargs(self.mode))  # the family's word is final
        return self.processor(text=texts, images=images if any(images) else None, **kwargs)

    def prepare_all(self, records: list[dict]) -> tuple[list[dict], list, list[tuple[str, str, str]]]:
        """``(records kept, their prepared samples, bad)``: ``bad`` lists ``(id, reason, message)`` of the records
        whose images could not be loaded, left out under ``on_bad_record="drop"`` (see the class docstring)."""
        if self.on_bad_record is None or self.mode != "train":
            return records, [self.prepare(record) for record in records], []
        kept, prepared, bad = [], [], []
        for record in records:
            try:
                prepared.append(self.prepare(record))
            except images_lib.ImageLoadError as error:
                if self.on_bad_record == "error":
                    raise BadRecordError(
                        f"{error} Training stopped at this record (--on_bad_record error): fix or remove it "
                        "(`mmft data check --decode_images` finds every such record), or pass --on_bad_record drop "
                        "to leave such records out (up to --max_bad_fraction of them)."
                    ) from None
                # Logged here, in the DataLoader worker, where the record is known; the trainer adds up the counts.
                logger.warning("Dropping training record %r (%s): %s", record["id"], error.kind, error)
                bad.append((str(record["id"]), error.kind, str(error)))
            else:
                kept.append(record)
        return kept, prepared, bad

    def __call__(self, records: list[dict]) -> dict[str, torch.Tensor]:
        given = len(records)
        records, prepared, bad = self.prepare_all(records)
        # Decided on the records kept: a batch whose only image record was dropped needs the blank image too. A batch
        # with no record left gets no keep-alive sample: alone, its loss would average over no label (NaN); it
        # becomes an empty batch, which the trainer turns into a zero loss over every trainable parameter.
        keepalive = (self.keep_vision_active and self.mode == "train" and bool(records)
                     and not any(r["images"] for r in records))
        if keepalive:
            records = [*records, self._vision_keepalive_record()]
            prepared.append(self.prepare(records[-1]))
        batch = self.process(prepared) if prepared else self.empty_batch()
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        over = [i for i, n in enumerate(lengths) if self.max_length is not None and n > self.max_length]
        if over and self.overlength_policy == "error":
            i = over[0]
            raise OverlengthError(
                f"record {records[i]['id']!r} is {lengths[i]} tokens long after image expansion, over "
                f"max_length={self.max_length}. Image tokens are never truncated. Raise --max_length, lower "
                "--max_pixels (fewer image tokens for some models), or pass --overlength_policy drop (or shrink, "
                "for models whose image token count depends on the image size)."
            )
        shrunk = 0
        if over and self.overlength_policy == "shrink":
            for i in over:
                prepared[i], _ = self.shrink_to_fit(records[i], prepared[i], lengths[i])
            shrunk, over = len(over), []
            if self.mode == "generate":  # no trainer counter for prompts: say it here (training logs a count)
                logger.info("Shrunk the images of %d prompt(s) to fit max_length=%d.", shrunk, self.max_length)
            # Like drop: process the batch again rather than patching pixel tensors (their layout is the family's).
            batch = self.process(prepared)
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            for i, n in enumerate(lengths):
                if n > self.max_length:  # each sample fitted alone; a processor that batches differently is a bug
                    raise OverlengthError(
                        f"record {records[i]['id']!r} fitted max_length={self.max_length} after shrinking when "
                        f"processed alone, but is {n} tokens long in its batch. Please report the model name; "
                        "meanwhile use --overlength_policy drop or a larger --max_length."
                    )
        if over:
            for i in over:
                logger.warning("Dropping record %r: %d tokens after image expansion > max_length=%d",
                               records[i]["id"], lengths[i], self.max_length)
            records = [r for i, r in enumerate(records) if i not in over]
            prepared = [p for i, p in enumerate(prepared) if i not in over]
            # Rare path: process the survivors again rather than slicing pixel tensors, whose layout is the
            # family's business (stacked images, concatenated patches, per-sample tiles...).
            batch = self.process(prepared) if prepared else self.empty_batch()
            lengths = [lengths[i] for i in range(len(lengths)) if i not in over]
        if self.mode == "train" and self.family.encoder_decoder:
            batch["labels"] = self.decoder_labels(records, prepared)
        elif self.mode == "train":
            labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
            for row, (record, (text, _, spans)) in enumerate(zip(records, prepared)):
                real = batch["attention_mask"][row].bool()  # wherever the processor padded (Fuyu's pads left)
                ids = batch["input_ids"][row][real].tolist()
                labels[row, real] = torch.tensor(self.labels_for(record["id"], text, spans, ids))
            batch["labels"] = labels
        if self.mode == "train":
            if keepalive and records and records[-1]["id"] == KEEPALIVE_ID:
                batch["labels"][-1] = IGNORE_INDEX  # runs the vision tower, teaches nothing
            if self.on_bad_record == "drop":
                batch[BAD_RECORDS_KEY] = {"seen": given, "bad": bad}
            if self.overlength_policy == "drop":
                batch[NUM_DROPPED_KEY] = torch.tensor(len(over))
            elif self.overlength_policy == "shrink":
                batch[NUM_SHRUNK_KEY] = torch.tensor(shrunk)
        else:
            batch["ids"] = [record["id"] for record in records]
        if prepared:
            prompts = [self.prompt_text(text, spans) for text, _, spans in prepared]
            batch.update(self.family.prompt_inputs(self.processor, prompts, self.mode))
        return self.family.finalize_batch(batch, self.mode)

    @staticmethod
    def _vision_keepalive_record() -> dict:
        return {
            "id": KEEPALIVE_ID,
            "images": [Image.new("RGB", (32, 32))],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "."}]},
            ],
        }

    def empty_batch(self) -> dict[str, torch.Tensor]:
        empty = torch.zeros((0, 0), dtype=torch.long)
        return {"input_ids": empty, "attention_mask": empty.clone()}
