"""Scaling curves of one data recipe: olmes_9_average over cumulative tokens, one line per model size.

Each line is the mean over seeds of the recipe's pretraining checkpoints (:func:`ddxr.analysis.mean_over_seeds`),
coloured in size order on a log token axis; hollow markers are the end points of the recipe's supervised-finetuning
runs (their last measured value), so one can see how far finetuning moves a model compared with the gain from the
next size up.

Each end point is drawn at the tokens of its *base checkpoint*, joined to the base's value by a thin vertical line
(the gain from finetuning), not at its cumulative tokens: finetuning tokens are not pretraining budget, and a small
model finetuned on a billion tokens would otherwise sit far past the end of its own pretraining curve, among the
larger sizes, as if it had been pretrained longer. The script counts the runs that would have been misplaced so.
Uses the demo sample of ``examples/_demo.py``.

Run: ``python examples/scaling_curves.py`` → ``cache/examples/scaling_curves.png``
"""

from pathlib import Path

import pandas as pd
import xarray as xr
from _demo import OUT, demo_next, save, subplots

from ddxr.analysis import final, mean_over_seeds
from ddxr.frames import to_frame
from ddxr.plotting import size_colours

RECIPE = "Dolma1.7"
METRIC = "olmes_9_average"


def seed_mean_curves(ds: xr.Dataset, recipe: str = RECIPE, metric: str = METRIC) -> pd.DataFrame:
    """Seed-mean pretraining curve of ``metric`` per size of one recipe, without the step-0 point (log axis).

    Returns
    -------
    pandas.DataFrame
        :func:`ddxr.frames.to_frame` long rows (``params``, ``cumulative_tokens``, ``value``, ``n_seeds`` …) in
        training order.
    """
    curves = to_frame(mean_over_seeds(ds.sel(data=recipe), metric), metric, melt=True)
    return curves[curves["cumulative_tokens"] > 0].reset_index(drop=True)


def finetuning_end_points(ds: xr.Dataset, recipe: str = RECIPE, metric: str = METRIC) -> pd.DataFrame:
    """Last measured ``metric`` of every supervised-finetuning lineage of one recipe.

    Returns
    -------
    pandas.DataFrame
        One row per lineage with a measured value: ``params``, ``learning_rate``, ``cumulative_tokens`` (where the
        value was measured), ``value``, and the lineage's base checkpoint: ``base_tokens`` and ``base_value`` (its
        last pretraining point measuring ``metric``).
    """
    ends = final(ds.sel(data=recipe), "posttraining", metric)
    bases = final(ds.sel(data=recipe), "pretraining", metric).sel(lineage=ends["lineage"].to_numpy())
    frame = pd.DataFrame(
        {
            "run_type": ends["run_type"].to_numpy(),  # the leaf's: a DPO lineage's SFT points are its parent's
            "params": ends["params"].to_numpy(),
            "learning_rate": ends["learning_rate"].to_numpy(),
            "cumulative_tokens": ends[f"{metric}_cumulative_tokens"].to_numpy(),
            "value": ends[metric].to_numpy().astype(float),
            "base_tokens": bases[f"{metric}_cumulative_tokens"].to_numpy(),
            "base_value": bases[metric].to_numpy().astype(float),
        }
    )
    frame = frame[(frame["run_type"] == "supervised_ft") & frame["value"].notna()]
    return frame.drop(columns="run_type").reset_index(drop=True)


def plot(curves: pd.DataFrame, ends: pd.DataFrame, path: Path, recipe: str = RECIPE, metric: str = METRIC) -> Path:
    """Lines per size over log tokens, finetuning end points as hollow markers of the same colour."""
    colours = size_colours([*curves["params"].astype(str), *ends["params"]])
    figure, axis = subplots(figsize=(8, 5))
    for size, curve in curves.groupby("params", observed=True, sort=True):  # one line per size (≤ 14)
        axis.plot(curve["cumulative_tokens"], curve["value"], color=colours[size], marker=".", label=size)
    for size, points in ends.groupby("params", sort=False):
        axis.vlines(points["base_tokens"], points["base_value"], points["value"], colors=[colours[size]], linewidth=0.8)
        axis.scatter(
            points["base_tokens"], points["value"], facecolors="none", edgecolors=[colours[size]], s=50, zorder=3
        )
    if len(ends):
        axis.scatter([], [], facecolors="none", edgecolors="0.3", s=50, label="SFT end point, at its base checkpoint")
    axis.set_xscale("log")
    axis.set_xlabel("cumulative tokens")
    axis.set_ylabel(f"{metric} (mean over seeds)")
    axis.set_title(f"{recipe}: {metric} over cumulative tokens, by model size")
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(title="params", loc="upper left", fontsize=9)
    return save(figure, path)


def main(out: Path = OUT) -> Path:
    """Draw the scaling curves into ``out/scaling_curves.png`` and return that path."""
    ds = demo_next(out).dataset()
    curves, ends = seed_mean_curves(ds), finetuning_end_points(ds)
    last = curves.groupby("params", observed=True)["value"].last()
    best = ends.groupby("params", sort=False)["value"].max().reindex(last.index).dropna()
    print(f"{RECIPE} final {METRIC} (seed mean): " + ", ".join(f"{size} {value:.3f}" for size, value in last.items()))
    print(f"best SFT end point of {len(ends)}: " + ", ".join(f"{size} {value:.3f}" for size, value in best.items()))
    budget = curves.groupby("params", observed=True)["cumulative_tokens"].max()
    past = ends["cumulative_tokens"] > ends["params"].map(budget)
    print(
        f"{int(past.sum())} of {len(ends)} SFT end points lie past their size's pretraining budget in cumulative "
        "tokens; drawn at their base checkpoint instead"
    )
    return plot(curves, ends, Path(out) / "scaling_curves.png")


if __name__ == "__main__":
    main()
