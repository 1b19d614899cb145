"""Tests of ddxr.plotting: the sweep figure draws every curve once with a legend entry, colours stay distinct."""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from test_frames import METRICS, chain, dataset, lineage

from ddxr.frames import to_frame
from ddxr.plotting import categorical_colours, plot_sweep, sweep_figure, tokens_since_base

matplotlib.use("Agg")
import matplotlib.pyplot as plt


@pytest.fixture
def sweep() -> xr.Dataset:
    """One 150M base (seed 0) finetuned at three rates, the 1e-05 run continued by DPO, and two more seeds."""
    dense = {metric: np.linspace(0.3, 0.6, 7) for metric in METRICS}
    rows = [lineage(0, "150M", "Dolma1.7", 3, 0, "pretraining", 0.0, dense)]
    rows += [lineage(1, "150M", "Dolma1.7", 3, 0, "pretraining", 0.0, dense)]
    for number, rate in enumerate([1e-5, 3e-5, 1e-4]):
        sft = lineage(0, "150M", "Dolma1.7", 3, 4, "supervised_ft", rate, dense)
        rows.append(
            sft.assign(lineage=f"sft-{number}", run_id=sft["run_id"].where(sft["pretraining_phase"], f"sft-{number}"))
        )
    rows.append(chain(rows[2], 1e-5, 1e-6, 3))
    return dataset(pd.concat(rows, ignore_index=True))


def test_sweep_figure_draws_every_curve_once_with_a_legend_entry(sweep: xr.Dataset, tmp_path) -> None:
    frame = to_frame(sweep, ["olmes_9_average", "train_loss"], melt=True)
    curves = frame["curve"].cat.categories.tolist()
    assert curves == [
        "pretraining seed 0",
        "pretraining seed 1",
        "SFT lr=1e-05",
        "SFT lr=3e-05",
        "SFT lr=1e-04",
        "DPO lr=1e-06 ← SFT lr=1e-05",
    ]
    figure = sweep_figure(frame)
    legend = figure.legends[0]
    assert [text.get_text() for text in legend.get_texts()] == curves  # the shared pretraining curve included
    whole, since = figure.axes[0], figure.axes[1]
    assert sorted(line.get_label() for line in whole.get_lines()) == sorted(curves)
    assert sorted(line.get_label() for line in since.get_lines()) == sorted(curves[2:])  # post-training only
    drawn = {line.get_label(): np.asarray(line.get_xdata(), dtype=float) for line in since.get_lines()}
    for curve, x in drawn.items():  # one true line each, SFT from its base checkpoint, DPO from the SFT end
        assert (np.diff(x) > 0).all() and x[0] == (drawn["SFT lr=1e-05"][-1] if "DPO" in curve else 0.0), curve
    assert figure.get_suptitle() == "150M Dolma1.7: learning-rate sweep"
    assert [axis.get_title() for axis in figure.axes[:2]] == [
        "olmes_9_average: whole lineages",
        "olmes_9_average: post-training runs from their base",
    ]
    plt.close(figure)
    png = plot_sweep(frame, tmp_path / "nested" / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tokens_since_base_counts_sft_tokens_for_dpo(sweep: xr.Dataset) -> None:
    frame = to_frame(sweep, "olmes_9_average", melt=True)
    since = tokens_since_base(frame)
    assert since[frame["phase"] == "pretraining"].isna().all()
    base = frame.loc[(frame["curve"] == "SFT lr=1e-05") & frame["anchor"], "cumulative_tokens"].item()
    dpo = frame["curve"] == "DPO lr=1e-06 ← SFT lr=1e-05"
    np.testing.assert_array_equal(since[dpo], frame.loc[dpo, "cumulative_tokens"] - base)
    assert (since[frame["anchor"] & (frame["phase"] == "supervised_ft")] == 0).all()


@pytest.mark.parametrize("count", [4, 9, 12, 18, 25])
def test_categorical_colours_stay_distinct(count: int) -> None:
    colours = np.array([colour[:3] for colour in categorical_colours([f"c{index}" for index in range(count)]).values()])
    assert len(colours) == count
    distances = [np.abs(a - b).sum() for a, b in itertools.combinations(colours, 2)]
    assert min(distances) > 0.1, count
    if count <= 18:  # greys are kept for the pretraining curves
        assert (colours.max(axis=1) - colours.min(axis=1) > 0.05).all()
