"""Decision accuracy vs compute: how early, and how small, the recipe ranking matches the 1B ranking.

For each smaller size (4M, 20M, 150M, 530M) and the checkpoints nearest to 25, 50, 75 and 100 % of its training,
the recipes are ranked by their seed-mean olmes_9_average at that checkpoint and compared pair by pair with their
ranking at the final 1B checkpoint (DataDecide's decision accuracy, :func:`ddxr.analysis.decision_accuracy`).
x is the compute spent on the small model up to the checkpoint (6 × N × tokens, log scale), y the share of recipe
pairs ordered as at 1B; one line per size. Uses the demo sample of ``examples/_demo.py``.

Run: ``python examples/decision_accuracy.py`` → ``cache/examples/decision_accuracy.png``
"""

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import xarray as xr
from _demo import OUT, demo_next, save, subplots

from ddxr.analysis import decision_accuracy
from ddxr.frames import params_categorical, to_frame
from ddxr.plotting import size_colours
from ddxr.vocabulary import PRETRAINING_LEARNING_RATE

SMALL = ("4M", "20M", "150M", "530M")
TARGET = "1B"
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
METRIC = "olmes_9_average"


def checkpoints(
    ds: xr.Dataset, sizes: Sequence[str] = SMALL, fractions: Sequence[float] = FRACTIONS, metric: str = METRIC
) -> pd.DataFrame:
    """Per size, the checkpoints nearest to some fractions of its training, among those measured on every lineage.

    A checkpoint counts when every pretraining-only lineage (recipe × seed) of the size measured ``metric`` there
    (the last step of some DataDecide sizes holds perplexities only); step 0 is left out (zero compute).

    Returns
    -------
    pandas.DataFrame
        One row per (params, step), sizes in numeric order then fractions: ``params`` (ordered categorical),
        ``fraction`` (the first fraction mapped to that step), ``step`` and ``cumulative_compute`` (FLOPs up to the
        checkpoint).
    """
    points = to_frame(ds.sel(learning_rate=PRETRAINING_LEARNING_RATE, params=list(sizes)), metric)
    points["params"] = points["params"].astype(str)
    lineages = points.groupby("params")["lineage"].nunique()
    steps = (
        points[points["step"] > 0]
        .groupby(["params", "step"], as_index=False)
        .agg(measured=("lineage", "size"), cumulative_compute=("cumulative_compute", "mean"))
    )
    steps = steps[steps["measured"] == steps["params"].map(lineages)]
    last = steps.groupby("params")["step"].max()
    wanted = pd.MultiIndex.from_product([last.index, fractions], names=["params", "fraction"]).to_frame(index=False)
    wanted["target"] = wanted["fraction"] * wanted["params"].map(last)
    nearest = pd.merge_asof(  # merge keys must share a dtype: steps as float for the search, int again after
        wanted.sort_values("target"),
        steps.astype({"step": "float64"}).sort_values("step"),
        left_on="target",
        right_on="step",
        by="params",
        direction="nearest",
    )
    nearest["params"] = params_categorical(nearest["params"])
    # a size with few checkpoints can map two fractions to one step: keep it once
    nearest = nearest.sort_values(["params", "fraction"]).drop_duplicates(["params", "step"])
    return nearest.astype({"step": "int64"})[["params", "fraction", "step", "cumulative_compute"]].reset_index(
        drop=True
    )


def accuracies(
    ds: xr.Dataset,
    sizes: Sequence[str] = SMALL,
    target: str = TARGET,
    fractions: Sequence[float] = FRACTIONS,
    metric: str = METRIC,
) -> pd.DataFrame:
    """Decision accuracy against ``target``'s final ranking at each checkpoint of :func:`checkpoints`.

    Returns
    -------
    pandas.DataFrame
        The checkpoints with ``decision_accuracy`` and ``n_pairs`` (recipe pairs compared) added.
    """
    table = checkpoints(ds, sizes, fractions, metric)
    # one analysis per (size, checkpoint): a handful of calls, each vectorized over all points
    results = [
        decision_accuracy(ds, metric, str(size), target, small_step=int(step))
        for size, step in zip(table["params"], table["step"], strict=True)
    ]
    return table.assign(
        decision_accuracy=[result.value for result in results], n_pairs=[result.n_pairs for result in results]
    )


def plot(table: pd.DataFrame, target_compute: float, path: Path, target: str = TARGET, metric: str = METRIC) -> Path:
    """One line per size over log compute; chance level and the target's compute as references."""
    colours = size_colours([*table["params"].astype(str), target])
    figure, axis = subplots(figsize=(8, 5))
    for size, line in table.groupby("params", observed=True, sort=True):  # one line per size
        axis.plot(line["cumulative_compute"], line["decision_accuracy"], color=colours[size], marker="o", label=size)
    axis.axhline(0.5, color="0.5", linestyle=":", linewidth=1, label="chance")
    axis.axvline(target_compute, color="0.25", linestyle="--", linewidth=1, label=f"{target} final (target)")
    axis.set_xscale("log")
    axis.set_ylim(0.4, 1.02)
    axis.set_xlabel("compute up to the checkpoint (FLOPs = 6 × N × tokens)")
    axis.set_ylabel("decision accuracy")
    pairs = int(table["n_pairs"].max())
    axis.set_title(f"Recipe ranking by {metric} vs the {target} final ranking ({pairs} recipe pairs)")
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(title="params", loc="lower right", fontsize=9)
    return save(figure, path)


def main(out: Path = OUT) -> Path:
    """Draw decision accuracy vs compute into ``out/decision_accuracy.png`` and return that path."""
    ds = demo_next(out).dataset()
    table = accuracies(ds)
    target_compute = float(ds.sel(params=TARGET, learning_rate=PRETRAINING_LEARNING_RATE)["cumulative_compute"].max())
    shown = table.groupby("params", observed=True)["decision_accuracy"].agg(
        lambda values: "/".join(f"{v:.2f}" for v in values)
    )
    fractions = "/".join(f"{fraction:.0%}" for fraction in FRACTIONS)
    print(
        f"decision accuracy vs {TARGET} at {fractions} of training: " + ", ".join(f"{k} {v}" for k, v in shown.items())
    )
    return plot(table, target_compute, Path(out) / "decision_accuracy.png")


if __name__ == "__main__":
    main()
