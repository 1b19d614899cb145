"""Tests of ddxr.frames: plot-ready frames from random and hand-made Datasets, drawn with seaborn."""

from __future__ import annotations

import doctest
from pathlib import Path

import cf_xarray
import matplotlib
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from ddxr import frames
from ddxr.errors import DdxrError, SelectionError
from ddxr.frames import learning_rate_labels, params_categorical, to_frame
from ddxr.schema import LEVELS, POINT_COORDS
from ddxr.vocabulary import DATA, PARAMS, RECIPES

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

METRICS = ["olmes_9_average", "train_loss", "hellaswag"]
IDENTITY = [
    "lineage",
    "params",
    "data",
    "learning_rate",
    "learning_rate_label",
    "cumulative_tokens",
    "run_id",
    "run_type",
    "seed",
    "step",
    "pretraining_phase",
    "phase",
    "cumulative_compute",
    "tokens_estimated",
]
DTYPES = {
    "lineage": "str",
    "params": "category",
    "data": "str",
    "learning_rate": "float64",
    "learning_rate_label": "category",
    "cumulative_tokens": "float64",
    "run_id": "str",
    "run_type": "str",
    "seed": "int64",
    "step": "int64",
    "pretraining_phase": "bool",
    "phase": "str",
    "cumulative_compute": "float64",
    "tokens_estimated": "bool",
}


def dataset(rows: pd.DataFrame) -> xr.Dataset:
    """A ddxr Dataset from one row per point (point coordinates and METRICS columns), metrics as float32."""
    coords = xr.Coordinates.from_pandas_multiindex(pd.MultiIndex.from_frame(rows[list(LEVELS)]), "point")
    ds = xr.Dataset({name: ("point", rows[name].to_numpy(np.float32)) for name in METRICS}, coords=coords)
    return ds.assign_coords({name: ("point", rows[name].to_numpy()) for name in POINT_COORDS if name not in LEVELS})


def lineage(
    number: int, params: str, data: str, n_pre: int, n_post: int, run_type: str, learning_rate: float, values: dict
) -> pd.DataFrame:
    """Rows of one lineage: ``n_pre`` pretraining points of seed ``number``, then ``n_post`` post-training ones."""
    base = f"{params}/{RECIPES.loc[data, 'slug']}/seed{number}"
    name = f"run-{number}" if n_post else base
    n = n_pre + n_post
    pre = np.arange(n) < n_pre
    tokens = 1e6 * (1 + np.arange(n)) * (number + 1)
    return pd.DataFrame(
        {
            "lineage": name,
            "params": params,
            "data": data,
            "learning_rate": learning_rate if n_post else 0.0,
            "cumulative_tokens": tokens,
            "run_id": np.where(pre, base, name),
            "run_type": np.where(pre, "pretraining", run_type),
            "seed": number,
            "step": np.where(pre, np.arange(n) * 1250, np.arange(n) - n_pre),
            "pretraining_phase": pre,
            "cumulative_compute": 6 * 4e6 * tokens,
            "tokens_estimated": ~pre & (run_type == "dpo"),
            **{metric: column[:n] for metric, column in values.items()},
        }
    )


@st.composite
def sweeps(draw: st.DrawFn) -> xr.Dataset:
    """Random Datasets: 1–5 lineages of random sizes, recipes, lengths and learning rates, metrics sparsely NaN."""
    rows = []
    for number in range(draw(st.integers(1, 5))):
        n_post = draw(st.integers(0, 3))
        values = {
            metric: draw(st.lists(st.one_of(st.none(), st.floats(0, 5, width=32)), min_size=7, max_size=7))
            for metric in METRICS
        }
        rows.append(
            lineage(
                number,
                draw(st.sampled_from(PARAMS)),
                draw(st.sampled_from(DATA)),
                draw(st.integers(1, 4)),
                n_post,
                draw(st.sampled_from(["supervised_ft", "dpo"])),
                draw(st.sampled_from([5e-7, 1e-5, 3.5e-5, 1e-4])),
                {metric: np.array(column, dtype=float) for metric, column in values.items()},
            )
        )
    return dataset(pd.concat(rows, ignore_index=True))


