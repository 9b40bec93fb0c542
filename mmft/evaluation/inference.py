"""``mmft eval`` and ``mmft predict``: score a trained model on a dataset, or run it over a dataset or a folder.

Both load the model the same way (:func:`load_for_inference`): an adapter folder (``adapter_config.json``: the base
named there, then the adapter; the processor saved beside the adapter), a full model folder, a built-in ``mmft:``
model or a Hub id. Both generate through ``VLMTrainer.generate_answers``, the code path training's evaluation uses
(batched, left-padded, greedy unless ``--num_beams``, each record once across processes), so ``mmft eval`` on a
run's output folder reproduces the metric the run reported, given the same data, generation settings and batch size::

    mmft eval outputs/my-vqa --dataset_name shapes --split test --metrics vqa_accuracy
    mmft eval HuggingFaceTB/SmolVLM-256M-Instruct --dataset_name data/val.jsonl --max_samples 200
    mmft predict outputs/my-vqa --images_dir photos/ --prompt "What is in this picture?" --output preds.jsonl
    mmft predict outputs/my-vqa --dataset_name data/val.jsonl --output preds.jsonl

``mmft eval`` writes ``eval_results.json`` (the metrics, as the recipes write them), ``all_results.json``,
``eval_predictions.jsonl`` (id, question, references, prediction per record) and ``eval_report.html`` to
``--output_dir``. ``mmft predict``
writes one JSON line per record or image: ``{"id", "image", "prompt", "prediction"}`` (plus ``references`` for a
dataset with answers).

Heavy imports (torch, transformers) happen inside the functions, so ``mmft --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from pathlib import Path

from ..dtypes import DTYPE_NAMES  # one dtype vocabulary for merge, eval and predict
from ..errors import UsageError, report_usage_errors
from ..metrics import DEFAULT_METRICS  # when no data card names the metrics

logger = logging.getLogger("mmft")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PREDICT_PLACEHOLDER_ANSWER = "(to be generated)"  # records end with an assistant turn; generation drops it


class InferenceError(UsageError):
    """The model, the data or the output cannot be used; the message says what to do."""


# ---- loading ------------------------------------------------------------------------------------------------------
def is_adapter_folder(path: str | os.PathLike) -> bool:
    return Path(path).expanduser().is_dir() and (Path(path).expanduser() / "adapter_config.json").is_file()


def load_for_inference(model: str, *, dtype: str = "auto", base: str | None = None, revision: str | None = None,
                       trust_remote_code: bool = False):
    """``(model, processor, family)`` ready for generation, from any of the four forms a user may name.

    An adapter folder loads its base and applies the adapter with PEFT, unmerged, exactly as training evaluated it
    (``merge.load_adapter_model``: the base and revision the adapter recorded; the processor, and chat template,
    saved beside the adapter wins over the base's). Anything else goes through the training loaders
    (``mmft.train.modeling``): a local folder, an ``mmft:`` name, or a Hub id (downloaded by transformers).
    """
    from ..families import family_for
    from ..hub.merge import MergeError, load_adapter_model

    if dtype not in DTYPE_NAMES:
        raise InferenceError(f"--dtype must be one of {', '.join(DTYPE_NAMES)}; got {dtype!r}.")
    if is_adapter_folder(model):
        folder = Path(model).expanduser()
        try:
            loaded, processor, base_name, _ = load_adapter_model(folder, dtype, base=base, revision=revision,
                                                                 trust_remote_code=trust_remote_code)
        except MergeError as error:
            raise InferenceError(str(error)) from error
        family = family_for(loaded.get_base_model())
        logger.info("Loaded the adapter %s over its base model %s", folder, base_name)
    else:
        from ..config.model_args import ModelArguments
        from ..train.modeling import load_model, load_processor

        path = Path(model).expanduser()
        if not path.exists() and (model.startswith((".", "/", "~")) or model.count("/") > 1):
            raise InferenceError(
                f"Model {model!r} was not found: no such folder. Pass a run's output folder (a full model or an "
                "adapter), an mmft: built-in name, or a Hub model id."
            )
        if path.is_dir() and not (path / "config.json").is_file():
            raise InferenceError(
                f"{str(path)!r} holds neither adapter_config.json (a LoRA/DoRA adapter) nor config.json (a full "
                "model). Pass the --output_dir of a finished run, or one of its checkpoint-* folders."
            )
        model_args = ModelArguments(model_name_or_path=str(path) if path.exists() else model, use_peft=False,
                                    dtype=DTYPE_NAMES[dtype], model_revision=revision,
                                    trust_remote_code=trust_remote_code)
        try:
            processor = load_processor(model_args)
            loaded = load_model(model_args)
        except OSError as error:  # transformers' "not a local folder nor a Hub repo / no network" errors
            raise InferenceError(
                f"Could not load {model!r}: it is no local folder here, and as a Hub id it failed ({error}). Check "
                "the path, or for a Hub model the network and, for gated models, `hf auth login`."
            ) from error
        family = family_for(loaded)
    loaded.eval()
    return loaded, processor, family


def build_inference_trainer(model, processor, family, *, output_dir: str, metrics, batch_size: int = 8,
                            num_beams: int = 1, max_new_tokens: int = 32,
                            max_pixels: int | None = None, allow_images_outside_root: bool = False,
                            allow_remote_images: bool = False):
    """A ``VLMTrainer`` that only generates: the generation collator, the eval batch size and the decoding flags."""
    from ..config.data_args import DataArguments
    from ..config.training_args import VLMTrainingArguments
    from ..train.trainer import VLMTrainer
    from ..workflow import build_collators

    args = VLMTrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=batch_size,
        metrics=list(metrics),
        num_beams=num_beams,
        generation_max_new_tokens=max_new_tokens,
        report_to="none",
        dataloader_num_workers=0,
    )
    # Prompts are never truncated, and evaluation never drops a record: no length budget here.
    data_args = DataArguments(max_length=None, max_pixels=max_pixels,
                              allow_images_outside_root=allow_images_outside_root,
                              allow_remote_images=allow_remote_images)
    _, generation_collator = build_collators(processor, data_args, family)
    return VLMTrainer(model=model, args=args, processing_class=processor, generation_collator=generation_collator)


# ---- mmft eval -----------------------------------------------------------------------------------------------------
def default_split(dataset_name: str) -> str:
    """The evaluation split the dataset's data card names (``eval_split:``), else ``test``."""
    from ..data.card_errors import CardError
    from ..data.cards import find_card

    try:
        card = find_card(str(dataset_name))
    except CardError:
        card = None
    return (card.eval_split if card is not None else None) or "test"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(text)).stem if str(text).endswith((".json", ".jsonl"))
                  else str(text)).strip("-") or "data"


