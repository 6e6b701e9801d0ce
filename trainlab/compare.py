"""``trainlab compare``: several runs side by side.

    trainlab compare runs/a runs/b runs/c --out runs/compare-abc

Prints a table of the config keys on which the runs differ and their key metrics, and writes
``comparison.json``, ``plots/compare_curves.png`` (validation accuracy and training loss of every
run overlaid, against the epoch) and a self-contained ``compare.html`` into ``--out``.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import yaml

from trainlab.config import flatten
from trainlab.errors import UserError
from trainlab.io import read_jsonl, write_json
from trainlab.plots import CSS, embed_png, fmt_cell, html_grid, plt, save_figure

METRICS = ("best_val_acc", "test_acc", "test_loss", "train_acc", "epochs", "params", "wall_seconds")
# Keys that differ between runs without changing what was trained.
IGNORED = {"data.root", "data.path", "device", "train.progress", "train.log_every", "monitor.warn", "monitor.plots"}


def read_run(run: Path) -> dict:
    """config (flat), summary and epoch records of a finished run directory."""
    if not (run / "config.yaml").is_file() or not (run / "summary.json").is_file():
        raise UserError(f"{str(run)!r} is not a finished trainlab run directory (it needs config.yaml and summary.json)")
    records = read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    return {"name": str(run), "config": flatten(yaml.safe_load((run / "config.yaml").read_text()) or {}),
            "summary": json.loads((run / "summary.json").read_text()),
            "epochs": [r for r in records if r.get("kind") == "epoch"]}


def config_differences(configs: list[dict]) -> list[str]:
    """Keys whose value is not the same in every config (in the first config's order)."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys if k not in IGNORED and len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def comparison_rows(runs: list[dict]) -> tuple[list[str], list[dict]]:
    """Columns and one row per run: its name, the differing config values, the metrics, the verdicts."""
    keys = config_differences([r["config"] for r in runs])
    rows = []
    for r in runs:
        row = {"run": r["name"], **{k: r["config"].get(k) for k in keys}, **{m: r["summary"].get(m) for m in METRICS}}
        row["diagnosis"] = ", ".join(d["code"] for d in r["summary"].get("diagnosis") or []) or None
        rows.append(row)
    return ["run", *keys, *METRICS, "diagnosis"], rows


def plot_curves(runs: list[dict], path: Path) -> Path:
    """Validation accuracy and mean training loss per epoch, one line per run."""
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        e = r["epochs"]
        acc.plot([x["epoch"] for x in e if x.get("val_acc") is not None],
                 [x["val_acc"] for x in e if x.get("val_acc") is not None], "o-", ms=3, label=r["name"])
        loss.plot([x["epoch"] for x in e if x.get("train_loss") is not None],
                  [x["train_loss"] for x in e if x.get("train_loss") is not None], "o-", ms=3, label=r["name"])
    acc.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
    loss.set(xlabel="epoch", ylabel="training loss", title="Training loss (epoch mean)")
    acc.legend(fontsize="small")
    return save_figure(fig, path)


def text_table(columns: list[str], rows: list[dict]) -> str:
    """The comparison as aligned plain-text columns (runs are columns when there are many keys)."""
    cells = [[c] + [fmt_cell(r.get(c)) for r in rows] for c in columns]
    width = [max(len(x) for x in col) for col in zip(*cells)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, width)).rstrip() for line in cells)


def compare_runs(run_dirs: list[str | Path], out: str | Path) -> dict:
    if len(run_dirs) < 2:
        raise UserError("compare needs at least two run directories")
    runs = [read_run(Path(d)) for d in run_dirs]
    out = Path(out)
    columns, rows = comparison_rows(runs)
    png = plot_curves(runs, out / "plots" / "compare_curves.png")
    result = {"runs": [r["name"] for r in runs], "columns": columns, "rows": rows, "plot": str(png)}
    write_json(out / "comparison.json", result)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>trainlab compare</title><style>{CSS}</style></head>"
            f"<body><h1>Comparison of {len(runs)} runs</h1><p class='note'>Config keys shown are those that differ "
            f"between the runs.</p>{html_grid(columns, rows)}<h2>Curves</h2>{embed_png(png)}"
            f"<p class='note'>{html.escape(', '.join(r['name'] for r in runs))}</p></body></html>")
    (out / "compare.html").write_text(page)
    result["table"] = text_table(columns, rows)
    return result


def cmd_compare(args) -> int:
    out = Path(args.out) if args.out else Path("runs") / "compare"
    result = compare_runs(args.runs, out)
    print(result["table"])
    print(f"wrote {out / 'compare.html'}, {out / 'comparison.json'} and {result['plot']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare runs: differing config keys, metrics, overlaid curves",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="folder for compare.html, comparison.json and plots (default runs/compare)")
    p.set_defaults(func=cmd_compare)
