"""ddxr's MultiIndex: ``.sel`` on every level, ``select`` on point coordinates, index (re)installation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from roundtrip import curves_datasets, example_datasets

from ddxr.errors import BuildError, SelectionError
from ddxr.index import (
    FLOAT_LEVELS,
    LEVELS,
    POINT_DIM,
    RELATIVE_TOLERANCE,
    DdxrIndex,
    point_coordinates,
    select,
    set_ddxr_index,
    with_pandas_index,
)

SWEEP_LINEAGES = {
    "2509sft_DD-dolma1_7-150M-6250-0_lr=1e-05",
    "2509sft_DD-dolma1_7-150M-6250-0_lr=3e-05",
    "2509sft_DD-dolma1_7-150M-6250-0_lr=0.0001",
}


@pytest.fixture(scope="module")
def curves() -> xr.Dataset:
    return example_datasets()[0]


def frame_of(ds: xr.Dataset) -> pd.DataFrame:
    return ds.to_dataframe().reset_index()


def assert_same_points(actual: xr.Dataset, expected: pd.DataFrame) -> None:
    """Return same rows in the same order; dtypes aside (pandas infers object rather than str for an empty column)."""
    pd.testing.assert_frame_equal(frame_of(actual), expected.reset_index(drop=True), check_dtype=False)


# --- the pandas oracle ----------------------------------------------------------------------------------------------


def oracle_mask(frame: pd.DataFrame, labels: dict[str, Any]) -> np.ndarray:
    """Return what a selection means, written independently with plain pandas comparisons on a long frame."""
    mask = np.ones(len(frame), dtype=bool)
    for name, label in labels.items():
        column = frame[name]
        tolerant = name in FLOAT_LEVELS
        if isinstance(label, slice):
            low, high = label.start, label.stop
            if low is not None:
                mask &= (column >= (low - RELATIVE_TOLERANCE * abs(low) if tolerant else low)).to_numpy()
            if high is not None:
                mask &= (column <= (high + RELATIVE_TOLERANCE * abs(high) if tolerant else high)).to_numpy()
            continue
        wanted = list(label) if isinstance(label, list | tuple) else [label]
        hits = np.zeros(len(frame), dtype=bool)
        for value in wanted:  # a handful of labels: clarity over speed in the oracle
            if tolerant:
                hits |= ((column - value).abs() <= RELATIVE_TOLERANCE * abs(value)).to_numpy()
            else:
                hits |= (column == value).to_numpy()
        mask &= hits
    return mask


@st.composite
def selections(draw: st.DrawFn, frame: pd.DataFrame, names: tuple[str, ...]) -> dict[str, Any]:
    """Random labels on a random subset of ``names``: a present scalar, a list of present values, or a slice."""
    chosen = draw(st.lists(st.sampled_from(names), unique=True, min_size=1, max_size=len(names)))
    labels: dict[str, Any] = {}
    for name in chosen:
        present = sorted(frame[name].unique().tolist())
        kind = draw(st.sampled_from(("scalar", "list", "slice")))
        if kind == "scalar":
            labels[name] = draw(st.sampled_from(present))
        elif kind == "list":
            labels[name] = draw(st.lists(st.sampled_from(present), min_size=1, max_size=3))
        else:
            ends = st.one_of(st.none(), st.sampled_from(present))
            labels[name] = slice(draw(ends), draw(ends))
    return labels


# --- properties -----------------------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_sel_matches_a_pandas_filter_on_any_levels(data: st.DataObject) -> None:
    ds = data.draw(curves_datasets())
    frame = frame_of(ds)
    labels = data.draw(selections(frame, LEVELS))

    selected = ds.sel(labels)

    assert_same_points(selected, frame[oracle_mask(frame, labels)])
    assert isinstance(selected.xindexes[POINT_DIM], DdxrIndex)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_select_matches_a_pandas_filter_on_levels_and_point_coordinates(data: st.DataObject) -> None:
    ds = data.draw(curves_datasets())
    frame = frame_of(ds)
    labels = data.draw(selections(frame, (*LEVELS, "run_id", "run_type", "seed", "step", "pretraining_phase")))

    assert_same_points(select(ds, **labels), frame[oracle_mask(frame, labels)])


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_label_matching_no_point_raises_selection_error(data: st.DataObject) -> None:
    ds = data.draw(curves_datasets())
    name = data.draw(st.sampled_from(LEVELS))
    absent = {"learning_rate": 7.7e-3, "cumulative_tokens": 123.456}.get(name, "absent value")
    as_list = data.draw(st.booleans())
    label = [frame_of(ds)[name].iloc[0], absent] if as_list else absent

    with pytest.raises(SelectionError, match=rf"{name}=\[{absent!r}\] matches no point.* such as "):
        ds.sel({name: label})


@settings(max_examples=30, deadline=None)
@given(ds=curves_datasets(), scalar=st.booleans())
def test_every_level_is_kept_whatever_is_selected(ds: xr.Dataset, scalar: bool) -> None:
    point = frame_of(ds).iloc[0]
    labels = {name: point[name] if scalar else [point[name]] for name in LEVELS}

    selected = ds.sel(labels)

    assert list(frame_of(selected).columns) == list(frame_of(ds).columns)
    assert selected.sizes[POINT_DIM] >= 1


# --- semantics on the example ---------------------------------------------------------------------------------------


def test_sweep_selection_with_scalars_lists_and_slices(curves: xr.Dataset) -> None:
    sweep = curves.sel(
        params="150M", data="Dolma1.7", learning_rate=[1e-5, 3e-5, 1e-4], cumulative_tokens=slice(0, 3e9)
    )

    assert set(sweep["lineage"].values) == SWEEP_LINEAGES
    assert sweep["cumulative_tokens"].max() <= 3e9
    # each lineage: the base checkpoints up to step 6250 (6 of them) then 4 SFT steps
    assert sweep.sizes[POINT_DIM] == 3 * (6 + 4)


def test_float_levels_match_what_a_user_types(curves: xr.Dataset) -> None:
    # learning rates as arithmetic leaves them: a few ulps away from what the user types
    drifted = curves["learning_rate"].values * (1 + 1e-15)
    plain = curves.reset_index(POINT_DIM).assign_coords(learning_rate=(POINT_DIM, drifted))
    computed = set_ddxr_index(plain)

    assert not (computed["learning_rate"].values == 3e-5).any()
    assert computed.sel(learning_rate=3e-5).sizes[POINT_DIM] == 10
    assert computed.sel(learning_rate=slice(1e-5, 3e-5)).sizes[POINT_DIM] == 20
    with pytest.raises(SelectionError, match=r"learning_rate=\[2e-05\] matches no point within relative tolerance"):
        computed.sel(learning_rate=2e-5)


def test_nearest_picks_the_closest_stored_value(curves: xr.Dataset) -> None:
    nearest = curves.sel(learning_rate=1.2e-5, method="nearest")
    assert set(nearest["learning_rate"].values) == {1e-5}
    assert set(curves.sel(learning_rate=[1.2e-5, 9e-5], method="nearest", params="150M")["learning_rate"].values) == {
        1e-5,
        1e-4,
    }
    with pytest.raises(SelectionError, match="matches no point"):
        curves.sel(learning_rate=1.2e-5, method="nearest", tolerance=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"learning_rate": 1e-5, "method": "pad"}, r"method='pad' is unsupported"),
        ({"learning_rate": 1e-5, "tolerance": 1e-6}, r"tolerance= needs method='nearest'"),
        ({"params": slice("150M", "4M", 2)}, r"take no step"),
        ({"learning_rate": "fast"}, r"expected labels comparable with the float64 values of 'learning_rate'"),
        ({"params": "7B"}, r"params=\['7B'\] matches no point; expected values of 'params' such as '150M', '4M'"),
    ],
)
def test_selection_errors_say_what_is_wrong(curves: xr.Dataset, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        curves.sel(**kwargs)


def test_selection_error_is_a_key_error(curves: xr.Dataset) -> None:
    with pytest.raises(KeyError):
        curves.sel(data="Dolma1.8")


def test_string_slices_are_lexical_ranges(curves: xr.Dataset) -> None:
    assert set(curves.sel(data=slice("D", "Dolma"))["data"].values) == {"DCLM-Baseline 25% / Dolma 75%"}
    assert set(curves.sel(lineage=slice("2509sft", None))["lineage"].values) == SWEEP_LINEAGES | {
        "4M/dolma1_7/seed0",
        "4M/dclm-baseline-25p-dolma1.7-75p/seed0",
    }


def test_later_levels_look_beyond_the_points_earlier_levels_kept(curves: xr.Dataset) -> None:
    # each level after the first is matched on the points still selected; a value carried only by other points is
    # a valid label (no point has both), a value no point carries is an error, whatever the level order
    assert curves.sel(params="4M", learning_rate=1e-5).sizes[POINT_DIM] == 0
    assert curves.sel(learning_rate=[1e-5, 3e-5], params=["4M", "150M"]).sizes[POINT_DIM] > 0
    assert curves.sel(params="4M", learning_rate=[0.0, 1e-5]).sizes[POINT_DIM] == (curves.params == "4M").sum()
    with pytest.raises(SelectionError, match="5e-05"):
        curves.sel(params="4M", learning_rate=[1e-5, 5e-5])


def test_empty_slice_gives_zero_points_with_every_column(curves: xr.Dataset) -> None:
    empty = curves.sel(cumulative_tokens=slice(1e30, None))

    assert empty.sizes[POINT_DIM] == 0
    assert list(frame_of(empty).columns) == list(frame_of(curves).columns)


def test_index_survives_isel_concat_and_repeated_sel(curves: xr.Dataset) -> None:
    first = curves.isel({POINT_DIM: slice(0, 10)})
    last = curves.isel({POINT_DIM: [-2, -1]})
    joined = xr.concat([first, last], dim=POINT_DIM)
    twice = curves.sel(params="150M").sel(learning_rate=[1e-5, 1e-4]).sel(cumulative_tokens=slice(2e9, None))

    for ds in (first, last, joined, twice):
        assert isinstance(ds.xindexes[POINT_DIM], DdxrIndex)
    assert joined.sel(learning_rate=[0.0, 2e-7]).sizes[POINT_DIM] == 12
    assert set(twice["learning_rate"].values) == {1e-5, 1e-4}
    # a subset carries only level values its points hold: 4M is gone from the 150M selection's index
    assert "4M" not in twice.xindexes[POINT_DIM].index.levels[1]


def test_attrs_of_level_coordinates_survive_sel(curves: xr.Dataset) -> None:
    assert curves.sel(params=["150M"])["cumulative_tokens"].attrs == curves["cumulative_tokens"].attrs


def test_point_dimension_labels_keep_stock_behaviour(curves: xr.Dataset) -> None:
    key = tuple(frame_of(curves).loc[0, list(LEVELS)])
    assert curves.sel({POINT_DIM: key})["step"].item() == 0
    # a dict of level labels given to the dimension goes through ddxr's selection
    assert curves.sel({POINT_DIM: {"params": ["4M"]}}).sizes[POINT_DIM] == 12


def test_select_filters_on_point_coordinates(curves: xr.Dataset) -> None:
    dpo = select(curves, run_type="dpo", step=slice(2, None))
    trained = select(curves, params="150M", pretraining_phase=False, tokens_estimated=True)

    assert dpo["step"].values.tolist() == [2, 3]
    assert set(trained["run_type"].values) == {"dpo"}
    assert isinstance(dpo.xindexes[POINT_DIM], DdxrIndex)


def test_select_names_unknown_coordinates_and_missing_values(curves: xr.Dataset) -> None:
    with pytest.raises(
        SelectionError, match=r"unknown level or point coordinate\(s\) \['size'\]: expected one of \['lineage'"
    ):
        select(curves, size="150M")
    with pytest.raises(
        SelectionError, match=r"run_type=\['rlhf'\] matches no point; expected values of 'run_type' such as 'dpo'"
    ):
        select(curves, run_type="rlhf")
    with pytest.raises(SelectionError, match="no ddxr index"):
        select(curves.drop_indexes([POINT_DIM, *LEVELS]), params="150M")


def test_unknown_level_given_to_the_index_directly(curves: xr.Dataset) -> None:
    with pytest.raises(SelectionError, match=r"unknown level\(s\) \['size'\]"):
        curves.xindexes[POINT_DIM].mask({"size": "150M"})


# --- building and reinstalling the index ----------------------------------------------------------------------------


def test_set_ddxr_index_from_a_stock_multiindex_in_another_level_order(curves: xr.Dataset) -> None:
    frame = frame_of(curves)
    shuffled = pd.MultiIndex.from_frame(frame[list(reversed(LEVELS))])
    stock = xr.Dataset(
        {"step": (POINT_DIM, frame["step"])}, coords=xr.Coordinates.from_pandas_multiindex(shuffled, POINT_DIM)
    )
    stock["cumulative_tokens"].attrs = {"units": "tokens"}

    ddxr_ds = set_ddxr_index(stock)

    assert isinstance(ddxr_ds.xindexes[POINT_DIM], DdxrIndex)
    assert list(ddxr_ds.xindexes[POINT_DIM].index.names) == list(LEVELS)
    assert ddxr_ds["cumulative_tokens"].attrs == {"units": "tokens"}
    assert ddxr_ds.sel(params=["4M"]).sizes[POINT_DIM] == 12


def test_set_ddxr_index_from_plain_coordinates(curves: xr.Dataset) -> None:
    plain = curves.reset_index(POINT_DIM)

    reinstalled = set_ddxr_index(plain)

    xr.testing.assert_identical(reinstalled, curves)


def test_set_ddxr_index_refuses_missing_levels(curves: xr.Dataset) -> None:
    plain = curves.reset_index(POINT_DIM).drop_vars("data")
    with pytest.raises(BuildError, match=r"missing \['data'\]; build it with ddxr.index.point_coordinates"):
        set_ddxr_index(plain)


def test_point_coordinates_refuses_missing_columns_and_values() -> None:
    frame = pd.DataFrame({name: ["x"] for name in LEVELS[:3]} | {"learning_rate": [np.nan], "cumulative_tokens": [1.0]})
    with pytest.raises(BuildError, match=r"missing \['cumulative_tokens'\]"):
        point_coordinates(frame.drop(columns="cumulative_tokens"))
    with pytest.raises(BuildError, match=r"found learning_rate: 1; use sentinels \(learning_rate 0.0"):
        point_coordinates(frame)


def test_point_coordinates_accepts_columns_in_any_order() -> None:
    frame = pd.DataFrame(
        {
            "cumulative_tokens": [2, 1],
            "learning_rate": [0, 0],
            "data": ["C4", "C4"],
            "params": ["4M", "4M"],
            "lineage": ["b", "a"],
        }
    )
    coords = point_coordinates(frame)

    assert isinstance(coords.xindexes[POINT_DIM], DdxrIndex)
    assert coords["cumulative_tokens"].dtype == np.float64
    assert coords["lineage"].values.tolist() == ["b", "a"]


@pytest.mark.parametrize(
    "values",
    [
        np.array(["run-b", "run-a", ""], dtype=object),
        np.array([3, 1, 2], dtype=np.int64),
        np.array([0.5, np.nan, 1e-5]),
        np.array(["2024-01-02", "2024-01-01", "NaT"], dtype="datetime64[ns]"),
    ],
    ids=["strings", "integers", "floats", "times"],
)
def test_with_pandas_index_is_set_xindex(values: np.ndarray) -> None:
    ds = xr.Dataset({"x": ("run", np.arange(3.0))}, coords={"run_id": ("run", values)})

    made, stock = with_pandas_index(ds, "run_id"), ds.set_xindex("run_id")

    xr.testing.assert_identical(made, stock)
    assert made.xindexes["run_id"].equals(stock.xindexes["run_id"])
    assert made.xindexes["run_id"].index.dtype == stock.xindexes["run_id"].index.dtype
    assert made.sel(run_id=values[0])["x"].item() == 0.0
