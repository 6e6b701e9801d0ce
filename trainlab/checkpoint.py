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


# --- model weights without wrapper prefixes ---------------------------------------------------
# torch.compile's OptimizedModule keeps the model as ``_orig_mod`` and DistributedDataParallel
# (like DataParallel) as ``module``, so their state dicts prefix every key. Checkpoints hold the
# plain model's keys: a compiled or multi-process run's weights load into a plain model, and
# --resume works across train.compile and world sizes.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def strip_wrapper_prefixes(state: dict) -> dict:
    """Drop the wrapper prefixes that every key shares (repeatedly: DDP inside compile gives
    ``_orig_mod.module.``). A key set without a common wrapper prefix is returned unchanged."""
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = type(state)((k[len(prefix):], v) for k, v in state.items())
    return state


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside torch.compile / DDP / DataParallel wrappers (nested in any order)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        else:
            return model


def model_state(model: torch.nn.Module) -> dict:
    """The weights to checkpoint: the plain model's state dict, whatever wraps it."""
    return unwrap_model(model).state_dict()


def load_model_state(model: torch.nn.Module, state: dict, strict: bool = True):
    """Load checkpointed weights into ``model`` (plain or wrapped); keys saved with wrapper
    prefixes (by an older trainlab or another tool) load as well."""
    model = unwrap_model(model)
    if state.keys() != model.state_dict().keys():  # a plain model may itself have a child named 'module'
        state = strip_wrapper_prefixes(state)
    return model.load_state_dict(state, strict=strict)
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
