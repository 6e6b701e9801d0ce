"""``trainlab tune``: the lectures' recipe for choosing hyperparameters "without tons of GPUs",
one step after another, each leaving its evidence in ``tune.json`` and ``report.html``:

    1. check the initial loss (ln C with regularisation off, higher with it on; a warning only)
    2. overfit a small sample (if the model cannot, stop: nothing later can fix that)
    3. find a learning rate that makes the loss go down (range test), with small weight decay on
    4. coarse search, 1-5 epochs, around the rate of step 3, at a constant rate
    5. refine: ranges narrowed around the best, longer trials, still at a constant rate; then
       the slides' step 7, "GOTO step 5": more refine rounds while they raise the best
       validation accuracy (``loops`` of the budget at most)
    6. look at the curves of the best trial (the curve diagnosis)
    7. train the final model with the best configuration, the base config's epochs and its
       learning-rate schedule: decay is added only now

The order is the lectures' (``order="lectures"``, the default): the slides' step 5 trains "without
learning rate decay", and the 2017 lecture calls decay a second-order hyperparameter, to be added
after a good rate has been picked without it. ``order="decay-throughout"`` is trainlab's earlier
behaviour, kept to measure against: every trial uses the config's schedule (cosine by default),
step 3 runs without weight decay and there is no loop (docs/search.md compares the two).

    trainlab tune --out runs/tune                        # digits, default model
    trainlab tune -c my.yaml --space my_space.yaml --budget medium --out runs/tune

Directory: checks/ (step 1-2), lr_find/ (3), study.db, trials/, trials.csv, plots/ (4-5),
final/ (7, a normal run directory), best.yaml (the final config), tune.json, report.html.
Re-running the same command resumes: the search continues its study, a finished final run is kept.
"""
from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from trainlab.babysit import commands as babysit_commands
from trainlab.checkpoint import load_checkpoint
from trainlab.classifier import load_classifier
from trainlab.config import cfg_with, dump_config, resolve_paths
from trainlab.device import resolve_device
from trainlab.errors import UserError
from trainlab.evaluate import evaluate
from trainlab.io import write_json
from trainlab.log import say as say_info
from trainlab.plots import CSS, embed_png
from trainlab.run import train_run
from trainlab.search.results import results_html
from trainlab.search.space import Param, Space, check_space, load_space, space_to_dict
from trainlab.search.stages import SearchOptions, run_search
from trainlab.search.trials import cached_data

# Steps 4-5: trials and epochs. small: a few minutes on digits; medium: more trials and the
# longer refine the lectures suggest ("~10-20 epochs").
BUDGETS = {
    "small": dict(trials=8, epochs=2, refine_trials=3, refine_epochs=6, max_widen=1, loops=1),
    "medium": dict(trials=20, epochs=3, refine_trials=8, refine_epochs=12, max_widen=2, loops=2),
}
ORDERS = ("lectures", "decay-throughout")
# Step 3's "turn on small weight decay" when the config has none: the smallest nonzero value of
# the slides' "Good weight decay to try: 1e-4, 1e-5, 0" that visibly acts on the default MLP.
SMALL_WEIGHT_DECAY = 1e-4
# The lectures' "1-5 epochs" assume large data sets. A coarse trial must make at least the ~100
# updates in which step 3 asks the loss to "drop significantly", or it only measures which rate
# is fastest off the mark: on digits (21 updates an epoch) 2-epoch trials chose a rate 20x the
# default that then trained worse for 30 epochs. Refine trials are twice as long again.
MIN_COARSE_UPDATES = 100
REFINE_LENGTH = 2
# Step 4's learning-rate range: 1.5 decades either side of the range test's suggestion, but not
# past the rate where the range test saw the loss turn up.
LR_DECADES = 1.5
# The lectures' "good weight decay to try: 1e-4, 1e-5, 0": a log range whose low end is as good as 0.
DECAY_RANGE = (1e-6, 1e-2)
# "Consider dropout for large fully-connected layers".
DROPOUT_RANGE = (0.0, 0.5)

STEP_NAMES = {1: "check the initial loss", 2: "overfit a small sample", 3: "find a learning rate that makes the loss go down",
              4: "coarse search, short trials", 5: "refine: narrowed ranges, longer trials", 6: "look at the curves",
              7: "train the final model"}


