"""Detection for datasets without a card: their column mapping recognised from the column names (and Image features).

See :func:`detect_mapping`; ``--column_*`` overrides settle what the names alone cannot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .card_errors import CardError
from .columns import ColumnMapping

__all__ = ["detect_mapping"]

IMAGE_COLUMNS = ("images", "image", "image_path", "img")
QUESTION_COLUMNS = ("question", "query")
ANSWER_COLUMNS = ("answers", "answer", "label")
CAPTION_COLUMNS = ("captions", "caption", "sentences", "text")
OPTION_COLUMNS = ("options", "choices")
_FLAGS = {"image": "--column_image", "question": "--column_question", "answers": "--column_answer",
          "captions": "--column_caption", "options": "--column_options", "messages": "--column_messages",
          "id": "--column_id"}


def _image_feature_columns(features) -> list[str]:
    if features is None:
        return []
    import datasets

    def is_image(feature) -> bool:
        if isinstance(feature, datasets.Image):
            return True
        if isinstance(feature, (datasets.List, datasets.LargeList)):
            return is_image(feature.feature)
        return False

    return [name for name, feature in features.items() if is_image(feature)]


def detect_mapping(columns: Iterable[str], *, features=None, overrides: Mapping[str, str | None] | None = None,
                   prompt_template: str | None = None, source: str | None = None) -> ColumnMapping:
    """Recognise a dataset's layout from its column names (and Image features), honouring ``--column_*`` overrides.

    Layouts: ``messages`` (+ ``images``), ``conversations`` (+ ``image``), The Cauldron's ``texts`` (+ ``images``),
    question + answer(s) (+ options/choices: multiple choice), caption(s). When two layouts or two columns for one
    role fit, the error says which ``--column_*`` flag settles it.
    """
    names = list(columns)
    present = set(names)
    given = {role: column for role, column in (overrides or {}).items() if column}
    where = f"Dataset {source!r}" if source else "The dataset"
    for role, column in given.items():
        if column not in present and not (role == "image" and "{" in column):
            raise CardError(f"{where} has no column {column!r} ({_FLAGS.get(role, role)}); its columns are: "
                            f"{', '.join(names)}.")

    def unique(role: str, candidates: Sequence[str]) -> str | None:
        if role in given:
            return given[role]
        found = [c for c in candidates if c in present]
        if len(found) > 1:
            raise CardError(f"{where}: several columns could hold the {role} ({', '.join(found)}); pass "
                            f"{_FLAGS[role]} with the one to use.")
        return found[0] if found else None

    image_features = _image_feature_columns(features)
    if "image" in given:
        image = given["image"]
    elif len(image_features) > 1:
        raise CardError(f"{where}: several image columns ({', '.join(image_features)}); pass --column_image with the "
                        "one to use.")
    elif image_features:
        image = image_features[0]
    else:
        image = unique("image", IMAGE_COLUMNS)
    base = {"image": image}
    if "id" in given:
        base["id"] = given["id"]

    if "messages" in given or ("messages" in present and not {"question", "captions"} & set(given)):
        column = given.get("messages", "messages")
        return ColumnMapping("messages", {**base, "messages": column}, source=source)
    if "conversations" in present and not {"question", "captions"} & set(given):
        return ColumnMapping("llava", {**base, "conversations": "conversations"}, source=source)
    if "texts" in present and image and not {"question", "captions", "answers"} & set(given):
        return ColumnMapping("cauldron", {**base, "texts": "texts"}, source=source)

    question = unique("question", QUESTION_COLUMNS)
    options = unique("options", OPTION_COLUMNS) if question else given.get("options")
    answer_candidates = ANSWER_COLUMNS if question else ()
    answers = unique("answers", answer_candidates)
    caption = unique("captions", CAPTION_COLUMNS) if "question" not in given and "answers" not in given else None
    if "captions" in given:
        question = answers = None
    qa = question is not None and answers is not None
    if qa and caption is not None:
        raise CardError(
            f"{where} fits two layouts: question answering (question: {question!r}, answer: {answers!r}) and "
            f"captioning (caption: {caption!r}). Pass --column_caption to train captioning, or --column_question "
            "and --column_answer to train question answering."
        )
    if qa and options is not None:
        return ColumnMapping("multiple_choice", {**base, "question": question, "options": options, "answer": answers},
                             prompt_template, source=source)
    if qa:
        return ColumnMapping("vqa", {**base, "question": question, "answers": answers}, prompt_template, source=source)
    if caption is not None:
        return ColumnMapping("caption", {**base, "captions": caption}, prompt_template, source=source)
    if question is not None:
        raise CardError(f"{where} has a question column ({question!r}) but no answer column; pass --column_answer "
                        f"with the column holding the answer(s). Columns: {', '.join(names)}.")
    raise CardError(
        f"{where}: cannot tell how its columns map into records (columns: {', '.join(names)}). Expected "
        "'messages' (+ 'images'), 'conversations' (+ 'image'), 'question' + 'answer(s)', or 'caption(s)'; name the "
        "columns with --column_messages, --column_question and --column_answer, or --column_caption (and "
        "--column_image), or write a data card (data_cards/README.md)."
    )
