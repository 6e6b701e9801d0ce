"""Curve diagnosis: verdicts with evidence and the lectures' advice (SPEC §4, codes in §8)."""
from __future__ import annotations

from pathlib import Path


def verdict(code: str, message: str, **evidence) -> dict:
    return {"code": code, "message": message, "evidence": evidence}


def diagnose(run_dir: Path, summary: dict, state, cfg: dict) -> list[dict]:
    """Verdicts for a finished run, read from its history (one dict per epoch)."""
    found = []
    reason = state.stop_reason or ""
    if reason.startswith("diverged"):
        found.append(verdict("diverged", f"{reason}. The learning rate is almost certainly too high: lower it "
                             "(try 10x smaller) or run `trainlab lr-find`. checkpoints/last.pt holds the last good state.",
                             stop_reason=reason, lr=cfg["optim"]["lr"]))
    history = state.history
    if history and not found:
        train_acc, val = history[-1]["train_acc"], summary.get("best_val_acc")
        if val is not None and train_acc - val > 0.1:
            found.append(verdict("overfitting", "large gap between training and validation accuracy: "
                                 "increase regularisation (weight decay, dropout, augmentation) or get more data",
                                 train_acc=train_acc, best_val_acc=val, gap=train_acc - val))
    return found or [verdict("healthy", "no problem found in the curves", epochs=len(history))]
