"""``ContrastiveTrainer``: ``transformers.Trainer`` for dual encoders (CLIP, SigLIP, open_clip).

Training: each batch's images and captions go through the model once (under DDP, through the wrapper's forward),
and the loss (``mmft.contrastive.losses``: InfoNCE or sigmoid, by the adapter) scores this process's pairs against
every process's, gathered with gradients. CLIP's logit scale is clamped to at most 100 after every optimizer step,
as CLIP and open_clip do. Evaluation (``evaluate``) embeds the held-out images and captions once and reports
image->text and text->image Recall@K, and zero-shot accuracy for each zero-shot task, under the usual prefix
(``eval_t2i_recall@1``), so logging, ``eval_results.json`` and ``metric_for_best_model`` treat them as any metric;
the main process writes ``eval_report.html`` (top-5 galleries). Every process evaluates the whole held-out set (it
is embedded once: cheap next to training), so no collective is needed and all processes report the same figures.
"""

from __future__ import annotations

import logging
import math
import os

import torch
from transformers import Trainer, TrainerCallback

from ..errors import UsageError
from ..train.checkpoints import CompleteCheckpointsMixin
from .collator import NUM_DROPPED_KEY
from .evaluation import DEFAULT_KS, embed_images, embed_texts, recall_at_k, zero_shot_accuracy
from .losses import MAX_LOG_LOGIT_SCALE, clip_loss, siglip_loss
from .models import save_trained
from .pairs import retrieval_pairs

logger = logging.getLogger("mmft")

REPORT_FILE = "eval_report.html"


class ClampLogitScale(TrainerCallback):
    """After each optimizer step: ``logit_scale`` in ``[0, log 100]`` (CLIP's clip; open_clip does the same)."""

    def __init__(self, parameter):
        self.parameter = parameter

    def on_optimizer_step(self, args, state, control, **kwargs):
        with torch.no_grad():
            self.parameter.clamp_(0, MAX_LOG_LOGIT_SCALE)


class ContrastiveTrainer(CompleteCheckpointsMixin, Trainer):
    """A ``Trainer`` for dual encoders.

    Args (besides ``Trainer``'s; ``data_collator`` is a ``ContrastiveCollator``):
        adapter: the model's adapter (``mmft.contrastive.models``).
        zero_shot_tasks: ``ZeroShotTask`` objects scored at every evaluation.
        base_model_name: the model name as given (saved beside a LoRA adapter, to load it back).
        retrieval_ks: the K of Recall@K.
        gallery_queries: queries shown, with their top 5, in ``eval_report.html`` (0: no report).
    """

    def __init__(self, *args, adapter, zero_shot_tasks=(), base_model_name=None, retrieval_ks=DEFAULT_KS,
                 gallery_queries: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.adapter = adapter
        self.zero_shot_tasks = list(zero_shot_tasks)
        self.base_model_name = base_model_name
        self.retrieval_ks = tuple(retrieval_ks)
        self.gallery_queries = gallery_queries
        self.model_accepts_loss_kwargs = False  # the loss is already a mean: no rescaling by item counts
        self.num_dropped = 0
        self.run_metrics = {}
        global_batch = self.args.per_device_train_batch_size * max(self.args.world_size, 1)
        if self.train_dataset is not None and global_batch < 2:
            raise UsageError(
                f"A contrastive batch needs negatives: per-device batch {self.args.per_device_train_batch_size} x "
                f"{self.args.world_size} process(es) = {global_batch} pair per step has none. Pass "
                "--per_device_train_batch_size 2 or more (CLIP and SigLIP train with thousands).")
        params = adapter.logit_parameters(self.model)
        if adapter.loss == "clip" and "logit_scale" in params:
            self.add_callback(ClampLogitScale(params["logit_scale"]))
        if hasattr(self.data_collator, "set_epoch"):
            from ..data.augment import CollatorEpochCallback

            self.add_callback(CollatorEpochCallback(self.data_collator))

    # ---- training ------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        groups, text_keys = inputs.pop("groups"), inputs.pop("text_keys")
        dropped = inputs.pop(NUM_DROPPED_KEY, None)
        if model.training:
            self.num_dropped += int(dropped or 0)
        outputs = self.adapter.forward(model, inputs)
        params = self.adapter.logit_parameters(model)
        if self.adapter.loss == "siglip":
            loss = siglip_loss(outputs.image_embeds, outputs.text_embeds, params["logit_scale"],
                               params["logit_bias"], groups, text_keys)
        else:
            loss = clip_loss(outputs.image_embeds, outputs.text_embeds, params["logit_scale"], groups, text_keys)
        return (loss, outputs) if return_outputs else loss

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        if self.num_dropped:
            output.metrics["train_dropped_pairs"] = self.num_dropped
        scale = self.adapter.logit_parameters(self.model).get("logit_scale")
        if scale is not None:
            output.metrics["train_logit_scale"] = round(math.exp(float(scale.detach().float().reshape(-1)[0])), 4)
        return output

    # ---- saving ----------------------------------------------------------------------------------------------------
    def _save(self, output_dir=None, state_dict=None):
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        save_trained(self.adapter, self.accelerator.unwrap_model(self.model), self.processing_class, output_dir,
                     self.base_model_name)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def create_model_card(self, *args, **kwargs) -> None:
        """``push_to_hub`` calls this before uploading: rewrite mmft's card (``mmft.contrastive.card``), not
        transformers' generic one."""
        card_args = getattr(self, "_card_args", None)
        if card_args is not None and self.is_world_process_zero():
            from .card import write_contrastive_card

            write_contrastive_card(self, *card_args)

    # ---- evaluation --------------------------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        device = self.args.device
        collator = self.data_collator
        metrics, gallery = {}, None
        batch = self.args.per_device_eval_batch_size
        try:
            if dataset is not None:
                images, texts, text_image = retrieval_pairs(dataset)
                image_features = embed_images(self.adapter, model, collator, images, batch, device)
                text_features = embed_texts(self.adapter, model, collator, texts, max(batch, 64), device)
                for name, value in recall_at_k(image_features, text_features, text_image, self.retrieval_ks).items():
                    metrics[f"{metric_key_prefix}_{name}"] = value
                metrics[f"{metric_key_prefix}_retrieval_images"] = len(images)
                metrics[f"{metric_key_prefix}_retrieval_texts"] = len(texts)
                gallery = (images, texts, text_image, image_features, text_features)
            for task in self.zero_shot_tasks:
                accuracy, _ = zero_shot_accuracy(self.adapter, model, collator, task, device)
                metrics[f"{metric_key_prefix}_zero_shot_{task.name}_accuracy"] = accuracy
        finally:
            model.train(was_training)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        if gallery is not None and self.gallery_queries and self.is_world_process_zero():
            self._write_report(metrics, metric_key_prefix, *gallery)
        return metrics

    def _write_report(self, metrics, prefix, images, texts, text_image, image_features, text_features):
        from .report import write_retrieval_report

        name = REPORT_FILE if prefix == "eval" else f"{prefix}_report.html"
        path = os.path.join(self.args.output_dir, name)
        collator = self.data_collator
        try:
            write_retrieval_report(path, images=images, texts=texts, text_image=text_image,
                                   image_features=image_features, text_features=text_features, metrics=metrics,
                                   log_history=self.state.log_history, queries=self.gallery_queries,
                                   image_options=dict(allow_outside_root=collator.allow_images_outside_root,
                                                      allow_remote=collator.allow_remote_images,
                                                      max_image_pixels=collator.max_image_pixels))
        except Exception:
            logger.exception("Could not write the evaluation report %s; evaluation results are unaffected.", path)
