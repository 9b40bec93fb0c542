"""The evaluation report: one self-contained HTML file that a person can open to see what the model says.

Every evaluation with generation writes ``eval_report.html`` next to ``eval_predictions.jsonl`` (see
``VLMTrainer.evaluate``). The page holds:

* the metric summary of this evaluation;
* the training-loss curve and one curve per evaluation metric, drawn as inline SVG from ``trainer.state.log_history``
  (no plotting dependency, nothing fetched: the file works offline and can be attached to an issue or a model card);
* a gallery of evaluation samples: image thumbnail (downscaled to ``THUMBNAIL_SIZE`` px and embedded as a base64
  ``data:`` URI), question, reference(s), prediction and a per-sample score, wrong answers marked; a small inline
  script filters the gallery to the failures and sorts it (by score, id or dataset order).

The gallery is capped at ``MAX_SAMPLES`` samples (the first ones, in dataset order) to keep the file small (about
5 KB per sample with a thumbnail); the page says so, and every prediction is in the JSONL file anyway. Images are
loaded through :func:`mmft.data.images.load_image` with the record's ``image_root`` and the generation collator's
safety
settings, so the report never reads a file or URL that evaluation itself would have refused. All text is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..data.images import load_image

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_SAMPLES",
    "PER_SAMPLE_METRICS",
    "REPORT_FILE",
    "THUMBNAIL_SIZE",
    "Sample",
    "curves_from_log_history",
    "render_report",
    "report_file_name",
    "sample_scores",
    "svg_line_chart",
    "thumbnail_data_uri",
    "write_report",
]

REPORT_FILE = "eval_report.html"
MAX_SAMPLES = 200
THUMBNAIL_SIZE = 96

# Metrics that are a mean of per-sample scores, so one sample can be scored alone. BLEU and CIDEr are corpus-level
# (CIDEr's idf needs the whole corpus: a single caption always scores 0), so for them samples fall back to exact match.
PER_SAMPLE_METRICS = ("vqa_accuracy", "exact_match", "anls", "relaxed_accuracy", "mc_accuracy")

# Bookkeeping values logged with every evaluation: not worth a curve.
_NOT_CURVES = ("_runtime", "_samples_per_second", "_steps_per_second", "_dropped_samples")


def report_file_name(metric_key_prefix: str = "eval") -> str:
    """``<prefix>_report.html``: ``eval_report.html`` for the usual prefix (like the predictions file)."""
    return f"{metric_key_prefix}_report.html"


# --------------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class Sample:
    """One gallery entry. ``score`` in [0, 1]: 1 right, 0 wrong, in between partly right (e.g. VQA accuracy 0.3)."""

    index: int
    id: str
    question: str
    references: list[str]
    prediction: str
    score: float
    image: str | None = None  # data URI of the thumbnail
    image_note: str | None = None  # why there is no thumbnail (no image in the record, or a load error)


def sample_scores(metric_names: Sequence[str], predictions: Sequence[str],
                  references: Sequence[Sequence[str]]) -> tuple[str, list[float]]:
    """Per-sample scores by the first per-sample metric of ``metric_names`` (normalised exact match if none is).

    Returns the metric's name and one score per prediction.
    """
    from ..metrics import load_metric

    name = next((m for m in metric_names if m in PER_SAMPLE_METRICS), "exact_match")
    metric = load_metric(name)
    # Our own scripts' _compute, one sample at a time: the public compute() would add evaluate's Arrow buffering,
    # about 10 ms per call (seconds for a gallery).
    scores = [float(metric._compute(predictions=[p], references=[list(r)])[name])
              for p, r in zip(predictions, references, strict=True)]
    return name, scores


def thumbnail_data_uri(record: Mapping, *, size: int = THUMBNAIL_SIZE,
                       **load_options) -> tuple[str | None, str | None]:
    """The record's first image as a ``data:image/jpeg;base64,...`` thumbnail (longest side ``size``).

    ``load_options`` go to :func:`mmft.data.images.load_image` (``allow_outside_root``, ``allow_remote``,
    ``max_image_pixels``). Returns ``(uri, None)``, or ``(None, reason)`` when the record has no image or it cannot be
    loaded (the report is a by-product: an unreadable image is shown as such, not raised).
    """
    images = record.get("images") or []
    if not images:
        return None, "no image"
    try:
        # max_pixels: a JPEG decodes at reduced scale (PIL draft), no full-size decode for a 96-px thumbnail.
        image = load_image(images[0], root=record.get("image_root"), record_id=record.get("id"),
                           max_pixels=4 * size * size, **load_options)
    except Exception as exc:  # ImageLoadError, or anything a broken file throws
        return None, f"image unavailable: {exc}"
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), None


def curves_from_log_history(log_history: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """``{"loss": [(step, value), ...], "eval_loss": [...], "eval_vqa_accuracy": [...]}`` from the Trainer's log.

    The training loss comes from the entries with a ``loss`` key. An evaluation entry is recognised by its
    ``<prefix>_runtime`` key (``Trainer.evaluate`` always logs one; ``eval``, ``eval_before_train``, ``test`` ...):
    every other numeric ``<prefix>_*`` value of it becomes a curve, except throughput bookkeeping. Non-finite values
    are skipped.
    """
    curves: dict[str, list[tuple[float, float]]] = {}
    for entry in log_history:
        step = entry.get("step")
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            continue
        prefixes = tuple(key[: -len("_runtime")] + "_" for key in entry
                         if key.endswith("_runtime") and key != "train_runtime")
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            if key == "loss" or (prefixes and key.startswith(prefixes) and not key.endswith(_NOT_CURVES)):
                curves.setdefault(key, []).append((float(step), float(value)))
    return curves


# --------------------------------------------------------------------------------------------------------------------
# Rendering


def _fmt(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}" if abs(value) >= 1 else f"{value:.4f}".rstrip("0").rstrip(".") or "0"
    return f"{value:.3e}"


def svg_line_chart(name: str, points: Sequence[tuple[float, float]], *, width: int = 340, height: int = 180) -> str:
    """A line chart of ``points`` as an inline ``<svg>``: one ``<circle>`` per point (with a tooltip), axes labelled
    with the step and value ranges. ``data-series`` and ``data-points`` name the series and count its points."""
    left, right, top, bottom = 48, 10, 22, 26
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:  # a flat series: centre it, without going below 0 for a non-negative one (a 0.0 accuracy)
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = (y0 - pad if y0 - pad >= 0 or y0 < 0 else 0.0), y1 + pad

    def sx(x):
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y):
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    label = html.escape(name)
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    circles = "".join(
        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5"><title>step {_fmt(x)}: {html.escape(_fmt(y))}</title>'
        "</circle>"
        for x, y in points
    )
    base_y, end_x = height - bottom, width - right
    return (
        f'<svg class="chart" data-series="{label}" data-points="{len(points)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{label} by step">'
        f'<text x="{left}" y="14" class="chart-title">{label}</text>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base_y}" class="axis"/>'
        f'<line x1="{left}" y1="{base_y}" x2="{end_x}" y2="{base_y}" class="axis"/>'
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" class="tick">{html.escape(_fmt(y1))}</text>'
        f'<text x="{left - 4}" y="{base_y}" text-anchor="end" class="tick">{html.escape(_fmt(y0))}</text>'
        f'<text x="{left}" y="{height - 8}" class="tick">step {html.escape(_fmt(x0))}</text>'
        f'<text x="{end_x}" y="{height - 8}" text-anchor="end" class="tick">{html.escape(_fmt(x1))}</text>'
        f'<polyline points="{coords}" class="line"/>{circles}</svg>'
    )


_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:16px;
color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px}.muted{color:#667085}
table.metrics{border-collapse:collapse}table.metrics td,table.metrics th{padding:3px 12px 3px 0;text-align:left}
table.metrics th{font-weight:400}
table.metrics td.v{font-variant-numeric:tabular-nums;text-align:right}tr.task th,tr.task td{font-weight:700}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #e4e7ec;border-radius:6px}
.chart .axis{stroke:#98a2b3}.chart .line{fill:none;stroke:#2e6bd9;stroke-width:1.5}.chart circle{fill:#2e6bd9}
.chart-title{font-weight:600;font-size:12px}.tick{font-size:10px;fill:#667085}
.controls{margin:8px 0 12px;display:flex;gap:16px;align-items:center}
#gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:10px}
.sample{display:flex;gap:10px;background:#fff;border:1px solid #e4e7ec;border-left:5px solid #12b76a;
border-radius:6px;padding:8px}.sample.partial{border-left-color:#f79009}.sample.wrong{border-left-color:#f04438;
background:#fff8f7}.sample[hidden]{display:none}
.thumb,.noimg{width:96px;height:96px;object-fit:contain;flex:none;background:#f2f4f7;border-radius:4px}
.noimg{display:flex;align-items:center;justify-content:center;font-size:11px;color:#667085;text-align:center;
overflow:hidden}.body{min-width:0;overflow-wrap:anywhere}.body div{margin:1px 0}.k{color:#667085}
.badge{display:inline-block;font-size:11px;padding:0 6px;border-radius:8px;background:#d1fadf;color:#05603a}
.partial .badge{background:#fef0c7;color:#93370d}.wrong .badge{background:#fee4e2;color:#912018}
.pred{font-weight:600}#render-check{font-size:11px;color:#98a2b3;margin-top:16px}
"""

