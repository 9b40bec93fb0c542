"""The model card (``README.md``) of a fine-tuned dual encoder: metadata with a model-index of the retrieval and
zero-shot results (before and after training), the settings, and how to load it. Sources are named as in the
generative cards (``mmft.hub.run_summary.model_source`` / ``dataset_source``); no token or local path is written."""

from __future__ import annotations

import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..hub.card import CARD_NAME
from ..hub.card_text import _versions
from ..hub.run_summary import BEFORE_TRAINING_PREFIX, _describe, dataset_source, model_source

PIPELINE_TAG = "zero-shot-image-classification"
TASK_TYPE = "image-text-retrieval"


def _metrics(metrics: dict, prefix: str) -> dict[str, float]:
    start = prefix + "_"
    out = {}
    for key, value in (metrics or {}).items():
        if not key.startswith(start) or (prefix == "eval" and key.startswith(BEFORE_TRAINING_PREFIX)):
            continue
        name = key[len(start):]
        if name.endswith(("runtime", "per_second")) or name in ("epoch", "retrieval_images", "retrieval_texts"):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = float(value)
    return out


def contrastive_card(trainer, model_args, data_args, contrastive_args, metrics: dict) -> ModelCard:
    base = model_source(getattr(model_args, "model_name_or_path", None))
    train = dataset_source(getattr(data_args, "dataset_name", None))
    eval_name = getattr(data_args, "eval_dataset_name", None) or getattr(data_args, "dataset_name", None)
    evaluation = dataset_source(eval_name)
    after, before = _metrics(metrics, "eval"), _metrics(metrics, BEFORE_TRAINING_PREFIX)
    is_adapter = hasattr(trainer.accelerator.unwrap_model(trainer.model), "peft_config")
    modes = contrastive_args.tower_modes(model_args.use_peft) if contrastive_args is not None else {}
    results = [EvalResult(task_type=TASK_TYPE, task_name="Image-text retrieval", dataset_type=evaluation.name,
                          dataset_name=evaluation.name, dataset_split=getattr(data_args, "eval_split", None),
                          metric_type=key, metric_name=key.replace("_", " "), metric_value=round(value, 4))
               for key, value in after.items()] or None
    library = "peft" if is_adapter else getattr(trainer.adapter, "library_name", "transformers")
    data = ModelCardData(base_model=base.hub_id, library_name=library,
                         pipeline_tag=PIPELINE_TAG, tags=["mmft", "contrastive", trainer.adapter.kind,
                                                          "lora" if is_adapter else "full-fine-tuning"],
                         datasets=[s.hub_id for s in (train, evaluation) if s.hub_id] or None,
                         model_name=Path(trainer.args.output_dir).name, eval_results=results)
    rows = "\n".join(f"| {key} | {before.get(key, float('nan')):.4f} | {value:.4f} |" for key, value in after.items())
    args = trainer.args
    text = f"""
# {Path(args.output_dir).name}

A {trainer.adapter.kind} dual encoder fine-tuned with mmft's contrastive recipe (`recipes/retrieval.py`) from
{_describe(base, "model")} on {_describe(train, "dataset")}, with the {trainer.adapter.loss} loss.

- what trained: image tower {modes.get("image", "?")}, text tower {modes.get("text", "?")}
- learning rate {args.learning_rate}, batch {args.per_device_train_batch_size} per device x {args.world_size}
  process(es) (negatives are gathered across processes), {args.num_train_epochs} epoch(s), seed {args.seed}

## Results on {_describe(evaluation, "dataset")}

| metric | before | after |
|---|---|---|
{rows}

Recall@K: image->text counts an image as found when one of its captions is among the top K; text->image when the
caption's own image is. Zero-shot accuracy uses the class-name prompt ensemble of the zero_shot card.

## Use

```python
from mmft.contrastive.models import load_trained

adapter, model, processor = load_trained("path/to/this/folder")
```

{_versions()}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")


def write_contrastive_card(trainer, model_args, data_args, contrastive_args, metrics: dict) -> Path:
    trainer._card_args = (model_args, data_args, contrastive_args, metrics)
    path = Path(trainer.args.output_dir) / CARD_NAME
    contrastive_card(trainer, model_args, data_args, contrastive_args, metrics).save(path)
    return path
