"""Evaluation metrics (docs/design.md §6): loss, top-1, top-5, per-class accuracy, confusion matrix.

Predictions are averaged *probabilities* (softmax), so the same code serves a single model, a
model under test-time augmentation (several views) and an ensemble (several models).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
from tqdm import tqdm

from trainlab.augmentation import tta_views
from trainlab.regularization import region_sets


@torch.no_grad()
def predict_probs(models: nn.Module | Iterable[nn.Module], x: torch.Tensor, batch_size: int = 1024,
                  tta: str = "none", progress: bool = False) -> torch.Tensor:
    """Mean softmax over models × test-time views × pooling-region sets, shape (N, C).
    ``progress``: a bar on stderr counting images (10 crops of 10,000 images take a while on a CPU).

    Models are put in eval mode. A model with fractional max pooling and
    ``model.fractional_eval_sets`` = K > 1 contributes the mean over its K fixed region sets
    (:func:`trainlab.regularization.region_sets`); every other model contributes one set.
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    bar = tqdm(total=len(x), unit="img", desc=f"evaluating (tta={tta})", disable=not progress, leave=False)
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    out = []
    device = next(models[0].parameters()).device
    # A streamed split (LazyImages) decodes its batches in worker processes; a tensor is sliced.
    batches = x.batches(batch_size) if hasattr(x, "batches") else (x[i:i + batch_size] for i in range(0, len(x), batch_size))
    try:
        for xb in batches:
            xb = xb.to(device, non_blocking=True)  # a no-op for data already on the device
            views = tta_views(xb, tta)
            total = 0
            for m in models:
                per_model, sets = 0, 0
                for _ in region_sets(m):
                    sets += 1
                    for v in views:
                        per_model = per_model + torch.softmax(m(v).float(), dim=1)
                total = total + per_model / sets
            out.append(total / (len(models) * len(views)))
            bar.update(len(xb))
    finally:
        bar.close()
        for m, t in zip(models, was_training):
            m.train(t)
    return torch.cat(out) if out else torch.empty(0)


def metrics_from_probs(probs: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    """loss (NLL of the averaged probabilities), acc, top5, per_class_acc, confusion[true][pred]."""
    y = y.to(probs.device)
    n = len(y)
    loss = -torch.log(probs[torch.arange(n, device=probs.device), y].clamp_min(1e-12)).mean()
    pred = probs.argmax(1)
    k = min(5, num_classes)
    top5 = (probs.topk(k, dim=1).indices == y[:, None]).any(1).float().mean()
    confusion = torch.bincount(y * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    per_class = confusion.diag().float() / confusion.sum(1).clamp_min(1).float()
    return {"loss": float(loss), "acc": float((pred == y).float().mean()), "top5": float(top5),
            "per_class_acc": per_class.tolist(), "confusion": confusion.tolist()}


def evaluate(models, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 1024,
             tta: str = "none", progress: bool = False) -> dict:
    """All metrics of ``models`` (one or several, probabilities averaged) on (x, y)."""
    return metrics_from_probs(predict_probs(models, x, batch_size, tta, progress), y, num_classes)
