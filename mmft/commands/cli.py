"""The ``mmft`` command. Training runs through the recipes (``accelerate launch recipes/vqa.py``); this
command holds the utilities around them: ``info``, ``build-tiny-model``, ``shapes``, ``data check`` / ``data show``
(preflight a dataset, see a sample as the model does) and ``merge`` (fold a LoRA/DoRA adapter into its base model
for serving); ``eval`` (score a trained folder or any model on a dataset) and ``predict`` (batch inference to JSONL);
``embed`` (a dataset's image or text embeddings from a dual encoder, for a search index).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError, report_usage_errors


def _info(args):
    import importlib.metadata as metadata

    for package in ("mmft", "torch", "torchvision", "transformers", "datasets", "accelerate", "peft", "evaluate"):
        try:
            print(f"{package:<13}{metadata.version(package)}")
        except metadata.PackageNotFoundError:
            print(f"{package:<13}not installed")
    from ..testing import builtin_model_names

    print("built-in models: " + ", ".join(builtin_model_names()))


def _build_tiny_model(args):
    from ..testing import BUILTIN_MODELS, build_tiny_llava, builtin_model_names, tiny_fixtures

    if args.name in BUILTIN_MODELS:
        build_tiny_llava(args.out_dir, BUILTIN_MODELS[args.name])
    else:
        family = args.name.removeprefix("mmft:tiny-")
        fixtures = tiny_fixtures()
        if family not in fixtures:
            raise UsageError(f"Unknown built-in model {args.name!r}. Built-in models: "
                             f"{', '.join(builtin_model_names())}.")
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        fixtures[family].build(out)
    print(f"Built {args.name} into {args.out_dir}")


def _shapes(args):
    from ..data.shapes import TASK_SPLITS, write_split

    splits = TASK_SPLITS[args.task]
    for split in args.splits:
        size = args.size or splits[split][0]
        path = write_split(args.out_dir, split, size, turns=splits[split][1], task=args.task)
        print(f"Wrote {size} {split} records to {path}")


def _merge(args):
    from ..evaluation.inference import run_command
    from ..hub.merge import merge_adapter

    run_command("merge", merge_adapter, adapter_dir=args.adapter_dir, out_dir=args.out_dir, dtype=args.dtype,
                base=args.base, trust_remote_code=args.trust_remote_code)


# The subcommands' argparse declarations share their shape with the other commands' (mmft.evaluation.inference,
# mmft.contrastive.embed) on purpose: each command declares its own flags, next to its handler.
def build_parser() -> argparse.ArgumentParser:
    from ..dtypes import DTYPE_NAMES  # one dtype vocabulary for merge, eval and predict
    parser = argparse.ArgumentParser(prog="mmft", description=" ".join(__doc__.split()).replace("``", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="Print package versions and the built-in tiny models.")
    info.set_defaults(func=_info)
    tiny = commands.add_parser("build-tiny-model", help="Build a tiny offline model (random weights) into a folder.")
    tiny.add_argument("out_dir", help="Folder to write the model and processor to.")
    tiny.add_argument("--name", default="mmft:tiny-llava",
                      help="Which built-in model (default: mmft:tiny-llava; `mmft info` lists them).")
    tiny.set_defaults(func=_build_tiny_model)
    shapes = commands.add_parser("shapes", help="Write the synthetic shapes VQA data (LLaVA JSONL + PNGs).")
    shapes.add_argument("out_dir", help="Folder to write the splits into.")
    shapes.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "validation", "test"],
                        help="Splits to write (default: train test).")
    shapes.add_argument("--size", type=int, default=None, help="Records per split (default: the demo's sizes).")
    shapes.add_argument("--task", default="vqa", choices=["vqa", "captions", "multiturn"],
                        help="Which records over the images: one-word VQA (default), captions with every phrasing as "
                             "references (shapes-captions), or multi-turn conversations (shapes-multiturn).")
    shapes.set_defaults(func=_shapes)
    merge = commands.add_parser(
        "merge", help="Merge a LoRA/DoRA adapter into its base model and write a standalone model folder.",
        description="Merge a LoRA/DoRA adapter into its base model: writes safetensors weights, the processor with "
                    "its chat template, the generation config and a model card, loadable with plain transformers "
                    "and servable by vLLM/TGI.")
    merge.add_argument("adapter_dir", help="Folder with adapter_config.json and adapter_model.safetensors.")
    merge.add_argument("out_dir", help="Folder to write the merged model to (must not exist, or be empty).")
    merge.add_argument("--dtype", default="auto", choices=list(DTYPE_NAMES),
                       help="Weights dtype of the merged model (default: auto, the base checkpoint's dtype).")
    merge.add_argument("--base", default=None,
                       help="Base model (Hub id, local folder or mmft: name); default: base_model_name_or_path "
                            "from adapter_config.json.")
    merge.add_argument("--trust_remote_code", action="store_true",
                       help="Allow code shipped with the base model's repository (off by default).")
    merge.set_defaults(func=_merge)
    from .datacheck import add_data_commands  # light: its heavy imports wait inside the handlers

    add_data_commands(commands)  # mmft data check | data show
    from ..evaluation.inference import add_inference_commands  # light: torch and transformers load inside the handlers

    add_inference_commands(commands)  # mmft eval | predict
    from ..contrastive.embed import add_embed_command  # light: torch and the model load inside the handler

    add_embed_command(commands)  # mmft embed
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    # Errors the user can fix (bad flags, data, model choice, an unreachable Hub): one message, exit code 2; other
    # exceptions are bugs and keep their traceback. MMFT_DEBUG=1 shows the traceback of a usage error too.
    with report_usage_errors(f"mmft {args.command}"):
        args.func(args)


if __name__ == "__main__":
    main()
