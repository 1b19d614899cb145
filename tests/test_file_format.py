"""The cache file as others see it: plain xarray (no ddxr) selects right or refuses, and the ddxr xarray backend."""

from __future__ import annotations

from pathlib import Path

import cf_xarray  # noqa: F401  (registers ds.cf: the plain-xarray session of a CF-aware colleague)
import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from roundtrip import curves_datasets, example_datasets

import ddxr
from ddxr.backend import DdxrBackendEntrypoint
from ddxr.cache import CONVENTIONS, write_dataset
from ddxr.errors import InvalidArgumentError
from ddxr.schema import KEYS, LEVELS, POINT_DIM
from ddxr.testing import written


@pytest.fixture(scope="module")
def example() -> tuple[xr.Dataset, xr.Dataset]:
    curves, runs = example_datasets()
    # a runs-table boolean with a missing value, as run facts of runs the build did not follow have
    return curves, runs.assign(history_repaired=("run", np.array([True, None, False, True], dtype=object)))


@pytest.fixture
def path(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> Path:
    return write_dataset(*example, tmp_path / "cache.nc")


#: What stock xarray/pandas raise when a selection on a coordinate without a unique index cannot be answered.
REFUSALS = (KeyError, ValueError, TypeError, NotImplementedError, pd.errors.InvalidIndexError)


def _keys(ds: xr.Dataset) -> set[tuple]:
    return set(zip(*(ds[name].values.tolist() for name in KEYS), strict=True))


# --- plain xarray, no ddxr ------------------------------------------------------------------------------------------


def test_plain_xarray_sees_plain_variables(path: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    curves = example[0]
    with xr.open_dataset(path, engine="netcdf4") as plain:
        assert plain.attrs["Conventions"] == CONVENTIONS
        assert "engine='ddxr'" in plain.attrs["ddxr_decoding"] and "ds.isel(point=" in plain.attrs["ddxr_decoding"]
        assert not plain.coords and not plain.xindexes  # nothing a stock .sel could build an index on
        for name in (*LEVELS, "run_id", "run_type", "step"):
            assert name in plain.data_vars and plain[name].dims == (POINT_DIM,)
            assert plain[name].values.tolist() == curves[name].values.tolist(), name
        assert plain["pretraining_phase"].dtype == bool and plain["tokens_estimated"].dtype == bool
        assert set(plain.data_vars) >= set(curves.data_vars)


def test_plain_masks_select_exactly_ddxr_s_points(path: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    curves = example[0]
    expected = curves.sel(params="150M", learning_rate=1e-5)
    with xr.open_dataset(path, engine="netcdf4") as plain:
        mask = (plain.params == "150M") & (plain.learning_rate == 1e-5)
        for chosen in (plain.isel({POINT_DIM: mask}), plain.where(mask, drop=True)):
            assert chosen.sizes[POINT_DIM] == expected.sizes[POINT_DIM] == 10
            assert _keys(chosen) == _keys(expected)
            np.testing.assert_array_equal(chosen["pile_valppl"].values, expected["pile_valppl"].values)
        assert plain.isel({POINT_DIM: mask})["seed"].dtype == curves["seed"].dtype  # isel keeps every dtype


@pytest.mark.parametrize("labels", [{"params": "150M"}, {"params": ["150M"]}, {"cumulative_tokens": slice(0, 1e9)}])
def test_plain_sel_on_a_point_variable_is_refused(path: Path, labels: dict) -> None:
    with xr.open_dataset(path, engine="netcdf4") as plain:
        with pytest.raises(KeyError, match="not a valid dimension or coordinate"):
            plain.sel(labels)
        xr.testing.assert_identical(plain.sel(point=3), plain.isel(point=3))  # no index: positions, as isel


_LEVEL_LABELS = {
    "lineage": ["150M/dolma1_7/seed0", "a"],
    "params": ["4M", "150M", "20M"],
    "data": ["Dolma1.7", "C4"],
    "learning_rate": [0.0, 1e-5, 3e-5],
    "cumulative_tokens": [0.0, 65_536.0, 5_734_400_000.0],
}


def _labels(name: str) -> st.SearchStrategy:
    pool = _LEVEL_LABELS[name]
    bounds = st.lists(st.sampled_from(pool), min_size=2, max_size=2).map(sorted)
    return st.one_of(
        st.sampled_from(pool),
        st.lists(st.sampled_from(pool), min_size=1, max_size=2),
        bounds.map(lambda pair: slice(*pair)),
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(curves=curves_datasets(), data=st.data(), descending=st.booleans())
def test_plain_xarray_never_selects_wrongly(curves: xr.Dataset, data: st.DataObject, descending: bool) -> None:
    """Scalars, lists and slices in a plain session: .sel refuses, a mask gives exactly the matching points.

    Points stored in descending order are the case stock .sel got wrong when they were coordinates: pandas slices a
    descending index by position.
    """
    if descending:
        curves = curves.isel({POINT_DIM: slice(None, None, -1)})
    names = data.draw(st.lists(st.sampled_from(LEVELS), min_size=1, max_size=2, unique=True))
    labels = {name: data.draw(_labels(name)) for name in names}
    frame = curves.reset_index(POINT_DIM).reset_coords().to_dataframe()
    mask = np.ones(len(frame), dtype=bool)
    for name, label in labels.items():
        column = frame[name]
        if isinstance(label, slice):
            mask &= ((column >= label.start) & (column <= label.stop)).to_numpy()
        else:
            mask &= column.isin(label if isinstance(label, list) else [label]).to_numpy()
    expected = set(map(tuple, frame.loc[mask, list(KEYS)].itertuples(index=False, name=None)))
    with written(curves) as path, xr.open_dataset(path, engine="netcdf4") as plain:
        with pytest.raises(REFUSALS):
            plain.sel(labels)
        assert _keys(plain.isel({POINT_DIM: _plain_mask(plain, labels)})) == expected


def _plain_mask(plain: xr.Dataset, labels: dict) -> xr.DataArray:
    mask = xr.ones_like(plain["step"], dtype=bool)
    for name, label in labels.items():
        if isinstance(label, slice):
            mask &= (plain[name] >= label.start) & (plain[name] <= label.stop)
        else:
            mask &= plain[name].isin(label if isinstance(label, list) else [label])
    return mask


def test_runs_booleans_plain_and_with_cf_xarray(path: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    runs = example[1]
    with xr.open_dataset(path, engine="netcdf4", group="runs") as plain:
        assert plain["tokens_estimated"].dtype == bool  # booleans read as booleans in both groups
        np.testing.assert_array_equal(plain["history_repaired"].values, [1.0, np.nan, 0.0, 1.0])
        assert plain["history_repaired"].attrs["flag_meanings"] == "false true"
        repaired = plain.where(plain["history_repaired"].cf == "true", drop=True)  # cf_xarray reads the flags
        assert repaired["run_id"].values.tolist() == runs["run_id"].values[[0, 3]].tolist()
        with pytest.raises(KeyError, match="not a valid dimension or coordinate"):
            plain.sel(run_id=runs["run_id"].values[0])
    with ddxr.open_runs(path) as back:
        assert back["history_repaired"].values.tolist() == [True, None, False, True]


def test_plain_file_layout_names(path: Path) -> None:
    with netCDF4.Dataset(path) as nc:
        assert "point" not in nc.variables
        for level in LEVELS:
            table = nc[f"{level}__values"]
            assert table.dimensions == (f"{level}__value",)  # no dimension named like a coordinate
            assert nc[f"{level}__codes"].dimensions == ("point",)


# --- the ddxr xarray backend ----------------------------------------------------------------------------------------


def test_engine_is_registered_and_guesses_only_ddxr_files(path: Path, tmp_path: Path) -> None:
    assert "ddxr" in xr.backends.list_engines()
    entry = DdxrBackendEntrypoint()
    other = tmp_path / "other.nc"
    xr.Dataset({"x": ("t", [1.0])}).to_netcdf(other, engine="netcdf4")
    text = tmp_path / "text.nc"
    text.write_text("not netCDF")
    assert entry.guess_can_open(path) and entry.guess_can_open(str(path))
    assert not entry.guess_can_open(other)
    assert not entry.guess_can_open(text)
    assert not entry.guess_can_open(tmp_path / "absent.nc")
    # plain opening keeps xarray's own engine: the colleague without ddxr and with it see the same raw file
    with xr.open_dataset(path) as default:
        assert not default.xindexes


def test_engine_gives_exactly_ddxr_open_dataset(path: Path) -> None:
    with xr.open_dataset(path, engine="ddxr") as by_engine, ddxr.open_dataset(path) as by_ddxr:
        xr.testing.assert_identical(by_engine, by_ddxr)
        assert isinstance(by_engine.xindexes[POINT_DIM], ddxr.index.DdxrIndex)
        xr.testing.assert_identical(
            by_engine.sel(params="150M", learning_rate=[1e-5, 3e-5]),
            by_ddxr.sel(params="150M", learning_rate=[1e-5, 3e-5]),
        )


def test_engine_drop_variables(path: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    with xr.open_dataset(path, engine="ddxr", drop_variables=["train_loss", "run_type"]) as ds:
        xr.testing.assert_identical(ds.load(), ddxr.open_dataset(path).drop_vars(["train_loss", "run_type"]).load())
    with xr.open_dataset(path, engine="ddxr", drop_variables="pile_valppl") as ds:
        assert "pile_valppl" not in ds and "arc_challenge" in ds
    with pytest.raises(InvalidArgumentError, match="index levels cannot be dropped"):
        xr.open_dataset(path, engine="ddxr", drop_variables=["params"])


@pytest.mark.filterwarnings("ignore:The specified chunks separate the stored chunks")  # small chunks on purpose
def test_engine_chunks_give_dask_arrays(path: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    with xr.open_dataset(path, engine="ddxr", chunks={"point": 20}) as ds:
        assert ds["train_loss"].chunks == ((20, 20, 20, 11),)
        xr.testing.assert_identical(ds.load(), ddxr.open_dataset(path).load())


def test_open_datatree_curves_at_root_runs_as_child(path: Path) -> None:
    tree = xr.open_datatree(path, engine="ddxr")
    xr.testing.assert_identical(tree.to_dataset(), ddxr.open_dataset(path))
    runs = ddxr.open_runs(path)
    # a runs column named like a point level would be hidden behind the inherited index: the tree renames it
    xr.testing.assert_identical(tree["runs"].to_dataset(inherit=False), runs.rename(learning_rate="run_learning_rate"))
    assert tree["runs"]["run_learning_rate"].values.tolist() == runs["learning_rate"].values.tolist()
    assert tree["runs"]["learning_rate"].dims == (POINT_DIM,)  # the inherited level, not a runs column
    assert tree["runs"]["state"].values.tolist() == ["finished", "crashed", "finished", "running"]
    groups = xr.open_groups(path, engine="ddxr")
    assert set(groups) == {"/", "/runs"}
