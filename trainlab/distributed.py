"""Data-parallel training on torch.distributed: DistributedDataParallel, launched by torchrun.

    trainlab train --nproc 2 -c cfg.yaml                                   # one machine, 2 processes
    torchrun --nproc_per_node=2 -m trainlab train -c cfg.yaml --out runs/x  # the same, by hand
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        --rdzv-id=$JOB -m trainlab train -c cfg.yaml --out /shared/runs/x   # on each of 2 machines

Every rank runs the same program: the same seeded data split, model initialisation and global
batch order; each rank trains on its share of every global batch (``trainlab.data.loader.shard``),
DDP averages the gradients, and rank 0 alone writes the run directory. Backend: NCCL on CUDA
(rank r on ``cuda:LOCAL_RANK``), gloo on CPU. docs/distributed.md says what is identical to
single-process training and what is not.
"""
from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from trainlab.data.loader import shard
from trainlab.device import resolve_device
from trainlab.errors import UserError
from trainlab.evaluate import metrics_from_probs, predict_probs
from trainlab.train import Callback, Trainer

# Environment that torchrun (torch.distributed.run) gives each worker.
ENV_WORLD_SIZE, ENV_RANK, ENV_LOCAL_RANK = "WORLD_SIZE", "RANK", "LOCAL_RANK"
ENV_RESTARTS, ENV_RUN_ID = "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID"

def launched_world_size() -> int:
    """Processes in the job this process belongs to (1 when not started by torchrun)."""
    return int(os.environ.get(ENV_WORLD_SIZE, "1"))

def restart_count() -> int:
    """How many times torchrun has restarted the workers of this job (elastic restarts)."""
    return int(os.environ.get(ENV_RESTARTS, "0"))

def elastic_run_id() -> str | None:
    """torchrun's rendezvous id: the same for every restart of one job, new for each job."""
    return os.environ.get(ENV_RUN_ID)

def rank_seed(seed: int, rank: int) -> int:
    """A 63-bit seed of (seed, rank): each rank's own stream for dropout and other model noise."""
    state = np.random.SeedSequence([int(seed), 0x5EED, int(rank)]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)

