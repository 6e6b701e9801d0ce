"""Checkpoints: written atomically, read with ``weights_only=True`` (a checkpoint from elsewhere
can never run code). A checkpoint is a plain dict of tensors and plain Python values:

    format, config, classes, input_shape, num_classes, model (state dict), epoch, step,
    and in ``last.pt`` also optimizer, scheduler, scaler, rng, callbacks, history.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from trainlab.errors import UserError, first_line

FORMAT = "trainlab-checkpoint-1"


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside ``path``, then rename over it (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"format": FORMAT, **obj}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint safely; a missing or corrupt file is a UserError naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist; give a run directory or a .pt file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001
        # torch.load raises many kinds of error on damaged bytes (RuntimeError, EOFError,
        # UnpicklingError, BadZipFile, KeyError, MemoryError, ...: its unpickler and zip reader
        # meet them in many places); with weights_only=True any of them means a bad file.
        raise UserError(f"checkpoint {str(path)!r} is corrupt or not a torch checkpoint ({first_line(e)}); "
                        "use the other checkpoint of the run or train again") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {str(path)!r} holds a {type(ckpt).__name__}, not a trainlab checkpoint or state dict")
    return ckpt


def is_trainlab_checkpoint(ckpt: dict) -> bool:
    return ckpt.get("format") == FORMAT


# What each kind of checkpoint must hold, and of what type, for trainlab to use it.
MODEL_KEYS = {"config": dict, "model": dict, "classes": list, "num_classes": int, "input_shape": list,
              "net_input_shape": list}
RESUME_KEYS = {**MODEL_KEYS, "optimizer": dict, "scaler": dict, "epoch": int, "step": int, "history": list,
               "rng": dict, "callbacks": dict}


def require_trainlab_checkpoint(ckpt: dict, path, keys: dict = MODEL_KEYS) -> dict:
    """``ckpt`` if it is a trainlab checkpoint holding ``keys`` (name → type), else a UserError
    naming the file and what is missing (a plain state dict has no config to rebuild the model)."""
    if not is_trainlab_checkpoint(ckpt):
        raise UserError(f"{str(path)!r} is not a trainlab checkpoint (it has no format {FORMAT!r}: a plain state dict "
                        "has no config or classes to rebuild the model from); give a run directory or its "
                        "checkpoints/best.pt, or use `trainlab finetune --from` for a state dict")
    bad = [k for k, kind in keys.items() if not isinstance(ckpt.get(k), kind)]
    if bad:
        raise UserError(f"checkpoint {str(path)!r} is incomplete or damaged: {', '.join(bad)} missing or of the "
                        "wrong type; use the run's other checkpoint or train again")
    return ckpt
