"""Answer normalisation shared by the bundled metrics (pure Python, standard library only).

Two normalisers live here:

* :func:`normalize_vqa_answer` reproduces the official VQAv2 evaluation normalisation
  (``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` on the master branch of github.com/GT-Vision-Lab/VQA, the
  Python 3 revision) quirks included, so numbers reported with ``vqa_accuracy`` are comparable with the official
  evaluation server.
* :func:`normalize_exact_match` is a simpler, SQuAD-style normaliser used by ``exact_match``.

The metric scripts import this module with an absolute import (``from mmft.metrics.normalize import ...``) instead of
duplicating it: ``evaluate.load`` copies a metric script into its modules cache and imports it from there, so a
relative import of a file outside the metric folder cannot work, whereas ``mmft`` is importable in any process that
located the bundled metrics through ``mmft.metrics``.
"""

from __future__ import annotations

import re
import string

__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "MANUAL_MAP",
    "PUNCT",
    "normalize_exact_match",
    "normalize_vqa_answer",
    "process_digit_article",
    "process_punctuation",
]

# --------------------------------------------------------------------------------------------------------------------
# Official VQAv2 normalisation. Tables copied verbatim from vqaEval.py (master). An older revision of that file used
# the typographic apostrophe U+2019 in this table and a different punctuation list (with ":" and "'"); the master
# revision below, with ASCII apostrophes, is the one in use, and it makes "dont" and "don't" match.
# --------------------------------------------------------------------------------------------------------------------

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}

# Number words are mapped to digits ("two" -> "2"); note that the official map also sends "none" to "0".
MANUAL_MAP: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# Official list. The period is absent because it is handled by _PERIOD_STRIP (so decimals such as "3.5" survive),
# and the apostrophe is absent so contractions ("don't") survive.
PUNCT: tuple[str, ...] = (
    ";",
    r"/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)

# Official regexes, kept as written. "(?!<=\d)" is a negative *lookahead* for the literal text "<=digit" (the
# authors presumably meant the lookbehind "(?<!\d)"); it can never fail right before a ".", so in effect the
# pattern removes every period that is not followed by a digit: "yes." -> "yes", "3.5" stays, "5." -> "5".
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
# vqaEval.py calls ``periodStrip.sub("", text, re.UNICODE)``: the third positional argument of ``Pattern.sub`` is
# ``count``, so the official code removes at most int(re.UNICODE) == 32 periods. Reproduced for exactness.
_PERIOD_STRIP_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """Official ``processPunctuation``.

    Each punctuation mark is deleted when it touches a space somewhere in the input (``"red, blue"`` ->
    ``"red blue"``) or when the input contains a digit-comma-digit group (``"1,000"`` -> ``"1000"``); otherwise it is
    replaced by a space (``"red,blue"`` -> ``"red blue"``). As in the official loop, the decision for every mark
    looks at the *original* input. Periods not followed by a digit are then removed.
    """
    out = text
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """Official ``processDigitArticle``: lowercase, number words -> digits, drop articles, expand contractions."""
    words = []
    for word in text.lower().split():
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    # Contractions are looked up after lowercasing, so the capitalised keys of the official table ("Im", "Ive") are
    # unreachable, exactly as in vqaEval.py.
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_vqa_answer(answer: str) -> str:
    """Normalise an answer the way vqaEval.py normalises a prediction.

    Newlines/tabs become spaces, the string is stripped, then :func:`process_punctuation` and
    :func:`process_digit_article` are applied, in that order.
    """
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


# --------------------------------------------------------------------------------------------------------------------
# Exact-match normalisation (SQuAD-like, but internal punctuation is kept so "3.5" or "don't" survive).
# --------------------------------------------------------------------------------------------------------------------

_SURROUNDING = string.punctuation + string.whitespace


def normalize_exact_match(answer: str) -> str:
    """Lowercase, strip surrounding whitespace/punctuation, drop the articles a/an/the, collapse whitespace.

    Only punctuation at the ends of the answer is stripped (``"Paris."`` -> ``"paris"``); internal punctuation is
    meaningful in short answers (``"3.5"``, ``"o'clock"``, ``"1,000"``) and is kept.
    """
    words = [w for w in answer.lower().strip(_SURROUNDING).split() if w not in ARTICLES]
    return " ".join(words).strip(_SURROUNDING)
