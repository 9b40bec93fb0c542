"""Tests for the task metrics: ANLS, relaxed accuracy, multiple-choice accuracy, BLEU-4 and CIDEr-D.

Every expected number is worked out by hand from the metric's definition (the steps are in the comments), never
recomputed with the code under test, so that a scoring regression makes a test fail. Loading goes through
``mmft.metrics.load_metric`` and ``evaluate.load(<folder>)`` with the network refused (see ``no_network`` in
tests/conftest.py).
"""

from __future__ import annotations

import math

import pytest

import mmft.metrics
from mmft.metrics import METRICS_DIR, load_metric

TASK_METRICS = ["anls", "bleu", "cider", "mc_accuracy", "relaxed_accuracy"]


def score(name, predictions, references, **kwargs):
    return load_metric(name).compute(predictions=predictions, references=references, **kwargs)[name]


# ------------------------------------------------------------------------------------------------------------------
# ANLS (DocVQA): NL = lev(norm(ref), norm(pred)) / max(len(ref), len(pred)); score = 1 - min NL, 0 if below 0.5
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "references", "expected"),
    [
        ("Denver Broncos", ["Denver Broncos", "Denver R. Broncos"], 1.0),
        ("denver  BRONCOS ", ["Denver Broncos"], 1.0),  # case and whitespace are normalised (NL = 0 / 16)
        ("Denver Bronco", ["Denver Broncos"], 1 - 1 / 14),  # one deletion over 14 characters
        ("12/15/89", ["12/15/88"], 1 - 1 / 8),  # an OCR slip: one substitution over 8 characters
        ("Dear dr. Lobo", ["Dear Dr. Lobo", "Dr. Lobo"], 1.0),  # max over references
        ("Dr. Lobo", ["Dear Dr. Lobo"], 1 - 5 / 13),  # 5 insertions ("dear ") over 13 -> 0.615, kept
        ("abcd", ["abxy"], 0.5),  # NL = 2/4 exactly: the official script keeps a similarity of 0.5
        ("abcde", ["abxyz"], 0.0),  # NL = 3/5: similarity 0.4 < 0.5 -> 0 (a wrong answer, not a misspelling)
        ("Boston", ["Denver Broncos"], 0.0),
        ("1995", ["1989", "nineteen"], 0.5),  # "1995" vs "1989": 2 substitutions / 4 -> 0.5; "nineteen": 0
    ],
)
def test_anls_per_question(prediction, references, expected):
    assert score("anls", [prediction], [references]) == pytest.approx(expected, abs=1e-12)


def test_anls_mean_and_threshold_argument():
    # (1 - 1/8) and 0 -> mean 0.4375; with threshold 0.9 the 0.875 question also drops to 0.
    preds, refs = ["12/15/89", "Boston"], [["12/15/88"], ["Denver"]]
    assert score("anls", preds, refs) == pytest.approx(0.4375)
    assert score("anls", preds, refs, threshold=0.9) == 0.0


def test_anls_rejects_empty_references():
    with pytest.raises(ValueError, match="at least one reference"):
        score("anls", ["x"], [[]])


# ------------------------------------------------------------------------------------------------------------------
# Relaxed accuracy (ChartQA): |p - t| / |t| <= 5% for numbers, normalised exact match otherwise
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "target", "correct"),
    [
        ("104.9", "100", True),  # 4.9%
        ("105", "100", True),  # exactly 5% counts
        ("105.1", "100", False),  # 5.1%
        ("95", "100", True),  # -5%
        ("94.9", "100", False),  # -5.1%
        ("1.05", "1", True),  # exactly 5% (float arithmetic would say 0.05000000000000004 > 0.05)
        ("0.95", "1", True),
        ("-10.5", "-10", True),  # relative to |target|
        ("10.5", "-10", False),
        ("0", "0", True),  # a target of 0 needs exactly 0 ...
        ("0.0", "0", True),
        ("0.01", "0", False),  # ... any deviation is infinitely relative
        ("1,050", "1000", True),  # thousands separators
        ("1,000,000", "1050000", True),
        ("45%", "45", True),  # "%" is a unit: 45% vs 45
        ("47.25 %", "45", True),  # 2.25 / 45 = 5% exactly, with a spaced percent sign
        ("47.3", "45", False),  # 2.3 / 45 = 5.11%
        ("$12.5", "12", True),  # 0.5 / 12 = 4.2%, currency sign ignored
        ("12.", "12", True),  # a final period is ignored
        ("Yes.", "yes", True),  # not numbers: normalised exact match
        ("the Blue", "blue", True),
        ("blue", "green", False),
        ("twelve", "12", False),  # words are not read as numbers
        ("12 apples", "12", False),
    ],
)
def test_relaxed_correctness(prediction, target, correct):
    assert score("relaxed_accuracy", [prediction], [[target]]) == float(correct)


