"""Does the winner stay the winner after finetuning? Recipe scores before and after supervised finetuning.

For the model size whose supervised-finetuning (SFT) runs cover the most data recipes (ties: the larger size), each
recipe is one point: x its pretraining olmes_9_average at the base checkpoints its SFT runs started from (mean over
distinct bases), y its best post-training olmes_9_average over learning rates. Points above the dashed y = x line
gained from finetuning; labels give each recipe's rank before → after. The title holds
:func:`ddxr.analysis.posttraining_decision_accuracy` (share of recipe pairs ordered alike before and after) and the
Spearman correlation of the two scores. Uses the demo sample of ``examples/_demo.py``.

Run: ``python examples/pretraining_vs_posttraining.py`` → ``cache/examples/pretraining_vs_posttraining.png``
"""

from pathlib import Path

import pandas as pd
import xarray as xr
from _demo import OUT, demo_next, save, size_colours, subplots

from ddxr.analysis import final, posttraining_decision_accuracy
from ddxr.frames import params_categorical

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
        ``pretraining``, ``posttraining`` and ``lineages`` (post-training lineages measured).
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
    ).reset_index()
    scores["params"] = params_categorical(scores["params"])
    return scores.sort_values(["params", "data"]).reset_index(drop=True)


def pick_size(scores: pd.DataFrame) -> str:
    """The size with the most recipes scored in both phases; the larger size on a tie."""
    counts = scores.groupby("params", observed=True).size()  # categories in numeric order: the last max is larger
    return str(counts.index[len(counts) - 1 - counts.to_numpy()[::-1].argmax()])


def plot(scores: pd.DataFrame, title: str, path: Path, metric: str = METRIC) -> Path:
    """Recipes before vs after, y = x for reference, each labelled with its rank before → after."""
    size = str(scores["params"].iloc[0])
    x, y = scores["pretraining"], scores["posttraining"]
    ranks_before, ranks_after = x.rank(ascending=False).astype(int), y.rank(ascending=False).astype(int)
    figure, axis = subplots(figsize=(8, 6))
    axis.scatter(x, y, s=60, color=size_colours([size])[size], zorder=3)
    pad_x, pad_y = 0.2 * (x.max() - x.min()) or 0.01, 0.1 * (y.max() - y.min()) or 0.01
    axis.set_xlim(x.min() - pad_x, x.max() + pad_x)
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
    axis.legend(loc="upper left", fontsize=9)
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
    return plot(scores, title, Path(out) / "pretraining_vs_posttraining.png")


if __name__ == "__main__":
    main()
