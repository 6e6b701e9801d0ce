"""Coarse-to-fine random search against grid search over the same ranges (issue 5, SPEC §5).

The lectures prefer random search to grid search: when one hyperparameter matters much more
than another, a grid tries only a few distinct values of the one that matters, while random
trials each try a new one; and short coarse trials followed by a narrowed, longer refine stage
spend the budget where it pays. This measures both on Fashion-MNIST (a subset, the default MLP):

    grid            every combination of --grid-points values per parameter, --epochs each
    coarse-to-fine  --coarse-trials short trials (pruned when hopeless), then --refine-trials of
                    --epochs each in ranges narrowed around the best

and prints, for each seed (data split, initialisation, random draws), the best validation
accuracy reached against the trial-epochs spent, the test accuracy of each search's best trial,
and where coarse-to-fine first reached the grid's best. Writes OUT/search_vs_grid.json and
OUT/search_vs_grid.png (and the search directories OUT/seed<k>/<search>/: trials.csv, plots ...).

    nice -n 10 python benchmarks/search_vs_grid.py --data-root ../shared/data --out runs/bench-search
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from trainlab.config import load_config  # noqa: E402
from trainlab.report import save_figure  # noqa: E402
from trainlab.search.space import parse_space  # noqa: E402
from trainlab.search.stages import SearchOptions, run_search  # noqa: E402

# The space both searches cover. The rate matters most; weight decay and dropout matter little
# on 5000 images in 4 epochs: the lectures' picture of "important" and "unimportant" parameters.
SPACE = {
    "optim.lr": "loguniform(1e-4, 1e-1)",
    "optim.weight_decay": "loguniform(1e-6, 1e-2)",
    "model.dropout": "uniform(0.0, 0.5)",
}


def base_config(data_root: str, subset: int, seed: int) -> dict:
    """Fashion-MNIST, a stratified subset (10% of it for validation), the default MLP and Adam."""
    return load_config(None, ["data.name=fashion-mnist", f"data.root={data_root}", "data.download=false",
                              f"data.subset={subset}", f"seed={seed}", "train.progress=false", "monitor.every=0"])


def first_reaching(progress: dict, target: float) -> int | None:
    """Trial-epochs spent when the best-so-far curve first reaches ``target``."""
    for spent, best in zip(progress["trial_epochs"], progress["best_val_acc"]):
        if best >= target - 1e-9:
            return spent
    return None


def measure(name: str, base: dict, options: SearchOptions, out: Path, say) -> dict:
    """One search; its best validation accuracy, cost, progress curve, and the test accuracy of
    its best trial (one number no search looked at: a check on the winner's curse of picking
    the maximum of many noisy validation scores)."""
    t0 = time.perf_counter()
    summary = run_search(base, parse_space(SPACE), out / name, options, say=say)
    best_run = json.loads((Path(summary["best"]["run_dir"]) / "summary.json").read_text())
    return {"best_val_acc": summary["best"]["value"], "best_test_acc": best_run["test_acc"], "best": summary["best"],
            "trial_epochs": summary["trial_epochs"], "trials": summary["counts"], "progress": summary["progress"],
            "rounds": summary["rounds"], "wall_seconds": time.perf_counter() - t0}


def plot(per_seed: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, len(per_seed), figsize=(5.2 * len(per_seed), 4.2), squeeze=False)
    for ax, (seed, results) in zip(axes[0], per_seed.items()):
        for name, colour in (("grid", "C0"), ("coarse-to-fine", "C3")):
            r = results[name]
            ax.step(r["progress"]["trial_epochs"], r["progress"]["best_val_acc"], where="post", color=colour, lw=2,
                    label=f"{name}: {r['best_val_acc']:.3f} in {r['trial_epochs']} trial-epochs")
        grid_best = results["grid"]["best_val_acc"]
        ax.axhline(grid_best, color="C0", ls=":", lw=1)
        reached = results["coarse-to-fine"]["reached_grid_best_at"]
        if reached is not None:
            ax.axvline(reached, color="C3", ls=":", lw=1)
        lows = [min(r["progress"]["best_val_acc"]) for k, r in results.items() if k in ("grid", "coarse-to-fine")]
        ax.set_ylim(max(min(lows) - 0.02, 0), max(grid_best, results["coarse-to-fine"]["best_val_acc"]) + 0.02)
        ax.set(xlabel="trial-epochs spent", ylabel="best validation accuracy so far", title=f"seed {seed}")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Coarse-to-fine random search vs grid search, same ranges (Fashion-MNIST, 5000 images)")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default="../shared/data", help="folder holding fashion-mnist/")
    p.add_argument("--out", default="runs/bench-search")
    p.add_argument("--subset", type=int, default=5000, help="training images kept (10%% become validation)")
    p.add_argument("--epochs", type=int, default=4, help="epochs of a grid trial and of a refine trial")
    p.add_argument("--grid-points", type=int, default=3, help="values per parameter in the grid")
    p.add_argument("--coarse-trials", type=int, default=10)
    p.add_argument("--coarse-epochs", type=int, default=2)
    p.add_argument("--refine-trials", type=int, default=5)
    p.add_argument("--seeds", default="0,1,2", help="data split, initialisation and random draws (comma-separated)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core machine two threads ran this MLP 2x slower)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    plans = {
        "grid": SearchOptions(sampler="grid", grid_points=args.grid_points, epochs=args.epochs, stages="single",
                              pruner="none"),
        "coarse-to-fine": SearchOptions(sampler="random", trials=args.coarse_trials, epochs=args.coarse_epochs,
                                        refine_trials=args.refine_trials, refine_epochs=args.epochs,
                                        stages="coarse-to-fine", pruner="median", max_widen=1),
    }
    t0 = time.perf_counter()
    per_seed = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        base = base_config(args.data_root, args.subset, seed)
        results = {name: measure(name, base, options, out / f"seed{seed}", say) for name, options in plans.items()}
        grid, c2f = results["grid"], results["coarse-to-fine"]
        c2f["reached_grid_best_at"] = first_reaching(c2f["progress"], grid["best_val_acc"])
        results["met"] = c2f["reached_grid_best_at"] is not None and c2f["reached_grid_best_at"] <= grid["trial_epochs"] / 2
        per_seed[seed] = results
    doc = {"setup": {"data": "fashion-mnist", "subset": args.subset, "space": SPACE, "epochs": args.epochs,
                     "grid_points": args.grid_points, "coarse_trials": args.coarse_trials,
                     "coarse_epochs": args.coarse_epochs, "refine_trials": args.refine_trials},
           "seeds": per_seed, "wall_seconds": time.perf_counter() - t0}
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_vs_grid.json").write_text(json.dumps(doc, indent=2))
    figure = plot(per_seed, out / "search_vs_grid.png")

    print(f"\n{'seed':>4}  {'search':>14}  {'trials':>22}  {'trial-epochs':>12}  {'best val':>8}  {'its test':>8}  "
          f"{'wall s':>6}  grid's best reached after")
    for seed, results in per_seed.items():
        for name in ("grid", "coarse-to-fine"):
            r = results[name]
            counts = ", ".join(f"{v} {k}" for k, v in r["trials"].items() if v)
            reached = ""
            if name == "coarse-to-fine":
                at = r["reached_grid_best_at"]
                reached = (f"{at} trial-epochs ({at / results['grid']['trial_epochs']:.0%})" if at is not None else "never")
                reached += "  target met" if results["met"] else "  target NOT met"
            print(f"{seed:>4}  {name:>14}  {counts:>22}  {r['trial_epochs']:>12}  {r['best_val_acc']:>8.4f}  "
                  f"{r['best_test_acc']:>8.4f}  {r['wall_seconds']:>6.0f}  {reached}")
    met = sum(r["met"] for r in per_seed.values())
    print(f"target (reach the grid's best validation accuracy with at most half its trial-epochs): met in {met} of "
          f"{len(per_seed)} seeds; {doc['wall_seconds']:.0f}s in all")
    print(f"wrote {out / 'search_vs_grid.json'} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
