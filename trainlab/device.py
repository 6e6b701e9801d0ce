"""Which device a run uses, and what that device can do."""
from __future__ import annotations

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


def memory_bytes(device: torch.device) -> int:
    """Memory the data could occupy: the GPU's total memory on CUDA, else the machine's RAM
    (MPS shares it)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    import psutil

    return int(psutil.virtual_memory().total)
