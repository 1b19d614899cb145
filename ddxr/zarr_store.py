"""Zarr stores for sharing a cache through object storage: the same contract as the netCDF cache, on any fsspec URL.

A store holds what a cache file holds, encoded the same way (:func:`ddxr.cache.encode`): the curves in the root
group and the runs table in group ``runs``. Point variables are chunked like the netCDF file, so a sweep reads only
the chunks it touches; ``chunks=`` gives dask-backed variables. A store is any local path or fsspec URL
(``s3://bucket/runs.zarr``, ``gs://…``, ``memory://…``); credentials go in ``storage_options`` and are never written
to the store. Unlike :func:`ddxr.cache.write_dataset`, writing is not atomic: write to a new URL, then share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from ddxr.cache import RUNS_GROUP, decode_curves, decode_runs, encode
from ddxr.errors import CacheError
from ddxr.schema import POINT_DIM

_POINT_CHUNK = 1 << 14  # points per zarr chunk: a sweep reads only the few chunks it touches
# zarr raises these, fsspec raises OSError subclasses (FileNotFoundError, PermissionError)
_READ_ERRORS = (OSError, KeyError, ValueError, TypeError)


def to_zarr(
    curves: xr.Dataset, runs: xr.Dataset, store: str | Path, *, storage_options: Mapping[str, Any] | None = None
) -> str:
    """Write the curves and the runs table to a zarr store, replacing what the store held.

    Parameters
    ----------
    curves : xarray.Dataset
        The curves Dataset (a ddxr Dataset, e.g. from :func:`ddxr.open_dataset`). Metrics are read variable by
        variable as they are written, chunk by chunk when they are dask-backed: open a file larger than memory with
        ``chunks=`` to copy it.
    runs : xarray.Dataset
        The runs table (dimension ``run``); written as group ``runs``. An empty Dataset is allowed.
    store : str or pathlib.Path
        Local path or fsspec URL of the store.
    storage_options : mapping, optional
        Passed to fsspec (credentials, endpoint); never written to the store.

    Returns
    -------
    str
        ``store`` as a string.

    Raises
    ------
    BuildError
        If the curves break the Dataset contract (as :func:`ddxr.cache.write_dataset`).
    CacheError
        If the store cannot be written.
    """
    encoded_curves, encoded_runs = map(_variable_length_strings, encode(curves, runs.load()))
    options = {"storage_options": dict(storage_options)} if storage_options else {}  # zarr refuses it on paths
    try:
        encoded_curves.to_zarr(
            str(store), mode="w", encoding=_encodings(encoded_curves), consolidated=False, zarr_format=3, **options
        )
        encoded_runs.to_zarr(str(store), mode="a", group=RUNS_GROUP, consolidated=False, zarr_format=3, **options)
    except _READ_ERRORS as error:
        raise CacheError(
            f"{store}: cannot write the zarr store ({type(error).__name__}: {error}); check the URL and "
            "its storage_options"
        ) from error
    return str(store)


def open_zarr(
    store: str | Path,
    chunks: Mapping[str, int] | int | str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Open the curves of a zarr store written by :func:`to_zarr`, lazily, with ddxr's index on ``point``.

    Parameters
    ----------
    store : str or pathlib.Path
        Local path or fsspec URL.
    chunks : mapping, int, str or None
        ``None``: variables are read on use, only the chunks a selection touches; anything else backs them with
        dask chunks (e.g. ``{"point": 100_000}``).
    storage_options : mapping, optional
        Passed to fsspec.

    Returns
    -------
    xarray.Dataset
        The curves, identical to what was written (as :func:`ddxr.open_dataset` returns them).

    Raises
    ------
    CacheError
        If the store is missing, not a ddxr store, or written by a newer schema.
    """
    return decode_curves(_open(store, None, chunks, storage_options), store)


def open_zarr_runs(store: str | Path, *, storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Open the runs table (group ``runs``) of a zarr store written by :func:`to_zarr`, into memory.

    Raises
    ------
    CacheError
        If the store or its runs group is missing or not ddxr's, or written by a newer schema.
    """
    return decode_runs(_open(store, RUNS_GROUP, None, storage_options), store)


def _open(store: str | Path, group: str | None, chunks: Any, storage_options: Mapping[str, Any] | None) -> xr.Dataset:
    options = {"storage_options": dict(storage_options)} if storage_options else {}  # zarr refuses it on paths
    try:
        return xr.open_dataset(
            str(store),
            engine="zarr",
            group=group,
            chunks=chunks,
            consolidated=False,
            **options,
            # the curves' dimension coordinates are index codes and level tables: no pandas index needed for them
            create_default_indexes=group is not None,
        )
    except _READ_ERRORS as error:
        where = f" (group {group!r})" if group else ""
        raise CacheError(
            f"{store}{where}: expected a ddxr zarr store written by ddxr.to_zarr, found none or an unreadable one "
            f"({type(error).__name__}: {error}); check the URL and storage_options"
        ) from error


def _variable_length_strings(ds: xr.Dataset) -> xr.Dataset:
    """Turn fixed-width numpy strings (as a netCDF file gives them back) into Python strings.

    zarr v3 specifies a stable type for variable-length strings only. Strings held by dask are computed here: xarray
    would load them anyway to type them, with a warning.
    """
    fixed = {
        name: ds[name].astype(object).compute()
        for name, variable in ds.variables.items()
        if variable.dtype.kind == "U" or (variable.dtype == object and variable.chunks is not None)
    }
    coords = {name: value for name, value in fixed.items() if name in ds.coords}
    return ds.assign_coords(coords).assign({name: value for name, value in fixed.items() if name not in coords})


def _encodings(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Point variables in chunks of :data:`_POINT_CHUNK` points: a sweep reads only the chunks it touches."""
    return {
        str(name): {"chunks": (min(variable.size, _POINT_CHUNK),)}
        for name, variable in ds.variables.items()
        if variable.dims == (POINT_DIM,) and variable.size
    }
