"""Monitor overhead: training time with the monitors at their default frequency
(``monitor.every=100``) against ``monitor.every=0``, same model, data, seed and steps.

What is timed is the pure training time a run logs per epoch (``seconds`` of each epoch record:
every step and every per-step callback, monitors included; evaluation and checkpoints are not).
Three figures, from most to least robust on a busy, shared machine:

- CPU: the process CPU seconds spent in the monitors' per-step callbacks over the CPU seconds of
  the update steps themselves (forward, backward, update) in the same run. Other jobs cannot
  inflate CPU time, and leaving the loop's other callbacks out of the denominator makes the
  ratio an upper bound. The headline number.
- same-run wall: the wall seconds in the monitors over the rest of that run's training seconds.
- A/B: median training time of runs with monitors against runs without, alternated on/off.
  Honest, but on a machine shared with other jobs the run-to-run noise exceeds the effect.

The one-off cost of the monitor plots at the end of training is printed separately.

    python benchmarks/monitor_overhead.py                     # mlp and convnet on digits
    python benchmarks/monitor_overhead.py --steps 600 --repeats 5 --threads 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainlab.config import load_config
from trainlab.data import load_data
from trainlab.run import train_run


class Timer:
    """Wraps methods of a class to add up the wall and CPU (whole process) seconds spent in them."""

    def __init__(self, cls, names):
        self.cls, self.names, self.seconds, self.cpu, self.saved = cls, names, 0.0, 0.0, {}

    def __enter__(self):
        for name in self.names:
            original = self.saved[name] = getattr(self.cls, name)

            def timed(*args, _original=original, **kwargs):
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - t0
                    self.cpu += time.process_time() - c0

            setattr(self.cls, name, timed)
        return self

    def __exit__(self, *exc):
        for name, original in self.saved.items():
            setattr(self.cls, name, original)


def run_once(cfg: dict, data) -> dict:
    """One real run: its training seconds (sum of the epochs' ``seconds``), the CPU seconds of
    its update steps (forward, backward, update), and the wall and CPU seconds spent in the
    monitors' per-step work and in their end-of-run plots."""
    from trainlab.babysit.monitors import Monitors
    from trainlab.train import Trainer

    with (Timer(Monitors, ["on_train_start", "on_step_end"]) as per_step, Timer(Monitors, ["on_train_end"]) as plots,
          Timer(Trainer, ["train_step"]) as steps):
        with tempfile.TemporaryDirectory() as d:
            train_run(cfg, Path(d) / "run", data=data, say=lambda m: None)
            records = [json.loads(line) for line in (Path(d) / "run" / "metrics.jsonl").read_text().splitlines()]
    train = sum(r["seconds"] for r in records if r["kind"] == "epoch")
    return {"train": train, "monitors": per_step.seconds, "monitors_cpu": per_step.cpu, "steps_cpu": steps.cpu,
            "plots": plots.seconds}


def measure(model: str, steps: int, repeats: int) -> dict:
    base = [f"model.name={model}", f"train.max_steps={steps}", "train.epochs=1000", "train.progress=false",
            "monitor.warn=false"]
    data = load_data(load_config(None, base))
    runs = {0: [], 100: []}
    for r in range(repeats):
        for every in ((0, 100) if r % 2 == 0 else (100, 0)):
            runs[every].append(run_once(load_config(None, base + [f"monitor.every={every}"]), data))
    on_runs = runs[100]
    off = statistics.median(x["train"] for x in runs[0])
    on = statistics.median(x["train"] for x in on_runs)
    return {
        "model": model, "steps": steps, "ms_per_step_off": 1000 * off / steps,
        # CPU seconds of the whole process: other jobs on the machine cannot inflate them.
        "cpu_overhead": statistics.median(x["monitors_cpu"] / x["steps_cpu"] for x in on_runs),
        # Wall seconds of the same run: both parts measured at the same time, so drifting load hits both.
        "in_run_overhead": statistics.median(x["monitors"] / (x["train"] - x["monitors"]) for x in on_runs),
        "off_s": off, "on_s": on, "ab_overhead": on / off - 1,
        "plots_s": statistics.median(x["plots"] for x in on_runs),
        "all_off": [x["train"] for x in runs[0]], "all_on": [x["train"] for x in on_runs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["mlp", "convnet"])
    ap.add_argument("--steps", type=int, default=600, help="updates per run (monitored at 1, 100, 200, ...)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for model in args.models:
        m = measure(model, args.steps, args.repeats)
        print(f"{model:>8}: {m['steps']} steps, {m['ms_per_step_off']:.2f} ms/step without monitors")
        print(f"          monitors' CPU time / update steps' CPU time: {100 * m['cpu_overhead']:+.1f}%  (target <= 10%)")
        print(f"          monitors' wall time / rest of the training time, same run: {100 * m['in_run_overhead']:+.1f}%")
        print(f"          A/B medians: every=100 {m['on_s']:.2f}s vs every=0 {m['off_s']:.2f}s → "
              f"{100 * m['ab_overhead']:+.1f}%  (runs off {[round(t, 2) for t in m['all_off']]}, "
              f"on {[round(t, 2) for t in m['all_on']]})")
        print(f"          end-of-run monitor plots: {m['plots_s']:.2f}s, once per run")

if __name__ == "__main__":
    main()
