"""Regenerate the measured parts of docs/babysitting.md, so they cannot drift from what trainlab does.

    OMP_NUM_THREADS=1 python benchmarks/docs_babysitting.py            # rewrites the page in place
    OMP_NUM_THREADS=1 python benchmarks/docs_babysitting.py --check    # exit 1 if the page is stale

Runs `trainlab lr-find` (default config, and SGD at lr 10; their plots replace docs/img/babysitting/lr_find_*.png) and each case of the verdict table
(digits, seed 0, the same cases as tests/test_babysit_diagnosis.py), and writes their output
between the page's `<!-- generated:NAME:start -->` and `<!-- generated:NAME:end -->` markers.
Takes a few minutes on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import io
import re
import shutil
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

from trainlab.cli import main
from trainlab.config import load_config
from trainlab.run import train_run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "babysitting.md"
QUIET = ["train.progress=false", "monitor.plots=false"]

LR_FIND = [[], ["optim.name=sgd", "optim.lr=10"]]
IMAGES = PAGE.parent / "img" / "babysitting"
LR_FIND_IMAGES = ["lr_find_adam.png", "lr_find_sgd.png"]  # the page shows them side by side

CASES = [
    ("defaults (30 epochs)", []),
    ("optim.name=sgd optim.lr=10 monitor.every=10", ["optim.name=sgd", "optim.lr=10", "monitor.every=10"]),
    ("optim.lr=1e-6 train.epochs=3", ["optim.lr=1e-6", "train.epochs=3"]),
    ("data.subset=400 data.val_fraction=0.5 model.width=512 optim.lr=0.003 train.epochs=10 (200 training images)",
     ["data.subset=400", "data.val_fraction=0.5", "model.width=512", "optim.lr=0.003", "train.epochs=10"]),
    ("model.depth=10 model.activation=tanh model.init=small_gaussian model.init_std=0.01 train.epochs=2",
     ["model.depth=10", "model.activation=tanh", "model.init=small_gaussian", "model.init_std=0.01", "train.epochs=2"]),
    ("same with model.init=xavier",
     ["model.depth=10", "model.activation=tanh", "model.init=xavier", "model.init_std=0.01", "train.epochs=2"]),
    ("model.activation=sigmoid model.init=small_gaussian model.init_std=1.0 train.epochs=3",
     ["model.activation=sigmoid", "model.init=small_gaussian", "model.init_std=1.0", "train.epochs=3"]),
    ("model.bias_init=-5 train.epochs=3", ["model.bias_init=-5", "train.epochs=3"]),
    ("optim.name=sgd optim.lr=0.01 schedule.name=step schedule.milestones=[0.2] schedule.gamma=0.01 train.epochs=10",
     ["optim.name=sgd", "optim.lr=0.01", "schedule.name=step", "schedule.milestones=[0.2]", "schedule.gamma=0.01",
      "train.epochs=10"]),
]


def short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {short(v)}" for k, v in list(value.items())[:2])
    if isinstance(value, list):
        return " → ".join(short(v) for v in (value[:1] + value[-1:]))
    return str(value)


def describe(verdict: dict) -> str:
    """`code` (the first few pieces of evidence)."""
    items = [f"{k} {short(v)}" for k, v in verdict["evidence"].items() if v is not None][:4]
    return f"`{verdict['code']}` ({'; '.join(items)})" if items else f"`{verdict['code']}`"


def lr_find_block(tmp: Path) -> str:
    lines = []
    for i, overrides in enumerate(LR_FIND):
        buffer = io.StringIO()
        with redirect_stdout(buffer):
            main(["lr-find", *overrides, "--out", str(tmp / f"lr-find-{i}")])
        found = [line for line in buffer.getvalue().splitlines() if line.startswith("suggested")]
        shutil.copy(tmp / f"lr-find-{i}" / "plots" / "lr_find.png", IMAGES / LR_FIND_IMAGES[i])
        lines += [f"$ trainlab lr-find {' '.join(overrides)}".rstrip(), *found]
    return "```\n" + "\n".join(lines) + "\n```"


def verdict_table(tmp: Path) -> str:
    rows = ["| command (`trainlab train ...`) | verdicts (evidence) |", "|---|---|"]
    for i, (label, overrides) in enumerate(CASES):
        summary = train_run(load_config(None, QUIET + overrides), tmp / f"case-{i}", say=lambda m: None)
        rows.append(f"| `{label}` | " + ", ".join(describe(v) for v in summary["diagnosis"]) + " |")
        print(rows[-1], file=sys.stderr)
    return "\n".join(rows)


def replace_block(page: str, name: str, text: str) -> str:
    pattern = re.compile(rf"(<!-- generated:{name}:start -->\n).*?(\n<!-- generated:{name}:end -->)", re.S)
    if not pattern.search(page):
        raise SystemExit(f"{PAGE} has no generated:{name} markers")
    return pattern.sub(lambda m: m.group(1) + text + m.group(2), page)


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when the page differs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        page = PAGE.read_text()
        new = replace_block(page, "lr-find", lr_find_block(Path(d)))
        new = replace_block(new, "verdicts", verdict_table(Path(d)))
    if args.check:
        print("docs/babysitting.md is " + ("up to date" if new == page else "stale: run this script without --check"))
        return 0 if new == page else 1
    PAGE.write_text(new)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
