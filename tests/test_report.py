"""report.html: self-contained (no external requests, every image a data: URI), every section in
place, and — in headless Chromium — rendered, not blank, with every image loaded."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import pytest

from tests.helpers import quiet
from trainlab.config import load_config
from trainlab.plots import embed_png, save_figure
from trainlab.report import write_report
from trainlab.run import train_run

IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")


def assert_self_contained(page: str) -> list[str]:
    """No http(s) reference anywhere, and every <img> is an inline data URI; returns the sources."""
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", page), "protocol-relative URL"
    sources = IMG_SRC.findall(page)
    assert len(sources) == page.count("<img"), "an <img> without a src the check could read"
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:60]
    return sources


def tiny_png(path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    ax.set_title(title)
    return save_figure(fig, path)


def fake_run(run: Path) -> None:
    """A run directory written by hand: metrics, a summary with diagnosis and confusion, and
    plots from a monitor and from something the report does not know."""
    run.mkdir()
    records = [{"kind": "step", "step": s, "epoch": 0, "loss": 2.3 / s, "acc": 0.1, "lr": 0.1} for s in range(1, 21)]
    records += [{"kind": "epoch", "epoch": 1, "step": 20, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.6,
                 "val_acc": 0.75, "lr": 0.1}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"dataset": "digits", "model": "mlp", "test_acc": 0.7, "confusion": [[3, 1], [0, 4]], "classes": ["a", "b"],
               "diagnosis": [{"code": "overfitting", "message": "gap <large>", "evidence": {"gap": 0.2}}]}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text("seed: 0\n")
    tiny_png(run / "plots" / "activation_histograms.png", "monitor")
    tiny_png(run / "plots" / "something_new.png", "other")


def test_report_is_self_contained_with_every_section(tmp_path):
    run = tmp_path / "run"
    fake_run(run)
    page = write_report(run).read_text()
    sources = assert_self_contained(page)
    # loss, lr, accuracy, confusion, the monitor plot and the unknown plot: each shown exactly once
    assert len(sources) == len(list((run / "plots").glob("*.png"))) == 6
    for heading in ("Summary", "Diagnosis", "Training curves", "Monitors", "Confusion matrix", "Other plots",
                    "Configuration"):
        assert f"<h2>{heading}</h2>" in page, heading
    assert "gap &lt;large&gt;" in page  # text from files is escaped


def test_lab_results_are_reported(tmp_path):
    out = tmp_path / "lab"
    tiny_png(out / "plots" / "lab_plot.png", "lab")
    results = {"experiment": "demo", "title": "a demo", "setup": "how it ran", "columns": ["a", "b"],
               "rows": [{"a": 1, "b": 0.5}], "plots": ["plots/lab_plot.png"],
               "claims": [{"claim": "it works", "source": "slides", "measured": "it did", "verdict": "agrees"},
                          {"claim": "it is fast", "source": "slides", "measured": "it was not", "verdict": "does not agree"}]}
    (out / "results.json").write_text(json.dumps(results))
    page = write_report(out).read_text()
    assert len(assert_self_contained(page)) == 1
    assert "trainlab lab demo" in page and '<tr class="does-not-agree">' in page and "it did" in page


def test_embed_png_inlines_the_file(tmp_path):
    import base64

    png = tiny_png(tmp_path / "x.png", "x")
    figure = embed_png(png)
    assert f"data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}" in figure and "x.png" in figure


# --- the browser test ------------------------------------------------------------------------------

def chromium() -> str | None:
    for candidate in (os.environ.get("TRAINLAB_TEST_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with everything that could reach the network switched off."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=180)


# Injected into a copy of the page: once everything has loaded, record on <body> how many images
# there are and how many failed to decode. --dump-dom then prints the DOM with the marks.
IMAGE_PROBE = """<script>window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const broken = images.filter(img => !(img.complete && img.naturalWidth > 0));
  document.body.setAttribute('data-images', images.length);
  document.body.setAttribute('data-broken', broken.map(img => img.alt).join(',') || 'none');
});</script>"""


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="no chromium binary (set TRAINLAB_TEST_CHROMIUM, or apt-get install chromium)")
def test_real_report_renders_in_headless_chromium(tmp_path):
    cfg = load_config(None, ["train.epochs=2", "train.progress=false", "model.width=32", "monitor.every=5",
                             "data.subset=300"])
    run = tmp_path / "run"
    train_run(cfg, run, say=quiet)
    report = run / "report.html"
    page = report.read_text()
    sources = assert_self_contained(page)
    assert len(sources) >= 4  # loss, lr, accuracy, confusion (and the monitors' plots)
    binary = chromium()

    shot = tmp_path / "shot.png"
    result = run_chromium(binary, tmp_path / "profile1", f"--screenshot={shot}", "--window-size=1200,2000",
                          "--hide-scrollbars", report.as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.std() > 0.05, "the screenshot is blank"
    assert (pixels.mean(axis=2) < 0.9).mean() > 0.01, "almost nothing is drawn"

    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", IMAGE_PROBE + "</body>"))
    result = run_chromium(binary, tmp_path / "profile2", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    body = re.search(r"<body[^>]*>", result.stdout)
    assert body, f"no DOM dumped: {result.stderr[-2000:]}"
    marks = dict(re.findall(r'data-(images|broken)="([^"]*)"', body.group(0)))
    assert marks.get("images") == str(len(sources)), marks
    assert marks.get("broken") == "none", f"images that did not load: {marks.get('broken')}"


def test_accuracy_plot_shows_train_subset_validation_and_running_average():
    """accuracy.png draws the eval-mode train accuracy (the gap's other end) beside validation, and
    the running average as its own, differently labelled curve."""
    from trainlab.report import ACCURACY_CURVES, accuracy_curves

    epochs = [{"kind": "epoch", "epoch": e, "train_acc": 0.9 + e / 100, "train_acc_running": 0.8 + e / 100,
               "val_acc": 0.85 + e / 100} for e in (1, 2)]
    curves = accuracy_curves(epochs)
    train, running, val = (ACCURACY_CURVES[k][0] for k in ("train_acc", "train_acc_running", "val_acc"))
    assert set(curves) == {train, running, val} and len({train, running, val}) == 3
    assert curves[train][0] == [(1, 0.9 + 1 / 100), (2, 0.9 + 2 / 100)] and [e for e, _ in curves[running][0]] == [1, 2]
    assert "eval mode" in train and "running" in running
@pytest.mark.slow
def test_lr_plot_draws_the_schedule_at_every_step(tmp_path):
    """SGDR with 1-epoch cycles of ~8 steps, logged every 20 steps: the plot must follow the
    closed-form schedule at every update, not join the logged points into a zig-zag."""
    from trainlab.config import load_config
    from trainlab.io import read_jsonl
    from trainlab.report import schedule_at_every_step
    from trainlab.run import train_run
    from trainlab.schedules import schedule_curve

    cfg = load_config(None, ["data.subset=600", "train.epochs=3", "schedule.name=sgdr", "schedule.cycle_epochs=1",
                             "train.progress=false", "monitor.every=0", "train.log_every=20"])
    train_run(cfg, tmp_path / "r", say=quiet)
    records = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    per_epoch = next(r["step"] for r in records if r.get("kind") == "epoch")
    curve = schedule_at_every_step(records, load_config(tmp_path / "r" / "config.yaml"))
    assert curve == schedule_curve(cfg, per_epoch) and len(curve) == 3 * per_epoch
    assert sum(1 for a, b in zip(curve, curve[1:]) if b > a) == 2  # two restarts, seen only at every step
    logged = [r for r in records if r.get("kind") == "step"]
    assert len(logged) < len(curve) / 5
    wrong = [dict(r, lr=r["lr"] * 2) if r.get("kind") == "step" else r for r in records]
    assert schedule_at_every_step(wrong, cfg) is None  # rates the formula does not give: draw what was logged
