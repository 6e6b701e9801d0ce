"""The baseline most users would otherwise copy: PyTorch's own MNIST example, written out here.

Two 3x3 conv layers (32, 64 channels), 2x2 max pooling, dropout 0.25, a 9216→128 linear layer,
dropout 0.5, a 128→10 head; Adadelta at lr 1.0 with the rate ×0.7 after every epoch (StepLR);
batch 64 through a per-sample ``Dataset`` and ``torch.utils.data.DataLoader`` (each image
converted and normalised on its own, as ``ToTensor`` + ``Normalize((0.1307,), (0.3081,))`` do);
the test split evaluated after every epoch in batches of 1,000. The images are held as uint8,
as torchvision's MNIST class holds them.

    python benchmarks/plain_loop.py --data-root ../shared/data --epochs 14

Prints one JSON line per epoch: ``{"epoch", "seconds", "test_acc"}`` (seconds since the process
started, so start-up and data loading count, as they do for ``trainlab train``).
"""
from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or raw) as a NumPy array; MNIST's own format, read in a few lines."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find(folder: Path, stem: str) -> Path:
    return next(p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file())


class IdxImages(Dataset):
    """Per-sample access, like torchvision.datasets.MNIST with ToTensor + Normalize."""

    def __init__(self, folder: Path, train: bool, mean: float, std: float):
        prefix = "train" if train else "t10k"
        self.x = torch.from_numpy(read_idx(find(folder, f"{prefix}-images-idx3-ubyte")).copy())
        self.y = torch.from_numpy(read_idx(find(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64))
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = self.x[i].float().div(255.0).unsqueeze(0)
        return (img - self.mean) / self.std, self.y[i]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


def test_accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(loader.dataset)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"))
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    folder = Path(args.data_root) / args.dataset
    mean, std = (0.1307, 0.3081) if args.dataset == "mnist" else (0.2860, 0.3530)
    train = DataLoader(IdxImages(folder, True, mean, std), batch_size=64, shuffle=True)
    test = DataLoader(IdxImages(folder, False, mean, std), batch_size=1000)
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            F.nll_loss(model(x), y).backward()
            optimizer.step()
        scheduler.step()
        acc = test_accuracy(model, test)
        print(json.dumps({"epoch": epoch, "seconds": time.perf_counter() - T0, "test_acc": acc}), flush=True)


if __name__ == "__main__":
    main()
