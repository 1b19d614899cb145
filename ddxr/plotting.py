"""Figures shared by the demo and the examples (matplotlib, imported only when drawing)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def plot_sweep(
    frame: pd.DataFrame, path: str | Path, metrics: Sequence[str] = ("olmes_9_average", "train_loss")
) -> Path:
    """Continuous curves of a learning-rate sweep over cumulative tokens, one panel per metric.

    Colour is the learning rate, line style the phase (solid pretraining, dashed post-training); each lineage is
    one line. ``frame`` is :func:`ddxr.frames.to_frame` output with ``melt=True``.

    Parameters
    ----------
    frame : pandas.DataFrame
        Long frame with columns ``metric``, ``value``, ``cumulative_tokens``, ``lineage``, ``learning_rate_label``,
        ``pretraining_phase``.
    path : str or path
        PNG file to write.
    metrics : sequence of str
        Metrics to draw, one panel each.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label in frame["learning_rate_label"].cat.categories if label != "pretraining"]
    colours = dict(zip(labels, plt.get_cmap("viridis")(range(0, 256, 256 // max(len(labels), 1))), strict=False))
    figure, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        rows = frame[frame["metric"] == metric].sort_values(["lineage", "cumulative_tokens"])
        for _lineage, line in rows.groupby("lineage", sort=False, observed=True):
            label = line["learning_rate_label"].iloc[0]
            colour = colours.get(label, "0.4")
            pre, post = line[line["pretraining_phase"]], line[~line["pretraining_phase"]]
            # the post-training segment starts at the base checkpoint, so the two phases visibly join
            post = pd.concat([pre.tail(1), post])
            axis.plot(pre["cumulative_tokens"], pre["value"], color=colour, linestyle="-")
            axis.plot(
                post["cumulative_tokens"],
                post["value"],
                color=colour,
                linestyle="--",
                marker="o" if len(post) < 4 else None,
                markersize=4,
                label=f"lr {label}",
            )
        tokens = rows["cumulative_tokens"][rows["cumulative_tokens"] > 0]
        if len(tokens) and tokens.max() / tokens.min() > 100:
            axis.set_xscale("log")
        axis.set_xlabel("cumulative tokens")
        axis.set_ylabel(metric)
        axis.set_title(metric)
        handles = dict(zip(*reversed(axis.get_legend_handles_labels()), strict=True))
        # legend in numeric learning-rate order (the categories' order), not in drawing order
        ordered = [f"lr {label}" for label in labels if f"lr {label}" in handles]
        if ordered:
            axis.legend([handles[name] for name in ordered], ordered, title="post-training (dashed)", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