_SCRIPT = """
(function () {
  var gallery = document.getElementById("gallery");
  var cards = Array.prototype.slice.call(gallery.querySelectorAll(".sample"));
  var failuresOnly = document.getElementById("failures-only");
  var sortBy = document.getElementById("sort-by");
  var shown = document.getElementById("shown-count");
  var orders = {
    index: function (a, b) { return a.dataset.index - b.dataset.index; },
    "score-asc": function (a, b) { return a.dataset.score - b.dataset.score || a.dataset.index - b.dataset.index; },
    "score-desc": function (a, b) { return b.dataset.score - a.dataset.score || a.dataset.index - b.dataset.index; },
    id: function (a, b) { return a.dataset.id < b.dataset.id ? -1 : a.dataset.id > b.dataset.id ? 1 : 0; }
  };
  function apply() {
    var visible = 0;
    cards.slice().sort(orders[sortBy.value]).forEach(function (card) {
      gallery.appendChild(card);
      card.hidden = failuresOnly.checked && Number(card.dataset.score) >= 1;
      if (!card.hidden) { visible += 1; }
    });
    shown.textContent = visible + " shown";
  }
  failuresOnly.addEventListener("change", apply);
  sortBy.addEventListener("change", apply);
  var params = new URLSearchParams(location.hash.slice(1));  // e.g. eval_report.html#failures=1&sort=score-asc
  if (params.get("failures") === "1") { failuresOnly.checked = true; }
  if (params.get("sort") && orders[params.get("sort")]) { sortBy.value = params.get("sort"); }
  apply();
  // Self-check, read by the tests in a headless browser: how many thumbnails decoded and how many samples render.
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(gallery.querySelectorAll("img.thumb"));
    var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
    var rendered = cards.filter(function (card) { return card.getBoundingClientRect().height > 0; }).length;
    var check = document.getElementById("render-check");
    check.setAttribute("data-images-total", images.length);
    check.setAttribute("data-images-loaded", loaded);
    check.setAttribute("data-samples-rendered", rendered);
    check.textContent = "render check: " + rendered + " samples rendered, " + loaded + " of " + images.length +
      " thumbnails loaded";
  });
})();
"""


