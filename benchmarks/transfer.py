"""Transfer learning on Fashion-MNIST (issue 6, must-show 2): the lectures' table, measured.

Target task: Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle boot) learned from 10,
100 or 1000 labelled images per class. Backbones:

    similar source    Fashion-MNIST classes 0-4 (t-shirt, trouser, pullover, dress, coat)
    different source  MNIST (handwritten digits, all 10 classes)

Each backbone is fine-tuned with every strategy (linear, top_k with k=1, all with lr_decay 0.3)
and compared with the same network trained from scratch on the same images; `auto`'s choice is
shown beside. Prints Markdown tables (docs/transfer.md has them).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/transfer.py --data-root ../shared/data --out /tmp/bench-transfer

Network: convnet width 32 with batch norm (3 stages of 2 conv layers, 32/64/128 channels, 288k
parameters), Adam with a cosine schedule everywhere. Backbones are trained with augmentation
(Fashion-MNIST: flips and 2-pixel crops, 6 epochs on all 30,000 images of classes 0-4; MNIST:
crops, 4 epochs on 30,000 images) at rate 3e-3. The target runs use 20% of their images for
validation (best-on-validation weights are tested), no augmentation, and train for 40 / 15 / 3
epochs at 10 / 100 / 1000 images per class (batch 16 / 32 / 64: about 120-200 updates each).

Learning rates, per column and size, are chosen by a pilot (:func:`pilot`) on seeds the table
does not use (11 and 12; 11 alone at 1000 per class), scored on 2,500 labelled training images of
classes 5-9 that the pilot run did not train on: never on the test split. 10 and 100 per class
are then averaged over seeds 1-10 and 1-5 (a different sample of images each: 40 training images
vary a lot), 1000 per class is seed 1; every column of a seed sees the same images, so the table
of paired differences (column minus scratch, per seed) is the fair comparison.
Runs already in --out are reused. On a loaded machine run it with OMP_NUM_THREADS=1.
"""
from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
from pathlib import Path

import torch
from reuse import finished, quiet, train

from trainlab.checkpoint import load_checkpoint
from trainlab.classifier import load_classifier
from trainlab.config import load_config
from trainlab.data import (
    DATASETS,
    RawData,
    data_root,
    load_data,
    per_class_subset,
    select_classes,
)
from trainlab.evaluate import evaluate
from trainlab.transfer import decide_strategy, finetune

NET = ["model.name=convnet", "model.width=32", "model.norm=batch", "optim.name=adam", "optim.lr=0.003",
       "schedule.name=cosine", "train.progress=false", "monitor.every=0"]
SOURCES = {
    "similar": ["data.name=fashion-mnist", "data.classes=[0,1,2,3,4]", "train.epochs=6", "train.batch_size=128",
                "augment.names=[flip,crop]", "augment.crop_padding=2"],
    "different": ["data.name=mnist", "data.subset=30000", "train.epochs=4", "train.batch_size=128",
                  "augment.names=[crop]", "augment.crop_padding=2"],  # no flips: a mirrored digit is another glyph
}
TARGET_CLASSES = [5, 6, 7, 8, 9]
TARGET = ["data.name=fashion-mnist", f"data.classes={TARGET_CLASSES}".replace(" ", ""), "data.val_fraction=0.2"]
SIZES = {10: ["train.epochs=40", "train.batch_size=16"],
         100: ["train.epochs=15", "train.batch_size=32"],
         1000: ["train.epochs=3", "train.batch_size=64"]}
SEEDS = {10: tuple(range(1, 11)), 100: tuple(range(1, 6)), 1000: (1,)}
STRATEGIES = ("linear", "top_k", "all")
# Candidate Adam rates for the pilot. A linear classifier on frozen features is a small convex
# problem that needs a high rate to converge in ~150 updates; the others train deep layers.
CANDIDATES = {"scratch": (0.003, 0.01), "linear": (0.03, 0.1), "top_k": (0.003, 0.01), "all": (0.003, 0.01)}
PILOT_SEEDS = {10: (11, 12), 100: (11, 12), 1000: (11,)}
HELD_OUT = 2500  # labelled training images of classes 5-9 a pilot run scores on


def transfer(source: Path, out: Path, overrides: list[str]) -> dict:
    if finished(out) is None:
        print(f"fine-tuning {out.name} ...", flush=True)
        shutil.rmtree(out, ignore_errors=True)  # an interrupted fine-tuning run starts again (they are short)
        finetune(load_config(None, overrides), source, out, say=quiet)
    return finished(out)


def target(root: list[str], per_class: int, seed: int) -> list[str]:
    """Overrides of a target run: classes 5-9 from ``per_class`` images per class."""
    return NET + root + TARGET + SIZES[per_class] + [f"data.per_class={per_class}", f"seed={seed}"]


