"""Zarr stores: the same contract as the netCDF cache (identical round trips, index restored, lazy, dask chunks)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from roundtrip import curves_datasets, example_datasets

import ddxr
from ddxr.errors import BuildError, CacheError
from ddxr.index import DdxrIndex
from ddxr.schema import POINT_DIM

pytest.importorskip("zarr")
pytest.importorskip("fsspec")

SWEEP = {"params": "150M", "learning_rate": [1e-5, 1e-4], "cumulative_tokens": slice(2e9, None)}


@pytest.fixture(scope="module")
def example() -> tuple[xr.Dataset, xr.Dataset]:
    return example_datasets()


def memory_url() -> str:
    return f"memory://ddxr-{uuid.uuid4().hex}.zarr"


@pytest.mark.parametrize("where", ["memory", "local"])
def test_round_trip_is_identical(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path, where: str) -> None:
    curves, runs = example
    store = memory_url() if where == "memory" else tmp_path / "shared.zarr"
    assert ddxr.to_zarr(curves, runs, store) == str(store)
    with ddxr.open_zarr(store) as curves_back:
        assert isinstance(curves_back.xindexes[POINT_DIM], DdxrIndex)
        xr.testing.assert_identical(curves_back.load(), curves)
    xr.testing.assert_identical(ddxr.open_zarr_runs(store), runs)


@pytest.mark.parametrize("chunks", [None, {}], ids=["lazy", "dask"])
def test_store_of_an_opened_cache_file_equals_the_file(
    example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path, chunks: dict | None
) -> None:
    # the documented way to share a cache: open it (with chunks= if larger than memory), write it to object storage
    path = ddxr.cache.write_dataset(*example, tmp_path / "cache.nc")
    store = memory_url()
    with ddxr.open_dataset(path, chunks=chunks) as curves, ddxr.open_runs(path) as runs:
        ddxr.to_zarr(curves, runs, store)
        assert not curves["train_loss"].variable._in_memory  # written without loading the Dataset
        from_file = curves.sel(SWEEP).load()
    with ddxr.open_zarr(store) as shared:
        xr.testing.assert_identical(shared.sel(SWEEP).load(), from_file)
        assert shared.sel(SWEEP).sizes[POINT_DIM] == 2 * 5


def test_open_is_lazy_and_selects_before_reading(example: tuple[xr.Dataset, xr.Dataset]) -> None:
    store = ddxr.to_zarr(*example, memory_url())
    with ddxr.open_zarr(store) as opened:
        assert not opened["pile_valppl"].variable._in_memory
        selected = opened.sel(params="4M")
        assert not selected["pile_valppl"].variable._in_memory
        np.testing.assert_array_equal(selected["pile_valppl"].values, example[0].sel(params="4M")["pile_valppl"])


def test_open_with_chunks_is_dask_backed(example: tuple[xr.Dataset, xr.Dataset]) -> None:
    store = ddxr.to_zarr(*example, memory_url())
    with ddxr.open_zarr(store, chunks={}) as opened:
        assert opened["train_loss"].chunks is not None and opened["run_id"].chunks is not None
        xr.testing.assert_identical(opened.load(), example[0])


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(curves=curves_datasets())
def test_generated_datasets_round_trip_identically(curves: xr.Dataset) -> None:
    store = ddxr.to_zarr(curves, xr.Dataset(), memory_url())
    with ddxr.open_zarr(store) as back:
        xr.testing.assert_identical(back.load(), curves)


def test_contract_is_checked_before_writing(example: tuple[xr.Dataset, xr.Dataset]) -> None:
    curves, runs = example
    doubled = xr.concat([curves, curves.isel(point=[0])], POINT_DIM)
    with pytest.raises(BuildError, match="unique"):
        ddxr.to_zarr(doubled, runs, memory_url())


def test_missing_or_foreign_store_is_a_cache_error(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match=r"expected a ddxr zarr store written by ddxr.to_zarr.*check the URL"):
        ddxr.open_zarr(memory_url())
    foreign = memory_url()
    xr.Dataset({"x": ("y", np.arange(3))}).to_zarr(foreign, consolidated=False)
    with pytest.raises(CacheError, match="expected a ddxr cache file with an integer schema_version attribute"):
        ddxr.open_zarr(foreign)
    with pytest.raises(CacheError, match=r"\(group 'runs'\): expected a ddxr zarr store"):
        ddxr.open_zarr_runs(foreign)
