"""What a search leaves behind (docs/design.md §8): ``trials.csv``, ``best.yaml``, ``search.json`` and plots.

    trials.csv          one row per trial: number, state, stage, round, each parameter, value
                        (validation accuracy after the trial's last epoch; pruned: when stopped),
                        epochs (planned), epochs_trained, seconds
    best.yaml           the best trial of the last stage as a config ``trainlab train -c`` accepts
    search.json         rounds (ranges searched, widenings), best trial, counts, trial-epochs
    plots/search_<key>.png    validation accuracy against each hyperparameter (log axis where log)
    plots/learning_curves.png the top trials' curves, from their metrics.jsonl
    plots/search_progress.png best validation accuracy so far against trial-epochs spent

Everything is read back from the study, so any worker (on any machine) writes the same files.
"""
from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Callable
from pathlib import Path

import optuna
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from trainlab.config import cfg_with, dump_config
from trainlab.io import read_jsonl, write_json
from trainlab.log import say as say_info
from trainlab.plots import embed_png, html_table, plt
from trainlab.report import add_section, save_figure, write_report
from trainlab.search.space import Space, encode_choice
from trainlab.search.study import ranking, redact, round_trials

STAGE_COLOURS = {"coarse": "C0", "refine": "C3", "single": "C0"}


def search_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial that took a slot, in number order (surplus trials never trained)."""
    return [t for t in study.get_trials(deepcopy=False)
            if "round" in t.user_attrs and t.user_attrs.get("slot", -1) >= 0]


def trial_value(t: FrozenTrial) -> float | None:
    """A trial's validation accuracy after its last epoch: its value, or for a pruned (or
    failed) trial the last one it reported before it was stopped."""
    if t.state == TrialState.COMPLETE:
        return t.value
    reported = [v for _, v in sorted(t.intermediate_values.items()) if v is not None and math.isfinite(v)]
    return reported[-1] if reported else None


def epochs_trained(t: FrozenTrial) -> int:
    """Epochs a trial actually ran (one report per epoch): the cost of the search."""
    return len(t.intermediate_values)


def best_trial(trials: list[FrozenTrial], stage: str) -> FrozenTrial | None:
    """The best finished trial of ``stage`` (the last stage's trials are the longest, so the
    only ones fairly compared with each other)."""
    done = [t for t in trials if t.user_attrs.get("stage") == stage and t.state == TrialState.COMPLETE]
    return min(done, key=ranking) if done else None


def describe(t: FrozenTrial | None) -> dict | None:
    """A trial as search.json and tune.json record it."""
    if t is None:
        return None
    return {"number": t.number, "stage": t.user_attrs["stage"], "round": t.user_attrs["round"], "value": t.value,
            "epochs": t.user_attrs["epochs"], "overrides": t.user_attrs["overrides"], "run_dir": t.user_attrs.get("run_dir")}


def write_trials_csv(trials: list[FrozenTrial], space: Space, path: Path) -> Path:
    keys = list(space)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", "stage", "round", *keys, "value", "epochs", "epochs_trained", "seconds"])
        for t in trials:
            values = t.user_attrs.get("overrides", {})
            row_params = [encode_choice(values[k]) if k in values else "" for k in keys]
            value = trial_value(t)
            w.writerow([t.number, t.state.name, t.user_attrs.get("stage"), t.user_attrs.get("round"), *row_params,
                        "" if value is None else f"{value:.6g}", t.user_attrs.get("epochs"), epochs_trained(t),
                        f"{t.user_attrs['seconds']:.2f}" if "seconds" in t.user_attrs else ""])
    return path


def best_config(base: dict, overrides: dict, epochs: int) -> dict:
    """The best trial's config as a user would train it: the base config (progress bar and
    monitors as the user set them) with the searched values and the trial's epochs."""
    return cfg_with(base, {**overrides, "train.epochs": epochs})


def write_best_yaml(base: dict, trial: FrozenTrial, study_name: str, path: Path) -> Path:
    cfg = best_config(base, trial.user_attrs["overrides"], trial.user_attrs["epochs"])
    dump_config(cfg, path)
    header = (f"# best trial {trial.number} of study {study_name!r} ({trial.user_attrs['stage']} stage): "
              f"validation accuracy {trial.value:.4f} after {trial.user_attrs['epochs']} epochs\n"
              f"#   trainlab train -c {path.name} --out runs/best\n")
    path.write_text(header + path.read_text())
    return path