class TuneFailed(Exception):
    """A step of the recipe failed; later steps would be meaningless."""

    def __init__(self, step: int, message: str):
        super().__init__(message)
        self.step = step


def default_space(cfg: dict, found: dict) -> Space:
    """Step 4's ranges: "a few values of learning rate and weight decay around what worked from
    step 3" (``found``: the range test's result), and dropout (the other regulariser).

    The rate's range stops where the range test saw the loss turn up, but reaches below where
    it saw the loss "barely change": that verdict is about 100 iterations, and a rate too slow
    for them can be the best one for a whole training run (on digits the range test calls the
    default 1e-3 too low; it reaches 98% in 30 epochs)."""
    lr = found["suggested_lr"]
    low, high = lr / 10 ** LR_DECADES, lr * 10 ** LR_DECADES
    if found.get("too_high_above"):
        high = max(min(high, found["too_high_above"]), lr)
    space = {"optim.lr": Param("optim.lr", "loguniform", low, high)}
    decay = "reg.strength" if cfg["reg"]["penalty"] != "none" else "optim.weight_decay"
    space[decay] = Param(decay, "loguniform", *DECAY_RANGE)
    space["model.dropout"] = Param("model.dropout", "uniform", *DROPOUT_RANGE)
    return space


def trial_lengths(budget: dict, updates_per_epoch: int, final_epochs: int) -> tuple[int, int]:
    """Epochs of a coarse and of a refine trial: the budget's, stretched to MIN_COARSE_UPDATES
    on small data sets, never longer than the final training."""
    coarse = max(budget["epochs"], math.ceil(MIN_COARSE_UPDATES / max(updates_per_epoch, 1)))
    refine = max(budget["refine_epochs"], REFINE_LENGTH * coarse)
    return min(coarse, final_epochs), min(refine, final_epochs)


@dataclass
class Recipe:
    """tune.json as it fills up: one record per step."""

    out: Path
    budget: str
    steps: list
    t0: float

    def record(self, step: int, passed: bool, evidence, say: Callable[[str], None], summary: str,
               fatal: bool = True) -> None:
        """``fatal=False``: a failed step that is only a warning (the recipe goes on)."""
        status = "ok" if passed else ("FAILED" if fatal else "warning")
        self.steps.append({"step": step, "name": STEP_NAMES[step], "passed": passed, "status": status,
                           "summary": summary, "evidence": evidence})
        say(f"[tune] step {step} ({STEP_NAMES[step]}): {status}: {summary}")
        self.save()

    def save(self, **extra) -> dict:
        doc = {"budget": self.budget, "steps": self.steps, "wall_seconds": time.perf_counter() - self.t0, **extra}
        write_json(self.out / "tune.json", doc)
        return doc


def step_checks(cfg: dict, recipe: Recipe, say: Callable[[str], None]) -> None:
    """Steps 1 and 2 from ``trainlab check`` (which also runs a gradient check: recorded too).

    Only step 2 stops the recipe. A wrong initial loss is a warning with its advice: it costs
    the first iterations (the "hockey stick" of a too-confident softmax) but need not spoil the
    model, while a model that cannot even overfit ~5 minibatches will not learn the data set.
    """
    results = babysit_commands.run_checks(cfg, recipe.out / "checks", say=lambda msg: None)
    by_name = {r["name"]: r for r in results}
    initial = [r for r in results if r["name"].startswith("initial_loss") or r["name"].startswith("loss_rises")]
    first = by_name["initial_loss"]
    recipe.record(1, first["passed"], initial, say, f"initial loss {first['value']:.3f}, expected {first['expected']}"
                  + ("" if first["passed"] else f" (the recipe goes on). {first['advice']}"), fatal=False)
    fit = by_name["overfit_small_sample"]
    others = [r for r in results if r not in initial and r is not fit]
    recipe.record(2, fit["passed"], [fit, *others], say,
                  f"{fit['value']:.1%} of {fit['details'].get('images')} images fitted in {fit['details'].get('steps')} updates")
    if not fit["passed"]:
        raise TuneFailed(2, f"cannot overfit a small sample: check the model / lr (optim.lr={cfg['optim']['lr']:g}). "
                            f"{fit['advice']}")


