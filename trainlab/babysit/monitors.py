"""Monitors during training (docs/design.md §4, lecture: "Babysitting the learning process").

Every ``monitor.every`` steps (and at step 1, and at step 0 — the initialisation, before any
update) :class:`Monitors` looks inside the network:

- per-layer activation mean, std and histogram on a fixed probe batch (the lecture's
  "activation statistics" experiment, repeated while training runs);
- the fraction of dead ReLU units (never positive on the whole probe batch) and of saturated
  tanh/sigmoid outputs (|tanh| > 0.99; sigmoid < 0.01 or > 0.99: local gradient < 0.02);
- per-parameter gradient norm ‖∂L/∂W‖ (the last step's ``.grad``);
- the update-to-weight ratio ‖ΔW‖ / ‖W‖ of one update (about 1e-3 is healthy).

Records ``{"kind": "monitor", "step", "epoch", "lr", "layers": [...], "params": [...]}`` go to
``metrics.jsonl`` (and TensorBoard); plots go to ``plots/`` at the end of training; problems are
printed as they appear (``monitor.warn``). :class:`Probe` does the measuring, for this callback
and for :func:`attach_monitors`, which monitors any model in any training loop;
:func:`activation_stats` is the side-effect-free probe that the lab reuses.

Cost, by design: ΔW of a monitored step k needs the weights just before its update. Rather than
keeping a copy of the weights all the time, one copy is taken at the end of step k − 1 (and at
train start for step 1) and dropped after step k. So at the default ``monitor.every=100`` there
is one weight copy, one probe forward pass without gradients, and one host sync per 100 steps;
``benchmarks/monitor_overhead.py`` measures the total.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from trainlab.babysit.diagnosis import HEALTHY_UPDATE_RATIO, UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW, monitor_verdicts, unit_verdicts
from trainlab.callbacks import MetricsLogger
from trainlab.io import read_jsonl
from trainlab.optim import base_lrs, optimizer_base_lr
from trainlab.plots import plt, save_figure
from trainlab.train import Callback, StepInfo, Trainer

# Saturation thresholds: at |tanh(x)| = 0.99 the local gradient 1 − tanh² is 0.02, and at
# σ(x) = 0.01 or 0.99 σ' = σ(1 − σ) ≈ 0.01: a unit there passes back ≤ 2% of its gradient,
# the lecture's "saturated neurons kill the gradients".
TANH_SATURATION = 0.99
SIGMOID_SATURATION = 0.01

# Elementwise activations that are not ReLU, tanh or sigmoid: their statistics are recorded,
# but "dead" and "saturated" do not apply (leaky/parametric ReLUs cannot die, by design).
OTHER_ACTIVATIONS = (nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                     nn.Mish, nn.Softplus, nn.Hardswish, nn.Hardtanh, nn.Softsign, nn.LogSigmoid)


def activation_kind(module: nn.Module) -> str | None:
    """'relu', 'tanh', 'sigmoid', 'other' for an activation module; None for anything else."""
    if isinstance(module, (nn.ReLU, nn.ReLU6)):
        return "relu"
    if isinstance(module, nn.Tanh):
        return "tanh"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    if isinstance(module, OTHER_ACTIVATIONS):
        return "other"
    return None


def display_name(name: str) -> str:
    """'net.features.0.2' → 'features.0.2': every trainlab model sits in a PreprocessedModel."""
    return name[4:] if name.startswith("net.") else name


def probe_points(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, kind) of the modules whose outputs are probed.

    The activation modules when the model has any (what the lecture plots: the output of each
    nonlinearity). Otherwise — maxout nets, whose activation slot is empty, or user models that
    call functional activations — the blocks of ``features`` (or the top-level children).
    """
    points = [(display_name(n), m, k) for n, m in model.named_modules() if (k := activation_kind(m))]
    if points:
        return points
    inner = getattr(model, "net", model)
    blocks = getattr(inner, "features", inner)
    prefix = "features." if blocks is not inner else ""
    return [(f"{prefix}{n}", m, "other") for n, m in blocks.named_children()
            if any(True for _ in m.parameters())]


