"""Which device a run uses, and what that device can do."""
from __future__ import annotations

import os

import torch

from trainlab.errors import UserError


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda, then mps, then cpu. Asking for an absent device is a UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available; use device=auto or device=cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device=mps but MPS is not available; use device=auto or device=cpu")
    return torch.device(name)


def place_worker(index: int, workers: int) -> str:
    """Put worker ``index`` of ``workers`` on this machine where it does not crowd the others.

    With G GPUs: ``cuda:(index mod G)`` becomes the current device, which ``device=cuda`` and
    ``device=auto`` then mean. On CPU: ``cores // workers`` torch threads each, instead of every
    worker starting one thread per core. Returns where the worker went (for its log line).
    """
    if torch.cuda.is_available():
        gpu = index % torch.cuda.device_count()
        torch.cuda.set_device(gpu)
        return f"cuda:{gpu}"
    threads = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    return f"cpu, {threads} thread(s)"
