"""The resume-to-more-steps story as a user runs it: ``recipes/vqa.py`` three times on one output folder.

    python tests/_extend_run.py ROOT MODEL TRAIN_JSONL EVAL_JSONL [recipe flags...]

writes ``ROOT/straight`` (an uninterrupted run to ``--max_steps``) and ``ROOT/resumed`` (a run to ``--save_steps``,
then the same folder continued to ``--max_steps`` with ``--resume_from_checkpoint true``), all with the demo
configuration (evaluation before training, persistent workers) and the flags given. Under torchrun every rank runs
the same three steps; in one process the three runs follow each other in-process (``set_seed`` at the start of each
puts every generator back, as a fresh launch would), which keeps the test matrix affordable.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "recipes"))

import vqa  # noqa: E402  (recipes/vqa.py)


def three_runs(root: Path, model: str, train: str, evaluation: str, flags: list[str]) -> None:
    total = int(flags[flags.index("--max_steps") + 1])
    first = flags[flags.index("--save_steps") + 1]
    common = ["--model_name_or_path", model, "--dataset_name", train, "--eval_dataset_name", evaluation,
              "--report_to", "none", "--save_strategy", "steps", "--eval_strategy", "no", *flags]
    vqa.main([*common, "--output_dir", str(root / "straight"), "--max_steps", str(total)])
    vqa.main([*common, "--output_dir", str(root / "resumed"), "--max_steps", first])
    vqa.main([*common, "--output_dir", str(root / "resumed"), "--max_steps", str(total),
              "--resume_from_checkpoint", "true"])


if __name__ == "__main__":
    three_runs(Path(sys.argv[1]), *sys.argv[2:5], sys.argv[5:])
