"""What ``--resume`` may change. A checkpoint carries the config it was trained with
(``checkpoint_meta``); a resumed run must continue *that* training, so the config it would resume
with (``RUN/config.yaml`` plus the command's overrides) is compared with it key by key:

- keys in :data:`SAFE_ON_RESUME` change nothing already trained (how long to go on, how often to
  log, where the same data files now live): they are applied, and recorded in ``metrics.jsonl``
  as an event ``{"kind": "event", "event": "resume_config_changed", "changes": ...}``;
- any other difference is refused (exit 2) naming the keys: the weights, optimiser state and
  record in the run directory belong to the old values, and mixing them would silently produce
  a run that no config describes.

The check reads only ``config`` from a checkpoint, so it holds for every ``last.pt``: written at
an epoch's end or in the middle of one.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import psutil

from trainlab.config import SCHEMA, as_flat, flatten, resolve_paths, validate
from trainlab.errors import UserError, short

# key → why changing it on resume is safe (docs/README list these).
SAFE_ON_RESUME: dict[str, str] = {
    "train.epochs": "extend (or shorten) a run; the schedule's length follows it as for a new run",
    "train.max_steps": "extend (or shorten) a run by steps",
    "train.log_every": "how often the training loss is logged",
    "train.progress": "the console progress bar",
    "monitor.every": "how often monitors probe (they read the model; they do not change it)",
    "data.root": "where the same data files now live",
    "data.download": "whether missing public files may be downloaded",
    "data.stream": "how the same batches reach the model (streamed and in-memory batches are identical)",
    "data.workers": "how many processes decode streamed batches",
    "data.prefetch": "how far ahead streamed batches are decoded",
    "data.memory_limit_gb": "when data.stream=auto streams",
    "train.checkpoint_every": "how often last.pt is written",
    "train.compile": "whether the same forward pass is compiled (checkpoints hold the plain model)",
    "train.cudnn_benchmark": "which convolution kernels compute the same function",
    "train.dist_timeout": "how long a rank waits for the others",
    "device": "where the same training continues (e.g. a CPU run resumed on a GPU machine)",
}


def trained_config(ckpt_config: dict, source: str | os.PathLike) -> dict:
    """The validated config a checkpoint carries; a damaged one is a UserError naming the file."""
    try:
        return validate(flatten(resolve_paths(ckpt_config)))
    except UserError as e:
        raise UserError(f"the config inside {str(source)!r} is damaged ({e}); use the run's other checkpoint") from None


def config_changes(trained: dict, requested: dict) -> dict[str, tuple]:
    """key → (value trained with, value requested) for every key whose values differ."""
    old = as_flat(trained_config(trained, "the checkpoint"))
    new = as_flat(resolve_paths(requested))
    return {k: (old[k], new[k]) for k in SCHEMA if old[k] != new[k]}


def check_resume_config(trained: dict, requested: dict, source: str | os.PathLike) -> dict[str, tuple]:
    """The safe changes (see :data:`SAFE_ON_RESUME`) between the config a checkpoint was trained
    with and the one a resume asks for; raises a UserError naming every other changed key."""
    changes = config_changes(trained, requested)
    unsafe = {k: v for k, v in changes.items() if k not in SAFE_ON_RESUME}
    if unsafe:
        listed = "; ".join(f"{k}: {short(a, 40)} in the checkpoint, {short(b, 40)} now" for k, (a, b) in list(unsafe.items())[:8])
        more = f" (and {len(unsafe) - 8} more)" if len(unsafe) > 8 else ""
        raise UserError(f"cannot resume {str(source)!r} with a changed config: {listed}{more}. The checkpoint was trained "
                        "with the old values; undo the change (in config.yaml or the overrides), or start a new run "
                        f"with `trainlab train -c {Path(source) / 'config.yaml'} KEY=VALUE --out NEW_DIR`. Only "
                        f"{', '.join(SAFE_ON_RESUME)} may change on resume")
    return changes


def change_event(changes: dict[str, tuple], epoch: int, step: int) -> dict:
    """The metrics.jsonl record of the safe changes a resume applied."""
    return {"kind": "event", "event": "resume_config_changed", "epoch": epoch, "step": step,
            "changes": {k: {"from": a, "to": b} for k, (a, b) in changes.items()}}


_TEMP = re.compile(r"^\..+\.tmp-(\d+)$")


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files (``.last.pt.tmp-PID``, ``.summary.json.tmp-PID``) that an atomic
    write cut short by a kill left behind, when their writer process is gone."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            m = _TEMP.match(f.name)
            if m and f.is_file() and (int(m.group(1)) == os.getpid() or not psutil.pid_exists(int(m.group(1)))):
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed
