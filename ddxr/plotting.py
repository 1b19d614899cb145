"""Figures shared by the demo, the ``ddxr plot`` command and the examples (matplotlib, imported only when drawing).

Both figures take :func:`ddxr.frames.to_frame` output with ``melt=True`` and the default ``prefix="shared"``, and
draw one line per ``curve``: every drawn segment once, so no lineage is hidden under another's copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ddxr.frames import PRETRAINING_LABEL
from ddxr.vocabulary import PARAMS

#: Metrics :func:`plot_sweep` draws by default.
SWEEP_METRICS = ("olmes_9_average", "train_loss")

_LINESTYLES = {"pretraining": "-", "supervised_ft": "-", "dpo": "--"}
_PHASE_NAMES = {"supervised_ft": "SFT", "dpo": "DPO"}


def categorical_colours(labels: Sequence[str]) -> dict[str, Any]:
    """Return a distinct colour per label, in order: tab10 for up to 9 labels, tab20 up to 18, then evenly spaced hues.

    Qualitative palettes keep neighbours apart (a sequential map makes the 9th of 12 learning rates look like the
    10th); beyond 20 labels hues are spread over ``hsv`` with alternating lightness.
    """
    import matplotlib

    labels = list(labels)
    # greys are left out: they draw the pretraining curves
    if len(labels) <= 9:
        palette = [matplotlib.colormaps["tab10"](index) for index in range(10) if index != 7]
    elif len(labels) <= 18:
        # dark hues first, then the light ones: labels next to each other never get two shades of one hue
        palette = [
            matplotlib.colormaps["tab20"](2 * index + shade) for shade in (0, 1) for index in range(10) if index != 7
        ]
    else:
        hues = matplotlib.colormaps["hsv"](np.linspace(0, 1, len(labels), endpoint=False))
        palette = [tuple(colour[:3] * (0.6 if index % 2 else 1.0)) + (1.0,) for index, colour in enumerate(hues)]
    return dict(zip(labels, palette, strict=False))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _describe(frame: pd.DataFrame) -> str:
    """``params data`` of a frame, or the lists of both when it spans several."""
    sizes = [str(label) for label in frame["params"].cat.categories if label in set(frame["params"].astype(str))]
    recipes = sorted(set(frame["data"]))
    return f"{', '.join(sizes)} {' / '.join(recipes)}"


def _save(figure, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def tokens_since_base(frame: pd.DataFrame) -> pd.Series:
    """Tokens each post-training point has seen since its lineage's base checkpoint (NaN for pretraining points).

    The base of an SFT segment is its anchor; a DPO segment anchored at its SFT parent's end counts from that
    parent's base, so SFT tokens are included.
    """
    post = frame["phase"] != "pretraining"
    anchors = frame[post & frame["anchor"]].drop_duplicates("curve")
    anchor_of_curve = anchors.set_index("curve")
    base_of_run = anchors[anchors["pretraining_phase"]].merge(
        frame[post & ~frame["anchor"]][["curve", "run_id"]].drop_duplicates("curve"), on="curve", suffixes=("", "_own")
    )
    base_of_run = base_of_run.set_index("run_id_own")["cumulative_tokens"]
    start = anchor_of_curve["cumulative_tokens"].where(
        anchor_of_curve["pretraining_phase"], anchor_of_curve["run_id"].map(base_of_run)
    )
    base = frame["curve"].map(start).astype("float64")
    return (frame["cumulative_tokens"] - base).where(post)


def plot_sweep(
    frame: pd.DataFrame, path: str | Path, metrics: Sequence[str] = SWEEP_METRICS, title: str | None = None
) -> Path:
    """Draw :func:`sweep_figure` into a PNG file (folders created) and return its path."""
    return _save(sweep_figure(frame, metrics, title), path)


def sweep_figure(frame: pd.DataFrame, metrics: Sequence[str] = SWEEP_METRICS, title: str | None = None):
    """Draw a learning-rate sweep: pretraining and every post-training run at once, one row of panels per metric.

    Left, the whole lineage over cumulative tokens (pretraining curves in greys); right, the post-training segments
    over the tokens seen since the base checkpoint on a symmetric-log axis, so short and long runs both show and each
    segment starts at 0 from its base value. Colour is the learning rate of the run that produced the segment, line
    style its phase (solid SFT, dashed DPO); one legend entry per curve, pretraining included. A metric without
    pretraining values (``train_loss``) gets the right-hand panel only, at full width.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`ddxr.frames.to_frame` output with ``melt=True`` and ``prefix="shared"``.
    metrics : sequence of str
        Metrics to draw, one row each; those absent from ``frame`` are skipped.
    title : str, optional
        Figure title; default the sizes and recipes of ``frame``.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, with one figure legend entry per curve in ``curve`` order.
    """
    plt = _pyplot()
    metrics = [metric for metric in metrics if metric in set(frame["metric"])]
    rows = frame[frame["metric"].isin(metrics)].assign(since_base=lambda rows: tokens_since_base(rows))
    rates = [label for label in frame["learning_rate_label"].cat.categories if label != PRETRAINING_LABEL]
    colours = categorical_colours(rates)
    seeds = sorted(set(rows.loc[rows["phase"] == "pretraining", "curve"]))
    greys = {curve: str(0.15 + 0.5 * rank / max(len(seeds), 1)) for rank, curve in enumerate(seeds)}
    figure = plt.figure(figsize=(14, 4.6 * max(len(metrics), 1)))
    grid = figure.add_gridspec(max(len(metrics), 1), 2)
    handles: dict[str, Any] = {}
    for row, metric in enumerate(metrics):
        lines = rows[rows["metric"] == metric]
        has_pretraining = (lines["phase"] == "pretraining").any()
        panels = [figure.add_subplot(grid[row, 0]), figure.add_subplot(grid[row, 1])] if has_pretraining else []
        since = panels[1] if panels else figure.add_subplot(grid[row, :])
        for curve, line in lines.groupby("curve", observed=True, sort=True):
            phase = line["phase"].iloc[0]
            colour = greys[curve] if phase == "pretraining" else colours[str(line["learning_rate_label"].iloc[0])]
            style = {"color": colour, "linestyle": _LINESTYLES[phase], "linewidth": 1.6}
            if len(line) <= 3:  # an end-of-run eval: its point must show
                style |= {"marker": "o", "markersize": 4}
            if has_pretraining:
                (handle,) = panels[0].plot(line["cumulative_tokens"], line["value"], label=curve, **style)
                handles.setdefault(curve, handle)
            if phase != "pretraining":
                (handle,) = since.plot(line["since_base"], line["value"], label=curve, **style)
                handles.setdefault(curve, handle)
        if has_pretraining:
            panels[0].set_xlabel("cumulative tokens (pretraining, then post-training)")
            panels[0].set_title(f"{metric}: whole lineages", fontsize=11)
            panels[0].set_ylabel(metric)
        since.set_xscale("symlog", linthresh=_linear_threshold(lines["since_base"]))
        since.set_xlabel("tokens since the base checkpoint (symmetric log)")
        since.set_title(f"{metric}: post-training runs from their base", fontsize=11)
        since.set_ylabel(metric)
        for axis in figure.axes[-2 if has_pretraining else -1 :]:
            axis.grid(True, alpha=0.3)
    ordered = [curve for curve in frame["curve"].cat.categories if curve in handles]
    figure.legend(
        [handles[curve] for curve in ordered],
        ordered,
        loc="upper left",
        bbox_to_anchor=(1.0, 0.97),
        fontsize=8,
        title="curve (colour: learning rate; dashed: DPO)",
        title_fontsize=8,
        frameon=False,
    )
    figure.suptitle(title or f"{_describe(frame)}: learning-rate sweep", fontsize=13)
    figure.tight_layout()
    return figure


def _linear_threshold(since_base: pd.Series) -> float:
    """Linear range of the symlog axis: the smallest positive distance from a base, so 0 and every point show."""
    positive = since_base[since_base > 0]
    return float(positive.min()) if len(positive) else 1.0


def plot_scaling(frame: pd.DataFrame, path: str | Path, metric: str, title: str | None = None) -> Path:
    """Scaling curves: one line per model size over cumulative tokens (log axis), sizes coloured in numeric order.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`ddxr.frames.to_frame` output with ``melt=True`` of pretraining points, typically of
        :func:`ddxr.analysis.mean_over_seeds` (one curve per size and recipe).
    path : str or path
        PNG file to write.
    metric : str
        The metric to draw.
    title : str, optional
        Figure title; default the recipes and the metric.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    plt = _pyplot()
    lines = frame[(frame["metric"] == metric) & (frame["cumulative_tokens"] > 0)]  # log axis: no step 0
    figure, axis = plt.subplots(figsize=(9, 5.5))
    colours = size_colours(lines["params"].astype(str))
    recipes = sorted(set(lines["data"]))
    for (size, recipe), line in lines.groupby(["params", "data"], observed=True, sort=True):
        style = "-" if len(recipes) == 1 else ["-", "--", ":", "-."][recipes.index(recipe) % 4]
        label = str(size) if len(recipes) == 1 else f"{size} {recipe}"
        axis.plot(line["cumulative_tokens"], line["value"], color=colours[str(size)], linestyle=style, label=label)
    axis.set_xscale("log")
    axis.set_xlabel("cumulative tokens")
    axis.set_ylabel(f"{metric} (mean over seeds)" if "n_seeds" in lines else metric)
    axis.grid(True, which="major", alpha=0.3)
    axis.set_title(title or f"{' / '.join(recipes)}: {metric} over cumulative tokens, by model size", fontsize=11)
    axis.legend(title="params", fontsize=8, loc="best")
    figure.tight_layout()
    return _save(figure, path)


def size_colours(sizes: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """One viridis colour per size label, dark to light in numeric size order (legends read small to large)."""
    import matplotlib

    ordered = [label for label in PARAMS if label in set(sizes)]
    colormap = matplotlib.colormaps["viridis"]
    return {label: colormap(0.9 * rank / max(len(ordered) - 1, 1)) for rank, label in enumerate(ordered)}
