"""Normalised exact match against a list of acceptable answers, as an ``evaluate.Metric``.

This file is loaded by ``evaluate.load(<folder>)``, which copies it into the Hugging Face modules cache and imports
the copy, so it must not use relative imports; the normaliser is imported absolutely from ``mmft``.
"""

from __future__ import annotations

import evaluate

from mmft.metrics.info import mean_score, text_metric_info
from mmft.metrics.normalize import normalize_exact_match

_CITATION = """\
@inproceedings{rajpurkar2016squad,
  title     = {{SQuAD}: 100,000+ Questions for Machine Comprehension of Text},
  author    = {Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle = {Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  year      = {2016}
}
"""

_DESCRIPTION = """\
Exact match scores a prediction 1 if, after normalisation, it equals any of the acceptable reference answers, and 0
otherwise; the metric is the mean over samples. Normalisation lowercases, strips surrounding whitespace and
punctuation, removes the articles a/an/the and collapses whitespace. Internal punctuation is kept, so "3.5" and
"35" differ. Use it for short-answer datasets with one or a few references (GQA, TextVQA-style single answers,
multiple-choice letters, ...).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted answers, one per sample.
    references (`list` of `list` of `str`): for each sample, the list of acceptable answers. Must not be empty.

Returns:
    exact_match (`float`): fraction of predictions matching at least one reference, in [0, 1].

Examples:

    >>> from mmft.metrics import load_metric
    >>> em = load_metric("exact_match")
    >>> em.compute(predictions=["The Eiffel Tower.", "red"], references=[["eiffel tower"], ["blue", "navy"]])
    {'exact_match': 0.5}
"""


def exact_match_sample(prediction: str, references: list[str]) -> float:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0."""
    if not references:
        raise ValueError("exact_match: every prediction needs at least one reference answer.")
    pred = normalize_exact_match(prediction)
    return float(any(pred == normalize_exact_match(ref) for ref in references))


# evaluate.load() runs each metric script on its own, so every script declares its Metric class, decorator and
# _info itself; what they share is in mmft.metrics.info (text_metric_info).
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
    """Normalised exact match with multiple acceptable references per sample."""

    def _info(self) -> evaluate.MetricInfo:
        return text_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references) -> dict[str, float]:
        scores = [exact_match_sample(pred, refs) for pred, refs in zip(predictions, references, strict=True)]
        return mean_score("exact_match", scores)