def test_relaxed_accuracy_any_reference_mean_and_tolerance():
    preds, refs = ["108", "blue", "3"], [["100", "110"], ["red"], ["3"]]
    # 108 is 8% from 100 but 1.8% from 110 -> correct; blue wrong; 3 exact -> 2/3
    assert score("relaxed_accuracy", preds, refs) == pytest.approx(2 / 3)
    # with a 1% tolerance 108 matches neither 100 nor 110 (1.82%) -> 1/3
    assert score("relaxed_accuracy", preds, refs, max_relative_change=0.01) == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------------------------------
# Multiple-choice accuracy
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction",
    [
        "B",
        "b",
        "(B)",
        "[B]",
        "B.",
        "B)",
        "B:",
        " (B). ",
        "Answer: B",
        "answer: (B)",
        "The answer is B.",
        "The correct answer is (B)",
        "B. blue",
        "(B) blue",
        "B: blue",
        "I think the answer is B because it is blue.",
        "blue",
        "Blue.",
        "the blue",
    ],
)
def test_mc_letter_forms_and_option_text_are_correct(prediction):
    # Reference written as letter + text, so no options are needed for either a letter or a text prediction.
    assert score("mc_accuracy", [prediction], [["B. blue"]]) == 1.0


@pytest.mark.parametrize("prediction", ["A", "(C)", "Answer: A", "A. red", "red", "A red circle", "blue-ish", ""])
def test_mc_wrong_choices(prediction):
    assert score("mc_accuracy", [prediction], [["B. blue"]]) == 0.0


def test_mc_letter_decides_over_text():
    # "B. red": the letter names option B (correct) even though the text is wrong; the letter is the choice made.
    assert score("mc_accuracy", ["B. red"], [["B. blue"]]) == 1.0
    assert score("mc_accuracy", ["A. blue"], [["B. blue"]]) == 0.0


def test_mc_options_argument():
    options = [["red", "blue", "green"]] * 4
    # letter-only reference + text prediction, text-only reference + letter prediction: both need the options
    preds = ["blue", "B", "(C)", "green"]
    refs = [["B"], ["blue"], ["green"], ["B"]]
    assert score("mc_accuracy", preds, refs, options=options) == pytest.approx(3 / 4)
    assert score("mc_accuracy", preds[:2], refs[:2]) == 0.0  # without options they cannot be matched
    # options may carry their letters; a letter beyond the options names nothing
    assert score("mc_accuracy", ["B"], [["blue"]], options=[["A. red", "B. blue"]]) == 1.0
    assert score("mc_accuracy", ["D"], [["D"]], options=[["red", "blue"]]) == 0.0
    with pytest.raises(ValueError, match="one list per prediction"):
        score("mc_accuracy", ["A"], [["A"]], options=[])


# ------------------------------------------------------------------------------------------------------------------
# BLEU-4 (sacrebleu), checked against hand-counted n-gram precisions
# ------------------------------------------------------------------------------------------------------------------


def test_bleu_single_sentence_hand_worked():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat" (6 tokens each -> brevity penalty 1):
    #   1-grams: the(x2, clipped to 1), cat, sat, on, mat -> 5/6
    #   2-grams: the cat, cat sat, sat on | on the, the mat miss -> 3/5
    #   3-grams: the cat sat, cat sat on | sat on the, on the mat miss -> 2/4
    #   4-grams: the cat sat on | cat sat on the, sat on the mat miss -> 1/3
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25  # = (1/12)^(1/4) = 0.5373
    assert score("bleu", ["the cat sat on the mat"], [["the cat sat on a mat"]]) == pytest.approx(expected)


def test_bleu_corpus_multiple_references_and_brevity_penalty():
    # Adds hyp "a dog runs" with refs "a dog runs fast" (4 tokens) and "the dog is running quickly" (5 tokens):
    #   its 1/2/3-grams all match (3/3, 2/2, 1/1), it has no 4-gram (0/0); closest ref length 4.
    # Corpus precisions sum the counts: 1: (5+3)/(6+3) = 8/9, 2: (3+2)/(5+2) = 5/7, 3: (2+1)/(4+1) = 3/5,
    #   4: (1+0)/(3+0) = 1/3.  Lengths: c = 6+3 = 9 < r = 6+4 = 10 -> BP = exp(1 - 10/9).
    expected = math.exp(1 - 10 / 9) * (8 / 9 * 5 / 7 * 3 / 5 * 1 / 3) ** 0.25
    result = score(
        "bleu",
        ["the cat sat on the mat", "a dog runs"],
        [["the cat sat on a mat"], ["a dog runs fast", "the dog is running quickly"]],
    )
    assert result == pytest.approx(expected)  # ~0.5342


def test_bleu_perfect_and_disjoint():
    assert score("bleu", ["a b c d e"], [["x y", "a b c d e"]]) == pytest.approx(1.0)
    assert score("bleu", ["p q r s"], [["a b c d"]]) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# CIDEr-D, against a hand-computed three-image corpus
