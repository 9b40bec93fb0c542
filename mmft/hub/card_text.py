"""The model card's Markdown body: ``card_text`` and its sections (evaluation, lineage, usage code, training
settings, records left out, framework versions)."""

from __future__ import annotations

import importlib.metadata

from .run_summary import RunSummary, Source, _describe

_METRIC_NAMES = {"vqa_accuracy": "VQA accuracy", "exact_match": "Exact match", "anls": "ANLS", "loss": "Loss"}


def _metric_name(key: str) -> str:
    return _METRIC_NAMES.get(key, key.replace("_", " "))


def _base_loading_line(base: Source) -> str:
    if base.kind == "hub":
        return f'base_id = "{base.name}"'
    if base.kind == "builtin":
        return ("from mmft.testing import resolve_builtin_model\n\n"
                f'base_id = resolve_builtin_model("{base.name}")  # builds the tiny model locally (needs mmft)')
    return f'base_id = "path/to/{base.name}"  # the model this adapter was trained on'


# Prompting through the processor's chat template; the placeholder image is a name the reader replaces.
PROMPT_EXAMPLE = '''messages = [
    {"role": "user", "content": [
        {"type": "image", "path": "photo.png"},  # or "url": "https://...", or "image": a PIL image
        {"type": "text", "text": "What is in the picture?"},
    ]},
]
# The chat template saved with this model is the one used in training: prompts are built the same way.
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt").to(model.device)
output = model.generate(**inputs, max_new_tokens=32, do_sample=False)
print(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))'''


def usage(summary: RunSummary) -> str:
    """Markdown with working code: loading (PEFT and transformers' adapter loading, or the full model) and a
    prompt through the processor's chat template (the one used in training, saved with the model)."""
    repo = summary.repo_id
    prompt = PROMPT_EXAMPLE
    if not summary.is_adapter:
        return f'''```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo}", dtype="auto")
processor = AutoProcessor.from_pretrained("{repo}")

{prompt}
```'''
    base_line = _base_loading_line(summary.base)
    return f'''With PEFT:

```python
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor

{base_line}
model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_id, dtype="auto"), "{repo}")
processor = AutoProcessor.from_pretrained("{repo}")  # saved with the adapter, chat template included

{prompt}
```

Or with transformers' own adapter loading (PEFT installed):

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

{base_line}
model = AutoModelForImageTextToText.from_pretrained(base_id, dtype="auto")
model.load_adapter("{repo}")
processor = AutoProcessor.from_pretrained("{repo}")

{prompt}
```

`model.merge_and_unload()` (PEFT) folds the adapter into the base weights for deployment without PEFT.'''


