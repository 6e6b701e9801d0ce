"""Command-line pieces every sub-command shares: a config file plus dotted overrides."""
from __future__ import annotations

import argparse

from trainlab.config import load_config


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=0.1")


def config_from_args(args) -> dict:
    return load_config(args.config, args.overrides)
