"""The ``trainlab`` command (also ``python -m trainlab``).

    trainlab train                                  # digits, the zero-setup default
    trainlab train -c examples/mnist.yaml data.root=../shared/data --out runs/mnist
    trainlab train --resume runs/mnist              # continue an interrupted run exactly
    trainlab train --nproc 2 -c examples/mnist.yaml # data-parallel, 2 processes (docs/distributed.md)
    trainlab evaluate runs/mnist --tta crops        # test metrics of best.pt
    trainlab data                                   # which data sets are where
    trainlab config-keys                            # every configuration key
    trainlab --import my_models train model.name=mine   # a model of yours (see trainlab.plugins)

Exit codes (docs/design.md §8, §9): 0 success; 2 bad input, with a one-paragraph message and no traceback;
130 interrupted by Ctrl-C (SIGINT; the run is resumable); 1 anything else (including a run stopped
because its loss diverged).
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from trainlab import __version__, compare, distributed, ensemble, export, predict, transfer
from trainlab.api import evaluate
from trainlab.arguments import add_config_args, config_from_args
from trainlab.babysit import commands as babysit_commands
from trainlab.checkpoint import load_checkpoint
from trainlab.config import keys_table, load_config
from trainlab.data import describe_datasets
from trainlab.errors import UserError, short_text
from trainlab.io import ensure_writable_dir, write_json
from trainlab.lab import commands as lab_commands
from trainlab.log import say, set_verbosity
from trainlab.plots import plot_confusion
from trainlab.plugins import load_plugins
from trainlab.report import write_report
from trainlab.run import default_out_dir, prepare_run_dir, train_run
from trainlab.schema import SCHEMA
from trainlab.search import commands as search_commands

# Modules that add their own sub-commands: each has ``register(subparsers)``.
COMMAND_MODULES = [babysit_commands, search_commands, ensemble, transfer, lab_commands, predict, export, compare]


def cmd_train(args) -> int:
    under_torchrun = distributed.launched_world_size() > 1
    if args.nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc > 1 and under_torchrun:
        raise UserError("--nproc starts its own processes; under torchrun leave it out (torchrun's "
                        "--nproc_per_node says how many)")
    if under_torchrun and not (args.out or args.resume):
        raise UserError("under torchrun give --out DIR: every rank, and every elastic restart, must agree "
                        "on the run directory")
    if args.resume:
        out = Path(args.resume)
        if not (out / "config.yaml").is_file():
            raise UserError(f"cannot resume {str(out)!r}: no config.yaml there (is it a trainlab run directory?)")
        if args.config:
            raise UserError("--resume continues a run with its own config.yaml; do not pass -c")
        cfg = load_config(out / "config.yaml", args.overrides)
    else:
        cfg = config_from_args(args)
        out = Path(args.out) if args.out else default_out_dir(cfg)
    if args.nproc > 1:  # bad config or arguments stop here, before any process starts
        if not args.resume:
            prepare_run_dir(out, resume=False)
        return distributed.launch(args.nproc, launch_argv(args.argv, out), args.max_restarts)
    dp = distributed.init_from_env(cfg["device"], cfg["train"]["dist_timeout"])
    finished = False
    try:
        resume = bool(args.resume)
        if not resume and distributed.restart_count() > 0:
            resume = elastic_resume(out, dp)
        summary = train_run(cfg, out, resume=resume, data_parallel=dp, force=args.force)
        finished = True
    finally:
        if dp is not None:
            dp.close(finished)
    stop = summary.get("stop_reason") or ""
    return 1 if stop.startswith("diverged") else 0


def elastic_resume(out: Path, dp) -> bool:
    """torchrun restarted this job (``--max-restarts``): continue from ``last.pt`` when this job
    wrote it (its checkpoint carries torchrun's run id), so a restart never takes over another run."""
    run_id = distributed.elastic_run_id()

    def decide() -> bool:
        last = out / "checkpoints" / "last.pt"
        if not last.is_file() or run_id in (None, "none"):  # "none": torchrun's default, shared by every job
            return False
        return load_checkpoint(last).get("launch", {}).get("elastic_run_id") == run_id

    resume = decide() if dp is None else dp.on_main(decide)
    if resume and (dp is None or dp.is_main):
        say(f"torchrun restart: resuming {out} from checkpoints/last.pt")
    return resume


def launch_argv(argv: list[str], out: Path) -> list[str]:
    """The ``trainlab train`` arguments for each process: without --nproc/--max-restarts, with the
    run directory fixed here (a default name has a time stamp that each process would redo)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--nproc", "--max-restarts"):
            skip = True
        elif not a.startswith(("--nproc=", "--max-restarts=")):
            kept.append(a)
    if not any(a == "--out" or a.startswith("--out=") or a == "--resume" or a.startswith("--resume=") for a in kept):
        kept += ["--out", str(out)]
    return kept


def cmd_evaluate(args) -> int:
    src = Path(args.run)
    out = Path(args.out) if args.out else (src if src.is_dir() else src.parent)
    ensure_writable_dir(out, "--out")
    result = evaluate(src, args.checkpoint, args.tta, args.overrides, progress=args.tta != "none" and sys.stderr.isatty(),
                      say=say)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluation.json", result)
    plot_confusion(result["confusion"], list(result["classes"]), out / "plots" / "confusion.png")
    print(f"test_loss {result['test_loss']:.4f}  top-1 {result['test_acc']:.4f}  top-5 {result['test_top5']:.4f}  "
          f"(tta={args.tta})")
    for name, acc in zip(result["classes"], result["per_class_acc"]):
        print(f"  {name:>16}: {acc:.4f}")
    print(f"wrote {out / 'evaluation.json'}")
    return 0


def cmd_data(args) -> int:
    cfg = config_from_args(args)
    for d in describe_datasets(cfg["data"]):
        mark = "present" if d["present"] else "absent "
        print(f"{d['name']:>14}  {mark}  {d['folder']}  {d.get('note', '')}  [{d['stream']}]")
    return 0


def cmd_report(args) -> int:
    run = Path(args.run)
    if not run.is_dir():
        raise UserError(f"{str(run)!r} is not a run directory")
    print(f"wrote {write_report(run)}")
    return 0


def cmd_config_keys(args) -> int:
    print(keys_table())
    return 0


def plain_help(docstring: str) -> str:
    """A module docstring as a command's help: `code` for ``code``, and without the pointers into
    ../shared/reference/ (file numbers mean nothing to someone reading --help)."""
    return re.sub(r" \(reference/\d{3}\)|, reference/\d{3}", "", docstring.replace("``", "`"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainlab", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"trainlab {__version__}")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first: your components registered with trainlab.plugins "
                             "(e.g. @register_model('mine') for model.name=mine); repeatable")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="print warnings and errors only (no progress lines); before the sub-command")
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="print debug messages too; before the sub-command")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model into a run directory")
    add_config_args(p)
    p.add_argument("--out", help="run directory (default runs/<data>-<model>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.pt")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine, started through torch.distributed.run (default 1)")
    p.add_argument("--max-restarts", type=int, default=0,
                   help="with --nproc: restart the processes this many times after a failure, resuming from last.pt")
    p.add_argument("--force", action="store_true",
                   help="write the run into a non-empty --out folder that is not a trainlab run (other files are kept)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test metrics of a run's checkpoint")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.root=DIR")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="best or last (for a run directory)")
    p.add_argument("--tta", default="none", choices=SCHEMA["augment.tta"].choices, help="test-time augmentation")
    p.add_argument("--out", help="where evaluation.json goes (default: the run directory)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("data", help="list data sets and where each is looked for")
    add_config_args(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("report", help="rebuild report.html and plots of a run directory")
    p.add_argument("run")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("config-keys", help="print every configuration key as a Markdown table")
    p.set_defaults(func=cmd_config_keys)

    for module in COMMAND_MODULES:
        module.register(sub)
    for p in sub.choices.values():  # docstrings use reStructuredText's ``code``; a terminal shows `code`
        p.description = plain_help(p.description or "")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after options too (`trainlab lab dropout --quick data.name=mnist`);
    # argparse's intermixed parsing does not support sub-commands, so collect the leftovers here.
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    args.argv = argv
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    set_verbosity(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    try:
        if args.command != "train":
            distributed.refuse_under_torchrun(args.command)
        load_plugins(args.imports)
        return args.func(args)
    except UserError as e:
        print(f"trainlab: error: {short_text(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("trainlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