def _sample_html(sample: Sample, score_name: str) -> str:
    status = "right" if sample.score >= 1 else ("wrong" if sample.score <= 0 else "partial")
    if sample.image:
        picture = (f'<img class="thumb" src="{sample.image}" alt="image of sample {html.escape(sample.id)}" '
                   'loading="eager">')
    else:
        note = html.escape(sample.image_note or "no image")
        picture = f'<div class="noimg" title="{note}">{html.escape((sample.image_note or "no image")[:80])}</div>'
    refs = " | ".join(html.escape(ref) for ref in sample.references)
    return (
        f'<div class="sample {status}" data-index="{sample.index}" data-id="{html.escape(sample.id)}" '
        f'data-score="{sample.score:.6g}">{picture}<div class="body">'
        f'<div class="k">#{sample.index} · {html.escape(sample.id)} '
        f'<span class="badge">{status} · {html.escape(score_name)} {sample.score:.2f}</span></div>'
        f'<div class="q"><span class="k">Q:</span> {html.escape(sample.question)}</div>'
        f'<div class="ref"><span class="k">Reference:</span> {refs}</div>'
        f'<div class="pred"><span class="k">Prediction:</span> '
        f'{html.escape(sample.prediction) if sample.prediction else "<i class=k>(empty)</i>"}</div>'
        "</div></div>"
    )


