"""Task metrics shipped with mmft as ``evaluate.Metric`` scripts, loadable fully offline.

Each bundled metric lives in ``METRICS_DIR/<name>/<name>.py`` (``evaluate.load`` requires the script to be named
after its folder). :func:`load_metric` resolves a bundled name or a local path to an absolute script path before
handing it to ``evaluate.load``: a bare name such as ``"exact_match"`` would otherwise be looked up on the Hugging
Face Hub (and would pick up the Hub's different ``exact_match``), whereas an existing local file never touches the
network, with or without ``HF_HUB_OFFLINE``.

``evaluate`` is imported lazily because importing it also imports ``transformers.pipelines`` (several seconds);
``available_metrics()`` and :mod:`mmft.metrics.normalize` stay cheap.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    import evaluate

__all__ = ["DEFAULT_METRICS", "METRICS_DIR", "available_metrics", "load_metric", "metric_path"]

# The metrics of a run that names none (--metrics) on a dataset whose data card names none (or that has no card).
DEFAULT_METRICS = ("vqa_accuracy", "exact_match")

METRICS_DIR: Path = Path(__file__).resolve().parent

# evaluate.load copies the script into the modules cache and builds a new instance every call; metrics are
# stateless between compute() calls, so one instance per script per process is enough.
_CACHE: dict[str, evaluate.Metric] = {}
_LOCK = threading.Lock()


def available_metrics() -> list[str]:
    """Names of the metrics bundled with mmft (folders of ``METRICS_DIR`` holding a same-named script)."""
    return sorted(
        child.name for child in METRICS_DIR.iterdir() if child.is_dir() and (child / f"{child.name}.py").is_file()
    )


def metric_path(name: str | os.PathLike[str]) -> Path:
    """Absolute path of the metric script for a bundled name, a metric folder or a ``.py`` script.

    Bundled names take precedence over same-named folders in the working directory.
    """
    text = os.fspath(name)
    if text in available_metrics():
        return METRICS_DIR / text / f"{text}.py"
    path = Path(text).expanduser()
    if path.is_dir() and (path / f"{path.name}.py").is_file():
        return (path / f"{path.name}.py").resolve()
    if path.is_file() and path.suffix == ".py":
        return path.resolve()
    raise UsageError(
        f"Unknown metric {text!r}: not a bundled metric nor a metric folder/script on disk. "
        f"Available metrics: {', '.join(available_metrics())}. "
        "(A metric folder must contain a script named after it, e.g. my_metric/my_metric.py.)"
    )


def load_metric(name: str | os.PathLike[str]) -> evaluate.Metric:
    """Load a bundled metric by name (see :func:`available_metrics`) or a local metric folder/script.

    The instance is cached per process and per script path, so repeated calls return the same object. It is meant to
    be used through ``compute(predictions=..., references=...)``; do not interleave ``add_batch`` calls from
    different evaluation loops on the shared instance. Hub metric ids are deliberately not accepted: mmft runs on
    machines without Hub access. Raises ``ValueError`` for unknown names.
    """
    script = metric_path(name)
    key = str(script)
    with _LOCK:
        if key not in _CACHE:
            import evaluate

            # keep_in_memory: buffer predictions in memory instead of temporary Arrow files + file locks under
            # ~/.cache/huggingface/evaluate (a single process computes the metric, and home may be read-only).
            _CACHE[key] = evaluate.load(key, keep_in_memory=True)
        return _CACHE[key]