@pytest.fixture
def sweep() -> xr.Dataset:
    """One 150M base finetuned at three learning rates (one run continued by DPO), and a 1B pretraining lineage."""
    dense = {"hellaswag": np.linspace(0.3, 0.6, 7), "train_loss": [np.nan] * 3 + [2.0, 1.8, 1.6, 1.5]}
    olmes = {"olmes_9_average": [np.nan, np.nan, 0.40, np.nan, np.nan, np.nan, 0.45]}  # a sparse eval metric
    rows = [
        lineage(0, "1B", "C4", 3, 0, "pretraining", 0.0, {**dense, **olmes}),
        lineage(1, "150M", "Dolma1.7", 3, 4, "supervised_ft", 1e-5, {**dense, **olmes}),
        lineage(2, "150M", "Dolma1.7", 3, 4, "supervised_ft", 3.5e-5, {**dense, **olmes}),
        lineage(3, "150M", "Dolma1.7", 3, 4, "supervised_ft", 1e-4, {**dense, **olmes}),
        lineage(4, "150M", "Dolma1.7", 3, 4, "dpo", 2e-7, {**dense, **olmes}),
    ]
    return dataset(pd.concat(rows, ignore_index=True))


def check_identity_columns(frame: pd.DataFrame, ds: xr.Dataset) -> None:
    """Columns, dtypes, categories and index every frame shares."""
    assert isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0
    assert all(isinstance(name, str) for name in frame.columns)
    assert {name: str(frame[name].dtype) for name in IDENTITY} == DTYPES
    assert not frame[IDENTITY].isna().any().any()
    assert frame["params"].cat.ordered and frame["learning_rate_label"].cat.ordered
    assert frame["params"].cat.categories.tolist() == [label for label in PARAMS if label in set(frame["params"])]
    rates = np.unique(frame["learning_rate"])
    labels = frame.drop_duplicates("learning_rate").set_index("learning_rate")["learning_rate_label"]
    assert frame["learning_rate_label"].cat.categories.tolist() == labels.loc[rates].astype(str).tolist()
    assert ((frame["learning_rate_label"] == "pretraining") == (frame["learning_rate"] == 0.0)).all()
    phase = np.where(frame["pretraining_phase"], "pretraining", frame["run_type"])
    assert (frame["phase"] == phase).all()


@settings(max_examples=30, deadline=None)
@given(ds=sweeps())
def test_wide_frame_keeps_points_with_any_metric(ds: xr.Dataset) -> None:
    frame = to_frame(ds)
    assert frame.columns.tolist() == IDENTITY + METRICS
    if len(frame):
        check_identity_columns(frame, ds)
    oracle = ds.to_dataframe().reset_index().dropna(how="all", subset=METRICS)
    assert len(frame) == len(oracle)
    key = ["lineage", "run_id", "step"]
    merged = frame.merge(oracle, on=key, suffixes=("", "_oracle"), validate="one_to_one")
    for metric in METRICS:
        np.testing.assert_array_equal(merged[metric], merged[f"{metric}_oracle"].astype(np.float64))
    assert len(to_frame(ds, dropna=False)) == ds.sizes["point"]


@settings(max_examples=30, deadline=None)
@given(ds=sweeps())
def test_long_frame_drops_nan_metric_by_metric(ds: xr.Dataset) -> None:
    long = to_frame(ds, melt=True)
    assert long.columns.tolist() == [*IDENTITY, "metric", "value"]
    assert (str(long["metric"].dtype), str(long["value"].dtype)) == ("str", "float64")
    assert not long["value"].isna().any()
    counts = long["metric"].value_counts().reindex(METRICS, fill_value=0)
    assert counts.tolist() == [int(ds[metric].notnull().sum()) for metric in METRICS]
    if len(long):
        check_identity_columns(long, ds)
        wide = to_frame(ds)
        pivot = long.pivot(index=["lineage", "run_id", "step"], columns="metric", values="value")
        restored = wide.set_index(["lineage", "run_id", "step"])[pivot.columns.tolist()]
        pd.testing.assert_frame_equal(pivot.sort_index(), restored.sort_index(), check_names=False)
    assert len(to_frame(ds, melt=True, dropna=False)) == ds.sizes["point"] * len(METRICS)


def test_frame_rows_follow_lineages_in_training_order(sweep: xr.Dataset) -> None:
    shuffled = sweep.isel(point=np.random.default_rng(0).permutation(sweep.sizes["point"]))
    frame = to_frame(shuffled, "hellaswag")
    assert frame["lineage"].tolist() == sorted(frame["lineage"])
    assert all((group["cumulative_tokens"].diff().dropna() > 0).all() for _, group in frame.groupby("lineage"))
    assert frame["learning_rate_label"].cat.categories.tolist() == ["pretraining", "2e-07", "1e-05", "3.5e-05", "1e-04"]
    assert frame["params"].cat.categories.tolist() == ["150M", "1B"]


