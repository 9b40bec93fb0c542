"""``mmft embed``: the image or text embeddings of a dataset, written to a file a search index is built from.

The model is a trained output folder of ``recipes/retrieval.py`` (full model, or LoRA adapter + its head), or any
dual encoder ``--model_name_or_path`` takes (a CLIP / SigLIP Hub id or folder, ``mmft:tiny-clip``). Records come
from the same sources and cards as training. Images: one row per record (its one image), id = the record's id.
Texts: one row per caption (the record's references, else its one-turn answer), id = the record's id when it has one
caption, else ``<id>#<k>`` (k from 0), with the record id and the caption beside it.

Embeddings are L2-normalised float32 (cosine similarity is a dot product), in record order. The file's format
follows its suffix:

- ``.safetensors``: tensor ``embeddings`` ``(n, d)``; metadata (strings) ``ids`` (a JSON list), ``modality``,
  ``model``, and for texts ``record_ids`` and ``texts`` (JSON lists).
- ``.parquet``: columns ``id``, (texts: ``record_id``, ``text``,) ``embedding`` (a fixed-size list of float32).

This module imports only the standard library at module level: the ``mmft`` command's parser stays light.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UsageError

MODALITIES = ("image", "text")
FORMATS = (".safetensors", ".parquet")
POLICIES = ("error", "drop")


def output_format(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--output {str(path)!r}: the file must end in .safetensors or .parquet (the format "
                         "follows the suffix).")
    return suffix


def _rows(records, modality: str, policy: str):
    """``(id, record_id, image item or caption)`` per output row, in record order; bad records per ``policy``."""
    from .pairs import PairError, record_captions

    dropped, first_problem = 0, None
    for index in range(len(records)):
        record = records[index]
        record_id = str(record.get("id", index))
        try:
            if modality == "image":
                images = record.get("images") or []
                if len(images) != 1:
                    problem = "has no image" if not images else f"has {len(images)} images"
                    raise PairError(f"record {record_id!r} {problem}; image embeddings need exactly one image per "
                                    "record. Fix the record, or pass --pair_policy drop to leave such records out.")
                item = {"id": record_id, "image": images[0], "image_root": record.get("image_root")}
                yield record_id, record_id, item
            else:
                captions = record_captions(record)
                for k, caption in enumerate(captions):
                    yield (record_id if len(captions) == 1 else f"{record_id}#{k}"), record_id, caption
        except PairError as error:
            if policy == "error":
                raise
            dropped += 1
            first_problem = first_problem or str(error)
    if dropped:
        import logging

        logging.getLogger("mmft").warning("Left out %d records without a usable %s (--pair_policy drop); first: %s",
                                          dropped, modality, first_problem)


def embed_records(adapter, model, processor, records, modality: str = "image", *, batch_size: int = 64,
                  device=None, policy: str = "error", progress: bool = True, collator_kwargs: dict | None = None):
    """``(ids, record_ids, texts or None, embeddings (n, d) float32)`` of ``records``; batches embedded as they are
    read (a lazy Hub dataset is not held in memory)."""
    import torch
    from tqdm.auto import tqdm

    from .collator import ContrastiveCollator

    if modality not in MODALITIES:
        raise UsageError(f"--modality must be 'image' or 'text', got {modality!r}.")
    if policy not in POLICIES:
        raise UsageError(f"--pair_policy must be one of {', '.join(POLICIES)}, got {policy!r}.")
    collator = ContrastiveCollator(adapter, processor, **(collator_kwargs or {}))
    features = adapter.image_features if modality == "image" else adapter.text_features
    ids, record_ids, payloads, chunks = [], [], [], []

    def flush(batch):
        if not batch:
            return
        inputs = collator.image_batch(batch) if modality == "image" else collator.text_batch(batch)
        inputs = {key: value.to(device) if device is not None else value for key, value in inputs.items()}
        with torch.no_grad():
            chunks.append(features(model, inputs).float().cpu())
        batch.clear()

    batch = []
    with tqdm(total=len(records), desc=f"embedding {modality}s", unit="record", disable=not progress) as bar:
        last_record = None
        for row_id, record_id, payload in _rows(records, modality, policy):
            ids.append(row_id)
            record_ids.append(record_id)
            payloads.append(payload)
            batch.append(payload)
            if len(batch) >= batch_size:
                flush(batch)
            if record_id != last_record:
                bar.update(1)
                last_record = record_id
        flush(batch)
        bar.update(bar.total - bar.n)
    if not chunks:
        raise UsageError(f"No record has a usable {modality}: nothing to embed.")
    embeddings = torch.nn.functional.normalize(torch.cat(chunks), dim=-1).contiguous()
    return ids, record_ids, (payloads if modality == "text" else None), embeddings


def write_embeddings(path, ids, embeddings, *, modality: str, model_name: str, record_ids=None, texts=None) -> Path:
    """Write ``embeddings`` (and ids) to ``path`` in the format of its suffix, atomically (a temporary file renamed
    into place: an interrupted run leaves no half file)."""
    suffix = output_format(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    embeddings = embeddings.float().contiguous()
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = {"ids": json.dumps(ids), "modality": modality, "model": model_name}
        if texts is not None:
            metadata.update(record_ids=json.dumps(record_ids), texts=json.dumps(texts))
        save_file({"embeddings": embeddings}, str(partial), metadata=metadata)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        dim = embeddings.shape[1]
        flat = pa.array(embeddings.numpy().reshape(-1), type=pa.float32())
        columns = {"id": pa.array(ids, type=pa.string())}
        if texts is not None:
            columns.update(record_id=pa.array(record_ids, type=pa.string()), text=pa.array(texts, type=pa.string()))
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, dim)
        table = pa.table(columns).replace_schema_metadata({"modality": modality, "model": model_name})
        pq.write_table(table, str(partial))
    os.replace(partial, path)
    return path


def read_embeddings(path):
    """``(ids, embeddings (n, d) float32 tensor)`` of a file written by :func:`write_embeddings`."""
    import torch

    if output_format(path) == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return json.loads(handle.metadata()["ids"]), handle.get_tensor("embeddings")
    import pyarrow.parquet as pq

    table = pq.read_table(str(path))
    dim = table.schema.field("embedding").type.list_size
    flat = table.column("embedding").combine_chunks().flatten().to_numpy()
    return table.column("id").to_pylist(), torch.from_numpy(flat.reshape(-1, dim).copy())


def embed_dataset(model: str, dataset_name: str, output, *, modality: str = "image", split: str | None = None,
                  dataset_config: str | None = None, image_root: str | None = None, max_samples: int | None = None,
                  batch_size: int = 64, dtype: str = "auto", device: str | None = None, policy: str = "error",
                  max_pixels: int | None = None, allow_images_outside_root: bool = False,
                  allow_remote_images: bool = False, progress: bool = True) -> Path:
    """Embed ``dataset_name``'s images or texts with ``model`` and write them to ``output`` (see the module)."""
    import torch

    from ..data.sources import load_records
    from ..evaluation.inference import default_split
    from .models import load_trained

    output_format(output)  # before minutes of embedding
    if batch_size < 1:
        raise UsageError(f"--batch_size must be at least 1, got {batch_size}.")
    adapter, encoder, processor = load_trained(model, dtype=dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = encoder.to(device).eval()
    records = load_records(dataset_name, split=split or default_split(dataset_name), config=dataset_config,
                           image_root=image_root, max_samples=max_samples)
    collator_kwargs = dict(max_pixels=max_pixels, allow_images_outside_root=allow_images_outside_root,
                           allow_remote_images=allow_remote_images)
    ids, record_ids, texts, embeddings = embed_records(adapter, encoder, processor, records, modality,
                                                       batch_size=batch_size, device=device, policy=policy,
                                                       progress=progress, collator_kwargs=collator_kwargs)
    path = write_embeddings(output, ids, embeddings, modality=modality, model_name=_model_label(model),
                            record_ids=record_ids, texts=texts)
    print(f"Wrote {len(ids)} {modality} embeddings of dimension {embeddings.shape[1]} to {path}")
    return path


def _model_label(model: str) -> str:
    """The model as written into the file: a Hub id or mmft: name as given, a local folder by its name only."""
    return Path(model).name if os.path.isdir(model) else str(model)


# ---- the `mmft embed` command -------------------------------------------------------------------------------------
# Declared here, next to its handler, like every command's flags (mmft.commands.cli, mmft.evaluation.inference):
# the add_parser / add_argument calls share their shape on purpose.
def add_embed_command(commands) -> None:
    """Register ``embed`` on the ``mmft`` command's subparsers."""
    embed = commands.add_parser(
        "embed", help="Write a dataset's image or text embeddings (dual encoder) to .safetensors or .parquet.",
        description="Embed every image (or every caption) of a dataset with a dual encoder (a retrieval run's output "
                    "folder, or a CLIP / SigLIP model) and write ids + L2-normalised float32 embeddings, in record "
                    "order, to --output (.safetensors or .parquet, by suffix): the input of a search index.")
    embed.add_argument("model", help="A retrieval run's output folder, a CLIP / SigLIP Hub id or folder, or "
                                     "mmft:tiny-clip / mmft:tiny-siglip.")
    embed.add_argument("--dataset_name", required=True,
                       help="A built-in set or card name, a .json/.jsonl/.parquet file, a saved dataset folder, an "
                            "image folder or a Hub dataset id.")
    embed.add_argument("--output", required=True, help="The file to write: .safetensors or .parquet.")
    embed.add_argument("--modality", default="image", choices=list(MODALITIES),
                       help="What to embed: each record's image (default), or each of its captions.")
    embed.add_argument("--split", default=None,
                       help="Split of --dataset_name (default: the data card's eval_split, else test).")
    embed.add_argument("--dataset_config", default=None, help="Configuration name of a Hub dataset.")
    embed.add_argument("--image_root", default=None,
                       help="Folder that relative image paths resolve against (default: the data file's folder).")
    embed.add_argument("--max_samples", type=int, default=None, help="Embed only the first N records.")
    embed.add_argument("--batch_size", type=int, default=64, help="Images or texts per forward pass (default 64).")
    embed.add_argument("--pair_policy", default="error", choices=list(POLICIES),
                       help="A record without one image (or without a caption, for texts): 'error' stops, naming it "
                            "(default); 'drop' leaves it out and logs the count.")
    embed.add_argument("--max_pixels", type=int, default=None,
                       help="Downscale every image to at most this many pixels first (use the run's value).")
    embed.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="Weights dtype (default auto: the checkpoint's). Embeddings are written as float32.")
    embed.add_argument("--device", default=None, help="Where the model runs (default: cuda when available, else cpu).")
    embed.add_argument("--allow_images_outside_root", action="store_true",
                       help="Allow absolute image paths and paths leading outside the image root.")
    embed.add_argument("--allow_remote_images", action="store_true", help="Allow http(s) image URLs in records.")
    embed.set_defaults(func=_embed_command)


def _embed_command(args) -> None:
    from ..errors import report_usage_errors
    from ..workflow import setup_logging

    with report_usage_errors("mmft embed"):
        setup_logging()
        embed_dataset(args.model, args.dataset_name, args.output, modality=args.modality, split=args.split,
                      dataset_config=args.dataset_config, image_root=args.image_root, max_samples=args.max_samples,
                      batch_size=args.batch_size, dtype=args.dtype, device=args.device, policy=args.pair_policy,
                      max_pixels=args.max_pixels, allow_images_outside_root=args.allow_images_outside_root,
                      allow_remote_images=args.allow_remote_images)
