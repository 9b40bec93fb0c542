"""Corpus BLEU-4 through sacrebleu, with several references per prediction, as an ``evaluate.Metric``.

This file is loaded by ``evaluate.load(<folder>)``, which copies it into the Hugging Face modules cache and imports
the copy, so it must not use relative imports; the shared ``MetricInfo`` is imported absolutely from ``mmft``.
"""

from __future__ import annotations

import evaluate

from mmft.metrics.info import text_metric_info

_CITATION = """\
@inproceedings{papineni2002bleu,
  title     = {{BLEU}: a Method for Automatic Evaluation of Machine Translation},
  author    = {Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle = {Annual Meeting of the Association for Computational Linguistics (ACL)},
  pages     = {311--318},
  year      = {2002}
}
@inproceedings{post2018call,
  title     = {A Call for Clarity in Reporting {BLEU} Scores},
  author    = {Post, Matt},
  booktitle = {Conference on Machine Translation (WMT)},
  pages     = {186--191},
  year      = {2018}
}
"""

_DESCRIPTION = """\
Corpus-level BLEU-4 computed by sacrebleu (`sacrebleu.corpus_bleu`): the geometric mean of the clipped 1- to 4-gram
precisions, summed over the whole corpus, times the brevity penalty exp(1 - r/c) when the total hypothesis length c
is below the total closest-reference length r. Each prediction may have its own number of references (n-gram counts
are clipped by the maximum count in any of its references). sacrebleu's defaults apply: the "13a" tokenizer (the
WMT mteval tokenisation: punctuation split off), case-sensitive, "exp" smoothing (used only when some n-gram order has
no match at all). The score is reported in [0, 1] (sacrebleu's score / 100), like coco-caption's Bleu_4.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one hypothesis per sample.
    references (`list` of `list` of `str`): for each sample, its references (any number, at least one).
    lowercase (`bool`, optional, default False): lowercase hypotheses and references first.
    tokenize (`str`, optional, default "13a"): a sacrebleu tokenizer name ("13a", "intl", "char", "none", ...).

Returns:
    bleu (`float`): corpus BLEU-4 in [0, 1].

Examples:

    >>> from mmft.metrics import load_metric
    >>> bleu = load_metric("bleu")
    >>> result = bleu.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on a mat"]])
    >>> round(result["bleu"], 4)  # (5/6 * 3/5 * 2/4 * 1/3) ** (1/4), brevity penalty 1
    0.5373
"""


def reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's layout: one stream per reference position, ``None`` where a sample has fewer references."""
    for i, refs in enumerate(references):
        if not refs:
            raise ValueError(f"bleu: prediction {i} has no reference; give at least one.")
    width = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


# evaluate.load() runs each metric script on its own, so every script declares its Metric class, decorator and
# _info itself; what they share is in mmft.metrics.info (text_metric_info).
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    """Corpus BLEU-4 (sacrebleu defaults), several references per prediction, score in [0, 1]."""

    def _info(self) -> evaluate.MetricInfo:
        return text_metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            homepage="https://github.com/mjpost/sacrebleu",
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/P02-1040/", "https://aclanthology.org/W18-6319/"],
        )

    def _compute(self, predictions, references, lowercase: bool = False, tokenize: str = "13a") -> dict[str, float]:
        import sacrebleu  # imported here so that a missing install fails with a clear error only when used

        if not predictions:
            raise ValueError("bleu: no predictions to score (empty batch).")
        score = sacrebleu.corpus_bleu(
            list(predictions), reference_streams(references), lowercase=lowercase, tokenize=tokenize
        )
        return {"bleu": score.score / 100.0}