def layer_stats(name: str, kind: str, h: torch.Tensor, bins: int) -> dict:
    """Statistics of one probed output ``h`` (N, units, ...): a unit is a feature of a vector
    or a channel of a feature map.

    dead_fraction (ReLU): units with h ≤ 0 for every sample and position of the probe batch.
    saturated_fraction (tanh/sigmoid): fraction of outputs in the flat tails (see the constants).
    The histogram spans the activation's range for tanh [−1, 1] and sigmoid [0, 1], else the
    observed [min, max].
    """
    h = h.detach().float()
    units = h.shape[1] if h.dim() > 1 else 1
    is_finite = torch.isfinite(h)
    finite = h.flatten() if bool(is_finite.all()) else h[is_finite]  # no copy of a healthy layer's outputs
    del is_finite
    if kind == "tanh":
        lo, hi = -1.0, 1.0
    elif kind == "sigmoid":
        lo, hi = 0.0, 1.0
    elif finite.numel():
        lo, hi = finite.aminmax()
        lo, hi = float(lo), float(hi)
    else:
        lo, hi = 0.0, 0.0
    if hi <= lo:
        hi = lo + 1e-12
    counts = torch.histc(finite, bins, lo, hi) if finite.numel() else torch.zeros(bins)
    numbers = [h.mean(), h.std() if h.numel() > 1 else torch.zeros(())]
    if kind == "relu":
        per_unit = tuple(d for d in range(h.dim()) if d != 1) if h.dim() > 1 else (0,)
        numbers.append(1.0 - (h > 0).any(dim=per_unit).float().mean())
    if kind == "tanh":
        numbers.append((h.abs() > TANH_SATURATION).float().mean())
    if kind == "sigmoid":
        numbers.append(((h < SIGMOID_SATURATION) | (h > 1 - SIGMOID_SATURATION)).float().mean())
    values = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=h.device) for v in numbers]).tolist()
    return {"name": name, "kind": kind, "units": units, "count": h.numel(), "mean": values[0], "std": values[1],
            "dead_fraction": values[2] if kind == "relu" else None,
            "saturated_fraction": values[2] if kind in ("tanh", "sigmoid") else None,
            "hist": {"lo": lo, "hi": hi, "counts": counts.tolist()}}


@torch.no_grad()
def activation_stats(model: nn.Module, x: torch.Tensor, bins: int = 30) -> list[dict]:
    """Per-layer activation statistics of ``model`` on the batch ``x``, in forward order:
    ``[{name, kind, units, count, mean, std, hist, dead_fraction, saturated_fraction}]``.

    Runs in the model's current mode (train mode sees what the optimiser sees: batch-norm batch
    statistics, dropout) without side effects: no gradients, batch-norm running statistics put
    back, and the random number stream forked so that dropout draws here do not change the
    training run.
    """
    layers: list[dict] = []
    seen: dict[str, int] = {}

    def capture(name: str, kind: str):
        def hook(module, inputs, output):
            # Summarised at once: nothing is kept alive, and a later in-place op cannot alter it.
            seen[name] = seen.get(name, 0) + 1  # a module used twice is probed twice
            layers.append(layer_stats(name if seen[name] == 1 else f"{name}@{seen[name]}", kind, output, bins))
        return hook

    handles = [m.register_forward_hook(capture(n, k)) for n, m, k in probe_points(model)]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    running = [b for m in norms for b in m.buffers(recurse=False)]
    saved = [b.clone() for b in running]
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for buffer, value in zip(running, saved):
            buffer.copy_(value)
    return layers


def weight_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every trainable parameter, to measure the next update ΔW against."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def parameter_stats(model: nn.Module, before: dict[str, torch.Tensor] | None) -> list[dict]:
    """Per trainable parameter tensor: ``{name, shape, weight_norm, grad_norm, update_ratio}``.

    grad_norm = ‖∂L/∂W‖ from ``.grad`` (None before the first backward);
    update_ratio = ‖W − W_before‖ / ‖W‖, the relative size of one update (None without a
    snapshot, or when ‖W‖ = 0, e.g. a bias still at its zero init).
    """
    names, norms = [], []
    nan = torch.tensor(float("nan"))
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        w = p.detach()
        grad = p.grad.detach().norm() if p.grad is not None else nan.to(w.device)
        update = (w - before[name]).norm() if before is not None and name in before else nan.to(w.device)
        names.append((name, list(w.shape)))
        norms.append(torch.stack([w.norm().float(), grad.float(), update.float()]))
    if not names:
        return []
    out = []
    for (name, shape), (weight, grad, update) in zip(names, torch.stack(norms).tolist()):
        ratio = update / weight if math.isfinite(update) and weight > 0 else None
        out.append({"name": display_name(name), "shape": shape, "weight_norm": weight,
                    "grad_norm": grad if math.isfinite(grad) else None, "update_ratio": ratio})
    return out


