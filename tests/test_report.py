"""Tests for the evaluation report (mmft.evaluation.report): the HTML holds every sample, escaped, with thumbnails and
curves; it renders in a real headless browser (Chromium from the OS packages, see .ci/run), whose own script counts the
decoded thumbnails and the rendered samples; and an evaluation through VLMTrainer writes it next to the predictions.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from mmft.evaluation.report import curves_from_log_history, write_report

COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]


def _records(root: Path, n: int) -> list[dict]:
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        Image.new("RGB", (160 + 8 * i, 120), COLORS[i % len(COLORS)]).save(root / "images" / f"{i}.png")
        question = f"What colour is shape {i}? <b>bold</b> & \"quoted\""
        records.append({
            "id": f"rec-{i}<&>",
            "images": [f"images/{i}.png"],
            "image_root": str(root),
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                {"role": "assistant", "content": [{"type": "text", "text": COLORS[i % len(COLORS)]}]},
            ],
        })
    return records


LOG_HISTORY = [
    {"loss": 2.5, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": 0.1, "step": 1},
    {"loss": 2.1, "grad_norm": 0.9, "learning_rate": 1e-3, "epoch": 0.2, "step": 2},
    {"loss": 1.7, "grad_norm": 0.8, "learning_rate": 1e-3, "epoch": 0.3, "step": 3},
    {"eval_loss": 1.9, "eval_exact_match": 0.25, "eval_runtime": 1.0, "eval_samples_per_second": 4.0,
     "eval_steps_per_second": 1.0, "epoch": 0.3, "step": 3},
    {"loss": 1.2, "grad_norm": 0.7, "learning_rate": 1e-3, "epoch": 0.4, "step": 4},
    {"eval_loss": 1.4, "eval_exact_match": 0.5, "eval_runtime": 1.0, "eval_samples_per_second": 4.0,
     "eval_steps_per_second": 1.0, "epoch": 0.4, "step": 4},
    {"train_runtime": 9.0, "train_loss": 1.9, "total_flos": 1.0, "epoch": 0.4, "step": 4},
]

# Sample 1 is wrong and carries markup that must be shown as text, never executed.
PREDICTIONS = ["red", "<script>document.title='pwned'</script>", "Blue.", "yellow", "green", "orange"]
N_WRONG = 2  # samples 1 and 4


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    records = _records(root / "data", 6)
    references = [[COLORS[i]] for i in range(6)]
    path = write_report(root / "out" / "eval_report.html", records=records, predictions=PREDICTIONS,
                        references=references, metrics={"eval_loss": 1.4, "eval_exact_match": 4 / 6},
                        log_history=LOG_HISTORY, metric_names=["exact_match"], details={"step": 4})
    return path, records


def _svg(page: str, series: str) -> str:
    match = re.search(rf'<svg class="chart" data-series="{series}" .*?</svg>', page)
    assert match, f"no chart for {series}"
    return match[0]


# ------------------------------------------------------------------------------------------------------------------
# The HTML itself
# ------------------------------------------------------------------------------------------------------------------


def test_every_sample_is_present_escaped_and_marked(report):
    path, records = report
    page = path.read_text(encoding="utf-8")
    cards = re.findall(r'<div class="sample (\w+)" data-index="(\d+)" data-id="([^"]*)" data-score="([^"]*)">', page)
    assert [int(i) for _, i, _, _ in cards] == list(range(6))
    assert [html.unescape(rid) for _, _, rid, _ in cards] == [r["id"] for r in records]
    assert [status for status, _, _, _ in cards] == ["right", "wrong", "right", "right", "wrong", "right"]
    assert len(re.findall(r'<img class="thumb" src="data:image/jpeg;base64,', page)) == 6
    # Escaped: the prediction's markup is text, and the page holds exactly one script (its own).
    assert page.count("<script>") == 1
    assert html.escape(PREDICTIONS[1]) in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;" in page
    assert "<b>bold</b>" not in page
    assert "All 6 evaluation samples." in page and "2 of 6 shown are not fully right" in page
    assert "eval_exact_match" in page and "0.6667" in page  # metric summary


def test_thumbnails_are_downscaled(report):
    import base64
    import io

    page = report[0].read_text(encoding="utf-8")
    for data in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page):
        with Image.open(io.BytesIO(base64.b64decode(data))) as thumb:
            assert max(thumb.size) == 96  # 160..200 px wide originals, aspect ratio kept
    assert os.path.getsize(report[0]) < 60_000


def test_curves_have_one_point_per_logged_value(report):
    page = report[0].read_text(encoding="utf-8")
    assert curves_from_log_history(LOG_HISTORY) == {
        "loss": [(1.0, 2.5), (2.0, 2.1), (3.0, 1.7), (4.0, 1.2)],
        "eval_loss": [(3.0, 1.9), (4.0, 1.4)],
        "eval_exact_match": [(3.0, 0.25), (4.0, 0.5)],
    }  # not grad_norm, learning_rate, runtimes, throughput nor the train_* summary
    for series, points in (("loss", 4), ("eval_loss", 2), ("eval_exact_match", 2)):
        svg = _svg(page, series)
        assert f'data-points="{points}"' in svg
        assert svg.count("<circle") == points
        assert len(re.search(r'<polyline points="([^"]*)"', svg)[1].split()) == points
    assert 'data-series="grad_norm"' not in page and 'data-series="eval_runtime"' not in page


def test_gallery_cap_and_image_safety(tmp_path):
    records = _records(tmp_path / "data", 5)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (50, 50), "black").save(outside)
    records[0]["images"] = [str(outside)]  # absolute path outside the image root: refused by default
    records[1]["images"] = []  # a text-only record
    page = write_report(tmp_path / "r.html", records=records, predictions=["x"] * 5,
                        references=[["x"]] * 5, metrics={}, max_samples=3).read_text()
    assert page.count('<div class="sample ') == 3
    assert "Showing the first 3 of 5 evaluation samples" in page and "eval_predictions.jsonl" in page
    assert page.count('<img class="thumb"') == 1
    assert "image unavailable" in page and "outside" in page and ">no image<" in page
    allowed = write_report(tmp_path / "r2.html", records=records, predictions=["x"] * 5, references=[["x"]] * 5,
                           metrics={}, max_samples=1, image_options={"allow_outside_root": True}).read_text()
    assert allowed.count('<img class="thumb"') == 1


def test_per_sample_score_uses_the_task_metric(tmp_path):
    records = _records(tmp_path / "data", 2)
    page = write_report(tmp_path / "r.html", records=records, predictions=["1,000", ""], references=[["1000"], ["2"]],
                        metrics={}, metric_names=["bleu", "vqa_accuracy"]).read_text()
    assert re.findall(r'data-score="([^"]*)"', page) == ["1", "0"]  # VQA normalisation: "1,000" == "1000"
    assert "Per-sample score: vqa_accuracy" in page
    assert "(empty)</i>" in page  # an empty answer is shown as such


def test_mismatched_lengths_are_refused(tmp_path):
    with pytest.raises(ValueError, match="must match one to one"):
        write_report(tmp_path / "r.html", records=[], predictions=["x"], references=[["x"]], metrics={})


# ------------------------------------------------------------------------------------------------------------------
# A real browser
# ------------------------------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _browser(tmp_path, *args) -> subprocess.CompletedProcess:
    exe = _chromium()
    if exe is None:
        # .ci/run installs Chromium, so in CI its absence is a broken install step, not a reason to skip.
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("no Chromium on PATH under CI: .ci/run should have installed it (apt-get install chromium)")
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    command = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
               "--virtual-time-budget=5000", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def _render_check(dom: str) -> dict[str, int]:
    match = re.search(r'<div id="render-check"([^>]*)>', dom)
    assert match, "render-check element missing from the DOM"
    attrs = dict(re.findall(r'data-([\w-]+)="(\d+)"', match[1]))
    assert attrs, f"the page's script did not run: {match[0]}"
    return {k: int(v) for k, v in attrs.items()}


def test_report_renders_every_sample_and_image_in_chromium(report, tmp_path):
    path = report[0]
    dom = _browser(tmp_path, "--dump-dom", path.as_uri()).stdout
    assert _render_check(dom) == {"images-total": 6, "images-loaded": 6, "samples-rendered": 6}
    assert "<title>pwned" not in dom and "<title>Evaluation report</title>" in dom  # the injected script never ran
    # The failures filter, driven through the URL fragment: only the wrong samples stay rendered.
    dom = _browser(tmp_path, "--dump-dom", path.as_uri() + "#failures=1&sort=score-asc").stdout
    assert _render_check(dom)["samples-rendered"] == N_WRONG
    assert f"{N_WRONG} shown" in dom
    order = re.findall(r'<div class="sample \w+" data-index="(\d+)"', dom)
    assert order[:N_WRONG] == ["1", "4"]  # worst first, then dataset order


def test_report_screenshot(report, tmp_path):
    shot = tmp_path / "report.png"
    _browser(tmp_path, f"--screenshot={shot}", "--window-size=1280,1400", report[0].as_uri())
    with Image.open(shot) as image:
        assert image.size == (1280, 1400)
        assert len(image.convert("RGB").resize((64, 64)).getcolors(64 * 64)) > 20  # not a blank page
    keep = os.environ.get("MMFT_REPORT_SCREENSHOT")  # set it to look at the page yourself
    if keep:
        shutil.copy(shot, keep)


# ------------------------------------------------------------------------------------------------------------------
# The trainer writes it
# ------------------------------------------------------------------------------------------------------------------


def test_evaluation_writes_the_report_next_to_the_predictions(tiny_llava_dir, shapes_dir, tmp_path):
    from mmft.config.data_args import DataArguments
    from mmft.config.model_args import ModelArguments
    from mmft.config.training_args import VLMTrainingArguments
    from mmft.data.sources import load_records
    from mmft.workflow import build_trainer

    evaluation = load_records(shapes_dir["test"], max_samples=5)
    args = VLMTrainingArguments(output_dir=str(tmp_path / "out"), per_device_eval_batch_size=8, report_to="none",
                                generation_max_new_tokens=2, disable_tqdm=True, save_strategy="no")
    trainer = build_trainer(ModelArguments(model_name_or_path=str(tiny_llava_dir), use_peft=False),
                            DataArguments(max_length=256), args, eval_dataset=evaluation)
    metrics = trainer.evaluate()
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    page = (out / "eval_report.html").read_text(encoding="utf-8")
    ids = [html.unescape(i) for i in re.findall(r'<div class="sample \w+" data-index="\d+" data-id="([^"]*)"', page)]
    assert ids == [row["id"] for row in rows] == [evaluation[i]["id"] for i in range(5)]
    assert page.count('<img class="thumb" src="data:image/') == 5
    for row in rows:
        assert html.escape(row["prediction"]) in page
    # The summary shows this evaluation, the curve includes it (logged before the report was written).
    assert "eval_loss" in page and 'data-series="eval_loss" data-points="1"' in page
    shown = re.search(r'<th>eval_loss</th><td class="v">([^<]+)</td>', page)[1]
    assert float(shown) == pytest.approx(metrics["eval_loss"], rel=1e-3)
