"""Building blocks for figures and pages: matplotlib set up for files (no display), PNG saving,
the moving average drawn over noisy curves, the confusion matrix, and the HTML pieces every
self-contained page of trainlab (report.html, search and tune sections) is made of.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


# --- HTML ----------------------------------------------------------------------------------

def embed_png(path: Path) -> str:
    """A ``<figure>`` with the PNG at ``path`` inlined as a base64 ``data:`` URI (no file or
    network request when the page is opened)."""
    path = Path(path)
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{html.escape(path.name)}</figcaption></figure>')


CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.6em}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
figure{display:inline-block;margin:8px;vertical-align:top}img{max-width:540px}figcaption{font-size:small;color:#666}
pre{background:#f5f5f5;padding:8px;overflow:auto}.note{color:#555}
.verdict{padding:6px 10px;margin:4px 0;border-left:4px solid #c60}.healthy{border-color:#2a2}
.agrees{background:#e3f4e1}.partly{background:#fdf1d6}.does-not-agree{background:#f9dcdc}
.passed{background:#e3f4e1}.failed{background:#f9dcdc}"""


def fmt_cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "—"
    return str(v)


def html_table(rows: dict) -> str:
    """A two-column key/value table."""
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(fmt_cell(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def html_grid(columns: list[str], rows: list[dict], row_class: str | None = None) -> str:
    """A table with a header row; ``row_class`` names the column whose value styles each row."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cls = f' class="{html.escape(str(r.get(row_class, "")).replace(" ", "-"))}"' if row_class else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(fmt_cell(r.get(c)))}</td>" for c in columns) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"
