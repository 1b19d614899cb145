"""Assertions for tests of code that makes or stores ddxr Datasets (like :mod:`xarray.testing`).

- :func:`assert_contract`: a Dataset follows the Dataset contract (:mod:`ddxr.schema`);
- :func:`roundtrip`: write a Dataset to a temporary cache file and reopen it;
- :func:`assert_roundtrip`: that round trip gives back an identical Dataset, through :func:`ddxr.open_dataset` and
  through ``xr.open_dataset(..., engine="ddxr")`` alike.

Examples
--------
>>> import pandas as pd
>>> from ddxr.index import point_coordinates
>>> frame = pd.DataFrame(
...     {
...         "lineage": ["a", "a"],
...         "params": ["4M", "4M"],
...         "data": ["C4", "C4"],
...         "learning_rate": [0.0, 0.0],
...         "cumulative_tokens": [1.0, 2.0],
...     }
... )
>>> ds = xr.Dataset(coords=point_coordinates(frame)).assign_coords(
...     run_id=("point", ["a", "a"]), run_type=("point", ["pretraining"] * 2), seed=("point", [0, 0]),
...     step=("point", [0, 10]), pretraining_phase=("point", [True, True]), cumulative_compute=("point", [6.0, 12.0]),
...     tokens_estimated=("point", [False, False]),
... )
>>> assert_contract(ds)
>>> assert_roundtrip(ds)
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import xarray as xr

from ddxr.cache import open_dataset, open_runs, write_dataset
from ddxr.index import DdxrIndex
from ddxr.schema import COORDS, FLOAT_LEVELS, POINT_DIM, RUN_TYPES, validate_dataset

__all__ = ["assert_contract", "assert_roundtrip", "roundtrip", "written"]


def assert_contract(ds: xr.Dataset) -> None:
    """Assert that ``ds`` follows the Dataset contract.

    Checks ddxr's index over ``point`` with every level and no missing level value, points unique by
    (lineage, run_id, step), every point coordinate along ``point``, float64 float levels, and run types from
    :data:`ddxr.schema.RUN_TYPES`.

    Raises
    ------
    AssertionError
        Naming the first rule ``ds`` breaks.
    """
    __tracebackhide__ = True
    try:
        validate_dataset(ds, "Dataset")
    except Exception as error:  # the contract's own message says what is wrong
        raise AssertionError(str(error)) from error
    assert isinstance(ds.xindexes[POINT_DIM], DdxrIndex), f"expected ddxr's index on {POINT_DIM!r}, found a stock one"
    absent = [name for name in COORDS if name not in ds.coords or ds[name].dims != (POINT_DIM,)]
    assert not absent, f"expected point coordinates {list(COORDS)} along {POINT_DIM!r}, missing {absent}"
    wrong = {name: str(ds[name].dtype) for name in FLOAT_LEVELS if ds[name].dtype != "float64"}
    assert not wrong, f"expected float64 levels, found {wrong}"
    unknown = sorted(set(ds["run_type"].values.tolist()) - set(RUN_TYPES))
    assert not unknown, f"expected run types {list(RUN_TYPES)}, found {unknown}"


@contextmanager
def written(curves: xr.Dataset, runs: xr.Dataset | None = None) -> Iterator[Path]:
    """Write ``curves`` (and ``runs``, or an empty runs table) to a temporary cache file; yield its path."""
    with tempfile.TemporaryDirectory(prefix="ddxr-roundtrip-") as folder:
        yield write_dataset(curves, xr.Dataset() if runs is None else runs, Path(folder) / "roundtrip.nc")


@contextmanager
def roundtrip(curves: xr.Dataset, runs: xr.Dataset | None = None) -> Iterator[tuple[xr.Dataset, xr.Dataset]]:
    """Write ``curves`` (and ``runs``) to a temporary cache file, reopen both lazily, yield them, then clean up.

    Parameters
    ----------
    curves : xarray.Dataset
        Curves with a MultiIndex over ``point``.
    runs : xarray.Dataset, optional
        Runs table; an empty Dataset is written when omitted.

    Yields
    ------
    tuple of xarray.Dataset
        ``(curves, runs)`` as :func:`ddxr.open_dataset` and :func:`ddxr.open_runs` return them.
    """
    with written(curves, runs) as path, open_dataset(path) as curves_back, open_runs(path) as runs_back:
        yield curves_back, runs_back


def assert_roundtrip(curves: xr.Dataset, runs: xr.Dataset | None = None) -> None:
    """Assert that writing and reopening gives back identical Datasets, with ddxr and with ``engine="ddxr"``.

    The attributes the writer stamps (``ddxr_version`` and ``created`` when absent, ``schema_version`` always) are
    expected in what comes back; everything else must be exactly what was written.

    Raises
    ------
    AssertionError
        Showing the difference, as :func:`xarray.testing.assert_identical` does.
    """
    __tracebackhide__ = True
    with written(curves, runs) as path, open_dataset(path) as curves_back, open_runs(path) as runs_back:
        xr.testing.assert_identical(curves_back.load(), _stamped_like(curves, curves_back))
        if runs is not None:
            xr.testing.assert_identical(runs_back.load(), _stamped_like(runs, runs_back))
        with xr.open_dataset(path, engine="ddxr") as by_engine:
            xr.testing.assert_identical(by_engine.load(), curves_back)


def _stamped_like(written: xr.Dataset, back: xr.Dataset) -> xr.Dataset:
    stamps = {name: back.attrs[name] for name in ("ddxr_version", "created", "schema_version") if name in back.attrs}
    return written.assign_attrs({**stamps, **written.attrs, "schema_version": back.attrs.get("schema_version")})