class Probe:
    """The measuring part of the monitors, for any ``nn.Module``: :meth:`measure` returns one
    record ``{"kind": "monitor", "step", "epoch", "lr", "layers", "params"}`` — activation
    statistics of every probed layer on the fixed batch ``probe_x`` (mean, std, histogram, dead
    and saturated fractions) and, per parameter, weight norm, gradient norm (the last backward's
    ``.grad``) and the update ratio ‖ΔW‖/‖W‖ against the last :meth:`snapshot`.
    """

    def __init__(self, model: nn.Module, probe_x: torch.Tensor, bins: int = 30):
        self.model, self.probe_x, self.bins = model, probe_x, bins
        self.before: dict[str, torch.Tensor] | None = None

    def snapshot(self) -> None:
        """Keep the weights as they are now: the next :meth:`measure` reports the update since."""
        self.before = weight_snapshot(self.model)

    def measure(self, step: int, epoch: int | None = None, lr: float | None = None) -> dict:
        """Probe now (in train mode: what the optimiser sees) and drop the snapshot."""
        was_training = self.model.training
        self.model.train()  # at train start the model may still be in eval mode
        try:
            return {"kind": "monitor", "step": step, "epoch": epoch, "lr": lr,
                    "layers": activation_stats(self.model, self.probe_x, self.bins),
                    "params": parameter_stats(self.model, self.before if step > 0 else None)}
        finally:
            self.model.train(was_training)
            self.before = None


