"""Which device a run uses, and what that device can do."""
from __future__ import annotations

import os
import shutil
import sys

import psutil
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


# --- mixed precision ----------------------------------------------------------------------------
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def native_bf16(device: torch.device) -> bool:
    """True where bfloat16 arithmetic runs in hardware: CUDA GPUs of compute capability 8.0
    (Ampere) and later. Older GPUs only emulate it, slower than float32."""
    if device.type != "cuda":
        return False
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def amp_refusal(dtype: str, device: torch.device) -> str | None:
    """Why ``device`` cannot run mixed precision in ``dtype`` ('fp16' or 'bf16'), or None if it can.

    CPU: autocast supports bfloat16 (exact float32 range, so no loss scaling), but float16 there
    has no fast kernels and a GradScaler would only hide underflow, so fp16 is refused.
    CUDA: float16 everywhere; bfloat16 only where it is native (emulated it is slower than fp32).
    MPS: float16 where this torch's autocast knows MPS; bfloat16 is not offered.
    """
    if device.type == "cuda":
        if dtype == "bf16" and not native_bf16(device):
            major, minor = torch.cuda.get_device_capability(device)
            return (f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has no native bfloat16 "
                    "(it needs 8.0, Ampere, or later); use train.amp=fp16 or train.amp=off")
        return None
    if device.type == "cpu":
        if dtype == "fp16":
            return ("float16 mixed precision needs a GPU (cuda or mps); on cpu use train.amp=bf16 "
                    "(CPU autocast runs in bfloat16) or train.amp=off")
        return None
    if device.type == "mps" and dtype == "fp16" and torch.amp.autocast_mode.is_autocast_available("mps"):
        return None
    return f"{dtype} mixed precision is not available on {device.type} with torch {torch.__version__}; use train.amp=off"


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """``train.amp`` → the dtype autocast runs the forward pass in, or None for plain float32.

    auto: bf16 where the device has it natively (Ampere+ GPUs), else off: on a CPU autocast
    mostly adds casts, and float16 without bf16 needs a loss scale, which is a choice the user
    should make (train.amp=fp16). ``on`` is the key's old spelling of fp16 (before bf16 existed).
    A setting the device cannot honour is a UserError naming the key, never silently ignored.
    """
    if amp == "off" or (amp == "auto" and not native_bf16(device)):
        return None
    name = {"auto": "bf16", "on": "fp16"}.get(amp, amp)
    reason = amp_refusal(name, device)
    if reason is not None:
        raise UserError(f"train.amp={amp} cannot be honoured on {device}: {reason}")
    return AMP_DTYPES[name]


# --- torch.compile and the cuDNN autotuner ------------------------------------------------------
def compile_refusal(device: torch.device) -> str | None:
    """Why torch.compile cannot run on ``device`` here, or None. Inductor generates C++ on the CPU
    (a C++ compiler must be on PATH) and Triton kernels on CUDA (triton must be installed)."""
    if device.type == "cpu":
        if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
            return "it compiles C++ for the CPU and no C++ compiler (g++, c++, clang++) is on PATH"
        return None
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "it generates Triton kernels for CUDA and triton is not installed (pip install triton)"
    return None


def check_compile(compile: str, device: torch.device) -> bool:
    """``train.compile`` → whether to compile; a device that cannot compile is a UserError."""
    if compile == "off":
        return False
    reason = compile_refusal(device)
    if reason is not None:
        raise UserError(f"train.compile=on cannot be honoured on {device}: {reason}; or use train.compile=off")
    return True


def configure_backends(device: torch.device, deterministic: bool, cudnn_benchmark: str) -> None:
    """Set the process-wide kernel choices for one run (every run sets all of them, so a run in a
    search never inherits the previous run's).

    cudnn.benchmark times the convolution algorithms for each new input shape and keeps the
    fastest: a gain when shapes are static (the in-memory loader's batches all have one shape but
    the last), and a source of run-to-run differences, so ``deterministic`` turns it off.
    """
    torch.backends.cudnn.benchmark = cudnn_benchmark == "on" or (
        cudnn_benchmark == "auto" and device.type == "cuda" and not deterministic)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic and device.type == "cuda":
        # cuBLAS needs a fixed workspace to be deterministic; read when its handle is first made.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: an op without a deterministic kernel warns (naming the op) instead of stopping a run.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


# --- memory figures -----------------------------------------------------------------------------
def reset_peak_memory(device: torch.device) -> None:
    """Start the device's high-water mark afresh (CUDA); the process's RSS mark cannot be reset."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_rss_mb() -> float:
    """The process's peak resident set size in MiB.

    getrusage's ru_maxrss is the kernel's own high-water mark, so it catches short peaks (a batch
    of activations, a checkpoint being written) that sampling psutil's current RSS would miss;
    psutil has no peak on Linux or macOS. It covers the process's whole life, so in a process
    that runs several trainings (search workers, tests) it is the largest of them so far.
    Linux reports kilobytes, macOS bytes; Windows has no ``resource`` but psutil's peak_wset.
    """
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def peak_memory(device: torch.device) -> dict:
    """summary.json's memory figures: peak_rss_mb always; peak_device_memory_mb on CUDA
    (torch.cuda.max_memory_allocated: the tensors' peak since reset_peak_memory, not the cache)."""
    out = {"peak_rss_mb": round(peak_rss_mb(), 1)}
    if device.type == "cuda":
        out["peak_device_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


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


def memory_bytes(device: torch.device) -> int:
    """Memory the data could occupy: the GPU's total memory on CUDA, else the machine's RAM
    (MPS shares it)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(psutil.virtual_memory().total)
