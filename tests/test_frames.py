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
    "curve",
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
    "anchor",
    "cumulative_compute",
    "tokens_estimated",
]
DTYPES = {
    "lineage": "str",
    "curve": "category",
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
    "anchor": "bool",
    "cumulative_compute": "float64",
    "tokens_estimated": "bool",
}


def dataset(rows: pd.DataFrame) -> xr.Dataset:
    """Return a ddxr Dataset from one row per point (point coordinates and METRICS columns), metrics as float32."""
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


def only(ds: xr.Dataset, **labels: str) -> xr.Dataset:
    """Return the points whose coordinates equal ``labels``, every level kept."""
    return ds.isel(point=np.logical_and.reduce([(ds[name] == value).to_numpy() for name, value in labels.items()]))


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
    assert frame["params"].cat.ordered and frame["learning_rate_label"].cat.ordered and frame["curve"].cat.ordered
    assert frame["params"].cat.categories.tolist() == [label for label in PARAMS if label in set(frame["params"])]
    # the label is the rate of the run that produced the point: pretraining points read "pretraining"
    assert ((frame["learning_rate_label"] == "pretraining") == (frame["phase"] == "pretraining")).all()
    drawn = frame[~frame["anchor"]]
    assert (drawn["phase"] == np.where(drawn["pretraining_phase"], "pretraining", drawn["run_type"])).all()
    labels = frame["learning_rate_label"].cat.categories.tolist()
    assert labels == sorted(labels, key=lambda label: -1.0 if label == "pretraining" else float(label))


