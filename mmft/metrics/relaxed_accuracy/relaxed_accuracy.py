"""Relaxed accuracy (ChartQA, PlotQA): numeric answers within 5% of the target, exact match otherwise.

This file is loaded by ``evaluate.load(<folder>)``, which copies it into the Hugging Face modules cache and imports
the copy, so it must not use relative imports; the text normaliser is imported absolutely from ``mmft``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

import evaluate

from mmft.metrics.info import mean_score, text_metric_info
from mmft.metrics.normalize import normalize_exact_match

_CITATION = """\
@inproceedings{masry2022chartqa,
  title     = {{ChartQA}: A Benchmark for Question Answering about Charts with Visual and Logical Reasoning},
  author    = {Masry, Ahmed and Long, Do Xuan and Tan, Jia Qing and Joty, Shafiq and Hoque, Enamul},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2022},
  year      = {2022}
}
@inproceedings{methani2020plotqa,
  title     = {{PlotQA}: Reasoning over Scientific Plots},
  author    = {Methani, Nitesh and Ganguly, Pritha and Khapra, Mitesh M. and Kumar, Pratyush},
  booktitle = {IEEE/CVF Winter Conference on Applications of Computer Vision (WACV)},
  year      = {2020}
}
"""

_DESCRIPTION = """\
Relaxed accuracy is ChartQA's metric: when both the target and the prediction are numbers, the prediction is correct
if its relative error |prediction - target| / |target| is at most 5% (exactly 5% counts; the comparison is done in
exact decimal arithmetic, so 1.05 against 1 is inside the tolerance); a target of 0 needs the prediction to be 0.
Otherwise (either side not a number) the answers must be equal after normalisation (lowercase, surrounding
punctuation and the articles a/an/the removed, whitespace collapsed). A prediction is correct if it matches any
reference; the metric is the fraction of correct predictions.

Numbers are read leniently, the way charts print them: surrounding whitespace and a final period are ignored, as are
thousands separators ("1,234.5"), a currency sign ("$12") and a percent sign, which is treated as a unit ("45%" and
"45" are both 45; Pix2Struct's reference code divides by 100 instead, so "45%" would not match "45" there, while
ChartQA targets are written without the sign and models often add it).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted answers, one per question.
    references (`list` of `list` of `str`): for each question, the acceptable answers. Must not be empty.
    max_relative_change (`float`, optional, default 0.05): the numeric tolerance.

Returns:
    relaxed_accuracy (`float`): fraction of correct predictions, in [0, 1].

Examples:

    >>> from mmft.metrics import load_metric
    >>> relaxed = load_metric("relaxed_accuracy")
    >>> relaxed.compute(predictions=["104.9", "1,050", "Yes."], references=[["100"], ["1000"], ["yes"]])
    {'relaxed_accuracy': 1.0}
"""

MAX_RELATIVE_CHANGE = 0.05

_NUMBER = re.compile(
    r"""^(?P<sign>[+-]?)\s*[$€£¥]?\s*
    (?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)
    \s*%?$""",
    re.VERBOSE,
)


def to_number(text: str) -> Decimal | None:
    """The number written in ``text`` (see the description for what is accepted), or ``None``."""
    text = text.strip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    match = _NUMBER.match(text)
    if match is None:
        return None
    try:
        value = Decimal(match["number"].replace(",", ""))
    except InvalidOperation:
        return None
    return -value if match["sign"] == "-" else value


def relaxed_correct(prediction: str, target: str, max_relative_change: float = MAX_RELATIVE_CHANGE) -> bool:
    """ChartQA's relaxed correctness of one prediction against one target."""
    target_number = to_number(target)
    prediction_number = to_number(prediction)
    if target_number is not None and prediction_number is not None:
        if target_number == 0:
            return prediction_number == 0
        tolerance = Decimal(str(max_relative_change)) * abs(target_number)
        return abs(prediction_number - target_number) <= tolerance
    return normalize_exact_match(prediction) == normalize_exact_match(target)


# evaluate.load() runs each metric script on its own, so every script declares its Metric class, decorator and
# _info itself; what they share is in mmft.metrics.info (text_metric_info).
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RelaxedAccuracy(evaluate.Metric):
    """ChartQA relaxed accuracy: 5% relative tolerance for numbers, normalised exact match for everything else."""

    def _info(self) -> evaluate.MetricInfo:
        return text_metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            homepage="https://github.com/vis-nlp/ChartQA",
            codebase_urls=["https://github.com/google-research/pix2struct"],
            reference_urls=["https://arxiv.org/abs/2203.10244"],
        )

    def _compute(self, predictions, references, max_relative_change: float = MAX_RELATIVE_CHANGE) -> dict:
        scores = []
        for i, (prediction, refs) in enumerate(zip(predictions, references, strict=True)):
            if not refs:
                raise ValueError(f"relaxed_accuracy: prediction {i} has no reference answer; give at least one.")
            scores.append(float(any(relaxed_correct(prediction, ref, max_relative_change) for ref in refs)))
        return mean_score("relaxed_accuracy", scores)