def train_column(column: str, sources: dict[str, Path], run: Path, overrides: list[str], lr: float) -> dict:
    """One cell's run: ``scratch``, or ``<source kind>:<strategy>`` fine-tuned from that backbone."""
    if column == "scratch":
        return train(run, overrides + [f"optim.lr={lr}"])
    kind, strategy = column.split(":")
    return transfer(sources[kind], run, overrides + [f"transfer.strategy={strategy}", f"optim.lr={lr}"])


@functools.lru_cache(maxsize=1)
def target_training_images(root_override: str) -> RawData:
    """All training images of classes 5-9 (``root_override``: the ``data.root=...`` override)."""
    cfg = load_config(None, TARGET + [root_override])
    raw = DATASETS.get("fashion-mnist")(data_root(cfg["data"]), None, False, cfg["data"]["image_size"])
    return select_classes(raw, cfg["data"]["classes"])


def held_out(root_override: str, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HELD_OUT training images of classes 5-9 that a run with this ``per_class`` and ``seed``
    never sees (load_data draws its images with the same per_class_subset call)."""
    raw = target_training_images(root_override)
    used = torch.zeros(len(raw.train_y), dtype=torch.bool)
    used[per_class_subset(raw.train_y, per_class, seed)] = True
    rest = (~used).nonzero().squeeze(1)
    pick = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))[:HELD_OUT]]
    return raw.train_x[pick], raw.train_y[pick]


def held_out_acc(run: Path, root_override: str, per_class: int, seed: int) -> float:
    """Accuracy of the run's best.pt on its held-out images (kept in RUN/held_out.json)."""
    cache = run / "held_out.json"
    if not cache.exists():
        model = load_classifier(load_checkpoint(run / "checkpoints" / "best.pt"))
        x, y = held_out(root_override, per_class, seed)
        cache.write_text(json.dumps({"images": len(y), "acc": evaluate(model, x, y, len(TARGET_CLASSES))["acc"]}))
    return json.loads(cache.read_text())["acc"]


def pilot(out: Path, root: list[str], columns: list[str], sources: dict[str, Path]) -> tuple[dict, dict]:
    """The learning rate of each column at each size: the candidate with the best mean accuracy
    on held-out training images over PILOT_SEEDS. Returns (chosen, scores), keyed by (column, size)."""
    chosen, scores = {}, {}
    for per_class, seeds in PILOT_SEEDS.items():
        for column in columns:
            strategy = column.split(":")[-1]
            mean = {}
            for lr in CANDIDATES[strategy]:
                accs = []
                for seed in seeds:
                    run = out / "pilot" / f"{column.replace(':', '-')}-{per_class}-s{seed}-lr{lr:g}"
                    train_column(column, sources, run, target(root, per_class, seed), lr)
                    accs.append(held_out_acc(run, root[0], per_class, seed))
                mean[lr] = statistics.mean(accs)
            chosen[(column, per_class)] = max(mean, key=mean.get)
            scores[(column, per_class)] = mean
    return chosen, scores


def auto_choice(source: Path, overrides: list[str]) -> str:
    """What transfer.strategy=auto picks for this source and target (no training needed)."""
    from trainlab.checkpoint import load_checkpoint

    cfg = load_config(None, overrides)
    ckpt = load_checkpoint(source)
    info = {"dataset": ckpt["config"]["data"]["name"], "data": ckpt["config"]["data"]}
    return decide_strategy(cfg, load_data(cfg), info)[0]


def cell(accs: list[float]) -> str:
    if len(accs) == 1:
        return f"{100 * accs[0]:.1f}"
    return f"{100 * statistics.mean(accs):.1f} ± {100 * statistics.stdev(accs):.1f}"


def plot(acc: dict, path: Path) -> None:
    """Test accuracy against images per class (log axis): one panel per source, one line per strategy."""
    from trainlab.plots import plt, save_figure

    fig, axes = plt.subplots(1, len(SOURCES), figsize=(10, 4), sharey=True)
    sizes = list(SIZES)
    for ax, kind in zip(axes, SOURCES):
        ax.plot(sizes, [100 * statistics.mean(acc[("scratch", n)]) for n in sizes], "k--o", label="from scratch")
        for strategy in STRATEGIES:
            ax.plot(sizes, [100 * statistics.mean(acc[(f"{kind}:{strategy}", n)]) for n in sizes], "-o", label=strategy)
        title = "Fashion-MNIST 0-4 (similar)" if kind == "similar" else "MNIST (very different)"
        ax.set(xscale="log", xlabel="labelled images per class", title=f"source: {title}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy on Fashion-MNIST 5-9 (%)")
    axes[0].legend()
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="/tmp/bench-transfer")
    args = ap.parse_args()
    out, root = Path(args.out), [f"data.root={args.data_root}"]

    sources = {kind: out / f"source-{kind}" for kind in SOURCES}
    source_acc = {kind: train(path, NET + root + SOURCES[kind] + ["seed=1"])["test_acc"]
                  for kind, path in sources.items()}
    columns = ["scratch"] + [f"{kind}:{s}" for kind in SOURCES for s in STRATEGIES]
    lr, scores = pilot(out, root, columns, sources)
    results: dict = {"source_test_acc": source_acc, "runs": [],
                     "pilot": {f"{c}@{n}": {"chosen_lr": lr[(c, n)], "held_out_acc": {f"{k:g}": v for k, v in m.items()}}
                               for (c, n), m in scores.items()}}
    acc: dict = {}  # (column, per_class) -> [test accuracies over seeds]
    for per_class, seeds in SEEDS.items():
        for seed in seeds:
            overrides = target(root, per_class, seed)
            for column in columns:
                run = out / f"{column.replace(':', '-')}-{per_class}-s{seed}"
                t = train_column(column, sources, run, overrides, lr[(column, per_class)])
                acc.setdefault((column, per_class), []).append(t["test_acc"])
                if "transfer" in t:
                    results["runs"].append({"run": run.name, "test_acc": t["test_acc"], **{
                        k: t["transfer"][k] for k in ("strategy", "trainable_params", "frozen_params")}})
            if seed == seeds[0]:
                for kind, source in sources.items():
                    acc[(f"{kind}:auto", per_class)] = auto_choice(source, overrides + ["transfer.strategy=auto"])
    results["accuracy"] = {f"{k[0]}@{k[1]}": v for k, v in acc.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(acc, out / "transfer.png")

    print("\nPilot: rate chosen per column and size (mean accuracy on held-out training images)\n")
    print("| column | " + " | ".join(f"{n} per class" for n in SIZES) + " |")
    print("|---" * (1 + len(SIZES)) + "|")
    for column in columns:
        print(f"| {column} | " + " | ".join(
            f"{lr[(column, n)]:g} ({100 * scores[(column, n)][lr[(column, n)]]:.1f}; "
            + ", ".join(f"{k:g}: {100 * v:.1f}" for k, v in scores[(column, n)].items() if k != lr[(column, n)]) + ")"
            for n in SIZES) + " |")
    print(f"\nbackbones: Fashion-MNIST 0-4 test acc {100 * source_acc['similar']:.1f}, "
          f"MNIST test acc {100 * source_acc['different']:.1f}")
    print("\nTest accuracy (%) on Fashion-MNIST classes 5-9 (5,000 test images); at 10 and 100 images per "
          f"class mean ± std over seeds {SEEDS[10][0]}-{SEEDS[10][-1]} and {SEEDS[100][0]}-{SEEDS[100][-1]}; best strategy "
          "per source in bold\n")
    print("| images per class | from scratch | " + " | ".join(
        f"{kind} source: {s}" for kind in SOURCES for s in STRATEGIES) + " |")
    print("|---" * (2 + len(SOURCES) * len(STRATEGIES)) + "|")
    for per_class in SIZES:
        row = [cell(acc[("scratch", per_class)])]
        for kind in SOURCES:
            best = max(STRATEGIES, key=lambda s: statistics.mean(acc[(f"{kind}:{s}", per_class)]))
            for s in STRATEGIES:
                text = cell(acc[(f"{kind}:{s}", per_class)])
                row.append(f"**{text}**" if s == best else text)
        print(f"| {per_class} | " + " | ".join(row) + " |")
    print("\nPaired differences, column minus from scratch (accuracy points, same images per seed): "
          "mean ± standard error, and the seeds on which the column wins\n")
    print("| images per class | " + " | ".join(c for c in columns[1:]) + " |")
    print("|---" * len(columns) + "|")
    for per_class in SIZES:
        base = acc[("scratch", per_class)]
        row = []
        for column in columns[1:]:
            diff = [100 * (a - b) for a, b in zip(acc[(column, per_class)], base)]
            err = f" ± {statistics.stdev(diff) / len(diff) ** 0.5:.1f}" if len(diff) > 1 else ""
            row.append(f"{statistics.mean(diff):+.1f}{err} ({sum(d > 0 for d in diff)}/{len(diff)})")
        print(f"| {per_class} | " + " | ".join(row) + " |")
    print("\n| images per class | auto, similar source (Fashion-MNIST 0-4) | auto, different source (MNIST) |")
    print("|---|---|---|")
    for per_class in SIZES:
        print(f"| {per_class} | {acc[('similar:auto', per_class)]} | {acc[('different:auto', per_class)]} |")
    params = {r["strategy"]: (r["trainable_params"], r["frozen_params"]) for r in results["runs"]}
    print("\n| strategy | trainable parameters | frozen parameters |\n|---|---|---|")
    for s, (t, f) in params.items():
        print(f"| {s} | {t:,} | {f:,} |")


if __name__ == "__main__":
    main()