def default_eval_dir(model: str, dataset_name: str, split: str) -> Path:
    """``<model folder>/eval_<dataset>_<split>`` for a local model, ``outputs/eval/<model>_<dataset>_<split>``
    otherwise: never the run's own eval_results.json, which it would overwrite."""
    name = f"{_slug(dataset_name)}_{split}"
    path = Path(model).expanduser()
    if path.is_dir():
        return path / f"eval_{name}"
    return Path("outputs") / "eval" / f"{_slug(model.split('/')[-1].removeprefix('mmft:'))}_{name}"


def evaluate_model(model: str, dataset_name: str, *, split: str | None = None, metrics=None,
                   max_samples: int | None = None, num_beams: int = 1, max_new_tokens: int = 32, batch_size: int = 8,
                   output_dir: str | None = None,
                   dataset_config: str | None = None, image_root: str | None = None, max_pixels: int | None = None,
                   dtype: str = "auto", base: str | None = None, revision: str | None = None,
                   trust_remote_code: bool = False, allow_images_outside_root: bool = False,
                   allow_remote_images: bool = False) -> dict:
    """Score ``model`` on ``dataset_name``'s ``split`` with ``VLMTrainer.generate_and_score``; returns the metrics
    (``eval_<metric>``, ``eval_samples``) and writes eval_results.json, all_results.json, eval_predictions.jsonl."""
    from ..data.sources import load_records

    split = split or default_split(dataset_name)
    records = load_records(dataset_name, split=split, config=dataset_config, image_root=image_root,
                           max_samples=max_samples)
    if len(records) == 0:
        raise InferenceError(f"{dataset_name} ({split}) has no records to evaluate.")
    if not metrics:
        from ..data.cards import default_metrics

        metrics = default_metrics(dataset_name)[0]
    out = Path(output_dir) if output_dir else default_eval_dir(model, dataset_name, split)
    loaded, processor, family = load_for_inference(model, dtype=dtype, base=base, revision=revision,
                                                   trust_remote_code=trust_remote_code)
    trainer = build_inference_trainer(loaded, processor, family, output_dir=str(out), batch_size=batch_size,
                                      metrics=metrics, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                      max_pixels=max_pixels, allow_images_outside_root=allow_images_outside_root,
                                      allow_remote_images=allow_remote_images)
    results = trainer.generate_and_score(records, metric_key_prefix="eval")
    results["eval_samples"] = len(records)
    trainer._write_report(results, "eval")  # eval_report.html beside the predictions, as after a training run
    if trainer.is_world_process_zero():
        trainer.save_metrics("eval", results)  # eval_results.json + all_results.json, as the recipes write them
        logger.info("Scored %s on %d records of %s (%s): %s. Results in %s", model, len(records), dataset_name, split,
                    ", ".join(f"{k}={v:.4f}" for k, v in results.items() if k != "eval_samples"), out)
    return results


