"""``trainlab predict``: class probabilities for new inputs from a trained run.

    trainlab predict runs/mnist my_digit.png more_digits/ --top 3     # → predictions.csv
    trainlab predict runs/digits/checkpoints/last.pt new.npy --out predictions.json --tta flip

Inputs are decoded and scaled exactly as training did: image files are centre-cropped and resized
to the model's input size (greyscale or colour as the model expects) and uint8 pixels are divided
by 255; an ``.npy``/``.npz`` array goes through the same path as ``data.name=npz``. The
checkpoint records the range of the raw training inputs, so an array of 0-255 floats fed to a
model trained on [0, 1] is refused with a message instead of giving confident nonsense.
"""
from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import torch

from trainlab.checkpoint import checkpoint_path, is_trainlab_checkpoint, load_checkpoint
from trainlab.classifier import load_classifier
from trainlab.data.datasets import IMAGE_SUFFIXES, array_images, read_image
from trainlab.errors import UserError
from trainlab.evaluate import predict_probs
from trainlab.io import write_json

ARRAY_SUFFIXES = (".npy", ".npz")


def load_trained(source: str | Path, which: str = "best") -> tuple[dict, torch.nn.Module]:
    """(checkpoint, model in eval mode) of a run directory or a trainlab checkpoint file."""
    path = checkpoint_path(source, which)
    ckpt = load_checkpoint(path)
    if not is_trainlab_checkpoint(ckpt):
        raise UserError(f"{path} is not a trainlab checkpoint (a bare state dict has no classes or input shape); "
                        "give a run directory or its checkpoints/best.pt")
    return ckpt, load_classifier(ckpt).eval()


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:  # allow_pickle=False: a file cannot run code
            if "x" in z.files:
                return z["x"]
            if len(z.files) == 1:
                return z[z.files[0]]
            raise UserError(f"{path} holds arrays {', '.join(z.files)}: name the inputs 'x'")
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {path} as a NumPy array ({e})") from None


def _fit_shape(x: torch.Tensor, input_shape: tuple, source: str) -> torch.Tensor:
    """``x`` as (N, *input_shape): flat rows of the right length are reshaped, anything else is refused."""
    if tuple(x.shape[1:]) == input_shape:
        return x
    if x.ndim == 2 and x.shape[1] == int(np.prod(input_shape)):
        return x.reshape(len(x), *input_shape)
    raise UserError(f"{source}: inputs of shape {tuple(x.shape[1:])}, but the model takes {input_shape} "
                    f"(the shape of its training data); resize them to that shape")