def _versions() -> str:
    lines = []
    for package in ("mmft", "transformers", "peft", "torch", "accelerate", "datasets"):
        try:
            lines.append(f"- {package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(lines)


def _metrics_table(summary: RunSummary) -> str:
    if not summary.metrics:
        return "No evaluation was run."
    where = _describe(summary.eval_data, "dataset") if summary.eval_data is not None else "the evaluation set"
    if summary.eval_split:
        where += f", split `{summary.eval_split}`"
    before = summary.metrics_before
    header = "| metric | before training | after training |\n|---|---|---|" if before else \
        "| metric | value |\n|---|---|"
    rows = []
    for key, value in summary.metrics.items():
        if before:
            start = before.get(key)
            rows.append(f"| {_metric_name(key)} | {'' if start is None else f'{start:.4f}'} | {value:.4f} |")
        else:
            rows.append(f"| {_metric_name(key)} | {value:.4f} |")
    return f"Measured on {where}. {summary.generation}\n\n{header}\n" + "\n".join(rows)


def _parent_text(parent: dict) -> str:
    if parent.get("id"):
        revision = parent.get("revision") or "main"
        asked = parent.get("requested_revision")
        asked_text = f" (asked for as `{asked}`)" if asked and asked != revision else ""
        return (f"[{parent['id']}](https://huggingface.co/{parent['id']}/tree/{revision}) at revision "
                f"`{revision}`{asked_text}")
    return f"`{parent.get('name')}` (a local adapter, not on the Hub)"


def _change(value) -> str:
    return "" if value is None else f"{value:+.4f}"


def _lineage_section(summary: RunSummary) -> str:
    """Where this version came from and what it kept: the parent adapter, the new data, the old tasks' scores."""
    if not summary.parent and not summary.retention:
        return ""
    lines = ["## Lineage", ""]
    if summary.parent:
        lines.append(f"Continued from the adapter {_parent_text(summary.parent)}, starting from its weights (fresh "
                     f"optimizer and schedule), on new data: {_describe(summary.train_data, 'dataset')}.")
    retention = summary.retention
    if retention:
        limit = retention.get("max_retention_drop")
        limit_text = f" Allowed drop (`--max_retention_drop`): {limit}." if limit is not None else ""
        lines += ["", "Scores before this training (the starting model) and after, on the old tasks (what the new "
                  f"training may have made the model forget) and on the new one.{limit_text}", "",
                  "| task | dataset | metric | before | after | change |", "|---|---|---|---|---|---|"]
        rows = []
        new_task = retention.get("new_task")
        if new_task:
            rows += [("new", new_task["dataset"], key, row) for key, row in new_task["metrics"].items()]
        for task in retention["old_tasks"]:
            dataset = f"{task['dataset']} (`{task['split']}`)"
            rows += [("old", dataset, key, row) for key, row in task["metrics"].items()]
        for kind, dataset, key, row in rows:
            before = "" if row["before"] is None else f"{row['before']:.4f}"
            lines.append(f"| {kind} | {dataset} | {_metric_name(key)} | {before} | {row['after']:.4f} | "
                         f"{_change(row['change'])} |")
    return "\n".join(lines) + "\n\n"


CARD_LISTED_IDS = 20  # record ids named per reason in the card (every record is counted)


def _bad_records_section(summary: RunSummary) -> str:
    """The records training left out, by reason, with their ids (never the messages: they hold local paths)."""
    bad = summary.bad_records
    if not bad or not bad.get("counts"):
        return ""
    from ..data.badrecords import REASON_TEXT

    total = sum(bad["counts"].values())
    scanned = f" (of {bad['scanned']} records)" if bad.get("scanned") else ""
    lines = [f"{total} bad training record(s) were left out (`--on_bad_record drop`): {bad['at_startup']} by the "
             f"start-up scan{scanned}, {total - bad['at_startup']} by the data loader (of {bad['seen']} samples "
             "seen).",
             "", "| reason | records | ids |", "|---|---|---|"]
    for reason, count in bad["counts"].items():
        ids = bad["ids"].get(reason, [])
        shown = ", ".join(f"`{record_id}`" for record_id in ids[:CARD_LISTED_IDS])
        more = f" and {count - len(ids[:CARD_LISTED_IDS])} more" if count > len(ids[:CARD_LISTED_IDS]) else ""
        lines.append(f"| {REASON_TEXT.get(reason, reason)} | {count} | {shown}{more} |")
    if bad.get("eval_at_startup"):
        lines += ["", f"{bad['eval_at_startup']} bad evaluation record(s) were left out at start-up."]
    return "\n### Records left out\n\n" + "\n".join(lines) + "\n"


def card_text(summary: RunSummary) -> str:
    """The card's Markdown body."""
    what = "A LoRA adapter" if summary.method == "lora" else "A DoRA adapter" if summary.method == "dora" else \
        "A fully fine-tuned model"
    data = _describe(summary.train_data, "dataset")
    hyperparameters = "\n".join(f"| {name} | {value} |" for name, value in summary.hyperparameters.items())
    return f"""
# {summary.model_name}

{what} for image-text-to-text (visual question answering), fine-tuned from {_describe(summary.base, "model")}
({summary.family} family) on {data} with mmft.

## Evaluation

{_metrics_table(summary)}

{_lineage_section(summary)}## Usage

{usage(summary)}

## Training

| setting | value |
|---|---|
{hyperparameters}
{_bad_records_section(summary)}
### Framework versions

{_versions()}
"""