@dataclass
class DataParallel:
    """This process's place in a data-parallel job, and the collectives trainlab needs."""

    rank: int
    local_rank: int
    world_size: int
    backend: str
    device: torch.device
    find_unused_parameters: bool = False  # stochastic depth leaves whole blocks out of some steps

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and talks to the console."""
        return self.rank == 0

    def describe(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend, "elastic_run_id": elastic_run_id()}

    # --- model ------------------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around ``model`` for the forward/backward pass only; the caller keeps ``model`` itself
        for state dicts (no ``module.`` prefix), callbacks and evaluation. DDP starts by giving
        every rank rank 0's parameters and buffers."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        # A conv weight with one input channel has two equally valid stride layouts; DDP warns when
        # its gradient comes back in the other one, and copies 9 x C_out numbers: not worth a line.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                   find_unused_parameters=self.find_unused_parameters)

    def convert_sync_bn(self, model: nn.Module) -> nn.Module:
        """Batch norm over the global batch: torch's SyncBatchNorm on CUDA, :class:`GlobalBatchNorm`
        elsewhere (torch's accepts only accelerator tensors)."""
        if self.device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return GlobalBatchNorm.convert(model)

    def seed_rank(self, seed: int) -> None:
        """Give ranks > 0 their own random stream (dropout masks), after the shared initialisation;
        rank 0 keeps the single-process stream."""
        if self.rank:
            torch.manual_seed(rank_seed(seed, self.rank))

    # --- collectives --------------------------------------------------------------------------
    def _counter(self, values) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def share_weight(self, n_local: int) -> float:
        """Weight of this rank's mean loss, ``n_r * W / N``: DDP averages the W per-rank gradients,
        and (1/W) Σ_r (n_r W / N) ∇mean_r = (1/N) Σ_i ∇loss_i, the global mean even when the shares
        are unequal (a last partial batch)."""
        total = self._counter([n_local])
        dist.all_reduce(total)
        self._global_n = int(total.item())
        return n_local * self.world_size / self._global_n

    def reduce_step(self, loss: torch.Tensor, correct: torch.Tensor, n_local: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The step's mean loss and correct count over every rank's share (what one process would log)."""
        sums = torch.stack([loss.detach().double() * n_local, correct.double()])
        dist.all_reduce(sums)
        return (sums[0] / self._global_n).float(), sums[1], self._global_n

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (batch-norm running statistics) on every rank: the model that is
        evaluated is the one rank 0 checkpoints."""
        for b in model.buffers():
            dist.broadcast(b, src=0)

    def on_main(self, fn: Callable[[], object]):
        """``fn()`` run on rank 0 alone, its result (or its UserError) given to every rank; so a file
        only rank 0 can see (another machine's run directory) still decides for all."""
        box: list = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except UserError as e:
                box[0] = ("error", str(e))
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        status, value = box[0]
        if status == "error":
            raise UserError(value)
        return value

    def evaluate(self, models, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 1024,
                 tta: str = "none") -> dict:
        """:func:`trainlab.evaluate.evaluate` with the rows split over the ranks: each predicts its
        shard, one all-reduce assembles the (N, C) probabilities, and every rank computes the same
        metrics from them. W ranks do 1/W of the work each (docs/distributed.md has the timing)."""

        for m in [models] if isinstance(models, nn.Module) else list(models):
            self.broadcast_buffers(m)
        rows = shard(range(len(x)), self.rank, self.world_size)
        probs = torch.zeros(len(x), num_classes, device=x.device)
        if len(rows):
            probs[rows.start:rows.stop] = predict_probs(models, x[rows.start:rows.stop], batch_size, tta)
        dist.all_reduce(probs)  # the other ranks' rows are zeros here: the sum is exact
        return metrics_from_probs(probs, y, num_classes)

    def close(self, finished: bool = False) -> None:
        """Leave the process group. ``finished``: every rank got here without an error, so they
        first wait for each other (rank 0 still writes plots and the report after the last
        collective) and leave together.

        Under load, rank 1 of a finished 2-process run sometimes aborted at exit ("terminate called
        without an active exception", exit -6: 2 of 8 runs of tests/test_distributed.py's
        equivalence tests beside a busy core). The barrier alone did not stop it; collecting
        garbage first did (16 of 16): the DDP wrapper and its reducer, with gloo work and tensors,
        can sit in reference cycles until interpreter shutdown, and are now freed while Python is
        still fully alive."""
        if dist.is_initialized():
            gc.collect()
            if finished:
                dist.barrier()
            dist.destroy_process_group()

def init_from_env(device: str = "auto", timeout: float = 300.0) -> DataParallel | None:
    """Join the process group torchrun set up (None when this is a single process).

    ``timeout`` (seconds) bounds every collective: a rank whose peers stopped answering fails
    instead of waiting forever, so a job that lost a process ends with an error.
    """
    world = launched_world_size()
    if world <= 1:
        return None
    rank, local_rank = int(os.environ[ENV_RANK]), int(os.environ.get(ENV_LOCAL_RANK, "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(dev)
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(f"device={dev.type} cannot run data-parallel (torch.distributed has no backend for it); "
                        "use device=cuda or device=cpu")
    if not dist.is_initialized():
        # torchrun's agent keeps one key-value store across elastic restarts; without a prefix per
        # attempt a restarted rank can read a dead process's address there and fail to connect
        # (gloo "connectFullMesh ... Connection refused", seen in tests/test_distributed.py).
        store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=timedelta(seconds=timeout)))
        store = dist.PrefixStore(f"trainlab/attempt-{restart_count()}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timedelta(seconds=timeout))
    return DataParallel(rank, local_rank, world, backend, dev)

def refuse_under_torchrun(command: str) -> None:
    """Commands other than ``train`` run in one process: under torchrun they stop before doing anything."""
    if launched_world_size() > 1:
        raise UserError(f"trainlab {command} runs in one process, but torchrun started {launched_world_size()}: "
                        f"run it without torchrun (only `trainlab train` is data-parallel; "
                        "`trainlab search --workers N` spreads a search over processes)")

# --- synchronised batch norm ---------------------------------------------------------------------------

class AllReduceSum(torch.autograd.Function):
    """y = Σ_r x_r on every rank. Each rank's loss depends on y, so ∂(Σ_q L_q)/∂x_r = Σ_q ∂L_q/∂y:
    the backward pass is the same all-reduce, of the incoming gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad

class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose statistics are those of the global batch, over every rank (sync_bn on CPU).

        μ = Σ_r Σ_i x_ri / N,   σ² = Σ_r Σ_i (x_ri − μ)² / N,   y = γ (x − μ) / √(σ² + ε) + β

    Both sums are differentiable all-reduces (:class:`AllReduceSum`), so the backward pass
    carries the cross-rank terms of the gradient; the running statistics
    take the unbiased σ²·N/(N−1), as ``nn.BatchNorm`` does. Same parameters and buffers as
    ``nn.BatchNorm*d``, so checkpoints load into the plain model. Statistics are synchronised
    only in training forward passes that record gradients: a ``no_grad`` probe on one rank (the
    monitors) uses its local batch and never waits for the others.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sync = (self.training and torch.is_grad_enabled() and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1)
        if not sync:
            return super().forward(x)
        all_reduce = AllReduceSum.apply
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        dist.all_reduce(count)
        mean = all_reduce(x.sum(dims)) / count
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp_min(1), m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """Replace every ``nn.BatchNorm*d`` in ``module`` (in place) by a GlobalBatchNorm with its state."""
        if isinstance(module, _BatchNorm) and not isinstance(module, cls):
            like = next(module.buffers(), None)
            new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      device=None if like is None else like.device)
            new.load_state_dict(module.state_dict())
            new.train(module.training)
            return new
        for name, child in module.named_children():
            setattr(module, name, cls.convert(child))
        return module

# --- exact resume: every rank's random stream ---------------------------------------------------------

class RankRNG(Callback):
    """Keeps each rank's random stream in the checkpoint (``last.pt`` holds rank 0's as ``rng``;
    this adds all of them), so a resumed job draws the same dropout masks on every rank."""

    name = "rank_rng"

    def __init__(self, dp: DataParallel):
        self.dp, self.states, self._resumed = dp, [], None

    def _gather(self) -> None:
        own = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(self.dp.device) if self.dp.device.type == "cuda" else None}
        self.states = [None] * self.dp.world_size
        dist.all_gather_object(self.states, own)

    def on_train_start(self, trainer: Trainer) -> None:
        if self._resumed is not None and len(self._resumed) == self.dp.world_size:
            mine = self._resumed[self.dp.rank]
            torch.set_rng_state(mine["torch"])
            if mine["cuda"] is not None and self.dp.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], self.dp.device)
        self._resumed = None
        self._gather()

    def on_epoch_end(self, trainer: Trainer, epoch: dict) -> None:
        self._gather()

    def state_dict(self) -> dict:
        return {"states": self.states}

    def load_state_dict(self, state: dict) -> None:
        self._resumed = state.get("states") or None

# --- the launcher ----------------------------------------------------------------------------------

def launch(nproc: int, argv: list[str], max_restarts: int = 0) -> int:
    """``trainlab ARGV`` in ``nproc`` processes on this machine through torch.distributed.run
    (torchrun --standalone): returns the job's exit code (2 when every failed rank said bad input)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if "OMP_NUM_THREADS" not in os.environ and not torch.cuda.is_available():
        # The cores divided between the processes (torchrun alone would give each one thread).
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}",
                                         f"--max-restarts={max_restarts}", "-m", "trainlab", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        codes = {f.exitcode for f in e.failures.values()}
        return 2 if codes == {2} else 130 if codes == {130} else 1
    except KeyboardInterrupt:
        return 130
    return 0
