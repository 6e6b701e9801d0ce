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

import base64
import csv
import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trainlab.io import read_jsonl  # noqa: E402


def moving_average(values, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (shorter at the start), the curve drawn over the loss scatter."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def schedule_at_every_step(records: list[dict], cfg: dict | None) -> list[float] | None:
    """The rate of update 1, 2, ..., n of the run, from the schedule's closed form
    (:func:`trainlab.schedules.schedule_curve`), or None when the run's records do not fit it
    (no config, a first epoch cut short, or rates logged that the formula does not give). Logged
    steps alone (every train.log_every) would draw a 30-step SGDR cycle as a zig-zag."""
    from trainlab.schedules import schedule_curve

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
        e = [r["epoch"] for r in epochs]
        ax.plot(e, [r["train_acc"] for r in epochs], "o-", label="train")
        for key, label in (("val_acc", "validation"), ("val_acc_ema", "validation (EMA weights)")):
            pts = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), "o-", label=label)
        ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy (the gap is overfitting)")
        ax.legend()
        out.append(save_figure(fig, plots / "accuracy.png"))
    return out


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path) -> Path:
    m = np.asarray(confusion)
    n = len(m)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * n, 1 + 0.5 * n))
    ax.imshow(m, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    ax.set_xticklabels(classes, rotation=90)
    ax.set_yticklabels(classes)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    return save_figure(fig, path)


# --- HTML building blocks (also used by the search's section) ------------------------------------

def embed_png(path: Path) -> str:
    """A ``<figure>`` with the PNG at ``path`` inlined as a base64 ``data:`` URI (no file or
    network request when the page is opened)."""
    path = Path(path)
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{html.escape(path.name)}</figcaption></figure>')


_img = embed_png  # the original private name, still used by other modules


CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.6em}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
figure{display:inline-block;margin:8px;vertical-align:top}img{max-width:540px}figcaption{font-size:small;color:#666}
pre{background:#f5f5f5;padding:8px;overflow:auto}.note{color:#555}
.verdict{padding:6px 10px;margin:4px 0;border-left:4px solid #c60}.healthy{border-color:#2a2}
.agrees{background:#e3f4e1}.partly{background:#fdf1d6}.does-not-agree{background:#f9dcdc}
.passed{background:#e3f4e1}.failed{background:#f9dcdc}"""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "—"
    return str(v)


def _table(rows: dict) -> str:
    """A two-column key/value table."""
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def _grid(columns: list[str], rows: list[dict], row_class: str | None = None) -> str:
    """A table with a header row; ``row_class`` names the column whose value styles each row."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cls = f' class="{html.escape(str(r.get(row_class, "")).replace(" ", "-"))}"' if row_class else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


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
    parts = ["<h2>Summary</h2>", _table({k: summary.get(k) for k in SUMMARY_KEYS if k in summary})]
    for key in ("transfer", "tune"):
        if isinstance(summary.get(key), dict):
            parts += [f"<h3>{key.title()}</h3>", _table(summary[key])]
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
    return "<h2>Sanity checks</h2>" + _grid(["name", "result", "value", "expected", "advice"], rows, "result")


def lr_find_section(run_dir: Path, plots: list[Path]) -> str:
    result = _read_json(run_dir / "lr_find.json") or {}
    if not result and not plots:
        return ""
    shown = {k: result.get(k) for k in ("suggested_lr", "verdict") if k in result}
    return "<h2>Learning-rate range test</h2>" + (_table(shown) if shown else "") + "".join(embed_png(p) for p in plots)


def search_section(run_dir: Path) -> str:
    """The search's own section (trainlab.search.results), when the directory holds a search."""
    summary = _read_json(run_dir / "search.json")
    if not summary:
        return ""
    from trainlab.search.results import results_html

    return results_html(run_dir, summary)


def ensemble_section(run_dir: Path) -> str:
    result = _read_json(run_dir / "ensemble.json")
    if not result:
        return ""
    head = {k: result.get(k) for k in ("method", "best_single_test_acc", "ensemble_test_acc") if k in result}
    return ("<h2>Ensemble</h2>" + _table(head)
            + _grid(["run", "test_acc"], result.get("members", [])))


def lab_section(run_dir: Path, results: dict) -> str:
    """A lab experiment: the lecture's claims with verdicts, the measured table, the plots, and
    links to each training run's own report."""
    quick = ("<p class='verdict'>Quick run (--quick): smoke-test sizes, so these verdicts show that the experiment "
             "runs, not what it measures. Run it without --quick for the real measurement.</p>") if results.get("quick") else ""
    parts = [f"<h2>{html.escape(results['title'])}</h2>", quick, f"<p class='note'>{html.escape(results['setup'])}</p>",
             "<h3>The lecture's claims</h3>",
             _grid(["claim", "source", "measured", "verdict"], results["claims"], row_class="verdict"),
             "<h3>Measured</h3>", _grid(results["columns"], results["rows"])]
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
    return "<h2>Trials (best ten)</h2>" + _grid(list(rows[0]), best)


def _run_config(run_dir: Path) -> dict | None:
    from trainlab.config import load_config
    from trainlab.errors import UserError

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
             search_section(run_dir), trials_section(run_dir), ensemble_section(run_dir),
             plots_section("Other plots", others)]
    cfg = run_dir / "config.yaml"
    if cfg.exists():
        parts.append(f"<h2>Configuration</h2><pre>{html.escape(cfg.read_text())}</pre>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = run_dir / "report.html"
    path.write_text(page)
    return path


__all__ = ["moving_average", "save_figure", "plot_training_curves", "plot_confusion", "embed_png", "write_report"]