# ---- mmft predict --------------------------------------------------------------------------------------------------
def image_folder_records(images_dir: str | os.PathLike, prompt: str, max_samples: int | None = None):
    """One single-turn record per image file under ``images_dir`` (sorted, recursive), asking ``prompt``."""
    from ..data.record_datasets import RecordDataset
    from ..data.records import to_canonical

    root = Path(images_dir).expanduser()
    if not root.is_dir():
        raise InferenceError(f"--images_dir {str(root)!r} is not a folder.")
    if not prompt or not prompt.strip():
        raise InferenceError("--images_dir needs --prompt: the instruction asked of every image.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InferenceError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) under {str(root)!r}.")
    records = []
    for path in files[:max_samples]:
        name = path.relative_to(root).as_posix()
        records.append(to_canonical({"id": name, "image": name, "conversations": [
            {"from": "human", "value": f"<image>\n{prompt}"},
            {"from": "gpt", "value": PREDICT_PLACEHOLDER_ANSWER},
        ]}, source=str(root)))
    return RecordDataset(records, source=str(root), image_root=str(root.resolve()), validate=False)


def _image_name(record) -> str | list[str] | None:
    names = []
    for ref in record.get("images", []):
        if isinstance(ref, (str, os.PathLike)):
            names.append(str(ref))
        elif isinstance(ref, dict) and ref.get("path"):
            names.append(str(ref["path"]))
        else:
            names.append(None)
    if not names:
        return None
    return names[0] if len(names) == 1 else names


def predict(model: str, output: str, *, dataset_name: str | None = None, split: str | None = None,
            images_dir: str | None = None, prompt: str | None = None, max_samples: int | None = None,
            num_beams: int = 1, max_new_tokens: int = 128, batch_size: int = 8, dataset_config: str | None = None,
            image_root: str | None = None, max_pixels: int | None = None, dtype: str = "auto",
            base: str | None = None, revision: str | None = None, trust_remote_code: bool = False,
            allow_images_outside_root: bool = False, allow_remote_images: bool = False) -> Path:
    """Generate an answer for every record of a dataset (its last user turn) or every image of a folder (``prompt``)
    and write them to ``output`` (JSONL, written whole to a temporary file and renamed). Returns ``output``."""
    from ..data.records import first_user_text, reference_answers

    if (dataset_name is None) == (images_dir is None):
        raise InferenceError("Pass exactly one of --dataset_name or --images_dir (with --prompt).")
    if dataset_name is not None:
        if prompt:
            raise InferenceError("--prompt goes with --images_dir; a dataset's records hold their own prompts.")
        from ..data.sources import load_records

        records = load_records(dataset_name, split=split or default_split(dataset_name), config=dataset_config,
                               image_root=image_root, max_samples=max_samples)
    else:
        records = image_folder_records(images_dir, prompt, max_samples)
    output = Path(output)
    loaded, processor, family = load_for_inference(model, dtype=dtype, base=base, revision=revision,
                                                   trust_remote_code=trust_remote_code)
    trainer = build_inference_trainer(loaded, processor, family, output_dir=str(output.parent or "."),
                                      batch_size=batch_size, metrics=(), num_beams=num_beams,
                                      max_new_tokens=max_new_tokens, max_pixels=max_pixels,
                                      allow_images_outside_root=allow_images_outside_root,
                                      allow_remote_images=allow_remote_images)
    answers = trainer.generate_answers(records)  # tqdm progress bar on the main process
    if not trainer.is_world_process_zero():
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        for index, text in answers:
            record = records[index]
            row = {"id": record["id"], "image": _image_name(record), "prompt": first_user_text(record),
                   "prediction": text}
            if dataset_name is not None:
                row["references"] = reference_answers(record)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(output)
    print(f"Wrote {len(answers)} predictions to {output}")
    return output


