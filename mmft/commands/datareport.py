"""The report of ``mmft data check``: every problem kind, the summary of the data, and its printed form.

:func:`build_report` turns what a :class:`mmft.commands.datascan.DataChecker` found into one JSON-serialisable dict
(what ``--json`` prints); :func:`format_report` prints it for people, with a token-length histogram.
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Any

__all__ = ["PROBLEM_KINDS", "WARNING_KINDS", "build_report", "format_report"]

# Every kind of problem the check reports, with the one-line explanation printed above its examples. All are
# errors: each of them would stop training (or, for duplicates, silently weight a record twice).
PROBLEM_KINDS = {
    "invalid_json": "lines that are not valid JSON (file:line)",
    "bad_roles": "conversations whose roles are unknown or out of order (system? (user assistant)+ expected)",
    "empty_turn": "empty conversations, questions or answers",
    "placeholder_mismatch": "<image> placeholders that do not match the record's images",
    "malformed_record": "records with a missing or wrongly typed field",
    "duplicate_id": "ids used by more than one record (the later records are listed)",
    "missing_image": "image files that do not exist (relative paths resolve against the image root)",
    "image_outside_root": "image paths that are absolute or lead outside the image root (refused in training)",
    "unreadable_image": "image files that are not a readable image (corrupt, truncated or not an image)",
    "truncated_image": "PNG / JPEG files cut short: no end marker (IEND / EOI), found without decoding",
    "image_too_large": "images over the decompression-bomb pixel cap (--max_image_pixels)",
    "remote_image": "http(s) image URLs, refused without --allow_remote_images",
    "over_length": "samples longer than --max_length tokens after image expansion",
    "over_length_dropped": "samples over --max_length that training skips (--overlength_policy drop)",
    "shrunk_to_fit": "samples over --max_length whose images training shrinks to fit (--overlength_policy shrink)",
    "unsupported_by_model": "records the model family cannot take (e.g. too many images, or none)",
    "label_error": "samples whose supervised (assistant) tokens cannot be built",
    "processor_error": "samples the model's processor failed on",
}

# Kinds that do not stop training under the chosen --overlength_policy: listed, but the check still passes.
WARNING_KINDS = frozenset({"over_length_dropped", "shrunk_to_fit"})


def build_report(checker, source) -> dict:
    """Everything ``checker`` (a flushed :class:`mmft.commands.datascan.DataChecker`) found, as one JSON-serialisable
    dict (what ``--json`` prints)."""
    import numpy as np

    errors = sum(count for kind, count in checker.problems.counts.items() if kind not in WARNING_KINDS)
    warnings = sum(count for kind, count in checker.problems.counts.items() if kind in WARNING_KINDS)
    length_unit = "tokens" if checker.collator is not None else "words"
    lengths = np.frombuffer(checker.lengths, dtype=checker.lengths.typecode) if len(checker.lengths) else None
    report: dict[str, Any] = {
        "source": source.name,
        "image_root": source.image_root,
        "model": checker.model_name,
        "max_length": checker.options.max_length,
        "records": checker.records,
        "valid_records": checker.records - checker.problems.bad_records,
        "records_with_problems": checker.problems.bad_records,
        "errors": errors,
        "warnings": warnings,
        "ok": errors == 0,
        "problems": {
            kind: {
                "count": checker.problems.counts[kind],
                "severity": "warning" if kind in WARNING_KINDS else "error",
                "description": PROBLEM_KINDS[kind],
                "examples": checker.problems.examples[kind],
            }
            for kind in PROBLEM_KINDS
            if checker.problems.counts[kind]
        },
        "turns_per_record": _counter_summary(checker.turns),
        "images_per_record": _counter_summary(checker.images_per_record),
        "lengths": {
            "unit": length_unit,
            "measured": 0 if lengths is None else int(lengths.size),
            **(_distribution(lengths) if lengths is not None else {}),
            "histogram": _histogram(lengths) if lengths is not None else [],
        },
        "images": _image_summary(np, checker.widths, checker.heights),
    }
    if checker.supervised:
        supervised = np.frombuffer(checker.supervised, dtype=checker.supervised.typecode)
        report["supervised_tokens"] = _distribution(supervised)
    if checker.remote_unchecked:
        report["images"]["remote_unchecked"] = checker.remote_unchecked
    return report


def _counter_summary(counter: Counter) -> dict:
    return {str(key): counter[key] for key in sorted(counter)}


def _distribution(values) -> dict:
    import numpy as np

    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "mean": round(float(values.mean()), 2),
        "p95": float(np.percentile(values, 95)),
        "max": int(values.max()),
    }


def _nice_width(span: int, bins: int) -> int:
    raw = max(1, -(-span // bins))
    magnitude = 10 ** (len(str(raw)) - 1)
    for step in (1, 2, 5, 10):
        if step * magnitude >= raw:
            return step * magnitude
    return raw


def _histogram(values, bins: int = 12) -> list[dict]:
    """Equal-width bins with round edges: [{"low", "high" (inclusive), "count"}]."""
    import numpy as np

    low, high = int(values.min()), int(values.max())
    width = _nice_width(high - low + 1, bins)
    start = (low // width) * width
    n_bins = (high - start) // width + 1
    counts = np.bincount((values - start) // width, minlength=n_bins)
    return [
        {"low": start + i * width, "high": start + (i + 1) * width - 1, "count": int(count)}
        for i, count in enumerate(counts)
    ]


def _image_summary(np, widths: array, heights: array) -> dict:
    if not widths:
        return {"count": 0}
    w = np.frombuffer(widths, dtype=widths.typecode).astype(np.int64)
    h = np.frombuffer(heights, dtype=heights.typecode).astype(np.int64)
    megapixels = w * h / 1e6

    def stats(values, digits=0):
        result = [float(values.min()), float(np.median(values)), float(values.max())]
        return dict(zip(("min", "median", "max"), [round(v, digits) if digits else int(v) for v in result]))

    return {"count": int(w.size), "width": stats(w), "height": stats(h), "megapixels": stats(megapixels, 3)}


def format_report(report: dict, *, bar_char: str = "#") -> str:
    """The human-readable report."""
    lines = [f"mmft data check: {report['source']}  (images relative to {report['image_root']})"]
    lines.append(
        f"records            {report['records']:,}  ({report['valid_records']:,} valid, "
        f"{report['records_with_problems']:,} with problems)"
    )
    for key, label in (("turns_per_record", "answers/record"), ("images_per_record", "images/record")):
        counts = report[key]
        lines.append(f"{label:<19}" + ("  ".join(f"{k}: {v:,}" for k, v in counts.items()) or "-"))
    images = report["images"]
    if images["count"]:
        w, h, mp = images["width"], images["height"], images["megapixels"]
        lines.append(
            f"image sizes        {images['count']:,} images (min / median / max): width {w['min']} / "
            f"{w['median']} / {w['max']}, height {h['min']} / {h['median']} / {h['max']}, megapixels "
            f"{mp['min']} / {mp['median']} / {mp['max']}"
        )
    if images.get("remote_unchecked"):
        lines.append(f"                   {images['remote_unchecked']:,} remote images not checked (URLs)")
    lengths = report["lengths"]
    if lengths["measured"]:
        if lengths["unit"] == "tokens":
            title = f"token lengths ({report['model']}, after image expansion)"
        else:
            title = "text lengths in words (no --model: a rough guide; image tokens not counted)"
        lines.append(
            f"{title}: min {lengths['min']}, median {lengths['median']:g}, p95 {lengths['p95']:g}, "
            f"max {lengths['max']}"
        )
        lines.extend(
            _bar_chart(lengths["histogram"], report["max_length"] if lengths["unit"] == "tokens" else None, bar_char)
        )
    if "supervised_tokens" in report:
        s = report["supervised_tokens"]
        lines.append(f"supervised tokens  min {s['min']}, median {s['median']:g}, max {s['max']} per sample")
    if report["problems"]:
        lines.append("")
        lines.append(
            f"PROBLEMS: {report['errors']:,} errors in {report['records_with_problems']:,} records"
            + (f", {report['warnings']:,} warnings" if report["warnings"] else "")
        )
        for kind, entry in report["problems"].items():
            severity = " [warning]" if entry["severity"] == "warning" else ""
            lines.append(f"  {kind} ({entry['count']:,}){severity}: {entry['description']}")
            for example in entry["examples"]:
                if example["id"] is None and example["message"].startswith(example["where"]):
                    lines.append(f"    - {_one_line(example['message'])}")  # it names its file:line itself
                else:
                    ident = example["id"] if example["id"] is not None else example["where"]
                    lines.append(f"    - {ident}: {_one_line(example['message'])}")
            hidden = entry["count"] - len(entry["examples"])
            if hidden > 0:
                lines.append(f"    ... and {hidden:,} more (raise --max_listed, or use --json)")
        lines.append("")
        if report["ok"]:
            lines.append(f"OK: {report['records']:,} records, no errors (the warnings above do not stop training).")
        else:
            plural = "s" if report["errors"] != 1 else ""
            lines.append(f"FAILED: {report['errors']:,} error{plural}. Fix or drop these records before training.")
    else:
        lines.append("")
        lines.append(f"OK: {report['records']:,} records, no problems found.")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bar_chart(histogram: list[dict], max_length: int | None, bar_char: str, width: int = 40) -> list[str]:
    peak = max((entry["count"] for entry in histogram), default=0) or 1
    digits = len(str(histogram[-1]["high"])) if histogram else 1
    lines = []
    for entry in histogram:
        bar = bar_char * max(1 if entry["count"] else 0, round(width * entry["count"] / peak))
        over = "  > max_length" if max_length is not None and entry["high"] > max_length else ""
        if entry["low"] == entry["high"]:
            label = f"{entry['low']:>{2 * digits + 3}}"
        else:
            label = f"{entry['low']:>{digits}} - {entry['high']:>{digits}}"
        lines.append(f"  {label} | {bar:<{width}} {entry['count']:,}{over}")
    return lines


def _bar_char(stream) -> str:
    encoding = (getattr(stream, "encoding", None) or "").lower()
    return "\u2588" if encoding.replace("-", "") in ("utf8", "utf16") else "#"
