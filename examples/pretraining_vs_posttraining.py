"""Does the winner stay the winner after finetuning? Recipe scores before and after supervised finetuning.

For the model size whose supervised-finetuning (SFT) runs cover the most data recipes (ties: the larger size), each
recipe is one point: x its pretraining olmes_9_average at the base checkpoints its SFT runs started from (mean over
distinct bases), y its best post-training olmes_9_average over learning rates. Points above the dashed y = x line
gained from finetuning; labels give each recipe's rank before → after. Horizontal bars are the pretraining seed
standard deviation at those checkpoints (:func:`ddxr.analysis.std_over_seeds`): a pair of recipes whose order flips
after finetuning while their pretraining scores differ by less than the seed noise of the difference
(√(σ₁² + σ₂²)) is no evidence that finetuning changed the ranking — the script lists every flip and says which are
within seed noise. The title holds :func:`ddxr.analysis.posttraining_decision_accuracy` (share of recipe pairs
ordered alike before and after) and the Spearman correlation of the two scores. Uses the demo sample of
``examples/_demo.py``.

Run: ``python examples/pretraining_vs_posttraining.py`` → ``cache/examples/pretraining_vs_posttraining.png``
"""

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from _demo import OUT, demo_next, save, subplots

from ddxr.analysis import final, posttraining_decision_accuracy, std_over_seeds
from ddxr.frames import params_categorical, point_coords
from ddxr.plotting import size_colours

METRIC = "olmes_9_average"
RUN_TYPE = "supervised_ft"


def _finals(ds: xr.Dataset, phase: str, metric: str) -> pd.DataFrame:
    """:func:`ddxr.analysis.final` as a frame indexed by lineage: coordinates, ``value`` and its ``tokens``."""
    result = final(ds, phase, metric)
    columns = {name: result[name].to_numpy() for name in ("params", "data", "seed", "run_type")}
    columns |= {
        "value": result[metric].to_numpy().astype(float),
        "tokens": result[f"{metric}_cumulative_tokens"].to_numpy(),
    }
    return pd.DataFrame(columns, index=pd.Index(result["lineage"].to_numpy(), name="lineage"))


def recipe_scores(ds: xr.Dataset, metric: str = METRIC, run_type: str = RUN_TYPE) -> pd.DataFrame:
    """Per size and recipe with post-training lineages of ``run_type``: its score before and after post-training.

    Scores as in :func:`ddxr.analysis.posttraining_decision_accuracy` with ``aggregate="best"``: before, the mean
    over the recipe's distinct base checkpoints (seed, tokens) of their pretraining value; after, the best final
    post-training value over its lineages (highest, or lowest for a lower-is-better metric).

    Returns
    -------
    pandas.DataFrame
        One row per (params, data) measured in both phases: ``params`` (ordered categorical), ``data``,
        ``pretraining``, ``posttraining``, ``lineages`` (post-training lineages measured) and ``seed_std`` (the
        pretraining seed standard deviation at the base checkpoints' steps, mean over them; NaN with one seed).
    """
    after = _finals(ds, "posttraining", metric)
    after = after[(after["run_type"] == run_type) & after["value"].notna()]
    before = _finals(ds, "pretraining", metric).reindex(after.index)
    bases = before.dropna(subset=["value"]).drop_duplicates(["params", "data", "seed", "tokens"])
    best = "max" if bool(ds[metric].attrs["higher_is_better"]) else "min"
    scores = pd.concat(
        [
            bases.groupby(["params", "data"])["value"].mean().rename("pretraining"),
            after.groupby(["params", "data"])["value"].agg(best).rename("posttraining"),
            after.groupby(["params", "data"]).size().rename("lineages"),
        ],
        axis=1,
        join="inner",
    )
    scores = scores.join(base_seed_std(ds, bases, metric)).reset_index()
    scores["params"] = params_categorical(scores["params"])
    return scores.sort_values(["params", "data"]).reset_index(drop=True)


def base_seed_std(ds: xr.Dataset, bases: pd.DataFrame, metric: str = METRIC) -> pd.Series:
    """Seed standard deviation of ``metric`` at the steps of the base checkpoints, mean per (params, data)."""
    spread = std_over_seeds(ds, metric)
    table = point_coords(spread)[["params", "data", "cumulative_tokens"]].assign(seed_std=spread[metric].to_numpy())
    at_bases = bases.merge(
        table, left_on=["params", "data", "tokens"], right_on=["params", "data", "cumulative_tokens"]
    )
    return at_bases.groupby(["params", "data"])["seed_std"].mean()


