"""``trainlab check`` and ``trainlab lr-find`` (docs/design.md §8), and the functions behind them.

    trainlab check                                   # sanity checks of the default config
    trainlab check -c my.yaml model.head_scale=100   # exits 1: initial loss far from ln C
    trainlab lr-find optim.name=sgd --out runs/lr    # range test, suggested rate, plot

Exit codes: ``check`` 0 when every check passes, 1 when one fails (its advice is printed);
``lr-find`` 0; both 2 for a bad config.

Other modules (search, tune) call the Python functions::

    from trainlab.babysit.commands import lr_find, run_checks
    results = run_checks(cfg, out_dir)      # [{name, passed, value, expected, advice, details}]
    found = lr_find(cfg, out_dir)           # {suggested_lr, lrs, losses, smoothed, verdict, ...}
"""
from __future__ import annotations

from pathlib import Path

from trainlab.arguments import add_config_args, config_from_args
from trainlab.babysit.checks import run_checks
from trainlab.babysit.lr_find import MAX_LR, MIN_LR, STEPS, lr_find
from trainlab.run import default_out_dir


def out_dir(args, cfg: dict, command: str) -> Path:
    if args.out:
        return Path(args.out)
    return default_out_dir(cfg, command)


def cmd_check(args) -> int:
    cfg = config_from_args(args)
    results = run_checks(cfg, out_dir(args, cfg, "check"))
    return 0 if all(r["passed"] for r in results) else 1


def cmd_lr_find(args) -> int:
    cfg = config_from_args(args)
    lr_find(cfg, out_dir(args, cfg, "lr-find"), steps=args.steps, min_lr=args.min_lr, max_lr=args.max_lr)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("check", help="sanity checks: initial loss vs ln C, overfit a small sample, gradient check")
    add_config_args(p)
    p.add_argument("--out", help="where checks.json goes (default runs/check-<data>-<model>-<time>)")
    p.set_defaults(func=cmd_check)

    p = subparsers.add_parser("lr-find", help="learning-rate range test: loss against an exponentially growing rate")
    add_config_args(p)
    p.add_argument("--out", help="where lr_find.json and plots/lr_find.png go (default runs/lr-find-<data>-<model>-<time>)")
    p.add_argument("--steps", type=int, default=STEPS, help=f"iterations of the sweep (default {STEPS})")
    p.add_argument("--min-lr", type=float, default=MIN_LR, help=f"first rate (default {MIN_LR:g})")
    p.add_argument("--max-lr", type=float, default=MAX_LR, help=f"last rate (default {MAX_LR:g})")
    p.set_defaults(func=cmd_lr_find)


__all__ = ["register", "run_checks", "lr_find"]
