"""Data bigger than memory: peak memory and speed of the streaming path (data.stream).

Writes synthetic data sets larger than the memory cap it sets (data.memory_limit_gb, default
2 GB): two `npy` pairs (x.npy uint8 images 3x32x32 + y.npy, default 4 GB and 8 GB) and a folder
of PNG images (default 50,000 at 64x64, 2.3 GB once decoded to float32), trains one epoch on
each with `trainlab train data.stream=auto` in a subprocess and samples the memory of the whole
process tree (trainer and DataLoader workers) every 0.2 s: the sum of psutil's PSS, which
counts pages shared between processes once. Goal: under 2 GB for both npy sets, i.e. bounded
by the loader's buffers and not growing with the data. Then images/second of streaming against
in-memory on MNIST (the trainer's own train_images_per_second, one epoch each; goal: streaming
>= 0.8x). Everything it wrote is deleted at the end, whatever happens.

    python benchmarks/streaming.py --data-root ../shared/data                       # full size
    python benchmarks/streaming.py --data-root ../shared/data --npy-gb 0.5 1 --pngs 5000 --cap-gb 0.25

The model is small on purpose (a 1x128 MLP, no preprocessing pass): the figures are about the
data path, not the network.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROW = 3 * 32 * 32  # bytes per npy image
MODEL = ["model.name=mlp", "model.depth=1", "model.width=128", "preprocess.name=none", "train.progress=false",
         "monitor.every=0", "train.epochs=1", "data.val_fraction=0.01", "train.batch_size=256", "train.log_every=100"]


def write_npy(folder: Path, gigabytes: float, seed: int = 0) -> int:
    """x.npy (N, 3, 32, 32) uint8 of ~``gigabytes`` and y.npy, written in chunks (never whole in memory).
    Each class has its own mean colour, so there is something to learn."""
    n = int(gigabytes * 2**30) // ROW
    folder.mkdir(parents=True)
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.uint8, shape=(n, 3, 32, 32))
    y = np.lib.format.open_memmap(folder / "y.npy", mode="w+", dtype=np.int64, shape=(n,))
    rng = np.random.default_rng(seed)
    chunk = 65536
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        labels = rng.integers(0, 10, hi - lo)
        noise = rng.integers(0, 128, (hi - lo, 3, 32, 32), dtype=np.uint8)
        x[lo:hi] = noise + (labels * 12).astype(np.uint8)[:, None, None, None]
        y[lo:hi] = labels
        x.flush()
    del x, y
    return n


def write_pngs(folder: Path, count: int, size: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        label = i % 10
        d = folder / f"class{label}"
        d.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 128, (size, size, 3), dtype=np.uint8) + np.uint8(label * 12)
        Image.fromarray(pixels).save(d / f"{i}.png", compress_level=1)


class PeakMemory:
    """Samples the summed PSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int, every: float = 0.2):
        self.root, self.every, self.peak, self._stop = psutil.Process(pid), every, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            try:
                for p in [self.root, *self.root.children(recursive=True)]:
                    try:
                        total += p.memory_full_info().pss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                break
            self.peak = max(self.peak, total)
            time.sleep(self.every)

    def stop(self) -> int:
        self._stop.set()
        self.thread.join()
        return self.peak


def train(args: list[str], out: Path) -> tuple[dict, int, float]:
    """One `trainlab train` in a subprocess: (summary.json, peak PSS of its process tree, wall seconds)."""
    cmd = [sys.executable, "-m", "trainlab", "train", *MODEL, *args, "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    meter = PeakMemory(proc.pid)
    output, _ = proc.communicate()
    peak, wall = meter.stop(), time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"trainlab train failed ({proc.returncode}):\n{output}")
    return json.loads((out / "summary.json").read_text()), peak, wall


def row(name: str, disk_gb: float, decoded_gb: float, summary: dict, peak: int, wall: float) -> str:
    stream = summary["data_stream"]
    return (f"{name:<24} {disk_gb:7.2f} GB {decoded_gb:7.2f} GB {'stream' if stream['stream'] else 'memory':>7} "
            f"{peak / 2**30:8.2f} GB {summary['train_images_per_second']:10.0f} {wall:8.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npy-gb", type=float, nargs="*", default=[4.0, 8.0], help="sizes of the npy sets (GB on disk)")
    ap.add_argument("--pngs", type=int, default=50_000, help="images in the PNG folder (0: skip)")
    ap.add_argument("--png-size", type=int, default=64)
    ap.add_argument("--cap-gb", type=float, default=2.0, help="data.memory_limit_gb: the sets are bigger than this")
    ap.add_argument("--workers", type=int, default=None, help="data.workers (default: trainlab's: 0 for arrays, cores - 1 for image files)")
    ap.add_argument("--data-root", default=os.environ.get("TRAINLAB_DATA"), help="holds mnist/ (skip the MNIST comparison if unset)")
    ap.add_argument("--dir", default=None, help="where to write the synthetic sets (default: a temporary folder)")
    a = ap.parse_args()
    if a.dir:
        Path(a.dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="trainlab-streaming-", dir=a.dir))
    common = [f"data.memory_limit_gb={a.cap_gb}"]
    if a.workers is not None:
        common.append(f"data.workers={a.workers}")
    print(f"memory cap (data.memory_limit_gb) {a.cap_gb} GB; {psutil.cpu_count()} cores; writing under {work}")
    print(f"{'data set':<24} {'on disk':>10} {'decoded':>10} {'path':>7} {'peak PSS':>11} {'images/s':>10} {'wall':>10}")
    try:
        for gb in a.npy_gb:
            folder = work / f"npy-{gb:g}"
            n = write_npy(folder, gb)
            summary, peak, wall = train(["data.name=npy", f"data.path={folder}", "data.stream=auto", *common],
                                        work / f"run-npy-{gb:g}")
            print(row(f"npy {n:,} images", gb, 4 * gb, summary, peak, wall), flush=True)
            shutil.rmtree(folder)
        if a.pngs:
            folder = work / "pngs"
            write_pngs(folder, a.pngs, a.png_size)
            disk = sum(f.stat().st_size for f in folder.rglob("*.png")) / 2**30
            decoded = a.pngs * 3 * a.png_size ** 2 * 4 / 2**30
            summary, peak, wall = train(["data.name=folder", f"data.path={folder}", f"data.image_size={a.png_size}",
                                         "data.stream=auto", *common], work / "run-pngs")
            print(row(f"{a.pngs:,} PNGs {a.png_size}x{a.png_size}", disk, decoded, summary, peak, wall), flush=True)
            shutil.rmtree(folder)
        if a.data_root:
            rates = {}
            for stream in ("off", "on"):
                args = ["data.name=mnist", f"data.root={a.data_root}", f"data.stream={stream}", *common]
                summary, peak, wall = train(args, work / f"run-mnist-{stream}")
                rates[stream] = summary["train_images_per_second"]
                print(row(f"mnist stream={stream}", 0.011, 0.164, summary, peak, wall), flush=True)
            print(f"MNIST: streaming {rates['on']:.0f} images/s vs in memory {rates['off']:.0f}: "
                  f"{rates['on'] / rates['off']:.2f}x (goal >= 0.8x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"deleted {work}")


if __name__ == "__main__":
    main()