def step_lr_find(cfg: dict, recipe: Recipe, say: Callable[[str], None]) -> dict:
    """Step 3, the range test; its result is reused when the same config is tuned again (the
    search's ranges, and so its study, depend on it)."""
    folder = recipe.out / "lr_find"
    saved = folder / "lr_find.json"
    if saved.exists() and (folder / "config.yaml").exists() and yaml.safe_load((folder / "config.yaml").read_text()) == resolve_paths(cfg):
        found = json.loads(saved.read_text())
    else:
        found = babysit_commands.lr_find(cfg, folder, say=lambda msg: None)
    evidence = {k: found.get(k) for k in ("suggested_lr", "min_loss_lr", "too_low_below", "too_high_above", "verdict", "rule")}
    ok = found.get("suggested_lr") is not None
    recipe.record(3, ok, evidence, say, f"suggested optim.lr={found['suggested_lr']:.3g}; {found['verdict']}" if ok
                  else found["verdict"])
    if not ok:
        raise TuneFailed(3, f"no learning rate makes the loss go down: {found['verdict']}")
    return found


def step_search(cfg: dict, space: Space, options: SearchOptions, recipe: Recipe, say: Callable[[str], None]) -> dict:
    """Steps 4 and 5: the coarse-to-fine search (see trainlab.search.stages)."""
    summary = run_search(cfg, space, recipe.out, options, say=say)
    for step, stage in ((4, "coarse"), (5, "refine")):
        rounds = [r for r in summary["rounds"] if r["stage"] == stage]
        best = summary["best_by_stage"].get(stage)
        recipe.record(step, best is not None, {"rounds": rounds, "best": best}, say,
                      f"{sum(r['trials'] for r in rounds)} trials of {rounds[0]['epochs']} epochs in {len(rounds)} round(s)"
                      + (f"; best validation accuracy {best['value']:.4f} (trial {best['number']})" if best else
                         "; no trial finished"))
    if summary["best"] is None:
        raise TuneFailed(5, "no refine trial finished: see trials.csv and the trials' run directories")
    return summary


def step_curves(best: dict, recipe: Recipe, say: Callable[[str], None]) -> list[dict]:
    """Step 6: the curve diagnosis of the best trial's run (docs/design.md §4), with its advice."""
    trial_summary = json.loads((Path(best["run_dir"]) / "summary.json").read_text())
    verdicts = trial_summary.get("diagnosis", [])
    recipe.record(6, True, {"trial": best["number"], "run_dir": best["run_dir"], "diagnosis": verdicts}, say,
                  "; ".join(f"[{v['code']}] {v['message']}" for v in verdicts) or "no verdict")
    return verdicts


def step_final(cfg: dict, best: dict, recipe: Recipe, say: Callable[[str], None], extra: dict) -> dict:
    """Step 7: the best values with the base config's full number of epochs, into final/
    (``cfg`` is the searched base: the user's config with step 3's rate)."""
    final_cfg = cfg_with(cfg, best["overrides"])
    dump_config(final_cfg, recipe.out / "best.yaml")
    run_dir = recipe.out / "final"
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
        say(f"[tune] final model already trained in {run_dir}")
    else:
        resume = (run_dir / "checkpoints" / "last.pt").exists()
        summary = train_run(final_cfg, run_dir, resume=resume, say=say, extra_summary={"tune": extra})
    keys = ("epochs", "best_val_acc", "test_acc", "test_loss", "train_acc", "wall_seconds", "stop_reason", "diagnosis")
    evidence = {"run_dir": str(run_dir), "overrides": best["overrides"], **{k: summary.get(k) for k in keys},
                "test_acc_last_epoch": last_epoch_test_acc(final_cfg, run_dir)}
    test, last = summary.get("test_acc"), evidence["test_acc_last_epoch"]
    recipe.record(7, not (summary.get("stop_reason") or "").startswith("diverged"), evidence, say,
                  f"{summary['epochs']} epochs: best validation accuracy {summary['best_val_acc']:.4f}"
                  + (f", test accuracy {test:.4f} (checkpoints/best.pt; the weights after the last epoch: {last:.4f})"
                     if test is not None else ""))
    return summary


