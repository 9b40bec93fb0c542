"""ANLS (Average Normalized Levenshtein Similarity, DocVQA / ST-VQA) as an ``evaluate.Metric``.

This file is loaded by ``evaluate.load(<folder>)``, which copies it into the Hugging Face modules cache and imports
the copy, so it must not use relative imports; the shared ``MetricInfo`` is imported absolutely from ``mmft``
(the scoring itself needs nothing outside the standard library).
"""

from __future__ import annotations

import evaluate

from mmft.metrics.info import mean_score, text_metric_info

_CITATION = """\
@inproceedings{biten2019scene,
  title     = {Scene Text Visual Question Answering},
  author    = {Biten, Ali Furkan and Tito, Ruben and Mafla, Andres and Gomez, Lluis and Rusi{\\~n}ol, Mar{\\c{c}}al and
               Valveny, Ernest and Jawahar, C. V. and Karatzas, Dimosthenis},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2019}
}
@inproceedings{mathew2021docvqa,
  title     = {{DocVQA}: A Dataset for {VQA} on Document Images},
  author    = {Mathew, Minesh and Karatzas, Dimosthenis and Jawahar, C. V.},
  booktitle = {IEEE/CVF Winter Conference on Applications of Computer Vision (WACV)},
  year      = {2021}
}
"""

_DESCRIPTION = """\
ANLS is the DocVQA / ST-VQA answer score: it tolerates small recognition (OCR) errors in an otherwise correct answer
and gives 0 to answers that are simply wrong. Per question, the normalised Levenshtein distance to each reference is
NL = edit_distance(reference, prediction) / max(len(reference), len(prediction)); the question scores
1 - min_j NL_j (the best reference), set to 0 when that similarity is below the threshold 0.5. ANLS is the mean over
questions.

As in the official evaluation script of the Robust Reading Competition (the DocVQA leaderboard), the edit distance is
taken between the lowercased, stripped, whitespace-collapsed strings, and the length between the raw strings (these
differ only when an answer has surrounding or repeated whitespace), and a similarity of exactly 0.5 is kept (the
papers write NL < 0.5 for a non-zero score; the script keeps NL == 0.5).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted answers, one per question.
    references (`list` of `list` of `str`): for each question, the list of acceptable answers. Must not be empty.
    threshold (`float`, optional, default 0.5): similarities below it score 0.

Returns:
    anls (`float`): mean per-question score, in [0, 1].

Examples:

    >>> from mmft.metrics import load_metric
    >>> anls = load_metric("anls")
    >>> result = anls.compute(predictions=["12/15/89", "Dear dr. Lobo"], references=[["12/15/88"], ["Dr. Lobo"]])
    >>> round(result["anls"], 4)  # (1 - 1/8 + 1 - 5/13) / 2
    0.7452
"""

THRESHOLD = 0.5


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character, each costing 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _normalize(text: str) -> str:
    return " ".join(text.strip().lower().split())


def normalized_levenshtein(reference: str, prediction: str) -> float:
    """NL as in the official script: distance of the normalised strings over the longer raw length (0 if empty)."""
    length = max(len(reference.upper()), len(prediction.upper()))
    if length == 0:
        return 0.0
    return levenshtein(_normalize(reference), _normalize(prediction)) / length


def anls_sample(prediction: str, references: list[str], threshold: float = THRESHOLD) -> float:
    """Score of one question: best similarity over the references, 0 if below ``threshold``."""
    if not references:
        raise ValueError("anls: every prediction needs at least one reference answer.")
    similarity = 1.0 - min(normalized_levenshtein(ref, prediction) for ref in references)
    return 0.0 if similarity < threshold else similarity


# evaluate.load() runs each metric script on its own, so every script declares its Metric class, decorator and
# _info itself; what they share is in mmft.metrics.info (text_metric_info).
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Anls(evaluate.Metric):
    """Average Normalized Levenshtein Similarity (threshold 0.5), as scored by the DocVQA leaderboard."""

    def _info(self) -> evaluate.MetricInfo:
        return text_metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            homepage="https://rrc.cvc.uab.es/?ch=17",
            reference_urls=["https://arxiv.org/abs/1905.13648", "https://arxiv.org/abs/2007.00398"],
        )

    def _compute(self, predictions, references, threshold: float = THRESHOLD) -> dict[str, float]:
        scores = [anls_sample(p, refs, threshold) for p, refs in zip(predictions, references, strict=True)]
        return mean_score("anls", scores)