# ------------------------------------------------------------------------------------------------------------------


def test_cider_d_hand_computed_corpus():
    # Corpus: A: pred "A dog, dog." (tokenised: a dog dog), refs "a dog" / "a dog runs"
    #         B: pred "a cat", ref "a cat"        C: pred "bird", ref "the bird"
    # Document frequency over the references of the 3 images: "a" occurs in A and B (df 2), every other n-gram in
    # one image (df 1). idf = log(3) - log(max(1, df)): p = log(3/2) for "a", q = log(3) for everything else (also
    # for n-grams absent from the references, whose df is taken as 1).
    # Vectors hold tf * idf per order n = 1..4; "length" = number of bigrams; penalty exp(-delta^2 / 72).
    # B: identical to its reference: order 1 and 2 similarities 1, orders 3, 4 empty -> 0; delta 0
    #    -> 10 * (1 + 1 + 0 + 0) / 4 = 5.
    # C: hyp {bird: q} (norm q), ref {the: q, bird: q} (norm sqrt(2) q): order 1 = q^2 / (q * sqrt(2) q) = 1/sqrt(2);
    #    order 2: hyp empty -> 0; delta = 0 - 1 bigram -> penalty e = exp(-1/72) -> 10 * (e / sqrt(2)) / 4.
    # A: hyp order 1 {a: p, dog: 2q} (norm sqrt(p^2 + 4q^2)), order 2 {a dog: q, dog dog: q} (norm sqrt(2) q),
    #    order 3 {a dog dog: q}; 2 bigrams.
    #    vs "a dog" (1 bigram, penalty e): order 1 clipped: min(p,p)*p + min(2q,q)*q = p^2 + q^2 over
    #       sqrt(p^2+4q^2) * sqrt(p^2+q^2); order 2: q*q / (sqrt(2) q * q) = 1/sqrt(2); order 3: ref empty -> 0.
    #    vs "a dog runs" (2 bigrams, penalty 1): order 1 (p^2 + q^2) / (sqrt(p^2+4q^2) * sqrt(p^2+2q^2));
    #       order 2: q^2 / (sqrt(2) q * sqrt(2) q) = 1/2; order 3: "a dog dog" vs "a dog runs" -> 0.
    #    score A = 10 * (sum over both refs and the 4 orders) / 4 / 2 refs.
    # Corpus CIDEr-D = mean of the three image scores.
    p, q, e = math.log(1.5), math.log(3), math.exp(-1 / 72)
    ref1 = e * (math.sqrt(p**2 + q**2) / math.sqrt(p**2 + 4 * q**2) + 1 / math.sqrt(2))
    ref2 = (p**2 + q**2) / (math.sqrt(p**2 + 4 * q**2) * math.sqrt(p**2 + 2 * q**2)) + 1 / 2
    image_a = 10 * (ref1 + ref2) / 4 / 2
    image_b = 5.0
    image_c = 10 * (e / math.sqrt(2)) / 4
    expected = (image_a + image_b + image_c) / 3  # ~3.1213
    result = score(
        "cider",
        ["A dog, dog.", "a cat", "bird"],
        [["a dog", "a dog runs"], ["a cat"], ["the bird"]],
    )
    assert result == pytest.approx(expected, rel=1e-12)


def test_cider_d_single_image_corpus_is_zero_and_order_matters():
    # One image: every reference n-gram has idf log(1) - log(1) = 0, so every vector is zero.
    assert score("cider", ["a red circle"], [["a red circle"]]) == 0.0
    # Two images, two-word captions, every n-gram has idf log 2: image 1 exact (orders 1, 2 -> 1) = 10 * 2/4 = 5;
    # image 2 "blue square" vs "green square": order 1 = (log2)^2 / (2 (log2)^2) = 1/2, order 2 = 0 -> 10 * 0.5/4.
    result = score("cider", ["red circle", "blue square"], [["red circle"], ["green square"]])
    assert result == pytest.approx((5 + 1.25) / 2)


# ------------------------------------------------------------------------------------------------------------------
# Offline loading
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TASK_METRICS)
def test_evaluate_load_path_offline(no_network, monkeypatch, name):
    import evaluate

    monkeypatch.setattr(mmft.metrics, "_CACHE", {})
    for metric in (load_metric(name), evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)):
        # identical prediction and reference: every metric's best score; for cider, two 3-word captions exactly
        # right score 10 * (1 + 1 + 1 + 0) / 4 = 7.5 (no 4-grams; two images so that idf = log 2 is not zero)
        result = metric.compute(predictions=["B. blue sky", "a red box"], references=[["B. blue sky"], ["a red box"]])
        assert list(result) == [name]
        assert result[name] == pytest.approx(7.5 if name == "cider" else 1.0)
        assert metric.description.strip() and metric.citation.strip()
