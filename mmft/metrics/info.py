"""The ``evaluate.MetricInfo`` shared by the bundled metric scripts.

Every bundled metric scores one predicted string per sample against a list of acceptable reference strings, so all
of them declare the same features; each script passes only its own texts and links. The scripts import this module
absolutely (``from mmft.metrics.info import text_metric_info``) for the reason given in :mod:`mmft.metrics.normalize`:
``evaluate.load`` imports a copy of the script from its modules cache, where relative imports cannot work.

A function rather than a base class: ``evaluate.load`` takes the first ``evaluate.Metric`` subclass it finds in the
script's namespace as the metric, so an imported base class would be picked instead of the script's own class.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

__all__ = ["mean_score", "text_metric_info"]


def text_metric_info(description: str, citation: str, inputs_description: str, **kwargs: Any) -> evaluate.MetricInfo:
    """``MetricInfo`` with ``predictions``: string and ``references``: sequence of strings.

    ``kwargs`` go to ``evaluate.MetricInfo`` as they are (``homepage``, ``codebase_urls``, ``reference_urls``...).
    """
    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs_description,
        features=datasets.Features(
            {
                "predictions": datasets.Value("string"),
                "references": datasets.Sequence(datasets.Value("string")),
            }
        ),
        **kwargs,
    )


def mean_score(name: str, scores: list[float]) -> dict[str, float]:
    """``{name: mean of scores}``; an empty batch is an error: a mean over zero samples is undefined, and 0.0 would
    pass off an empty eval split as a real score."""
    if not scores:
        raise ValueError(f"{name}: no predictions to score (empty batch).")
    return {name: sum(scores) / len(scores)}
