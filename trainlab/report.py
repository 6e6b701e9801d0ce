"""Plots (matplotlib, PNG) and the self-contained ``report.html`` of a run directory.

``report.html`` is where a user reads a run: summary, diagnosis verdicts, training curves,
monitors, confusion matrix, and — where the directory has them — sanity checks, the learning-rate
range test, search results, ensemble and lab results. Everything is read back from the
directory's files (summary.json, metrics.jsonl, plots/, results.json, ...), so
``trainlab report DIR`` rebuilds it at any time, for any kind of trainlab directory.

The page makes no external requests: no scripts, fonts or style sheets from elsewhere, and every
image is a ``data:`` URI, so it opens offline and can be mailed as one file.
"""
from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Callable
from pathlib import Path

from trainlab.config import load_config
from trainlab.errors import UserError
from trainlab.io import read_jsonl
from trainlab.plots import CSS, embed_png, html_grid, html_table, moving_average, plot_confusion, plt, save_figure
from trainlab.schedules import schedule_curve

# metrics.jsonl epoch key → (legend label, line style) of accuracy.png. The gap to read is between
# the first two: the same weights, in eval mode, on training and on validation images.
ACCURACY_CURVES = {
    "train_acc": ("train (fixed subset, eval mode)", "o-"),
    "val_acc": ("validation", "o-"),
    "val_acc_ema": ("validation (EMA weights)", "o-"),
    "train_acc_running": ("train, running average over the epoch (dropout, augmentation)", "x:"),
}


def accuracy_curves(epochs: list[dict]) -> dict[str, tuple[list[tuple[int, float]], str]]:
    """label → ((epoch, accuracy) points, line style) for each of ACCURACY_CURVES the records have."""
    curves = {}
    for key, (label, style) in ACCURACY_CURVES.items():
        pts = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
        if pts:
            curves[label] = (pts, style)
    return curves


def schedule_at_every_step(records: list[dict], cfg: dict | None) -> list[float] | None:
    """The rate of update 1, 2, ..., n of the run, from the schedule's closed form
    (:func:`trainlab.schedules.schedule_curve`), or None when the run's records do not fit it
    (no config, a first epoch cut short, or rates logged that the formula does not give). Logged
    steps alone (every train.log_every) would draw a 30-step SGDR cycle as a zig-zag."""
    steps = [r for r in records if r.get("kind") == "step" and r.get("lr") is not None]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if cfg is None or not steps or not epochs:
        return None
    per_epoch, last = epochs[0]["step"], max(r["step"] for r in steps + epochs)
    if per_epoch < 1 or (cfg["train"]["max_steps"] and per_epoch >= cfg["train"]["max_steps"]):
        return None
    curve = schedule_curve(cfg, per_epoch)[:last]
    fits = all(r["step"] <= len(curve) and math.isclose(curve[r["step"] - 1], r["lr"], rel_tol=1e-5, abs_tol=1e-12)
               for r in steps)
    return curve if fits else None