class AttachedMonitors:
    """What :func:`attach_monitors` returns: ``records`` (one per probed step, the first at
    step 0, the initialisation), :meth:`verdicts` and :meth:`detach`. A context manager."""

    def __init__(self, model: nn.Module, probe_x: torch.Tensor, optimizer: torch.optim.Optimizer | None,
                 every: int, bins: int):
        device = next((p.device for p in model.parameters()), probe_x.device)
        self.probe, self.optimizer, self.every = Probe(model, probe_x.to(device), bins), optimizer, every
        self.step, self.records, self._handles = 0, [], []
        if optimizer is not None:
            self._handles = [optimizer.register_step_pre_hook(self._before_step),
                             optimizer.register_step_post_hook(self._after_step)]
        self.records.append(self.probe.measure(0, lr=self._lr()))

    def _lr(self) -> float | None:
        return self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else None

    def due(self, step: int) -> bool:
        return step == 1 or step % self.every == 0

    def _before_step(self, optimizer, args, kwargs) -> None:
        if self.due(self.step + 1):
            self.probe.snapshot()

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.step += 1
        if self.due(self.step):
            self.records.append(self.probe.measure(self.step, lr=self._lr()))

    def measure(self) -> dict:
        """Probe now, outside the schedule (without an optimizer: call :meth:`snapshot` before an
        update and this after it for the update ratios)."""
        record = self.probe.measure(self.step, lr=self._lr())
        self.records.append(record)
        return record

    def snapshot(self) -> None:
        self.probe.snapshot()

    @property
    def base_lr(self) -> float | None:
        """The undecayed rate: the optimiser's ``initial_lr`` (set by create_optimizer and LR
        schedulers), else the highest rate seen."""
        if self.optimizer is not None and "initial_lr" in self.optimizer.param_groups[0]:
            return base_lrs(self.optimizer)[0]
        return max((r["lr"] for r in self.records if r["lr"] is not None), default=None)

    def verdicts(self) -> list[dict]:
        """Problems the records show (dead, saturated or vanishing units, update ratios far from
        1e-3): the live checks of ``trainlab train``, over the latest record and the first."""
        found = {v["code"]: v for v in unit_verdicts(self.records)}
        base = self.base_lr
        for v in monitor_verdicts(self.records[-1], base if base is not None else math.inf):
            found.setdefault(v["code"], v)
        return list(found.values())

    def detach(self) -> None:
        """Remove the optimiser hooks; the records stay."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> AttachedMonitors:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


def attach_monitors(model: nn.Module, probe_x: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
                    every: int = 100, bins: int = 30) -> AttachedMonitors:
    """Monitors for any model in any training loop, without a run directory:

        monitors = attach_monitors(model, x[:256], optimizer, every=50)
        ...                                   # train as usual: optimizer.step() is hooked
        monitors.records[-1]["layers"]        # activation mean/std/histogram, dead/saturated
        monitors.records[-1]["params"]        # grad_norm, update_ratio per parameter
        monitors.verdicts()                   # [{code, message, evidence}]

    Probes at attachment (step 0, the initialisation), after the first update and every
    ``every`` updates, hooking ``optimizer.step`` (a pre-hook keeps the weights the update ratio
    is measured against). Without an optimizer, call ``measure()`` yourself. ``probe_x``: a
    fixed batch of inputs (moved to the model's device); the same images every time, so
    changes are changes of the network. Defaults as the ``monitor`` config keys.
    """
    return AttachedMonitors(model, probe_x, optimizer, every, bins)


class Monitors(Callback):
    """Activation, gradient and update monitors every ``monitor.every`` steps, at step 1, and at
    step 0 (the initialisation, before any update: activations and weight norms only).

    ``probe_x``: a fixed batch of training images on the training device (the same images every
    time, so changes over time are changes of the network, not of the data).
    """

    name = "monitors"
    order = 30  # after the divergence guard (a diverged step is not measured), before the logger

    def __init__(self, cfg: dict, probe_x: torch.Tensor, run_dir: str | Path):
        m = cfg["monitor"]
        self.every, self.bins, self.warn, self.plots = m["every"], m["bins"], m["warn"], m["plots"]
        self.probe_x, self.run_dir = probe_x, Path(run_dir)
        self.base_lr: float | None = None  # read from the optimiser when training starts
        self.probe: Probe | None = None
        self.warned: set[str] = set()
        self._logger: MetricsLogger | None = None

    def due(self, step: int) -> bool:
        return step == 1 or step % self.every == 0

    def on_train_start(self, trainer: Trainer) -> None:
        self.base_lr = optimizer_base_lr(trainer.optimizer)
        self.probe = Probe(trainer.model, self.probe_x, self.bins)
        if trainer.state.step == 0:  # the initialisation itself: the lecture's experiment
            self.record(trainer, 0, 0, trainer.optimizer.param_groups[0]["lr"])
        if self.due(trainer.state.step + 1):
            self.probe.snapshot()

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        if self.due(step.step) and trainer.state.stop_reason is None:  # a diverged step's weights are garbage
            self.record(trainer, step.step, step.epoch, step.lr)
        if self.due(step.step + 1):
            self.probe.snapshot()
        else:
            self.probe.before = None

    def record(self, trainer: Trainer, step: int, epoch: int, lr: float) -> None:
        record = self.probe.measure(step, epoch, lr)
        self.logger(trainer).log(record)
        self.to_tensorboard(trainer, record)
        if self.warn:
            self.warn_live(record)

    def logger(self, trainer: Trainer) -> MetricsLogger:
        """The run's metrics logger, which writes metrics.jsonl; a trainer without one gets one for
        the monitor records alone (no TensorBoard)."""
        if self._logger is None:
            self._logger = trainer.callback(MetricsLogger) or MetricsLogger(self.run_dir, every=0, tensorboard=False)
        return self._logger

    def to_tensorboard(self, trainer: Trainer, record: dict) -> None:
        """Into the metrics logger's TensorBoard writer (one event stream per run)."""
        writer = getattr(trainer.callback(MetricsLogger), "writer", None)
        if writer is None:
            return
        step = record["step"]
        for layer in record["layers"]:
            for key in ("mean", "std", "dead_fraction", "saturated_fraction"):
                if layer[key] is not None and math.isfinite(layer[key]):
                    writer.add_scalar(f"activation_{key}/{layer['name']}", layer[key], step)
            h, n = layer["hist"], layer["count"]
            if n > 1 and math.isfinite(layer["mean"]) and math.isfinite(layer["std"]):
                edges = torch.linspace(h["lo"], h["hi"], len(h["counts"]) + 1)[1:].tolist()
                writer.add_histogram_raw(f"activations/{layer['name']}", h["lo"], h["hi"], n, layer["mean"] * n,
                                         layer["std"] ** 2 * (n - 1) + n * layer["mean"] ** 2, edges, h["counts"], step)
        for p in record["params"]:
            for key in ("grad_norm", "update_ratio"):
                if p[key] is not None:
                    writer.add_scalar(f"{key}/{p['name']}", p[key], step)

    def warn_live(self, record: dict) -> None:
        """Print each kind of problem once, when a monitor first sees it."""
        for v in monitor_verdicts(record, self.base_lr):
            if v["code"] not in self.warned:
                self.warned.add(v["code"])
                tqdm.write(f"trainlab monitor, step {record['step']}: [{v['code']}] {v['message']}")

    def on_train_end(self, trainer: Trainer) -> None:
        self.probe.before = None
        if self.plots:
            plot_monitors(self.run_dir, trainer.model, self.probe_x)

    def state_dict(self) -> dict:
        return {"warned": sorted(self.warned)}

    def load_state_dict(self, state: dict) -> None:
        self.warned = set(state.get("warned", []))


# --- plots (read back from metrics.jsonl, so a resumed run plots its whole history) -------------

def monitor_records(run_dir: str | Path) -> list[dict]:
    return [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if r.get("kind") == "monitor"]


def _depth_colors(n: int):
    return [plt.cm.viridis(i / max(n - 1, 1)) for i in range(n)]


def _series(records: list[dict], section: str, key: str, keep=lambda item: True) -> dict[str, tuple[list, list]]:
    """name → (steps, values) of ``record[section][*][key]`` over the records, in first-seen order."""
    out: dict[str, tuple[list, list]] = {}
    for r in records:
        for item in r[section]:
            if keep(item) and item.get(key) is not None:
                steps, values = out.setdefault(item["name"], ([], []))
                steps.append(r["step"])
                values.append(item[key])
    return out


def _lines(ax, series: dict[str, tuple[list, list]]) -> None:
    for (name, (x, y)), color in zip(series.items(), _depth_colors(len(series))):
        ax.plot(x, y, "o-" if len(x) < 30 else "-", ms=3, color=color, label=name)
    if 0 < len(series) <= 12:
        ax.legend(fontsize=7)


def plot_activation_histograms(records: list[dict], path: Path) -> Path:
    """One panel per layer: the histogram at the first and at the last monitored step."""
    first, last = records[0]["layers"], records[-1]["layers"]
    n = len(first)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, a, b in zip(axes.flat, first, last + [None] * (n - len(last))):
        for layer, step, color in ((a, records[0]["step"], "C0"), (b, records[-1]["step"], "C3")):
            if layer is None or not any(layer["hist"]["counts"]):
                continue
            h = layer["hist"]
            edges = torch.linspace(h["lo"], h["hi"], len(h["counts"]) + 1).tolist()
            ax.stairs(h["counts"], edges, fill=color == "C0", alpha=0.45 if color == "C0" else 1.0, color=color,
                      label=f"step {step}: mean {layer['mean']:.2g}, std {layer['std']:.2g}")
        ax.set_title(f"{a['name']} ({a['kind']})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle("Activation histograms per layer (probe batch)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_activation_std(records: list[dict], path: Path) -> Path:
    """Left: std per layer (the lecture's figure) at the first and last monitored step.
    Right: each layer's std over training."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for r, style in ((records[0], "o-"), (records[-1], "s--")):
        stds = [layer["std"] for layer in r["layers"]]
        left.plot(range(1, len(stds) + 1), stds, style, label=f"step {r['step']}")
    left.set(xlabel="layer (forward order)", ylabel="activation std", title="Activation std by layer")
    if all(layer["std"] and layer["std"] > 0 for r in (records[0], records[-1]) for layer in r["layers"]):
        left.set_yscale("log")
    left.legend()
    _lines(right, _series(records, "layers", "std"))
    right.set(xlabel="step", ylabel="activation std", title="Activation std over training")
    return save_figure(fig, path)


def plot_unit_health(records: list[dict], path: Path) -> Path | None:
    """Fraction of dead ReLU units and of saturated tanh/sigmoid outputs per layer over training."""
    dead, saturated = _series(records, "layers", "dead_fraction"), _series(records, "layers", "saturated_fraction")
    if not dead and not saturated:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    _lines(ax, {f"{k} dead": v for k, v in dead.items()} | {f"{k} saturated": v for k, v in saturated.items()})
    ax.set(xlabel="step", ylabel="fraction", ylim=(-0.02, 1.02),
           title="Dead ReLU units / saturated tanh-sigmoid outputs (probe batch)")
    return save_figure(fig, path)


def plot_update_ratios(records: list[dict], path: Path) -> Path | None:
    """‖ΔW‖/‖W‖ of each weight tensor over training, log axis, with the healthy band around 1e-3."""
    series = _series(records, "params", "update_ratio", keep=lambda p: len(p["shape"]) >= 2)
    series = {k: v for k, v in series.items() if any(y > 0 for y in v[1])}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.axhspan(UPDATE_RATIO_LOW, UPDATE_RATIO_HIGH, color="C2", alpha=0.08, label="no warning")
    ax.axhline(HEALTHY_UPDATE_RATIO, color="C2", ls="--", label="1e-3 (healthy)")
    _lines(ax, series)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="‖ΔW‖ / ‖W‖", title="Update-to-weight ratio per weight tensor")
    return save_figure(fig, path)


def plot_grad_norms(records: list[dict], path: Path) -> Path | None:
    """‖∂L/∂W‖ of each weight tensor over training, log axis."""
    series = _series(records, "params", "grad_norm", keep=lambda p: len(p["shape"]) >= 2)
    series = {k: v for k, v in series.items() if any(y > 0 for y in v[1])}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    _lines(ax, series)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="‖∂L/∂W‖", title="Gradient norm per weight tensor")
    return save_figure(fig, path)


def first_layer_filters(model: nn.Module, net_input_shape: tuple) -> torch.Tensor | None:
    """The first layer's weights as images (K, C, H, W): a conv layer's filters, or a linear
    layer's rows reshaped to the input image (each row is a template the unit matches)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach()
        if isinstance(module, nn.Linear):
            shape = tuple(net_input_shape)
            if len(shape) == 3 and module.in_features == math.prod(shape):
                return module.weight.detach().reshape(-1, *shape)
            return None
    return None


def filter_grid(filters: torch.Tensor, max_filters: int = 64, columns: int = 8) -> torch.Tensor:
    """Tile filters into one image (H', W', 3) with 1-pixel gaps, each scaled to [0, 1] on its own
    (only the pattern matters). Colour when the filter has 3 channels, else its first channel."""
    f = filters[:max_filters].float().cpu()
    f = f if f.shape[1] == 3 else f[:, :1].expand(-1, 3, -1, -1)
    lo = f.amin(dim=(1, 2, 3), keepdim=True)
    hi = f.amax(dim=(1, 2, 3), keepdim=True)
    f = (f - lo) / (hi - lo).clamp_min(1e-12)
    k, _, h, w = f.shape
    cols = min(columns, k)
    rows = math.ceil(k / cols)
    grid = torch.ones(3, rows * (h + 1) + 1, cols * (w + 1) + 1)
    for i in range(k):
        r, c = divmod(i, cols)
        grid[:, 1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = f[i]
    return grid.permute(1, 2, 0)


def plot_first_layer_filters(model: nn.Module, net_input_shape: tuple, path: Path) -> Path | None:
    filters = first_layer_filters(model, net_input_shape)
    if filters is None:
        return None
    grid = filter_grid(filters)
    fig, ax = plt.subplots(figsize=(min(10, 1 + grid.shape[1] / 12), min(10, 1 + grid.shape[0] / 12)))
    ax.imshow(grid.numpy(), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"First-layer filters ({len(filters)} of shape {tuple(filters.shape[1:])}, "
                 f"showing {min(len(filters), 64)})", fontsize=9)
    return save_figure(fig, path)


def plot_monitors(run_dir: str | Path, model: nn.Module | None = None, probe_x: torch.Tensor | None = None) -> list[Path]:
    """Every monitor plot of a run into ``run_dir/plots``; the filters need the model."""
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    records = monitor_records(run_dir)
    out: list[Path | None] = []
    if records and records[0]["layers"]:
        out += [plot_activation_histograms(records, plots / "activation_histograms.png"),
                plot_activation_std(records, plots / "activation_std.png"),
                plot_unit_health(records, plots / "dead_saturated_units.png")]
    if records:
        out += [plot_update_ratios(records, plots / "update_ratios.png"),
                plot_grad_norms(records, plots / "grad_norms.png")]
    if model is not None and probe_x is not None:
        preprocess = getattr(model, "preprocess", None)
        with torch.no_grad():
            shape = tuple(preprocess(probe_x[:1]).shape[1:]) if preprocess is not None else tuple(probe_x.shape[1:])
        out.append(plot_first_layer_filters(model, shape, plots / "first_layer_filters.png"))
    return [p for p in out if p is not None]
