"""One rank of a multi-process run of recipes/vqa.py, recording what the tests need to check, outside the run's
own output folder:

- ``RECORD_DIR/rank<r>.json``: the record ids this rank's training and generation collators received, a digest
  of every model weight at the end, and every file this process opened for writing under ``--output_dir`` (seen by
  a Python audit hook, so writes made from Python: JSON, ``torch.save``, the model card...).

    torchrun --nproc_per_node 2 tests/_ddp_run.py RECORD_DIR <recipe flags...>
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "recipes"))

import vqa  # noqa: E402  (recipes/vqa.py)

import mmft.workflow  # noqa: E402

record_dir = Path(sys.argv[1])
argv = sys.argv[2:]
output_dir = Path(argv[argv.index("--output_dir") + 1]).resolve()
rank = int(os.environ.get("RANK", "0"))
seen_ids: list[str] = []
generated_ids: list[str] = []  # records this rank generated answers for
writes: list[str] = []


def audit(event, args):
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode = args[1] if isinstance(args[1], str) else ""
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        writing = any(c in mode for c in "wax+") or bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        path = Path(os.fsdecode(args[0])).resolve()
        if writing and (path == output_dir or output_dir in path.parents):
            writes.append(str(path.relative_to(output_dir)))


sys.addaudithook(audit)

build_collators = mmft.workflow.build_collators


def record_ids_into(collator, sink: list[str]):
    """Make ``collator`` append the ids of the records it receives to ``sink`` (pickles into workers as itself)."""
    call = collator.__call__

    class Recording(type(collator)):
        def __call__(self, records):
            sink.extend(r["id"] for r in records)
            return call(records)

    collator.__class__ = Recording
    return collator


def recording_collators(*args, **kwargs):
    train, generate = build_collators(*args, **kwargs)
    return record_ids_into(train, seen_ids), record_ids_into(generate, generated_ids)


mmft.workflow.build_collators = recording_collators

# MMFT_TEST_BREAK_AFTER_STARTUP=a.png,b.png: once the trainer is built (the start-up scan passed), rank 0 breaks the
# pixel data of these images (header and end marker intact), so only the data loader can find them.
to_break = [Path(p) for p in os.environ.get("MMFT_TEST_BREAK_AFTER_STARTUP", "").split(",") if p]
if to_break:
    import mmft.recipe

    build_trainer = mmft.recipe.build_trainer

    def build_then_break(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        if rank == 0:
            for path in to_break:
                data = bytearray(path.read_bytes())
                start = data.index(b"IDAT") + 8
                data[start:start + 40] = b"\xff" * 40
                path.write_bytes(bytes(data))
        trainer.accelerator.wait_for_everyone()
        return trainer

    mmft.recipe.build_trainer = build_then_break

trainer = vqa.main(argv)

digest = hashlib.sha256()
for name, parameter in sorted(trainer.model.named_parameters()):
    digest.update(name.encode())
    digest.update(parameter.detach().to(torch.float32).contiguous().numpy().tobytes())
record_dir.mkdir(parents=True, exist_ok=True)
(record_dir / f"rank{rank}.json").write_text(json.dumps({
    "seen_ids": seen_ids, "generated_ids": generated_ids, "weights": digest.hexdigest(), "writes": sorted(set(writes)),
    "world_size": int(os.environ.get("WORLD_SIZE", "1")), "global_step": trainer.state.global_step,
    "bad_records_seen_here": [r.record_id for r in trainer.bad_records.kept],
}))