# --- plots -------------------------------------------------------------------------------
def plot_param_scatter(trials: list[FrozenTrial], space: Space, plots: Path, best: FrozenTrial | None) -> list[Path]:
    """Validation accuracy against each hyperparameter: hollow markers for pruned trials (their
    accuracy when stopped), a star on the best; log x axis for log-uniform parameters."""
    out = []
    for key, p in space.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [encode_choice(c) for c in p.choices] if p.kind == "choice" else []
        for stage in dict.fromkeys(t.user_attrs.get("stage") for t in trials):
            for state, face in ((TrialState.COMPLETE, None), (TrialState.PRUNED, "none")):
                pts = [(t.user_attrs["overrides"][key], trial_value(t)) for t in trials
                       if t.user_attrs.get("stage") == stage and t.state == state and trial_value(t) is not None
                       and key in t.user_attrs.get("overrides", {})]
                if not pts:
                    continue
                xs, ys = zip(*pts)
                if labels:
                    xs = [labels.index(encode_choice(x)) if encode_choice(x) in labels else -1 for x in xs]
                colour = STAGE_COLOURS.get(stage, "C2")
                ax.scatter(xs, ys, s=28, edgecolors=colour, facecolors=face or colour, alpha=0.8,
                           label=f"{stage}" + (" (pruned)" if state == TrialState.PRUNED else ""))
        if best is not None and key in best.user_attrs.get("overrides", {}):
            x = best.user_attrs["overrides"][key]
            x = labels.index(encode_choice(x)) if labels else x
            ax.scatter([x], [best.value], marker="*", s=220, color="gold", edgecolors="k", zorder=5, label="best")
        if p.log:
            ax.set_xscale("log")
        if labels:
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels([str(lbl) for lbl in labels], rotation=30)
        ax.set(xlabel=key + (" (log scale)" if p.log else ""), ylabel="validation accuracy",
               title=f"Validation accuracy vs {key}")
        ax.legend(fontsize=8)
        out.append(save_figure(fig, plots / f"search_{key}.png"))
    return out


def trial_curve(t: FrozenTrial) -> list[dict]:
    """A trial's per-epoch records from its run directory, or (when that directory is on another
    machine) its validation accuracy as reported to the study."""
    run_dir = t.user_attrs.get("run_dir")
    records = [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if r.get("kind") == "epoch"] if run_dir else []
    return records or [{"epoch": step, "val_acc": v} for step, v in sorted(t.intermediate_values.items())]


def plot_learning_curves(trials: list[FrozenTrial], plots: Path, top: int = 5) -> Path | None:
    """Train (dashed) and validation (solid) accuracy per epoch of the ``top`` trials of the last
    stage: the lectures' step 6, look at the curves (a gap is overfitting, no gap underfitting)."""
    last_stage = trials[-1].user_attrs.get("stage") if trials else None
    ranked = sorted((t for t in trials if t.user_attrs.get("stage") == last_stage and trial_value(t) is not None),
                    key=lambda t: (-trial_value(t), t.number))[:top]
    if not ranked:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, t in enumerate(ranked):
        curve = trial_curve(t)
        epochs = [r["epoch"] for r in curve]
        ax.plot(epochs, [r.get("val_acc") for r in curve], "o-", color=f"C{i}",
                label=f"trial {t.number} ({trial_value(t):.4f})")
        if all("train_acc" in r for r in curve):
            ax.plot(epochs, [r["train_acc"] for r in curve], "--", color=f"C{i}", alpha=0.6)
    ax.set(xlabel="epoch", ylabel="accuracy", title=f"Top {len(ranked)} {last_stage} trials: validation (solid), train (dashed)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return save_figure(fig, plots / "learning_curves.png")


def progress_curve(trials: list[FrozenTrial]) -> tuple[list[int], list[float]]:
    """Best validation accuracy so far against trial-epochs spent, trials taken in the order they
    finished: the cost-quality curve the benchmark compares searches with."""
    finished = sorted((t for t in trials if t.datetime_complete is not None), key=lambda t: (t.datetime_complete, t.number))
    spent, best, xs, ys = 0, -math.inf, [], []
    for t in finished:
        spent += epochs_trained(t)
        value = trial_value(t)
        if t.state == TrialState.COMPLETE and value is not None:
            best = max(best, value)
        if best > -math.inf:
            xs.append(spent)
            ys.append(best)
    return xs, ys


def plot_progress(trials: list[FrozenTrial], plots: Path) -> Path | None:
    xs, ys = progress_curve(trials)
    if not xs:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.step(xs, ys, where="post")
    ax.set(xlabel="trial-epochs spent", ylabel="best validation accuracy so far", title="Search progress")
    return save_figure(fig, plots / "search_progress.png")


def importances(trials: list[FrozenTrial], stage: str) -> dict | None:
    """Which hyperparameter mattered: Optuna's fANOVA importances (Hutter et al. 2014, shares of
    the variance in validation accuracy that sum to 1) over the finished trials of ``stage`` —
    one stage, so every trial had the same length. None with fewer than 3 such trials or a single
    searched parameter."""
    done = [t for t in trials if t.user_attrs.get("stage") == stage and t.state == TrialState.COMPLETE and t.params]
    names = {k for t in done for k in t.params}
    if len(done) < 3 or len(names) < 2:
        return None
    study = optuna.create_study(direction="maximize", storage=optuna.storages.InMemoryStorage())
    study.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=t.value)
                      for t in done])
    found = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return {"stage": stage, "trials": len(done), "importances": {k: float(v) for k, v in found.items()}}