def plot_training_curves(records: list[dict], plots: Path, cfg: dict | None = None) -> list[Path]:
    """loss.png (scatter + moving average), accuracy.png (train/val per epoch), lr.png (the
    schedule at every step when ``cfg`` is given and fits the logged rates, else the logged steps)."""
    steps = [r for r in records if r.get("kind") == "step" and r.get("loss") is not None]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    out = []
    if steps:
        x, y = [r["step"] for r in steps], [r["loss"] for r in steps]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.scatter(x, y, s=6, alpha=0.35, label="training loss (logged steps)")
        ax.plot(x, moving_average(y, max(3, len(y) // 20)), color="C3", lw=2, label="moving average")
        val = [(r["step"], r["val_loss"]) for r in epochs if r.get("val_loss") is not None]
        if val:
            ax.plot(*zip(*val), "o-", color="C2", label="validation loss")
        ax.set(xlabel="step", ylabel="loss", title="Loss")
        if min(y) > 0 and max(y) / max(min(y), 1e-12) > 30:
            ax.set_yscale("log")
        ax.legend()
        out.append(save_figure(fig, plots / "loss.png"))
        fig, ax = plt.subplots(figsize=(7, 3))
        curve = schedule_at_every_step(records, cfg)
        if curve is not None:
            ax.plot(range(1, len(curve) + 1), curve, color="C4", label="schedule (every step)")
        else:
            ax.plot(x, [r["lr"] for r in steps], color="C4", label="logged steps")
        ax.legend()
        ax.set(xlabel="step", ylabel="learning rate", title="Learning rate")
        out.append(save_figure(fig, plots / "lr.png"))
    if epochs:
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, (pts, style) in accuracy_curves(epochs).items():
            ax.plot(*zip(*pts), style, label=label)
        ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy (the train/validation gap is overfitting)")
        ax.legend()
        out.append(save_figure(fig, plots / "accuracy.png"))
    return out


def _number(text) -> float:
    """A CSV cell as a number for sorting; empty, NaN or text sorts last (−inf)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return -math.inf
    return value if math.isfinite(value) else -math.inf


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


# --- sections: each returns HTML ('' when the directory has nothing for it) ----------------------

SUMMARY_KEYS = ("dataset", "model", "params", "epochs", "steps", "best_val_acc", "test_acc", "test_loss", "test_top5",
                "test_acc_ema", "train_acc", "wall_seconds", "train_images_per_second", "device", "seed",
                "torch_version", "stop_reason")

# Which plots/*.png belong to which section (by file stem); the rest are shown under "Monitors"
# when the monitors wrote them, else under "Other plots".
CURVE_PLOTS = ("loss", "accuracy", "lr")
MONITOR_PLOTS = ("activation_histograms", "activation_std", "dead_saturated_units", "update_ratios", "grad_norms",
                 "first_layer_filters")


def summary_section(summary: dict) -> str:
    if not summary:
        return ""
    parts = ["<h2>Summary</h2>", html_table({k: summary.get(k) for k in SUMMARY_KEYS if k in summary})]
    for key in ("transfer", "tune"):
        if isinstance(summary.get(key), dict):
            parts += [f"<h3>{key.title()}</h3>", html_table(summary[key])]
    return "".join(parts)


def diagnosis_section(summary: dict) -> str:
    if not summary.get("diagnosis"):
        return ""
    parts = ["<h2>Diagnosis</h2>"]
    for d in summary["diagnosis"]:
        parts.append(f'<div class="verdict {html.escape(d["code"])}"><b>{html.escape(d["code"])}</b>: '
                     f'{html.escape(d["message"])}<br><small>evidence: {html.escape(json.dumps(d.get("evidence")))}'
                     f'</small></div>')
    return "".join(parts)


def checks_section(run_dir: Path) -> str:
    checks = _read_json(run_dir / "checks.json")
    if not checks:
        return ""
    rows = [{**c, "result": "passed" if c.get("passed") else "failed"} for c in checks]
    return "<h2>Sanity checks</h2>" + html_grid(["name", "result", "value", "expected", "advice"], rows, "result")


def lr_find_section(run_dir: Path, plots: list[Path]) -> str:
    result = _read_json(run_dir / "lr_find.json") or {}
    if not result and not plots:
        return ""
    shown = {k: result.get(k) for k in ("suggested_lr", "verdict") if k in result}
    return "<h2>Learning-rate range test</h2>" + (html_table(shown) if shown else "") + "".join(embed_png(p) for p in plots)


# Sections that layers above this one contribute (the search adds its own when it is imported):
# the report reads every kind of trainlab directory without importing the code that made it.
EXTRA_SECTIONS: list[Callable[[Path], str]] = []


def add_section(section: Callable[[Path], str]) -> Callable[[Path], str]:
    """Register ``section(run_dir) -> html`` ('' when the directory has nothing for it)."""
    EXTRA_SECTIONS.append(section)
    return section


def ensemble_section(run_dir: Path) -> str:
    result = _read_json(run_dir / "ensemble.json")
    if not result:
        return ""
    head = {k: result.get(k) for k in ("method", "best_single_test_acc", "ensemble_test_acc") if k in result}
    return ("<h2>Ensemble</h2>" + html_table(head)
            + html_grid(["run", "test_acc"], result.get("members", [])))


def lab_section(run_dir: Path, results: dict) -> str:
    """A lab experiment: the lecture's claims with verdicts, the measured table, the plots, and
    links to each training run's own report."""
    quick = ("<p class='verdict'>Quick run (--quick): smoke-test sizes, so these verdicts show that the experiment "
             "runs, not what it measures. Run it without --quick for the real measurement.</p>") if results.get("quick") else ""
    parts = [f"<h2>{html.escape(results['title'])}</h2>", quick, f"<p class='note'>{html.escape(results['setup'])}</p>",
             "<h3>The lecture's claims</h3>",
             html_grid(["claim", "source", "measured", "verdict"], results["claims"], row_class="verdict"),
             "<h3>Measured</h3>", html_grid(results["columns"], results["rows"])]
    parts += [embed_png(run_dir / p) for p in results.get("plots", []) if (run_dir / p).is_file()]
    reports = sorted((run_dir / "runs").glob("**/report.html")) if (run_dir / "runs").is_dir() else []
    if reports:
        links = "".join(f'<li><a href="{html.escape(p.relative_to(run_dir).as_posix())}">'
                        f'{html.escape(p.parent.relative_to(run_dir / "runs").as_posix())}</a></li>' for p in reports)
        parts.append(f"<details><summary>Training runs ({len(reports)}), each with its own report</summary>"
                     f"<ul>{links}</ul></details>")
    return "".join(parts)


def plots_section(title: str, plots: list[Path]) -> str:
    return f"<h2>{html.escape(title)}</h2>" + "".join(embed_png(p) for p in plots) if plots else ""


def trials_section(run_dir: Path) -> str:
    """The ten best rows of trials.csv, when there is one but no search.json to describe it."""
    path = run_dir / "trials.csv"
    if not path.is_file() or (run_dir / "search.json").is_file():
        return ""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return ""

    best = sorted(rows, key=lambda r: _number(r.get("value")), reverse=True)[:10]
    return "<h2>Trials (best ten)</h2>" + html_grid(list(rows[0]), best)


def _run_config(run_dir: Path) -> dict | None:
    try:
        return load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    except UserError:  # a config from another trainlab version: draw the logged rates instead
        return None


def write_report(run_dir: str | Path) -> Path:
    """Regenerate the run's plots and write ``report.html`` with every PNG embedded (opens offline)."""
    run_dir = Path(run_dir)
    plots_dir = run_dir / "plots"
    records = read_jsonl(run_dir / "metrics.jsonl")
    if records:
        plot_training_curves(records, plots_dir, _run_config(run_dir))
    summary = _read_json(run_dir / "summary.json") or {}
    if summary.get("confusion"):
        plot_confusion(summary["confusion"], summary.get("classes") or [str(i) for i in range(len(summary["confusion"]))],
                       plots_dir / "confusion.png")
    lab = _read_json(run_dir / "results.json")
    search = _read_json(run_dir / "search.json") or {}
    # Each PNG is shown once, in the first section that claims it.
    pngs = sorted(plots_dir.glob("*.png")) if plots_dir.is_dir() else []
    claimed = {(run_dir / p).resolve() for p in (lab or {}).get("plots", [])}
    claimed |= {(plots_dir / name).resolve() for name in search.get("plots", [])}
    left = [p for p in pngs if p.resolve() not in claimed]
    pick = lambda stems: [p for p in left if p.stem in stems]  # noqa: E731
    curves, monitors, confusion, lr_find = pick(CURVE_PLOTS), pick(MONITOR_PLOTS), pick(("confusion",)), pick(("lr_find",))
    others = [p for p in left if p not in curves + monitors + confusion + lr_find]
    title = f"trainlab lab {lab['experiment']}" if lab else f"trainlab run: {run_dir.name}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             lab_section(run_dir, lab) if lab else "",
             summary_section(summary), diagnosis_section(summary), checks_section(run_dir),
             lr_find_section(run_dir, lr_find), plots_section("Training curves", curves),
             plots_section("Monitors", monitors), plots_section("Confusion matrix", confusion),
             *(section(run_dir) for section in EXTRA_SECTIONS), trials_section(run_dir), ensemble_section(run_dir),
             plots_section("Other plots", others)]
    cfg = run_dir / "config.yaml"
    if cfg.exists():
        parts.append(f"<h2>Configuration</h2><pre>{html.escape(cfg.read_text())}</pre>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = run_dir / "report.html"
    path.write_text(page)
    return path


__all__ = ["plot_training_curves", "write_report", "add_section", "EXTRA_SECTIONS"]
