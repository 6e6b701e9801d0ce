"""The ``trainlab`` command (also ``python -m trainlab``).

    trainlab train                                  # digits, the zero-setup default
    trainlab train -c examples/mnist.yaml data.root=../shared/data --out runs/mnist
    trainlab train --resume runs/mnist              # continue an interrupted run exactly
    trainlab evaluate runs/mnist --tta crops        # test metrics of best.pt
    trainlab data                                   # which data sets are where
    trainlab config-keys                            # every configuration key
    trainlab --import my_models train model.name=mine   # a model of yours (see trainlab.plugins)

Exit codes (SPEC §8): 0 success; 2 bad input, with a one-paragraph message and no traceback;
1 anything else (including a run stopped because its loss diverged).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from trainlab import __version__
from trainlab.errors import UserError
from trainlab.plugins import load_plugins

# Modules that add their own sub-commands: each has ``register(subparsers)``.
COMMAND_MODULES = [
    "trainlab.babysit.commands",
    "trainlab.search.commands",
    "trainlab.ensemble",
    "trainlab.transfer",
    "trainlab.lab.commands",
    "trainlab.predict",
    "trainlab.export",
    "trainlab.compare",
]


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=0.1")


def config_from_args(args) -> dict:
    from trainlab.config import load_config

    return load_config(args.config, args.overrides)


def cmd_train(args) -> int:
    from trainlab.config import load_config
    from trainlab.run import default_out_dir, train_run

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
    summary = train_run(cfg, out, resume=bool(args.resume))
    stop = summary.get("stop_reason") or ""
    return 1 if stop.startswith("diverged") else 0


def cmd_evaluate(args) -> int:
    from trainlab.checkpoint import checkpoint_path, load_checkpoint
    from trainlab.classifier import load_classifier
    from trainlab.config import flatten, parse_overrides, validate
    from trainlab.data import load_data
    from trainlab.device import resolve_device
    from trainlab.evaluate import evaluate
    from trainlab.io import write_json
    from trainlab.report import plot_confusion

    src = Path(args.run)
    path = checkpoint_path(src, args.checkpoint)
    ckpt = load_checkpoint(path)
    cfg = validate({**flatten(ckpt["config"]), **parse_overrides(args.overrides)})
    device = resolve_device(cfg["device"])
    model = load_classifier(ckpt, device)
    data = load_data(cfg)
    if data.test_y is None or len(data.test_y) == 0:
        raise UserError(f"data set {cfg['data']['name']!r} has no test split to evaluate on")
    views = {"none": 1, "flip": 2, "crops": 10}[args.tta]
    print(f"evaluating {path} on {len(data.test_y)} test images" + (f", {views} views each (tta={args.tta})" if views > 1 else ""),
          flush=True)
    m = evaluate(model, data.test_x.to(device), data.test_y.to(device), data.num_classes,
                 cfg["train"]["eval_batch_size"], tta=args.tta, progress=args.tta != "none" and sys.stderr.isatty())
    out = Path(args.out) if args.out else (src if src.is_dir() else src.parent)
    out.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": str(path), "tta": args.tta, "test_loss": m["loss"], "test_acc": m["acc"],
              "test_top5": m["top5"], "per_class_acc": m["per_class_acc"], "confusion": m["confusion"],
              "classes": data.classes}
    write_json(out / "evaluation.json", result)
    plot_confusion(m["confusion"], list(data.classes), out / "plots" / "confusion.png")
    print(f"test_loss {m['loss']:.4f}  top-1 {m['acc']:.4f}  top-5 {m['top5']:.4f}  (tta={args.tta})")
    for name, acc in zip(data.classes, m["per_class_acc"]):
        print(f"  {name:>16}: {acc:.4f}")
    print(f"wrote {out / 'evaluation.json'}")
    return 0


def cmd_data(args) -> int:
    from trainlab.data import describe_datasets

    cfg = config_from_args(args)
    for d in describe_datasets(cfg["data"]):
        mark = "present" if d["present"] else "absent "
        print(f"{d['name']:>14}  {mark}  {d['folder']}  {d.get('note', '')}")
    return 0


def cmd_report(args) -> int:
    from trainlab.report import write_report

    run = Path(args.run)
    if not run.is_dir():
        raise UserError(f"{str(run)!r} is not a run directory")
    print(f"wrote {write_report(run)}")
    return 0


def cmd_config_keys(args) -> int:
    from trainlab.config import keys_table

    print(keys_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainlab", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"trainlab {__version__}")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first: your components registered with trainlab.plugins "
                             "(e.g. @register_model('mine') for model.name=mine); repeatable")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model into a run directory")
    add_config_args(p)
    p.add_argument("--out", help="run directory (default runs/<data>-<model>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.pt")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test metrics of a run's checkpoint")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.root=DIR")
    p.add_argument("--checkpoint", default="best", help="best or last (for a run directory)")
    p.add_argument("--tta", default="none", choices=("none", "flip", "crops"), help="test-time augmentation")
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

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():  # docstrings use reStructuredText's ``code``; a terminal shows `code`
        p.description = (p.description or "").replace("``", "`")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after options too (`trainlab lab dropout --quick data.name=mnist`);
    # argparse's intermixed parsing does not support sub-commands, so collect the leftovers here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        load_plugins(args.imports)
        return args.func(args)
    except UserError as e:
        print(f"trainlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("trainlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