def results_html(out: Path, summary: dict) -> str:
    """The search's section of a report: best trial, rounds, and the plots (embedded)."""
    best = summary.get("best") or {}
    parts = ["<h2>Hyperparameter search</h2>",
             html_table({"study": summary["study"], "storage": summary["storage"], "sampler": summary["sampler"],
                     "stages": summary["stages"], "trials": summary["counts"], "trial-epochs": summary["trial_epochs"],
                     "best trial": best.get("number"), "best validation accuracy": best.get("value")}),
             "<h3>Rounds</h3><table><tr><th>round</th><th>trials</th><th>epochs</th><th>ranges</th><th>widened after</th></tr>"]
    for r in summary["rounds"]:
        ranges = "<br>".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in r["space"].items())
        parts.append(f"<tr><td>{html.escape(r['round'])}</td><td>{r['trials']}</td><td>{r['epochs']}</td>"
                     f"<td>{ranges}</td><td>{html.escape(', '.join(r.get('widened', [])))}</td></tr>")
    parts.append("</table>")
    if best:
        parts.append("<h3>Best values</h3>" + html_table(best.get("overrides", {})))
    if summary.get("importances"):
        imp = summary["importances"]
        parts.append(f"<h3>Which hyperparameter mattered (fANOVA over the {imp['trials']} finished {imp['stage']} "
                     "trials)</h3>" + html_table({k: f"{v:.2f}" for k, v in imp["importances"].items()}))
    pngs = [out / "plots" / name for name in summary.get("plots", [])]
    parts.append("".join(embed_png(p) for p in pngs if p.exists()))
    return "".join(parts)


@add_section
def search_section(run_dir: Path) -> str:
    """report.html's search section, for a directory that holds a search (its search.json)."""
    path = Path(run_dir) / "search.json"
    if not path.is_file():
        return ""
    return results_html(Path(run_dir), json.loads(path.read_text()))


def write_results(study: optuna.Study, base: dict, space: Space, rounds: list[dict], out: Path, options,
                  wall: float, say: Callable[[str], None] = say_info) -> dict:
    """trials.csv, best.yaml, search.json and the plots; returns search.json's contents."""
    trials = search_trials(study)
    last_stage = rounds[-1]["stage"] if rounds else None
    best = best_trial(trials, last_stage)
    write_trials_csv(trials, space, out / "trials.csv")
    if best is not None:
        write_best_yaml(base, best, study.study_name, out / "best.yaml")
    plots = out / "plots"
    made = plot_param_scatter(trials, space, plots, best) + [plot_learning_curves(trials, plots), plot_progress(trials, plots)]
    counts = {s.name: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    summary = {
        "study": study.study_name, "storage": redact(options.storage), "sampler": options.sampler,
        "pruner": options.pruner, "stages": options.stages, "workers": options.workers,
        "rounds": [{**r, "finished": sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                                         for t in round_trials(study, r["round"]))} for r in rounds],
        "counts": {k.lower(): v for k, v in counts.items()},
        "trial_epochs": sum(epochs_trained(t) for t in trials),
        "best": describe(best),
        "best_by_stage": {r["stage"]: describe(best_trial(trials, r["stage"])) for r in rounds},
        "importances": importances(trials, rounds[0]["stage"]) if rounds else None,
        "progress": dict(zip(("trial_epochs", "best_val_acc"), progress_curve(trials))),
        "plots": [p.name for p in made if p is not None],
        "wall_seconds": wall,
    }
    write_json(out / "search.json", summary)
    write_report(out)  # search.json, trials.csv and the plots, on one page
    if best is None:
        say(f"search finished without a completed trial in the {last_stage} stage; see {out / 'trials.csv'}")
    else:
        say(f"best: trial {best.number} ({best.user_attrs['stage']}), validation accuracy {best.value:.4f}: "
            + " ".join(f"{k}={v}" for k, v in best.user_attrs["overrides"].items()))
        say(f"wrote {out / 'report.html'}, {out / 'trials.csv'}, {out / 'best.yaml'}, {out / 'search.json'} and {plots}/")
    return summary