def drawn_segments(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """Return the rows of each drawn segment (one ``curve``) of each metric of a long frame."""
    return [rows for _, rows in frame.groupby(["metric", "curve"], observed=True)]


def check_segments(frame: pd.DataFrame, prefix: str) -> None:
    """Return the issue's contract of drawn segments, on a long frame."""
    for rows in drawn_segments(frame):
        # one true line: tokens strictly increase, one lineage, one run besides the anchor, anchor first
        assert (np.diff(rows["cumulative_tokens"].to_numpy()) > 0).all(), rows
        assert rows["lineage"].nunique() == 1
        assert rows.loc[~rows["anchor"], "run_id"].nunique() == 1
        assert rows["anchor"].sum() <= 1 and (not rows["anchor"].any() or rows["anchor"].iloc[0])
        assert rows["phase"].nunique() == rows["learning_rate_label"].nunique() == 1
        if prefix == "shared":  # every point once: the lineage is the run's own
            drawn = rows[~rows["anchor"]]
            assert (drawn["run_id"] == drawn["lineage"]).all()


@settings(max_examples=15, deadline=None)
@given(ds=sweeps(), prefix=st.sampled_from(["shared", "copied"]))
def test_wide_frame_keeps_points_with_any_metric(ds: xr.Dataset, prefix: str) -> None:
    frame = to_frame(ds, prefix=prefix)
    assert frame.columns.tolist() == IDENTITY + METRICS
    if len(frame):
        check_identity_columns(frame, ds)
    oracle = ds.to_dataframe().reset_index().dropna(how="all", subset=METRICS)
    key = ["lineage", "run_id", "step"] if prefix == "copied" else ["run_id", "step"]
    oracle = oracle.drop_duplicates(key)  # shared: a point several lineages hold is drawn once
    drawn = frame[~frame["anchor"]]
    assert len(drawn) == len(oracle)
    merged = drawn.merge(oracle, on=key, suffixes=("", "_oracle"), validate="one_to_one")
    assert len(merged) == len(oracle)
    for metric in METRICS:
        np.testing.assert_array_equal(merged[metric], merged[f"{metric}_oracle"].astype(np.float64))
    assert len(to_frame(ds, dropna=False, prefix="copied").query("~anchor")) == ds.sizes["point"]


@settings(max_examples=15, deadline=None)
@given(ds=sweeps(), prefix=st.sampled_from(["shared", "copied"]))
def test_long_frame_drops_nan_metric_by_metric(ds: xr.Dataset, prefix: str) -> None:
    long = to_frame(ds, melt=True, prefix=prefix)
    assert long.columns.tolist() == [*IDENTITY, "metric", "value"]
    assert (str(long["metric"].dtype), str(long["value"].dtype)) == ("str", "float64")
    assert not long["value"].isna().any()
    if len(long):
        check_identity_columns(long, ds)
        check_segments(long, prefix)
        wide = to_frame(ds, prefix=prefix)
        key = ["curve", "run_id", "step"]
        pivot = long.pivot(index=key, columns="metric", values="value")
        restored = wide.set_index(key)[pivot.columns.tolist()].sort_index()
        pivot = pivot.reindex(restored.index)
        # long leaves out what wide shows in a row kept for another metric: an anchor of a metric its run never measured
        dropped = pivot.isna().to_numpy() & restored.notna().to_numpy()
        anchors = set(wide.loc[wide["anchor"], "curve"])
        assert all(curve in anchors for curve in restored.index.get_level_values("curve")[dropped.any(axis=1)])
        pd.testing.assert_frame_equal(pivot, restored.mask(dropped), check_names=False)
    if prefix == "copied":
        counts = long[~long["anchor"]]["metric"].value_counts().reindex(METRICS, fill_value=0)
        assert counts.tolist() == [int(ds[metric].notnull().sum()) for metric in METRICS]


@settings(max_examples=15, deadline=None)
@given(ds=sweeps())
def test_every_post_training_segment_starts_at_its_anchor(ds: xr.Dataset) -> None:
    points = to_frame(ds, dropna=False, prefix="copied")
    for prefix in ("shared", "copied"):
        frame = to_frame(ds, dropna=False, prefix=prefix)
        post = frame[frame["phase"] != "pretraining"]
        for curve, rows in post.groupby("curve", observed=True):
            anchor = rows.iloc[0]
            assert len(rows) >= 2 and rows["anchor"].tolist() == [True] + [False] * (len(rows) - 1), curve
            # SFT and DPO start straight on a base here: the anchor is the base checkpoint, the last pretraining
            # point of the lineage, strictly before the run's first point
            base = points[(points["lineage"] == rows["lineage"].iloc[-1]) & points["pretraining_phase"]]
            if prefix == "copied":
                assert (anchor["run_id"], anchor["step"]) == (base["run_id"].iloc[-1], base["step"].iloc[-1])
            assert anchor["pretraining_phase"] and anchor["cumulative_tokens"] < rows["cumulative_tokens"].iloc[1]
        # long: a segment keeps its anchor for every metric the base measured, so a run measured once draws a line
        long = to_frame(ds, melt=True, prefix=prefix)
        for (metric, curve), rows in long[long["phase"] != "pretraining"].groupby(["metric", "curve"], observed=True):
            anchor = frame[(frame["curve"] == curve) & frame["anchor"]]
            assert len(rows) >= 2 or np.isnan(anchor[metric].iloc[0]), (metric, curve)


def test_frame_rows_follow_segments_in_training_order(sweep: xr.Dataset) -> None:
    shuffled = sweep.isel(point=np.random.default_rng(0).permutation(sweep.sizes["point"]))
    frame = to_frame(shuffled, "hellaswag", prefix="copied")
    assert frame["lineage"].tolist() == sorted(frame["lineage"])
    assert all((group["cumulative_tokens"].diff().dropna() > 0).all() for _, group in frame.groupby("curve"))
    assert frame["learning_rate_label"].cat.categories.tolist() == ["pretraining", "2e-07", "1e-05", "3.5e-05", "1e-04"]
    assert frame["params"].cat.categories.tolist() == ["150M", "1B"]


def test_curves_are_named_per_segment(sweep: xr.Dataset) -> None:
    shared = to_frame(sweep, "hellaswag")
    assert shared["curve"].cat.categories.tolist() == [
        "150M Dolma1.7 pretraining seed 1",
        "150M Dolma1.7 pretraining seed 2",
        "150M Dolma1.7 pretraining seed 3",
        "150M Dolma1.7 pretraining seed 4",
        "150M Dolma1.7 SFT lr=1e-05",
        "150M Dolma1.7 SFT lr=3.5e-05",
        "150M Dolma1.7 SFT lr=1e-04",
        "150M Dolma1.7 DPO lr=2e-07",
        "1B C4 pretraining seed 0",
    ]
    copied = to_frame(only(sweep, params="150M"), "hellaswag", prefix="copied")
    assert copied["curve"].cat.categories.tolist() == [
        "pretraining seed 1 (for SFT lr=1e-05)",
        "pretraining seed 2 (for SFT lr=3.5e-05)",
        "pretraining seed 3 (for SFT lr=1e-04)",
        "pretraining seed 4 (for DPO lr=2e-07)",
        "SFT lr=1e-05",
        "SFT lr=3.5e-05",
        "SFT lr=1e-04",
        "DPO lr=2e-07",
    ]


def chain(rows: pd.DataFrame, sft_rate: float, dpo_rate: float, n_dpo: int) -> pd.DataFrame:
    """Return a DPO lineage continuing the SFT lineage ``rows`` (its last rows are the SFT run), at ``dpo_rate``."""
    leaf = f"dpo-of-{rows['lineage'].iloc[0]}"
    copy = rows.assign(lineage=leaf, learning_rate=dpo_rate)
    end = rows["cumulative_tokens"].max()
    dpo = copy.tail(n_dpo).assign(
        run_id=leaf,
        run_type="dpo",
        cumulative_tokens=end + 1e5 * (1 + np.arange(n_dpo)),
        step=np.arange(1, n_dpo + 1),
        tokens_estimated=True,
    )
    assert sft_rate == rows["learning_rate"].iloc[0]
    return pd.concat([copy, dpo], ignore_index=True)


def test_a_dpo_lineage_is_anchored_at_its_sft_end_and_labelled_by_run(sweep: xr.Dataset) -> None:
    rows = sweep.to_dataframe().reset_index()
    sft = rows[rows["lineage"] == "run-1"]  # SFT at 1e-05 on seed 1
    ds = dataset(pd.concat([rows, chain(sft, 1e-5, 1e-6, 3)], ignore_index=True))
    frame = to_frame(only(ds, params="150M"), "hellaswag", melt=True)
    dpo = frame[frame["curve"] == "DPO lr=1e-06 ← SFT lr=1e-05"]
    assert dpo["anchor"].tolist() == [True, False, False, False]
    sft_end = frame[(frame["run_id"] == "run-1") & ~frame["anchor"]].iloc[-1]
    assert (
        dpo.iloc[0][["run_id", "step", "cumulative_tokens"]] == sft_end[["run_id", "step", "cumulative_tokens"]]
    ).all()
    assert dpo["learning_rate_label"].astype(str).tolist() == ["1e-06"] * 4
    # the SFT part is the SFT run's: drawn once (shared), labelled with its own rate, not the DPO leaf's
    sft_rows = frame[(frame["run_id"] == "run-1") & ~frame["pretraining_phase"] & ~frame["anchor"]]
    assert set(sft_rows["curve"]) == {"SFT lr=1e-05"} and set(sft_rows["learning_rate_label"]) == {"1e-05"}
    copied = to_frame(only(ds, params="150M"), "hellaswag", melt=True, prefix="copied")
    in_dpo = copied[(copied["lineage"] == "dpo-of-run-1") & (copied["phase"] == "supervised_ft")]
    assert set(in_dpo["curve"]) == {"SFT lr=1e-05 (for DPO lr=1e-06 ← SFT lr=1e-05)"}
    assert set(in_dpo["learning_rate_label"]) == {"1e-05"}
    # selected without its SFT parent's lineage, the parent's rate comes from the runs table, or reads unknown
    alone = only(ds, lineage="dpo-of-run-1")
    assert "DPO lr=1e-06 ← SFT lr=unknown" in set(to_frame(alone, "hellaswag")["curve"])
    runs = xr.Dataset({"learning_rate": ("run", [1e-5, 1e-6])}, coords={"run_id": ("run", ["run-1", "dpo-of-run-1"])})
    assert "DPO lr=1e-06 ← SFT lr=1e-05" in set(to_frame(alone, "hellaswag", runs=runs)["curve"])


def test_line_per_group_plotters_draw_no_zig_zag(sweep: xr.Dataset) -> None:
    frame = to_frame(only(sweep, params="150M"), melt=True)
    for metric in METRICS:
        rows = frame.loc[frame["metric"] == metric]
        rows = rows.assign(curve=rows["curve"].cat.remove_unused_categories())
        # matplotlib, one line per curve; seaborn, one line per (hue, style) group and no units=
        for _, line in rows.groupby("curve", observed=True):
            assert line["cumulative_tokens"].is_monotonic_increasing and line["cumulative_tokens"].is_unique
        figure, axis = plt.subplots()
        sns.lineplot(data=rows, x="cumulative_tokens", y="value", hue="curve", style="phase", estimator=None, ax=axis)
        drawn = [line for line in axis.lines if len(line.get_xdata())]  # the others are legend handles
        assert len(drawn) == rows["curve"].nunique(), metric
        for line in drawn:
            assert (np.diff(line.get_xdata()) > 0).all(), metric
        legend = [text.get_text() for text in axis.get_legend().get_texts()]
        assert legend[1 : 1 + rows["curve"].nunique()] == rows["curve"].cat.categories.tolist(), metric
        plt.close(figure)


def test_dropped_rows_leave_no_unused_categories(sweep: xr.Dataset) -> None:
    for melt in (False, True):  # train_loss: post-training points of 150M lineages only
        frame = to_frame(sweep, "train_loss", melt=melt)
        assert frame["params"].cat.categories.tolist() == ["150M"]
        assert frame["learning_rate_label"].cat.categories.tolist() == ["2e-07", "1e-05", "3.5e-05", "1e-04"]
        assert len(frame) == 16 and not frame["anchor"].any()  # the bases measure no train_loss
    everything = to_frame(sweep, "train_loss", dropna=False)
    assert everything["params"].cat.categories.tolist() == ["150M", "1B"] and len(everything) == 31 + 4


def test_extra_point_coordinates_become_columns(sweep: xr.Dataset) -> None:
    counted = sweep.assign_coords(n_seeds=("point", np.arange(sweep.sizes["point"])))
    frame = to_frame(counted, "hellaswag")
    assert frame.columns.tolist() == [*IDENTITY, "n_seeds", "hellaswag"]
    with pytest.raises(DdxrError, match="prefix='each': expected one of 'shared', 'copied'"):
        to_frame(sweep, prefix="each")


def test_point_coords_share_one_string_object_per_distinct_value(sweep: xr.Dataset) -> None:
    # a point table of 10 M points would otherwise copy every point's text (2.5 GB of Arrow strings at large scale)
    # (a file's other string coordinates are gathered from tables of distinct values when read: objects kept)
    points = frames.point_coords(sweep)
    for name in ("lineage", "params", "data", "run_id", "run_type"):
        assert points[name].dtype == object
        assert points[name].tolist() == sweep[name].values.tolist()
    for level in ("lineage", "params", "data"):  # the index level's own strings, not one object per point
        assert len({id(value) for value in points[level]}) == points[level].nunique()
    assert points["cumulative_tokens"].dtype == np.float64 and points["step"].dtype == np.int64


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
    assert learning_rate_labels([1e-5, -1.0, 0.0]).categories.tolist() == ["unknown", "pretraining", "1e-05"]


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