def read_inputs(paths: list[str | Path], input_shape: tuple) -> tuple[list[str], torch.Tensor]:
    """Names and a float tensor (N, *input_shape) of every input: image files, folders of images
    (searched recursively, sorted) and .npy/.npz arrays (one name per row: ``file[i]``)."""
    names, parts = [], []
    images = len(input_shape) == 3
    channels, size = (input_shape[0], input_shape[-1]) if images else (None, None)
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                           and not f.name.startswith("."))
            if not files:
                raise UserError(f"folder {p}/ holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif not p.exists():
            raise UserError(f"input {str(p)!r} does not exist")
        else:
            files = [p]
        for f in files:
            if f.suffix.lower() in ARRAY_SUFFIXES:
                x = _fit_shape(array_images(_read_array(f), str(f)), input_shape, str(f))
                names += [f"{f}[{i}]" for i in range(len(x))]
                parts.append(x)
            elif f.suffix.lower() in IMAGE_SUFFIXES:
                if not images or input_shape[1] != input_shape[2]:
                    raise UserError(f"{f}: this model takes inputs of shape {input_shape}, not images; give an .npy or .npz array")
                x = array_images(read_image(f, size, channels)[None], str(f))
                parts.append(_fit_shape(x, input_shape, str(f)))
                names.append(str(f))
            else:
                raise UserError(f"{f}: not an image ({', '.join(sorted(IMAGE_SUFFIXES))}) or a .npy/.npz array")
    return names, torch.cat(parts) if parts else torch.empty(0, *input_shape)


def check_range(x: torch.Tensor, trained: list[float], source: str = "inputs") -> None:
    """Refuse inputs far outside the range the model was trained on (e.g. 0-255 against [0, 1]).

    Allowed: [lo - s/2, hi + s/2] with s = hi - lo, so new images a little brighter or darker
    than any training image still pass.
    """
    if x.numel() == 0:
        return
    lo, hi = trained
    slack = (hi - lo) / 2
    got_lo, got_hi = float(x.min()), float(x.max())
    if got_lo < lo - slack or got_hi > hi + slack:
        hint = (" Pixel values 0-255 are scaled by 1/255 when stored as uint8 (as training did); "
                "save the array as uint8 or divide it by 255." if got_hi > 2 and hi <= 1.5 else "")
        raise UserError(f"{source} range from {got_lo:g} to {got_hi:g}, but the model was trained on inputs "
                        f"from {lo:g} to {hi:g}.{hint}")


def top_k(probs: torch.Tensor, classes: list[str], k: int) -> list[list[tuple[str, float]]]:
    """For each row, the k most probable (class name, probability), best first."""
    k = min(k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    return [[(classes[i], float(v)) for v, i in zip(vs, ix)] for vs, ix in zip(values.tolist(), indices.tolist())]


def write_predictions(path: Path, names: list[str], ranked: list[list[tuple[str, float]]]) -> None:
    """CSV (input, class_1, prob_1, ..., class_k, prob_k) or JSON (list of {input, top: [{class, prob}]}),
    chosen by the file's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        write_json(path, [{"input": n, "top": [{"class": c, "prob": p} for c, p in r]} for n, r in zip(names, ranked)])
        return
    k = len(ranked[0]) if ranked else 0
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["input"] + [h for i in range(1, k + 1) for h in (f"class_{i}", f"prob_{i}")])
        for n, r in zip(names, ranked):
            w.writerow([n] + [v for c, p in r for v in (c, f"{p:.6f}")])


def cmd_predict(args) -> int:
    if args.top < 1:
        raise UserError(f"--top {args.top}: list at least one class per input")
    ckpt, model = load_trained(args.source, args.checkpoint)
    input_shape = tuple(ckpt["input_shape"])
    names, x = read_inputs(args.inputs, input_shape)
    check_range(x, ckpt.get("input_range", [0.0, 1.0]))
    probs = predict_probs(model, x, batch_size=256, tta=args.tta)
    ranked = top_k(probs, list(ckpt["classes"]), args.top)
    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".json"):
        raise UserError(f"--out {str(out)!r}: name a .csv or .json file")
    write_predictions(out, names, ranked)
    for n, r in list(zip(names, ranked))[:args.show]:
        print(f"{n}: " + ", ".join(f"{c} {p:.3f}" for c, p in r))
    if len(names) > args.show:
        print(f"... {len(names) - args.show} more")
    print(f"wrote {out} ({len(names)} inputs, top {min(args.top, probs.shape[1])} classes, tta={args.tta})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="class probabilities for new images or arrays (CSV or JSON)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("source", metavar="RUN_DIR|CHECKPOINT", help="run directory or trainlab checkpoint file")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, .npy or .npz arrays")
    p.add_argument("--checkpoint", default="best", help="best or last (for a run directory)")
    p.add_argument("--top", type=int, default=3, help="how many classes to list per input (default 3)")
    p.add_argument("--tta", default="none", choices=("none", "flip", "crops"), help="test-time augmentation")
    p.add_argument("--out", default="predictions.csv", help="a .csv or .json file (default predictions.csv)")
    p.add_argument("--show", type=int, default=10, help="print the first N predictions (default 10)")
    p.set_defaults(func=cmd_predict)