def last_epoch_test_acc(cfg: dict, run_dir: Path) -> float | None:
    """Test accuracy of the weights after the last epoch (checkpoints/last.pt). The run reports
    best.pt's, the first epoch with the highest validation accuracy; on a small validation split
    many epochs tie, and the first of them can be an early, lucky one. Both are evidence."""
    data = cached_data(cfg)
    if data.test_y is None or len(data.test_y) == 0:
        return None
    device = resolve_device(cfg["device"])
    model = load_classifier(load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=device), device)
    return evaluate(model, data.test_x.to(device), data.test_y.to(device), data.num_classes,
                    cfg["train"]["eval_batch_size"])["acc"]


def range_test_config(cfg: dict, order: str) -> dict:
    """Step 3's config: the slides' "use all training data, turn on small weight decay" — the
    config's own decay or penalty if it has one, else weight decay SMALL_WEIGHT_DECAY
    (decay-throughout: the config as it is)."""
    if order != "lectures" or cfg["optim"]["weight_decay"] > 0 or cfg["reg"]["penalty"] != "none":
        return cfg
    return cfg_with(cfg, {"optim.weight_decay": SMALL_WEIGHT_DECAY})


def search_config(cfg: dict, lr: float, order: str) -> dict:
    """Steps 4-5's base: the config at step 3's rate; in the lectures' order with a constant rate
    (warm-up, which is not decay, is kept)."""
    changes = {"optim.lr": lr, **({"schedule.name": "constant"} if order == "lectures" else {})}
    return cfg_with(cfg, changes)


def tune(cfg: dict, out: Path, space_path: str | None = None, budget: str | dict = "small", workers: int = 1,
         storage: str | None = None, study: str | None = None, say: Callable[[str], None] = say_info,
         order: str = "lectures") -> dict:
    """Run the recipe into ``out``; returns tune.json's contents. Raises TuneFailed at a failed step
    (tune.json and report.html then show the evidence up to it). ``budget``: a name in BUDGETS,
    or a dict like them (trials, epochs, refine_trials, refine_epochs, max_widen, loops).
    ``order``: "lectures" or "decay-throughout" (see the module docstring)."""
    if isinstance(budget, str) and budget not in BUDGETS:
        raise UserError(f"bad value {budget!r} for --budget: expected one of {', '.join(BUDGETS)}")
    if order not in ORDERS:
        raise UserError(f"bad value {order!r} for --order: expected one of {', '.join(ORDERS)}")
    plan = dict(BUDGETS[budget] if isinstance(budget, str) else budget)
    if order != "lectures":
        plan["loops"] = 0
    out = Path(out)
    user_space = load_space(space_path) if space_path else None
    if user_space is not None:
        check_space(user_space, cfg, source=f"search space {space_path!r}")
    options = SearchOptions(**plan, workers=workers, storage=storage, study=study)
    options.resolved(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(out, budget if isinstance(budget, str) else "custom", [], time.perf_counter())
    try:
        step_checks(cfg, recipe, say)
        found = step_lr_find(range_test_config(cfg, order), recipe, say)
        lr = float(found["suggested_lr"])
        final_base = cfg_with(cfg, {"optim.lr": lr})  # the rate of step 3 unless the space varies it
        search_cfg = search_config(cfg, lr, order)
        space = user_space or default_space(cfg, found)
        check_space(space, search_cfg, source="tune's search space")
        data = cached_data(search_cfg)
        updates = math.ceil(len(data.train_y) / search_cfg["train"]["batch_size"])
        options.epochs, options.refine_epochs = trial_lengths(plan, updates, cfg["train"]["epochs"])
        say(f"[tune] steps 4-5 ({order} order: schedule {search_cfg['schedule']['name']} while searching, "
            f"{final_base['schedule']['name']} for the final model): {options.trials} trials of {options.epochs} epochs "
            f"({updates} updates each epoch), then {options.refine_trials} of {options.refine_epochs}"
            f"{f' and up to {options.loops} loop(s) back to step 5' if options.loops else ''}, over "
            + ", ".join(f"{k} {v}" for k, v in space_to_dict(space).items()))
        search = step_search(search_cfg, space, options, recipe, say)
        verdicts = step_curves(search["best"], recipe, say)
        final = step_final(final_base, search["best"], recipe, say,
                           extra={"suggested_lr": lr, "best_trial": search["best"]["number"],
                                  "best_trial_val_acc": search["best"]["value"], "tune_dir": str(out), "order": order})
    except TuneFailed as e:
        doc = recipe.save(stopped_at=e.step, error=str(e))
        write_tune_report(out, doc)
        raise
    doc = recipe.save(stopped_at=None, best=search["best"], diagnosis=verdicts, order=order,
                      search_schedule=search_cfg["schedule"]["name"], final_schedule=final_base["schedule"]["name"],
                      trial_epochs=search["trial_epochs"],
                      final={k: final.get(k) for k in ("test_acc", "best_val_acc", "epochs", "wall_seconds")})
    page = write_tune_report(out, doc)
    say(f"[tune] done in {doc['wall_seconds']:.0f}s: final test accuracy "
        f"{final['test_acc'] if final.get('test_acc') is None else round(final['test_acc'], 4)}; wrote {out / 'tune.json'}, "
        f"{out / 'best.yaml'}, {page}")
    return doc


# --- report ------------------------------------------------------------------------------
def _evidence_html(evidence) -> str:
    """A step's evidence as HTML: check results as one table, dicts as nested tables."""
    if isinstance(evidence, list) and evidence and all(isinstance(r, dict) and "passed" in r for r in evidence):
        rows = "".join(f"<tr><td>{html.escape(r['name'])}</td><td>{'pass' if r['passed'] else 'FAIL'}</td>"
                       f"<td>{html.escape(_short(r['value']))}</td><td>{html.escape(str(r['expected']))}</td>"
                       f"<td>{html.escape(r.get('advice') or '')}</td></tr>" for r in evidence)
        return f"<table><tr><th>check</th><th>result</th><th>value</th><th>expected</th><th>advice</th></tr>{rows}</table>"
    if isinstance(evidence, dict):
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_evidence_html(v)}</td></tr>" for k, v in evidence.items())
        return f"<table>{rows}</table>"
    if isinstance(evidence, list) and evidence and all(isinstance(v, dict) for v in evidence):
        return "".join(_evidence_html(v) for v in evidence)
    return html.escape(_short(evidence) if not isinstance(evidence, list) else ", ".join(map(_short, evidence)))


