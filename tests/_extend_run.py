"""The resume-to-more-steps story as a user runs it: ``recipes/vqa.py`` three times on one output folder.

    python tests/_extend_run.py ROOT MODEL TRAIN_JSONL EVAL_JSONL N K [recipe flags...]

writes ``ROOT/straight`` (one uninterrupted run to N steps) and ``ROOT/resumed`` (a run to K steps, then the same
folder continued to N with ``--resume_from_checkpoint true``), on the demo configuration (evaluation before
training, persistent DataLoader workers, full fine-tuning) with the flags given on top. Under torchrun every rank
runs the three runs in turn; in one process (the tests import ``three_runs``) they run in-process one after the
other, ``set_seed`` at the start of each putting every generator back as a fresh launch would.
"""

import sys
from pathlib import Path

import torch.utils.data._utils

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "recipes"))

import vqa  # noqa: E402  (recipes/vqa.py)

DEMO_CONFIG = ROOT / "recipes" / "configs" / "vqa" / "tiny-llava_shapes_full.yaml"
# torch joins each persistent DataLoader worker with a 5 s timeout when an iterator is shut down, and here the
# workers never exit within it (they are terminated after): ~15 s idle per run. 0.1 s keeps the matrix affordable.
FAST_WORKER_SHUTDOWN_S = 0.1


def three_runs(root: Path, model: str, train: str, evaluation: str, total: int, first: int, flags: list[str]) -> None:
    common = ["--config", str(DEMO_CONFIG), "--model_name_or_path", model, "--dataset_name", train,
              "--eval_dataset_name", evaluation, "--report_to", "none", "--save_strategy", "steps",
              "--save_steps", str(first), "--eval_strategy", "no", "--disable_tqdm", "true", *flags]
    for output_dir, steps, resume in (("straight", total, []), ("resumed", first, []),
                                      ("resumed", total, ["--resume_from_checkpoint", "true"])):
        vqa.main([*common, "--output_dir", str(root / output_dir), "--max_steps", str(steps), *resume])


if __name__ == "__main__":
    torch.utils.data._utils.MP_STATUS_CHECK_INTERVAL = FAST_WORKER_SHUTDOWN_S
    three_runs(Path(sys.argv[1]), *sys.argv[2:5], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7:])
