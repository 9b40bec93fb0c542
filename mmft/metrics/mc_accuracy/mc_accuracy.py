"""Multiple-choice accuracy: the prediction names the correct option by its letter or by its text.

This file is loaded by ``evaluate.load(<folder>)``, which copies it into the Hugging Face modules cache and imports
the copy, so it must not use relative imports; the text normaliser is imported absolutely from ``mmft``.
"""

from __future__ import annotations

import re
import string

import evaluate

from mmft.metrics.info import mean_score, text_metric_info
from mmft.metrics.normalize import normalize_exact_match

_CITATION = """\
@misc{mmft_mc_accuracy,
  title = {Multiple-choice accuracy with answer-letter extraction},
  note  = {mmft; the letter forms follow common practice in MMBench / ScienceQA / MMMU evaluation}
}
"""

_DESCRIPTION = """\
Multiple-choice accuracy: the fraction of questions whose prediction picks the correct option. A prediction picks an
option by its letter, in any of the forms "B", "(B)", "[B]", "B.", "B)", "B:", "Answer: B", "The answer is (B)",
optionally followed by the option text ("B. a red circle"), or by the option text alone ("a red circle"). A lone
letter is read case-insensitively ("b"); a letter followed by text must be a capital with a separator (".", ":", ")"),
so that an answer such as "A red circle" is read as text, not as option A. Texts are compared after normalisation
(lowercase, surrounding punctuation and articles removed, whitespace collapsed).

The correct answer (the references) can be given as the letter ("B"), the letter with its text ("B. a red circle" or
"(B) a red circle"), or the text alone. When the prediction gives a letter and the correct letter is known, the
letters decide; otherwise the texts decide. To score a bare letter against a text-only reference (or the option text
against a letter-only reference) the metric needs the options: pass `options`, one list per prediction, in letter
order (A, B, C, ...); each entry may already carry its letter ("A. red"). Without options, a bare letter against a
text-only reference (or a text against a letter-only reference) scores 0, so for generation evaluation write the
references as letter + text ("B. a red circle"), which needs no options.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated answers, one per question.
    references (`list` of `list` of `str`): for each question, the correct answer (letter, letter + text or text;
        several entries are alternatives). Must not be empty.
    options (`list` of `list` of `str`, optional): for each question, its options in letter order (A, B, ...).

Returns:
    mc_accuracy (`float`): fraction of questions answered correctly, in [0, 1].

Examples:

    >>> from mmft.metrics import load_metric
    >>> mc = load_metric("mc_accuracy")
    >>> mc.compute(
    ...     predictions=["(B)", "Answer: A", "a red circle"], references=[["B. blue"], ["B"], ["B. red circle"]]
    ... )
    {'mc_accuracy': 0.6666666666666666}
    >>> mc.compute(predictions=["b", "blue"], references=[["blue"], ["B"]], options=[["red", "blue"]] * 2)
    {'mc_accuracy': 1.0}
"""

LETTERS = string.ascii_uppercase

# "Answer:", "The answer is", "Correct option:", "Choice" ... before the letter (start of the prediction only).
_PREFIX = r"(?:(?i:(?:the\s+)?(?:correct\s+|final\s+|best\s+)?(?:answer|option|choice))(?:\s+(?i:is))?\s*[:\-]?\s*)?"
# A lone letter: "B", "(b)", "[B]", "B.", "B)", "Answer: B", "The answer is (B)."
_LETTER_ONLY = re.compile(r"^\s*" + _PREFIX + r"[(\[]?([A-Za-z])[)\]]?\s*[.:)]?\s*$")
# A capital letter with a separator, then the option text: "B. red", "(B) red", "B) red", "B: red", "Answer: B. red".
_LETTER_TEXT = re.compile(r"^\s*" + _PREFIX + r"(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])[.:)])\s+(\S.*?)\s*$", re.DOTALL)
# Anywhere in a longer answer: "I think the answer is B because ..."
_ANSWER_IS = re.compile(r"\b(?i:answer|option|choice)(?:\s+(?i:is))?\s*[:\-]?\s*[(\[]?([A-Z])(?![A-Za-z])")


def parse_choice(text: str) -> tuple[str | None, str | None]:
    """``(letter, option text)`` named by ``text``; either may be ``None``."""
    match = _LETTER_ONLY.match(text)
    if match:
        return match[1].upper(), None
    match = _LETTER_TEXT.match(text)
    if match:
        return next(g for g in match.groups()[:3] if g), match[4]
    match = _ANSWER_IS.search(text)
    if match:
        return match[1], None
    return None, text


def _complete(letter, text, options):
    """Fill in the missing half of (letter, text) from the question's options, when they are given."""
    if not options:
        return letter, text
    texts = [parse_option(option, i) for i, option in enumerate(options)]
    if letter is None and text is not None:
        wanted = normalize_exact_match(text)
        matches = [i for i, option in enumerate(texts) if normalize_exact_match(option) == wanted]
        if len(matches) == 1:
            letter = LETTERS[matches[0]]
    elif letter is not None and text is None:
        index = LETTERS.index(letter)
        if index < len(texts):
            text = texts[index]
    return letter, text


def parse_option(option: str, index: int) -> str:
    """An option's text, without its own letter prefix ("B. blue" -> "blue") when it carries the expected one."""
    letter, text = parse_choice(option)
    if letter == LETTERS[index] and text is not None:
        return text
    return option


def mc_sample(prediction: str, references: list[str], options: list[str] | None = None) -> float:
    """1.0 if the prediction picks the correct option (any of ``references``), else 0.0."""
    if not references:
        raise ValueError("mc_accuracy: every prediction needs at least one reference (the correct answer).")
    if options and len(options) > len(LETTERS):
        raise ValueError(f"mc_accuracy: at most {len(LETTERS)} options per question, got {len(options)}.")
    p_letter, p_text = _complete(*parse_choice(prediction), options)
    if options and p_letter is not None and LETTERS.index(p_letter) >= len(options):
        return 0.0  # a letter beyond the options names no option
    for reference in references:
        r_letter, r_text = _complete(*parse_choice(reference), options)
        if p_letter is not None and r_letter is not None:
            if p_letter == r_letter:
                return 1.0
        elif p_text is not None and r_text is not None:
            if normalize_exact_match(p_text) == normalize_exact_match(r_text):
                return 1.0
    return 0.0


# evaluate.load() runs each metric script on its own, so every script declares its Metric class, decorator and
# _info itself; what they share is in mmft.metrics.info (text_metric_info).
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class McAccuracy(evaluate.Metric):
    """Multiple-choice accuracy: answer letter ("B", "(B)", "Answer: B") or option text."""

    def _info(self) -> evaluate.MetricInfo:
        return text_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, options=None) -> dict[str, float]:
        if options is not None and len(options) != len(predictions):
            raise ValueError(
                f"mc_accuracy: options must hold one list per prediction ({len(predictions)}), got {len(options)}."
            )
        per_question = options if options is not None else [None] * len(predictions)
        scores = [
            mc_sample(p, refs, opts) for p, refs, opts in zip(predictions, references, per_question, strict=True)
        ]
        return mean_score("mc_accuracy", scores)
