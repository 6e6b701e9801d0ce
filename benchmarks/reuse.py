"""What the benchmarks share: runs are reused when finished, so a long benchmark can be stopped
and started again (``python benchmarks/<name>.py`` puts this folder on the import path)."""
from __future__ import annotations

import json
from pathlib import Path

from trainlab.config import load_config
from trainlab.run import train_run


def quiet(msg: str) -> None:
    pass


def finished(out: Path) -> dict | None:
    """The summary.json of a finished run in ``out``, else None."""
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def train(out: Path, overrides: list[str]) -> dict:
    """train_run into ``out`` unless a finished run is already there; returns its summary."""
    if finished(out) is None:
        print(f"training {out.name} ...", flush=True)
        # an interrupted run continues from its last.pt
        train_run(load_config(None, overrides), out, resume=(out / "checkpoints" / "last.pt").exists(), say=quiet)
    return finished(out)
