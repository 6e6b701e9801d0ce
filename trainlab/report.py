"""Plots (matplotlib, PNG) and the self-contained ``report.html`` of a run directory.

Everything the report shows is read back from the run directory's files (summary.json,
metrics.jsonl, plots/), so ``trainlab report RUN_DIR`` can rebuild it at any time.
"""
from __future__ import annotations

import base64
import html
import json
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


def plot_training_curves(records: list[dict], plots: Path) -> list[Path]:
    """loss.png (scatter + moving average), accuracy.png (train/val per epoch), lr.png."""
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
        ax.plot(x, [r["lr"] for r in steps], color="C4")
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


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(path.name)}</figcaption></figure>'


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
figure{display:inline-block;margin:8px}img{max-width:520px}pre{background:#f5f5f5;padding:8px;overflow:auto}
.verdict{padding:6px 10px;margin:4px 0;border-left:4px solid #c60}.healthy{border-color:#2a2}"""


def _table(rows: dict) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(run_dir: str | Path) -> Path:
    """Regenerate plots and write ``report.html`` with every PNG embedded (opens offline)."""
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    records = read_jsonl(run_dir / "metrics.jsonl")
    plot_training_curves(records, plots)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if summary.get("confusion"):
        plot_confusion(summary["confusion"], summary.get("classes") or [str(i) for i in range(len(summary["confusion"]))],
                       plots / "confusion.png")
    parts = [f"<h1>trainlab run: {html.escape(run_dir.name)}</h1>"]
    if summary:
        keys = ("dataset", "model", "params", "epochs", "steps", "best_val_acc", "test_acc", "test_loss", "test_top5",
                "test_acc_ema", "train_acc", "wall_seconds", "train_images_per_second", "device", "seed",
                "torch_version", "stop_reason")
        parts += ["<h2>Summary</h2>", _table({k: summary.get(k) for k in keys if k in summary})]
        if summary.get("diagnosis"):
            parts.append("<h2>Diagnosis</h2>")
            for d in summary["diagnosis"]:
                parts.append(f'<div class="verdict {html.escape(d["code"])}"><b>{html.escape(d["code"])}</b>: '
                             f'{html.escape(d["message"])}<br><small>evidence: {html.escape(json.dumps(d.get("evidence")))}</small></div>')
        for key in ("transfer", "tune"):
            if isinstance(summary.get(key), dict):
                parts += [f"<h2>{key.title()}</h2>", _table(summary[key])]
    pngs = sorted(plots.glob("*.png")) if plots.exists() else []
    if pngs:
        parts.append("<h2>Plots</h2>" + "".join(_img(p) for p in pngs))
    cfg = run_dir / "config.yaml"
    if cfg.exists():
        parts.append(f"<h2>Configuration</h2><pre>{html.escape(cfg.read_text())}</pre>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>trainlab report</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = run_dir / "report.html"
    path.write_text(page)
    return path
