"""``trainlab export``: a trained model as one file that runs without trainlab.

    trainlab export runs/mnist --format exported       # torch.export → runs/mnist/export/model.pt2
    trainlab export runs/mnist --format torchscript    # torch.jit    → runs/mnist/export/model.torchscript.pt
    trainlab export runs/mnist --format onnx           # needs: pip install onnx onnxscript

The exported module is the whole :class:`~trainlab.classifier.PreprocessedModel` in eval mode:
it takes raw inputs scaled as in training (images in [0, 1], shape (N, *input_shape), any N) and
returns logits; the preprocessing fitted on the training split is baked in. ``export.json`` beside
it records the input shape and range, the class names and the largest difference between the
exported model's logits and the checkpoint's on a check batch (exit 1 if above 1e-4).

    ep = torch.export.load("runs/mnist/export/model.pt2"); logits = ep.module()(x)
    ts = torch.jit.load("runs/mnist/export/model.torchscript.pt"); logits = ts(x)
"""
from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from trainlab.errors import UserError
from trainlab.io import write_json
from trainlab.predict import load_trained

FILES = {"torchscript": "model.torchscript.pt", "exported": "model.pt2", "onnx": "model.onnx"}
TOLERANCE = 1e-4  # float32 reorderings stay far below this; a wrong graph is far above it


def check_batch(input_shape: tuple, input_range: list[float], n: int = 8, seed: int = 0) -> torch.Tensor:
    """n inputs drawn uniformly from the training range: what the exported model is checked on."""
    lo, hi = input_range
    gen = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand((n, *input_shape), generator=gen)


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> Callable:
    """torch.jit.trace: the eval-mode graph has no data-dependent branches, so tracing is exact."""
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export (offered as --format exported); the
        # tracer's shape-check warnings concern the preprocessing's input check, fixed by the shape.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
    return loaded


def export_program(model: nn.Module, example: torch.Tensor, path: Path) -> Callable:
    """torch.export with a dynamic batch dimension; load with ``torch.export.load(path).module()``."""
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(program, path)
    return torch.export.load(path).module()


def onnx_missing() -> list[str]:
    return [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Callable | None:
    """torch.onnx (the dynamo exporter) with a dynamic batch dimension; checked with onnxruntime
    when it is installed, else returns None (the file is written but not run)."""
    missing = onnx_missing()
    if missing:
        raise UserError(f"--format onnx needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}: "
                        f"pip install {' '.join(missing)} (then run this command again), or use --format exported")
    torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), dynamo=True)
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


EXPORTERS = {"torchscript": export_torchscript, "exported": export_program, "onnx": export_onnx}


def export_run(source: str | Path, fmt: str, out_dir: str | Path | None = None, which: str = "best") -> dict:
    """Export the run's checkpoint; returns what ``export.json`` records (``max_abs_diff`` is None
    when the format's runtime is not installed to check it)."""
    if fmt not in EXPORTERS:
        raise UserError(f"unknown export format {fmt!r}; choose one of: {', '.join(EXPORTERS)}")
    ckpt, model = load_trained(source, which)
    source = Path(source)
    out = Path(out_dir) if out_dir else (source if source.is_dir() else source.parent) / "export"
    out.mkdir(parents=True, exist_ok=True)
    shape, value_range = tuple(ckpt["input_shape"]), list(ckpt.get("input_range", [0.0, 1.0]))
    x = check_batch(shape, value_range)
    path = out / FILES[fmt]
    with torch.no_grad():
        exported = EXPORTERS[fmt](model, x[:2], path)
        expected = model(x)
        diff = None if exported is None else float((exported(x) - expected).abs().max())
    info = {"format": fmt, "file": str(path), "input_shape": list(shape), "input_range": value_range,
            "outputs": "logits", "classes": list(ckpt["classes"]), "checked_on": len(x), "max_abs_diff": diff}
    write_json(out / "export.json", info)
    return info


def cmd_export(args) -> int:
    info = export_run(args.source, args.format, args.out, args.checkpoint)
    print(f"wrote {info['file']} (input (N, {', '.join(map(str, info['input_shape']))}) in "
          f"[{info['input_range'][0]:g}, {info['input_range'][1]:g}], output logits over {len(info['classes'])} classes)")
    if info["max_abs_diff"] is None:
        print("not checked: install onnxruntime to compare its outputs with the checkpoint's")
        return 0
    print(f"largest difference from the checkpoint's logits on {info['checked_on']} inputs: {info['max_abs_diff']:.2e}")
    if info["max_abs_diff"] > TOLERANCE:
        print(f"trainlab: error: the exported model differs from the checkpoint by more than {TOLERANCE:g}")
        return 1
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a run's model (TorchScript, torch.export, ONNX) with its preprocessing",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("source", metavar="RUN_DIR|CHECKPOINT", help="run directory or trainlab checkpoint file")
    p.add_argument("--format", default="exported", choices=tuple(EXPORTERS),
                   help="exported (torch.export, .pt2; the default), torchscript (torch.jit, deprecated by PyTorch) or onnx")
    p.add_argument("--checkpoint", default="best", help="best or last (for a run directory)")
    p.add_argument("--out", help="folder for the file and export.json (default: RUN_DIR/export)")
    p.set_defaults(func=cmd_export)