def test_seaborn_draws_one_line_per_lineage_and_phase(sweep: xr.Dataset) -> None:
    frame = to_frame(sweep, melt=True)
    for metric, lines in {"hellaswag": 9, "olmes_9_average": 9, "train_loss": 4}.items():
        rows = frame.loc[frame["metric"] == metric]
        figure, axis = plt.subplots()
        sns.lineplot(
            data=rows,
            x="cumulative_tokens",
            y="value",
            hue="learning_rate_label",
            style="phase",
            units="lineage",
            estimator=None,
            ax=axis,
        )
        drawn = [line for line in axis.lines if len(line.get_xdata())]  # the others are legend handles
        assert len(drawn) == rows.groupby(["lineage", "phase"]).ngroups == lines, metric
        points = sorted(len(line.get_xdata()) for line in drawn)
        assert points == sorted(rows.groupby(["lineage", "phase"]).size()), metric
        legend = [text.get_text() for text in axis.get_legend().get_texts()]
        assert legend[1:6] == ["pretraining", "2e-07", "1e-05", "3.5e-05", "1e-04"], metric
        plt.close(figure)


def test_dropped_rows_leave_no_unused_categories(sweep: xr.Dataset) -> None:
    for melt in (False, True):  # train_loss: post-training points of 150M lineages only
        frame = to_frame(sweep, "train_loss", melt=melt)
        assert frame["params"].cat.categories.tolist() == ["150M"]
        assert frame["learning_rate_label"].cat.categories.tolist() == ["2e-07", "1e-05", "3.5e-05", "1e-04"]
        assert len(frame) == 16
    everything = to_frame(sweep, "train_loss", dropna=False)
    assert everything["params"].cat.categories.tolist() == ["150M", "1B"] and len(everything) == 31


def test_extra_point_coordinates_become_columns(sweep: xr.Dataset) -> None:
    counted = sweep.assign_coords(n_seeds=("point", np.arange(sweep.sizes["point"])))
    frame = to_frame(counted, "hellaswag")
    assert frame.columns.tolist() == [*IDENTITY, "n_seeds", "hellaswag"]


def test_to_frame_reads_a_lazily_opened_netcdf_file(sweep: xr.Dataset, tmp_path: Path) -> None:
    cf_xarray.encode_multi_index_as_compress(sweep, "point").to_netcdf(tmp_path / "sweep.nc", engine="netcdf4")
    opened = xr.open_dataset(tmp_path / "sweep.nc", engine="netcdf4", chunks={})
    opened = cf_xarray.decode_compress_to_multi_index(opened, "point")
    for melt in (False, True):
        pd.testing.assert_frame_equal(to_frame(opened, melt=melt), to_frame(sweep, melt=melt))


def test_learning_rate_labels_are_stable_and_distinct() -> None:
    labels = learning_rate_labels([1e-4, 0.0, 3e-5, 3.5e-5, 5e-7, 1e-4])
    assert labels.tolist() == ["1e-04", "pretraining", "3e-05", "3.5e-05", "5e-07", "1e-04"]
    assert labels.categories.tolist() == ["pretraining", "5e-07", "3e-05", "3.5e-05", "1e-04"]
    noisy = learning_rate_labels([1e-5 * 3, 3e-5, 1.23456789e-4])  # 1e-5 * 3 is 3.0000000000000004e-05
    assert noisy.tolist() == ["3e-05", "3e-05", "1.23457e-04"] and noisy.categories.tolist() == ["3e-05", "1.23457e-04"]
    assert learning_rate_labels([]).tolist() == []


def test_errors_name_the_problem(sweep: xr.Dataset) -> None:
    with pytest.raises(SelectionError, match=r"unknown metric\(s\) 'mmlu_nope'.*available \(3\): olmes_9_average"):
        to_frame(sweep, ["hellaswag", "mmlu_nope"])
    with pytest.raises(DdxrError, match="lacks point coordinate.*'run_type'.*docs/dataset.md"):
        to_frame(sweep.drop_vars("run_type"))
    holes = sweep.assign_coords(seed=("point", np.where(sweep["seed"] == 2, np.nan, sweep["seed"])))
    with pytest.raises(DdxrError, match="'seed' hold missing values"):
        to_frame(holes)
    with pytest.raises(DdxrError, match="params holds '2B', not DataDecide size labels"):
        params_categorical(["1B", "2B"])


def test_docstring_examples_run() -> None:
    assert doctest.testmod(frames).failed == 0
