"""CIDEr-D (consensus-based image description evaluation), pure Python, as an ``evaluate.Metric``.

A re-implementation of the ``Cider`` scorer of coco-caption (``pycocoevalcap/cider/cider_scorer.py``, which is CIDEr-D:
the variant with clipped n-gram counts and a Gaussian length penalty, Vedantam et al. 2015), without its Java PTB
tokenizer: text is tokenised by :func:`tokenize` (lowercase, punctuation removed). Numbers agree with pycocoevalcap
up to tokenisation differences (PTB keeps clitics such as ``'s`` as tokens; here ``man's`` becomes ``man s``).

This file is loaded by ``evaluate.load(<folder>)``, which copies it into the Hugging Face modules cache and imports
the copy, so it must not use relative imports; the shared ``MetricInfo`` is imported absolutely from ``mmft``
(the scoring itself needs nothing outside the standard library).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

import evaluate

from mmft.metrics.info import mean_score, text_metric_info

_CITATION = """\
@inproceedings{vedantam2015cider,
  title     = {{CIDEr}: Consensus-based Image Description Evaluation},
  author    = {Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {4566--4575},
  year      = {2015}
}
"""

_DESCRIPTION = """\
CIDEr-D scores a generated caption by its TF-IDF weighted n-gram agreement with the reference captions of the same
image, as in coco-caption (pycocoevalcap's Cider scorer, which implements CIDEr-D). Per image and per n in 1..4, the
caption and each reference become vectors of tf * idf weights, idf = log(#images) - log(max(1, df)) where df counts
the images whose references contain the n-gram (document frequency over the reference corpus being scored). The
similarity with one reference is sum_g min(h_g, r_g) * r_g / (|h| |r|) (clipped counts), times the Gaussian length
penalty exp(-delta^2 / (2 * 6^2)) where delta is the difference in length (as in coco-caption, the number of bigrams).
The image score is 10 * the mean over n of the mean over references; the corpus score is the mean over images.

Tokenisation (replacing coco-caption's Java PTB tokenizer): lowercase, every ASCII punctuation character replaced by a
space, split on whitespace. Scores depend on the whole corpus (the idf), so compute over the full evaluation set, not
per batch; a corpus of a single image always scores 0 (every n-gram has idf log(1) - log(1) = 0).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): for each image, its reference captions. Must not be empty.

Returns:
    cider (`float`): corpus CIDEr-D, the mean per-image score (x10 scaling, so typically in [0, 10]; COCO models
        score around 1).

Examples:

    >>> from mmft.metrics import load_metric
    >>> cider = load_metric("cider")
    >>> result = cider.compute(
    ...     predictions=["a red circle", "a blue square"],
    ...     references=[["a red circle", "red circle"], ["a green triangle", "green triangle"]],
    ... )
    >>> round(result["cider"], 4)
    2.9272
"""

N = 4  # n-gram orders 1..N
SIGMA = 6.0  # standard deviation of the Gaussian length penalty

_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")


def tokenize(text: str) -> list[str]:
    """Lowercase, replace each ASCII punctuation character by a space, split on whitespace."""
    return _PUNCT.sub(" ", text.lower()).split()


def ngram_counts(words: list[str], n: int = N) -> Counter:
    """Counts of every n-gram of orders 1..n (tuples of words); pycocoevalcap's ``precook``."""
    counts = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def _vector(counts: Counter, df: Counter, log_num_images: float) -> tuple[list[dict], list[float], int]:
    """tf-idf vectors per order, their L2 norms, and the "length" (number of bigrams, as in ``counts2vec``)."""
    vec = [{} for _ in range(N)]
    norm = [0.0] * N
    length = 0
    for gram, tf in counts.items():
        order = len(gram) - 1
        weight = float(tf) * (log_num_images - math.log(max(1.0, df[gram])))
        vec[order][gram] = weight
        norm[order] += weight * weight
        if order == 1:  # coco-caption counts bigrams here (index 1), not words; kept for comparable numbers
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def _similarity(hyp, ref) -> list[float]:
    (vec_h, norm_h, len_h), (vec_r, norm_r, len_r) = hyp, ref
    penalty = math.exp(-((len_h - len_r) ** 2) / (2 * SIGMA**2))
    out = []
    for order in range(N):
        val = sum(min(w, vec_r[order].get(g, 0.0)) * vec_r[order].get(g, 0.0) for g, w in vec_h[order].items())
        if norm_h[order] != 0 and norm_r[order] != 0:
            val /= norm_h[order] * norm_r[order]
        out.append(val * penalty)
    return out


def cider_d_scores(predictions: list[str], references: list[list[str]]) -> list[float]:
    """Per-image CIDEr-D scores (x10), document frequencies taken over ``references``."""
    if len(predictions) != len(references):
        raise ValueError(f"cider: {len(predictions)} predictions but {len(references)} reference lists.")
    hyps = [ngram_counts(tokenize(p)) for p in predictions]
    refs = []
    for i, group in enumerate(references):
        if not group:
            raise ValueError(f"cider: every prediction needs at least one reference caption (sample {i} has none).")
        refs.append([ngram_counts(tokenize(r)) for r in group])
    df = Counter()
    for group in refs:
        df.update({gram for counts in group for gram in counts})  # each image counts once per n-gram
    log_num_images = math.log(float(len(refs)))
    scores = []
    for hyp_counts, group in zip(hyps, refs):
        hyp = _vector(hyp_counts, df, log_num_images)
        total = [0.0] * N
        for ref_counts in group:
            for order, val in enumerate(_similarity(hyp, _vector(ref_counts, df, log_num_images))):
                total[order] += val
        scores.append(10.0 * (sum(total) / N) / len(group))
    return scores


# evaluate.load() runs each metric script on its own, so every script declares its Metric class, decorator and
# _info itself; what they share is in mmft.metrics.info (text_metric_info).
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Cider(evaluate.Metric):
    """Corpus CIDEr-D with document frequencies from the scored references (coco-caption's Cider scorer)."""

    def _info(self) -> evaluate.MetricInfo:
        return text_metric_info(
            _DESCRIPTION,
            _CITATION,
            _KWARGS_DESCRIPTION,
            homepage="https://github.com/tylin/coco-caption",
            codebase_urls=["https://github.com/tylin/coco-caption", "https://github.com/vrama91/cider"],
            reference_urls=["https://arxiv.org/abs/1411.5726"],
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        return mean_score("cider", cider_d_scores(predictions, references) if predictions else [])