def _short(v) -> str:
    """A value in plain words: floats to 4 digits, dicts as 'key value, ...' (never a Python repr)."""
    if isinstance(v, dict):
        return ", ".join(f"{k} {_short(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(map(_short, v))
    return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else "—" if v is None else str(v)


def write_tune_report(out: Path, doc: dict) -> Path:
    """report.html: every step with its evidence, the range test, search and final plots embedded."""
    parts = ["<h1>trainlab tune</h1>"]
    if doc.get("stopped_at"):
        parts.append(f'<div class="verdict"><b>stopped at step {doc["stopped_at"]}</b>: {html.escape(doc["error"])}</div>')
    elif doc.get("final"):
        parts.append(f'<div class="verdict healthy">final model: test accuracy {_short(doc["final"].get("test_acc"))}, '
                     f'validation {_short(doc["final"].get("best_val_acc"))} after {doc["final"].get("epochs")} epochs '
                     '(<a href="final/report.html">its report</a>)</div>')
    for s in doc["steps"]:
        parts.append(f"<h2>Step {s['step']}: {html.escape(s['name'])} — {s['status']}</h2>"
                     f"<p>{html.escape(s['summary'])}</p>{_evidence_html(s['evidence'])}")
        if s["step"] == 3 and (out / "lr_find" / "plots" / "lr_find.png").exists():
            parts.append(embed_png(out / "lr_find" / "plots" / "lr_find.png"))
        if s["step"] == 5 and (out / "search.json").exists():
            parts.append(results_html(out, json.loads((out / "search.json").read_text())))
        if s["step"] == 7:
            parts.append("".join(embed_png(p) for p in sorted((out / "final" / "plots").glob("*.png"))))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>trainlab tune</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = out / "report.html"
    path.write_text(page)
    return path
