"""VQA accuracy as an ``evaluate.Metric``, following the official VQAv2 evaluation (vqaEval.py).

This file is loaded by ``evaluate.load(<folder>)``, which copies it into the Hugging Face modules cache and imports
the copy, so it must not use relative imports. The normaliser is imported absolutely from ``mmft`` (importable in any
process that found this folder through ``mmft.metrics``); ``evaluate``'s import scanner turns a missing ``mmft`` into
a clear "you need to install mmft" error at load time.
"""

from __future__ import annotations

import evaluate

from mmft.metrics.info import mean_score, text_metric_info
from mmft.metrics.normalize import normalize_vqa_answer

_CITATION = """\
@inproceedings{antol2015vqa,
  title     = {{VQA}: Visual Question Answering},
  author    = {Antol, Stanislaw and Agrawal, Aishwarya and Lu, Jiasen and Mitchell, Margaret and Batra, Dhruv and
               Zitnick, C. Lawrence and Parikh, Devi},
  booktitle = {International Conference on Computer Vision (ICCV)},
  year      = {2015}
}
@inproceedings{goyal2017making,
  title     = {Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding in Visual Question Answering},
  author    = {Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle = {Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2017}
}
"""

_DESCRIPTION = """\
VQA accuracy is the metric of the VQA / VQAv2 benchmarks. Each question comes with several human answers (10 in
VQAv2); a predicted answer counts as fully correct when at least 3 annotators gave it:
`acc = min(1, #humans that said it / 3)`. To reduce annotator variance, the official evaluation averages this over
all n leave-one-out subsets of the n human answers (for n = 10, the 10-choose-9 subsets). With one reference the
score is exact match after normalisation.

Predictions and references are normalised with the official vqaEval.py rules: newlines/tabs to spaces, strip,
punctuation processing (keeping decimals such as "3.5" and digit groups such as "1,000" -> "1000"), lowercasing,
number words to digits ("two" -> "2"), removal of the articles a/an/the, and contraction fixing ("dont" -> "don't").
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted answers, one per question.
    references (`list` of `list` of `str`): for each question, the list of acceptable (human) answers. Repeated
        answers matter: they count as several annotators agreeing. Must not be empty.

Returns:
    vqa_accuracy (`float`): mean per-question VQA accuracy, in [0, 1].

Examples:

    >>> from mmft.metrics import load_metric
    >>> vqa = load_metric("vqa_accuracy")
    >>> results = vqa.compute(
    ...     predictions=["Two", "a dog.", "yes"],
    ...     references=[["2"], ["dog", "dog", "dog", "cat"], ["no", "no", "yes"]],
    ... )
    >>> round(results["vqa_accuracy"], 4)  # (1 + 3/4 + 2/9) / 3
    0.6574
"""


def vqa_sample_accuracy(prediction: str, references: list[str]) -> float:
    """Official per-question accuracy: mean over leave-one-out subsets of ``min(1, #matches / 3)``.

    Unlike vqaEval.py, which fully normalises only the prediction and punctuation-processes the human answers only
    when they are not all identical (the released annotations are already normalised), we always apply the full
    normalisation to both sides. This is what most reimplementations do and it is required for datasets whose
    references are raw strings; on official VQAv2 annotations the two choices give the same numbers.
    """
    if not references:
        raise ValueError("vqa_accuracy: every prediction needs at least one reference answer.")
    pred = normalize_vqa_answer(prediction)
    gts = [normalize_vqa_answer(ref) for ref in references]
    if len(gts) == 1:
        # The official loop would compare against the (empty) set of *other* answers and always score 0; with a
        # single reference, exact match after normalisation is the only meaningful score.
        return float(pred == gts[0])
    accs = []
    for held_out in range(len(gts)):
        matches = sum(1 for i, gt in enumerate(gts) if i != held_out and gt == pred)
        accs.append(min(1.0, matches / 3))
    return sum(accs) / len(accs)


# evaluate.load() runs each metric script on its own, so every script declares its Metric class, decorator and
# _info itself; what they share is in mmft.metrics.info (text_metric_info).
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaAccuracy(evaluate.Metric):
    """VQAv2 accuracy with the official answer normalisation and leave-one-out averaging."""

    def _info(self) -> evaluate.MetricInfo:
        return text_metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            homepage="https://visualqa.org/evaluation.html",
            codebase_urls=["https://github.com/GT-Vision-Lab/VQA"],
            reference_urls=["https://arxiv.org/abs/1505.00468", "https://arxiv.org/abs/1612.00837"],
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        scores = [vqa_sample_accuracy(pred, refs) for pred, refs in zip(predictions, references, strict=True)]
        return mean_score("vqa_accuracy", scores)
