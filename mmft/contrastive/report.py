"""``eval_report.html`` for a dual encoder: the retrieval metrics, training curves, and two galleries.

Text->image: a caption query, then its top 5 images (the correct one framed green). Image->text: an image query,
then its top 5 captions (its own marked). The first ``queries`` held-out images (and one caption of each) are the
queries. Thumbnails and curves come from ``mmft.evaluation.report`` (inline, offline: one self-contained file); all
text is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..evaluation.report import curves_from_log_history, svg_line_chart, thumbnail_data_uri

TOP = 5
_STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}
td,th{padding:2px 10px;text-align:left}.row{display:flex;gap:10px;align-items:center;margin:8px 0}
.q{width:260px;font-weight:600}.hit{outline:3px solid #2a2}.miss{outline:1px solid #ccc}
figure{margin:0;text-align:center;font-size:12px}img{display:block}.t{padding:4px 8px;border-radius:4px}
.t.hit{background:#dfd}.charts{display:flex;flex-wrap:wrap;gap:12px}"""


def _thumb(item, image_options, hit: bool) -> str:
    record = {"id": item["id"], "images": [item["image"]], "image_root": item.get("image_root")}
    uri, reason = thumbnail_data_uri(record, **image_options)
    css = "hit" if hit else "miss"
    body = f'<img src="{uri}" class="{css}" width="96">' if uri else f"<span>{html.escape(reason or '')}</span>"
    return f'<figure>{body}<figcaption>{html.escape(str(item["id"]))}</figcaption></figure>'


def render_retrieval_report(*, images, texts, text_image, image_features, text_features, metrics: Mapping,
                            log_history: Sequence[Mapping], queries: int = 8, image_options=None) -> str:
    image_options = image_options or {}
    similarity = image_features @ text_features.T
    first_text = {}
    for t, owner in enumerate(text_image):
        first_text.setdefault(owner, t)
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Retrieval report</title>",
             f"<style>{_STYLE}</style></head><body><h1>Retrieval report</h1>",
             f"<p>{len(images)} held-out images, {len(texts)} captions.</p><table>"]
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))
        parts.append(f"<tr><th>{html.escape(key)}</th><td>{shown}</td></tr>")
    parts.append("</table><div class='charts'>")
    for name, points in curves_from_log_history(log_history).items():
        parts.append(svg_line_chart(name, points))
    parts.append("</div><h2>Text &rarr; image (top 5)</h2>")
    shown = [i for i in range(len(images)) if i in first_text][:queries]
    for i in shown:
        t = first_text[i]
        top = similarity[:, t].topk(min(TOP, len(images))).indices.tolist()
        thumbs = "".join(_thumb(images[j], image_options, j == i) for j in top)
        parts.append(f"<div class='row'><div class='q'>{html.escape(texts[t])}</div>{thumbs}</div>")
    parts.append("<h2>Image &rarr; text (top 5)</h2>")
    for i in shown:
        top = similarity[i].topk(min(TOP, len(texts))).indices.tolist()
        captions = "".join(f"<span class='t {'hit' if text_image[t] == i else ''}'>{html.escape(texts[t])}</span>"
                           for t in top)
        parts.append(f"<div class='row'>{_thumb(images[i], image_options, True)}<div>{captions}</div></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_retrieval_report(path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_retrieval_report(**kwargs), encoding="utf-8")
    return path
