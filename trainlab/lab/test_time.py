"""``trainlab lab test-time``: averaging predictions at test time — fixed crops (and scales), and
several fractional-pooling region sets.

The slides: data augmentation's "Testing: average a fixed set of crops" (ResNet: 5 scales × "10
224×224 crops: 4 corners + center, + flips"), and fractional pooling's "Testing: Average
predictions from several regions". The same trained weights are evaluated with and without the
averaging, so only the test-time procedure differs.
"""
from __future__ import annotations

from pathlib import Path

from trainlab.evaluate import evaluate
from trainlab.lab.common import (
    AGREES,
    DISAGREES,
    PARTLY,
    SLIDES,
    LabContext,
    LabResult,
    claim,
    experiment,
    median,
)
from trainlab.plots import plt, save_figure
from trainlab.regularization import FractionalMaxPool

TTA = ["none", "flip", "crops", "scales"]
REGION_SETS = [1, 2, 4, 8]
# Trained with the augmentations the views imitate (flips and 1-pixel crops), as the ResNet
# recipe trains on random crops and flips before testing on fixed ones.
# A first run at width 16 and 30 epochs under-fitted (training accuracy 0.70-0.76 with flips and
# crops on): test-time averaging then mostly repairs a weak model. Width 32 and 40 epochs fit.
DEFAULTS = ["model.name=convnet", "model.width=32", "model.depth=2", "augment.names=[flip,crop]",
            "augment.crop_padding=1", "train.epochs=40", "train.batch_size=64"]
FRACTIONAL = ["model.fractional_pool=true", "model.depth=3", "augment.names=[]"]
QUICK = ["data.subset=300", "train.epochs=1", "model.width=8"]


def test_acc(model, data, tta: str = "none") -> float:
    return evaluate(model, data.test_x.cpu(), data.test_y.cpu(), data.num_classes, tta=tta)["acc"]


def with_region_sets(model, k: int):
    for m in model.modules():
        if isinstance(m, FractionalMaxPool):
            m.eval_sets = k
    return model


def test_time_claims(rows: list[dict]) -> list[dict]:
    acc = {r["procedure"]: r["test_acc"] for r in rows}
    crops = (acc["tta crops"] - acc["tta none"]) * 100
    scales = (acc["tta scales"] - acc["tta none"]) * 100
    regions = (acc[f"region sets {REGION_SETS[-1]}"] - acc["region sets 1"]) * 100
    return [
        claim("Testing: average a fixed set of crops", SLIDES,
              f"test accuracy, same weights: 10 crops {crops:+.2f} points over a single view, crops at 3 scales "
              f"{scales:+.2f}, flip alone {(acc['tta flip'] - acc['tta none']) * 100:+.2f}. Verdict rule: the 10 crops "
              "+0.5 points or more agrees, any gain partly",
              AGREES if crops >= 0.5 else PARTLY if crops > 0 else DISAGREES),
        claim("Testing: Average predictions from several regions", SLIDES,
              f"fractional max pooling, same weights: {REGION_SETS[-1]} fixed region sets {regions:+.2f} points over "
              "one. Verdict rule: +0.3 points or more agrees, any gain partly",
              AGREES if regions >= 0.3 else PARTLY if regions > 0 else DISAGREES),
    ]


def plot_procedures(rows: list[dict], path: Path) -> Path:

    fig, ax = plt.subplots(figsize=(8, 4))
    names = [r["procedure"] for r in rows]
    ax.bar(range(len(rows)), [r["test_acc"] for r in rows], color=["C0"] * len(TTA) + ["C1"] * len(REGION_SETS))
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=20, fontsize=8)
    low = min(r["test_acc"] for r in rows)
    ax.set(ylim=(max(0.0, low - 0.03), min(1.0, max(r["test_acc"] for r in rows) + 0.01)), ylabel="test accuracy",
           title="Test-time averaging (median over seeds)")
    return save_figure(fig, path)


@experiment("test-time", "averaging at test time: fixed crops, flips and scales; several fractional-pooling "
                         "region sets")
def test_time(ctx: LabContext) -> LabResult:
    seeds = ctx.size(3, 1)
    defaults = DEFAULTS + ctx.size([], QUICK)
    per_view = {t: [] for t in TTA}
    per_sets = {k: [] for k in REGION_SETS}
    for s in range(seeds):
        cfg = ctx.config(defaults, f"seed={s}")
        trial = ctx.trial(f"crops/seed{s}", cfg)
        model, data = trial.load_model(), ctx.data(cfg)
        for t in TTA:
            per_view[t].append(test_acc(model, data, t))
        cfg = ctx.config(defaults, *FRACTIONAL, f"seed={s}")
        model, data = ctx.trial(f"fractional/seed{s}", cfg).load_model(), ctx.data(cfg)
        for k in REGION_SETS:
            per_sets[k].append(test_acc(with_region_sets(model, k), data))
    rows = [{"procedure": f"tta {t}", "views": {"none": 1, "flip": 2, "crops": 10, "scales": 30}[t], "seeds": seeds,
             "test_acc": median(v)} for t, v in per_view.items()]
    rows += [{"procedure": f"region sets {k}", "views": k, "seeds": seeds, "test_acc": median(v)} for k, v in per_sets.items()]
    cfg = ctx.config(defaults)
    setup = (f"trainlab's convnet (width {cfg['model']['width']}, {cfg['model']['depth']} stages) on "
             f"{cfg['data']['name']}, trained with random flips and 1-pixel crops, adam, cosine, "
             f"{cfg['train']['epochs']} epochs, {seeds} seed(s), medians; then the best weights tested with "
             "`--tta none|flip|crops|scales`. Region sets: the same convnet with 3 stages and fractional max "
             "pooling (no augmentation), tested with `model.fractional_eval_sets` 1, 2, 4, 8 on the same weights.")
    return LabResult("test-time averaging", setup, ["procedure", "views", "seeds", "test_acc"], rows,
                     test_time_claims(rows), [plot_procedures(rows, ctx.plot_path("test_time"))])
