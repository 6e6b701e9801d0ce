"""``trainlab lab NAME [--out DIR] [--quick] [key=value ...]`` and ``trainlab lab list``.

    trainlab lab list                                   # the experiments, one line each
    trainlab lab schedules --out runs/lab/schedules     # results.json, results.md, plots/, report.html
    trainlab lab dropout --quick                        # tiny sizes: a smoke test in seconds
    trainlab lab activations data.name=mnist data.subset=5000   # overrides apply to every run
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from trainlab.errors import UserError
from trainlab.lab import EXPERIMENTS, run_experiment
from trainlab.log import say_stderr

# The lab's models are small: on a CPU, intra-op threads spend more time synchronising than
# computing (a 2-stage conv net step on 8x8 digits: 8 ms on 1 thread, 95 ms on 2 busy cores).
DEFAULT_THREADS = 1


def cmd_lab(args) -> int:
    if args.name == "list":
        width = max(map(len, EXPERIMENTS.names()))
        for name in EXPERIMENTS:
            print(f"{name:<{width}}  {EXPERIMENTS.get(name).summary}")
        return 0
    EXPERIMENTS.get(args.name)  # an unknown name is a UserError naming the choices
    if args.threads < 1:
        raise UserError(f"bad value {args.threads} for --threads: expected 1 or more")
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path("runs") / "lab" / (args.name + ("-quick" if args.quick else ""))
    say = say_stderr
    say(f"lab {args.name}{' (quick)' if args.quick else ''} → {out}")
    record = run_experiment(args.name, out, quick=args.quick, overrides=args.overrides, say=say)
    if args.quick:
        print(QUICK_NOTE)
    mark = " (quick sizes)" if args.quick else ""
    for c in record["claims"]:
        print(f"[{c['verdict']}{mark}] {c['claim'][:90]}{'…' if len(c['claim']) > 90 else ''}\n    measured: {c['measured']}")
    print(f"wrote {out / 'results.md'}, {out / 'report.html'} in {record['wall_seconds']:.0f}s")
    return 0


QUICK_NOTE = ("--quick ran smoke-test sizes (tiny data, few epochs): the verdicts below show that the experiment "
              "runs, not what it measures; run it without --quick for the real measurement.")


def register(subparsers) -> None:
    p = subparsers.add_parser("lab", help="re-measure a lecture claim: trainlab lab list shows the experiments",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="experiment name, or 'list'")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides for every run, e.g. data.name=mnist data.subset=5000")
    p.add_argument("--out", help="experiment directory (default runs/lab/NAME)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the experiment runs, measures little")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="CPU threads for torch (default 1)")
    p.set_defaults(func=cmd_lab)
