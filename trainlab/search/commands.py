"""The search and tune commands.

    trainlab search -c examples/search-base.yaml --space examples/space.yaml --trials 20 --epochs 2 --out runs/search
    trainlab search -c examples/search-base.yaml --space examples/grid-space.yaml --sampler grid --grid-points 3 --out runs/grid
    trainlab search -c examples/search-base.yaml --space examples/space.yaml --workers 2 --out runs/search      # 2 processes
    trainlab search -c examples/search-base.yaml --space examples/space.yaml --storage postgresql://user@db/optuna \\
        --study lr-wd --out runs/search                                  # on every machine
    trainlab tune -c examples/search-base.yaml --out runs/tune [--space examples/space.yaml] [--budget small|medium]

Re-running a search with the same --out (or --storage and --study) resumes it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from trainlab.arguments import add_config_args, config_from_args
from trainlab.io import ensure_writable_dir
from trainlab.search.space import check_space, load_space
from trainlab.search.stages import PRUNERS, SAMPLERS, STAGES, SearchOptions, run_search
from trainlab.search.tune import TuneFailed, tune


def add_search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, help="trials per coarse (or single) round (default 20; grid: the grid's size)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per coarse trial (default 2: the lectures' 1-5)")
    p.add_argument("--refine-trials", type=int, help="trials in the refine round (default half of --trials)")
    p.add_argument("--refine-epochs", type=int, help="epochs per refine trial (default 3 x --epochs)")
    p.add_argument("--loops", type=int, default=0,
                   help="the slides' step 7, 'GOTO step 5': up to this many more refine rounds, while each raises the best (default 0)")
    p.add_argument("--sampler", default="random", choices=SAMPLERS, help="random (default), grid, or Optuna's tpe")
    p.add_argument("--grid-points", type=int, default=3, help="grid: values per numeric parameter (default 3)")
    p.add_argument("--stages", choices=STAGES, help="default: coarse-to-fine for random, single for grid and tpe")
    p.add_argument("--pruner", default="median", choices=PRUNERS, help="stop hopeless trials early (default median)")
    p.add_argument("--storage", help="database URL shared by all workers (default: sqlite file OUT/study.db)")
    p.add_argument("--study", help="study name in the storage (default: the name of the --out directory)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--heartbeat", type=int, default=10,
                   help="seconds between worker heartbeats; a trial silent for 3 beats is marked FAIL (default 10)")
    p.add_argument("--monitors", action="store_true", help="keep the activation monitors on in trials (off: faster)")


def options_from_args(args):
    return SearchOptions(trials=args.trials, epochs=args.epochs, refine_trials=args.refine_trials,
                         refine_epochs=args.refine_epochs, stages=args.stages, sampler=args.sampler,
                         grid_points=args.grid_points, pruner=args.pruner, storage=args.storage, study=args.study,
                         workers=args.workers, heartbeat=args.heartbeat, monitors=args.monitors, loops=args.loops)


def cmd_search(args) -> int:
    cfg = config_from_args(args)
    ensure_writable_dir(args.out, "--out")
    space = load_space(args.space)
    check_space(space, cfg, source=f"search space {args.space!r}")
    options = options_from_args(args)
    options.resolved(Path(args.out))  # bad options fail before any work
    summary = run_search(cfg, space, args.out, options)
    return 0 if summary["best"] is not None else 1


def cmd_tune(args) -> int:
    cfg = config_from_args(args)
    ensure_writable_dir(args.out, "--out")
    try:
        tune(cfg, Path(args.out), space_path=args.space, budget=args.budget, workers=args.workers,
             storage=args.storage, study=args.study, order=args.order)
    except TuneFailed as e:
        print(f"trainlab tune: stopped at step {e.step}: {e}")
        return 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("search", help="hyperparameter search (coarse-to-fine random by default) on Optuna",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--space", required=True, help="search space YAML: key: loguniform(a, b) | uniform(a, b) | int(a, b) | choice([...])")
    p.add_argument("--out", required=True, help="search directory: study.db, trials/, trials.csv, best.yaml, plots/")
    add_search_args(p)
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("tune", help="the lectures' whole recipe: checks, lr-find, coarse and refined search, final model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--out", required=True, help="tune directory: tune.json, report.html, best.yaml, the search "
                                                "(study.db, trials/, trials.csv, search.json, plots/) and final/")
    p.add_argument("--space", help="search space YAML (default: lr around the lr-find suggestion, weight decay, dropout)")
    p.add_argument("--budget", default="small", choices=("small", "medium"), help="how many trials and epochs (default small)")
    p.add_argument("--workers", type=int, default=1, help="search worker processes (default 1)")
    p.add_argument("--storage", help="database URL for the search study (default: sqlite file OUT/study.db)")
    p.add_argument("--study", help="study name (default: the name of the --out directory)")
    p.add_argument("--order", default="lectures", choices=("lectures", "decay-throughout"),
                   help="lectures (default): constant rate while searching, small weight decay in the range test, "
                        "loops back to step 5 while they help, decay only for the final model; decay-throughout: "
                        "every trial uses the config's schedule (trainlab's earlier behaviour)")
    p.set_defaults(func=cmd_tune)
