"""Checkpoints: written atomically, read with ``weights_only=True`` (a checkpoint from elsewhere
can never run code). A checkpoint is a plain dict of tensors and plain Python values:

    format, config, classes, input_shape, num_classes, model (state dict), epoch, step,
    and in ``last.pt`` also optimizer, scheduler, scaler, rng, callbacks, history.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from trainlab.errors import UserError

FORMAT = "trainlab-checkpoint-1"


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside ``path``, then rename over it (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"format": FORMAT, **obj}, tmp)
    os.replace(tmp, path)


def checkpoint_path(source: str | os.PathLike, which: str = "best") -> Path:
    """The checkpoint a command reads: ``source`` itself if it is a file, else the run directory's
    ``checkpoints/<which>.pt`` (which: best or last)."""
    source = Path(source)
    if source.is_dir():
        if which not in ("best", "last"):
            raise UserError(f"--checkpoint {which!r}: choose best or last for a run directory, or give a .pt file")
        return source / "checkpoints" / f"{which}.pt"
    return source


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint safely; a missing or corrupt file is a UserError naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist; give a run directory or a .pt file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as e:
        raise UserError(f"checkpoint {str(path)!r} is corrupt or not a torch checkpoint ({str(e).splitlines()[0]}); "
                        "use the other checkpoint of the run or train again") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {str(path)!r} holds a {type(ckpt).__name__}, not a trainlab checkpoint or state dict")
    return ckpt


def is_trainlab_checkpoint(ckpt: dict) -> bool:
    return ckpt.get("format") == FORMAT