def _comparison_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The "old and new tasks" table: each task's scores before training (the starting model) and after."""

    def number(value, signed=False):
        if value is None or not isinstance(value, (int, float)):
            return ""
        return f"{value:+.4f}" if signed else _fmt(float(value))

    body = "".join(
        f'<tr class="{"task" if row.get("task") == "new" else ""}"><td>{html.escape(str(row.get("task", "")))}</td>'
        f'<td>{html.escape(str(row.get("dataset", "")))}</td><th>{html.escape(str(row.get("metric", "")))}</th>'
        f'<td class="v">{number(row.get("before"))}</td><td class="v">{number(row.get("after"))}</td>'
        f'<td class="v">{number(row.get("change"), signed=True)}</td></tr>'
        for row in rows)
    return ('<h2>Old and new tasks</h2><p class="muted">Scores before training (the starting model) and after: an old '
            'task whose score fell is what this training made the model forget.</p>'
            '<table class="metrics comparison"><tr><th>task</th><th>dataset</th><th>metric</th><th>before</th>'
            f"<th>after</th><th>change</th></tr>{body}</table>")


def render_report(*, samples: Sequence[Sample], metrics: Mapping[str, Any], log_history: Sequence[Mapping[str, Any]],
                  score_name: str, total_samples: int | None = None, task_metrics: Sequence[str] = (),
                  title: str = "Evaluation report", details: Mapping[str, Any] | None = None,
                  predictions_file: str = "eval_predictions.jsonl",
                  comparison: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The report page as a string (see the module docstring). ``samples`` are the gallery (already capped);
    ``total_samples`` the size of the evaluation set; ``task_metrics`` the metric names to highlight;
    ``comparison`` the old- and new-task scores before and after training of a continued run (rows with ``task``
    "old"/"new", ``dataset``, ``metric``, ``before``, ``after``, ``change``; see ``mmft.train.continual``)."""
    total = len(samples) if total_samples is None else total_samples
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    info = dict(details or {})
    info.setdefault("written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    parts.append('<div class="muted">' + " · ".join(
        f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in info.items()) + "</div>")

    # ---- metric summary
    parts.append("<h2>Metrics</h2>")
    rows = []
    for key, value in metrics.items():
        text = _fmt(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        is_task = any(key.endswith("_" + name) for name in task_metrics)
        rows.append(f'<tr class="{"task" if is_task else ""}"><th>{html.escape(str(key))}</th>'
                    f'<td class="v">{html.escape(text)}</td></tr>')
    parts.append('<table class="metrics">' + "".join(rows) + "</table>" if rows else '<p class="muted">none</p>')

    if comparison:
        parts.append(_comparison_html(comparison))

    # ---- curves
    parts.append("<h2>Curves</h2>")
    curves = curves_from_log_history(log_history)
    if curves:
        ordered = sorted(curves, key=lambda k: (k != "loss", not k.endswith("_loss"), k))
        parts.append('<div class="charts">' + "".join(svg_line_chart(k, curves[k]) for k in ordered) + "</div>")
    else:
        parts.append('<p class="muted">No logged training loss or evaluation metrics yet.</p>')

    # ---- gallery
    failures = sum(1 for s in samples if s.score < 1)
    parts.append("<h2>Samples</h2>")
    cap_note = (f"Showing the first {len(samples)} of {total} evaluation samples: the gallery is capped to keep this "
                f"file small; every prediction is in {html.escape(predictions_file)}."
                if len(samples) < total else f"All {total} evaluation samples.")
    parts.append(
        f'<p class="muted">{cap_note} Per-sample score: {html.escape(score_name)} (green right, amber partly right, '
        f"red wrong); {failures} of {len(samples)} shown are not fully right.</p>"
    )
    parts.append(
        '<div class="controls"><label><input type="checkbox" id="failures-only"> show failures only (score &lt; 1)'
        '</label><label>sort by <select id="sort-by"><option value="index">dataset order</option>'
        '<option value="score-asc">score, worst first</option><option value="score-desc">score, best first</option>'
        '<option value="id">id</option></select></label><span id="shown-count" class="muted"></span></div>'
    )
    parts.append('<div id="gallery">' + "".join(_sample_html(s, score_name) for s in samples) + "</div>")
    parts.append('<div id="render-check">render check: scripts did not run</div>')
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_report(path: str | os.PathLike, *, records: Sequence[Mapping], predictions: Sequence[str],
                 references: Sequence[Sequence[str]], metrics: Mapping[str, Any],
                 log_history: Sequence[Mapping[str, Any]] = (), metric_names: Sequence[str] = (),
                 questions: Sequence[str] | None = None, image_options: Mapping[str, Any] | None = None,
                 max_samples: int = MAX_SAMPLES, thumbnail_size: int = THUMBNAIL_SIZE,
                 title: str = "Evaluation report", details: Mapping[str, Any] | None = None,
                 predictions_file: str = "eval_predictions.jsonl",
                 comparison: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Build the report for one evaluation and write it atomically to ``path``; returns the path.

    Args:
        records: the evaluation records (canonical), in the order of ``predictions``.
        predictions / references: the generated answers and the acceptable answers, as scored.
        metrics: this evaluation's metrics (``eval_loss``, ``eval_<metric>``, ...).
        log_history: ``trainer.state.log_history`` (training loss and earlier evaluations, for the curves).
        metric_names: the task metrics (``--metrics``); the first per-sample one scores the gallery.
        questions: the question shown per record (default: the last user turn's text).
        image_options: keyword arguments for :func:`mmft.data.images.load_image` (the collator's safety settings).
        max_samples: gallery cap (the first samples in dataset order).
        comparison: old- and new-task scores before and after training (``render_report``).
    """
    from ..data.records import first_user_text

    if not len(records) == len(predictions) == len(references):
        raise ValueError(f"write_report: {len(records)} records, {len(predictions)} predictions and "
                         f"{len(references)} reference lists; they must match one to one.")
    shown = min(len(records), max_samples)
    score_name, scores = sample_scores(metric_names, predictions[:shown], references[:shown])
    samples = []
    for i in range(shown):
        record = records[i]
        image, note = thumbnail_data_uri(record, size=thumbnail_size, **dict(image_options or {}))
        question = questions[i] if questions is not None else first_user_text(record)
        samples.append(Sample(index=i, id=str(record.get("id", i)), question=question,
                              references=[str(r) for r in references[i]], prediction=str(predictions[i]),
                              score=scores[i], image=image, image_note=note))
    page = render_report(samples=samples, metrics=metrics, log_history=log_history, score_name=score_name,
                         total_samples=len(records), task_metrics=metric_names, title=title, details=details,
                         predictions_file=predictions_file, comparison=comparison)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