# ---- the command line ----------------------------------------------------------------------------------------------
# Each subcommand declares its own flags where its handler lives (as mmft.commands.cli and mmft.contrastive.embed do):
# the add_parser / add_argument calls share their shape on purpose.
def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="A run's output folder (adapter or full model), a checkpoint-* folder, an mmft: "
                                      "built-in name, or a Hub model id.")
    parser.add_argument("--split", default=None,
                        help="Split of --dataset_name (default: the data card's eval_split, else test; ignored for "
                             "single files).")
    parser.add_argument("--dataset_config", default=None, help="Configuration name of a Hub dataset.")
    parser.add_argument("--image_root", default=None,
                        help="Folder that relative image paths resolve against (default: the data file's folder).")
    parser.add_argument("--max_samples", type=int, default=None, help="Use only the first N records (or images).")
    parser.add_argument("--batch_size", "--per_device_eval_batch_size", dest="batch_size", type=int, default=8,
                        help="Records per generation batch (default 8). Use the run's per_device_eval_batch_size "
                             "to reproduce its numbers exactly: left padding differs with the batch.")
    parser.add_argument("--num_beams", type=int, default=1, help="Beams for generation (default 1 = greedy).")
    parser.add_argument("--max_pixels", type=int, default=None,
                        help="Downscale every image to at most this many pixels first (use the run's value).")
    parser.add_argument("--dtype", default="auto", choices=list(DTYPE_NAMES),
                        help="Weights dtype (default auto: the checkpoint's).")
    parser.add_argument("--base", default=None,
                        help="For an adapter folder: the base model, overriding adapter_config.json's.")
    parser.add_argument("--revision", default=None, help="Branch, tag or commit of a Hub model.")
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="Allow code shipped with the model's repository (off by default).")
    parser.add_argument("--allow_images_outside_root", action="store_true",
                        help="Allow absolute image paths and paths leading outside the image root.")
    parser.add_argument("--allow_remote_images", action="store_true", help="Allow http(s) image URLs in records.")


def run_command(command: str, function, **kwargs):
    """``function(**kwargs)`` for the ``mmft <command>`` CLI: logging set up, and a known error (bad model, data,
    card or record) ends the process with its message instead of a traceback."""
    from ..workflow import setup_logging

    setup_logging()
    with report_usage_errors(f"mmft {command}"):
        return function(**kwargs)


def _eval_command(args):
    metrics = run_command(
        "eval", evaluate_model, model=args.model, dataset_name=args.dataset_name, split=args.split,
        metrics=args.metrics, max_samples=args.max_samples, num_beams=args.num_beams,
        max_new_tokens=args.generation_max_new_tokens, batch_size=args.batch_size, output_dir=args.output_dir,
        dataset_config=args.dataset_config, image_root=args.image_root, max_pixels=args.max_pixels, dtype=args.dtype,
        base=args.base, revision=args.revision, trust_remote_code=args.trust_remote_code,
        allow_images_outside_root=args.allow_images_outside_root, allow_remote_images=args.allow_remote_images)
    print(json.dumps(metrics, indent=2))


def _predict_command(args):
    run_command(
        "predict", predict, model=args.model, output=args.output, dataset_name=args.dataset_name, split=args.split,
        images_dir=args.images_dir, prompt=args.prompt, max_samples=args.max_samples, num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, dataset_config=args.dataset_config,
        image_root=args.image_root, max_pixels=args.max_pixels, dtype=args.dtype, base=args.base,
        revision=args.revision, trust_remote_code=args.trust_remote_code,
        allow_images_outside_root=args.allow_images_outside_root, allow_remote_images=args.allow_remote_images)


def add_inference_commands(commands) -> None:
    """Register ``eval`` and ``predict`` on the ``mmft`` command's subparsers."""
    evaluate = commands.add_parser(
        "eval", help="Score a trained output folder, or any model, on a dataset by generating answers.",
        description="Score a model on a dataset with the trainer's generation eval: writes eval_results.json, "
                    "all_results.json and eval_predictions.jsonl to --output_dir.")
    _add_model_flags(evaluate)
    evaluate.add_argument("--dataset_name", required=True,
                          help="'shapes' (or another built-in set), a .json/.jsonl file, a saved dataset folder or a "
                               "Hub dataset id.")
    evaluate.add_argument("--metrics", nargs="+", default=None,
                          help="Metrics (bundled names or metric script paths). Default: the data card's metric, "
                               f"else {' '.join(DEFAULT_METRICS)}.")
    evaluate.add_argument("--generation_max_new_tokens", type=int, default=32,
                          help="Maximum new tokens per answer (default 32; use the run's value to reproduce it).")
    evaluate.add_argument("--output_dir", default=None,
                          help="Where results go (default: <model folder>/eval_<dataset>_<split>, or "
                               "outputs/eval/<model>_<dataset>_<split> for a Hub model).")
    evaluate.set_defaults(func=_eval_command)

    run = commands.add_parser(
        "predict", help="Batch inference over a dataset or a folder of images, to JSONL.",
        description="Generate an answer for every record of a dataset, or for every image of a folder asked "
                    "--prompt, and write one JSON line each: id, image, prompt, prediction (and references).")
    _add_model_flags(run)
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset_name", default=None, help="Records to answer (their last user turn is the prompt).")
    source.add_argument("--images_dir", default=None, help="A folder of images (searched recursively).")
    run.add_argument("--prompt", default=None, help="With --images_dir: the instruction asked of every image.")
    run.add_argument("--output", required=True, help="The JSONL file to write.")
    run.add_argument("--max_new_tokens", "--generation_max_new_tokens", dest="max_new_tokens", type=int, default=128,
                     help="Maximum new tokens per answer (default 128).")
    run.set_defaults(func=_predict_command)