def rank_flips(scores: pd.DataFrame) -> pd.DataFrame:
    """Pairs of recipes ordered differently before and after post-training, and whether that is within seed noise.

    A flip is within seed noise when the pretraining scores differ by less than the standard deviation of their
    difference, √(σ₁² + σ₂²), from the seeds' spread at the base checkpoints.
    """
    first, second = np.triu_indices(len(scores), k=1)
    before = scores["pretraining"].to_numpy()
    after = scores["posttraining"].to_numpy()
    flipped = np.sign(before[first] - before[second]) != np.sign(after[first] - after[second])
    first, second = first[flipped], second[flipped]
    noise = np.hypot(scores["seed_std"].to_numpy()[first], scores["seed_std"].to_numpy()[second])
    gap = np.abs(before[first] - before[second])
    return pd.DataFrame(
        {
            "recipe": scores["data"].to_numpy()[first],
            "other": scores["data"].to_numpy()[second],
            "pretraining_gap": gap,
            "seed_noise": noise,
            "within_seed_noise": gap < noise,
        }
    )


def pick_size(scores: pd.DataFrame) -> str:
    """Return the size with the most recipes scored in both phases; the larger size on a tie."""
    counts = scores.groupby("params", observed=True).size()  # categories in numeric order: the last max is larger
    return str(counts.index[len(counts) - 1 - counts.to_numpy()[::-1].argmax()])


def plot(scores: pd.DataFrame, title: str, path: Path, metric: str = METRIC) -> Path:
    """Recipes before vs after, y = x for reference, each labelled with its rank before → after."""
    size = str(scores["params"].iloc[0])
    x, y = scores["pretraining"], scores["posttraining"]
    ranks_before, ranks_after = x.rank(ascending=False).astype(int), y.rank(ascending=False).astype(int)
    figure, axis = subplots(figsize=(8, 6))
    colour = size_colours([size])[size]
    axis.errorbar(x, y, xerr=scores["seed_std"], fmt="o", markersize=7, color=colour, capsize=3, zorder=3)
    axis.errorbar([], [], xerr=[], fmt="o", color=colour, capsize=3, label="pretraining ± seed std")
    spread = scores["seed_std"].fillna(0.0)
    low, high = (x - spread).min(), (x + spread).max()  # the seed bars fit in the panel
    pad_x, pad_y = 0.1 * (high - low) or 0.01, 0.1 * (y.max() - y.min()) or 0.01
    axis.set_xlim(low - pad_x, high + pad_x)
    axis.set_ylim(min(x.min(), y.min()) - pad_y, y.max() + pad_y)  # low enough for y = x to cross the panel
    diagonal = [min(axis.get_xlim()[0], axis.get_ylim()[0]), max(axis.get_xlim()[1], axis.get_ylim()[1])]
    axis.plot(diagonal, diagonal, color="0.5", linestyle="--", linewidth=1, label="y = x (no change)")
    middle = x.median()
    for recipe, px, py, rb, ra in zip(scores["data"], x, y, ranks_before, ranks_after, strict=True):  # ≤ 25 labels
        left = px > middle  # labels point inwards so none runs off the panel
        axis.annotate(
            f"{recipe} (#{rb} → #{ra})",
            (px, py),
            xytext=(-8 if left else 8, 4),
            textcoords="offset points",
            ha="right" if left else "left",
            fontsize=9,
        )
    axis.set_xlabel(f"pretraining {metric} (base checkpoint)")
    axis.set_ylabel(f"post-training {metric} (best of its SFT runs)")
    axis.set_title(title, fontsize=11)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="lower right", fontsize=9)
    return save(figure, path)


def main(out: Path = OUT) -> Path:
    """Draw the before/after scatter into ``out/pretraining_vs_posttraining.png`` and return that path."""
    ds = demo_next(out).dataset()
    scores = recipe_scores(ds)
    size = pick_size(scores)
    scores = scores[scores["params"] == size].reset_index(drop=True)
    agreement = posttraining_decision_accuracy(ds, METRIC, size, RUN_TYPE, aggregate="best")
    spearman = scores["pretraining"].corr(scores["posttraining"], method="spearman")
    title = (
        f"{size}, {len(scores)} recipes: pretraining vs {RUN_TYPE} {METRIC}\n"
        f"decision accuracy {agreement.value:.2f} ({agreement.n_pairs} pairs), Spearman {spearman:.2f}"
    )
    print(f"{size}: decision accuracy {agreement.value:.2f} over {agreement.n_pairs} pairs, Spearman {spearman:.2f}")
    changes = scores["data"] + " " + scores["pretraining"].map("{:.3f}".format) + " → "
    print("before → after: " + ", ".join(changes + scores["posttraining"].map("{:.3f}".format)))
    flips = rank_flips(scores)
    for flip in flips.itertuples():
        verdict = "within seed noise" if flip.within_seed_noise else "beyond seed noise"
        print(
            f"rank flip {flip.recipe} / {flip.other}: pretraining gap {flip.pretraining_gap:.4f} vs seed noise "
            f"{flip.seed_noise:.4f} — {verdict}"
        )
    noisy = int(flips["within_seed_noise"].sum())
    title += f"\n{len(flips)} rank flips, {noisy} within pretraining seed noise (bars: seed std)"
    return plot(scores, title, Path(out) / "pretraining_vs_posttraining.png")


if __name__ == "__main__":
    main()
