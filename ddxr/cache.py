"""The netCDF cache: one file holds the curves (root group) and the runs table (group ``runs``).

Layout of the root group (docs/dataset.md §4): the ``point`` MultiIndex is stored with CF "compression by gathering"
(cf_xarray's ``encode_multi_index_as_compress``): each level is a small coordinate on its own dimension and
``point`` holds the raveled level codes. String variables along ``point`` (``run_id``, ``run_type``) are stored as
int32 codes plus a small table of their distinct values, because netCDF variable-length strings are uncompressed and
must be read whole on open. Attributes netCDF cannot hold (dicts, lists, bools, None) are stored as JSON text and
listed in ``ddxr_json_attrs``. Files are written to a temporary name in the target folder and moved into place
with ``os.replace``, so readers never see half a file. Nothing is pickled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import cf_xarray
import filelock
import numpy as np
import pandas as pd
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing
from xarray.indexes import PandasIndex, PandasMultiIndex

from ddxr._version import __version__
from ddxr.errors import BuildError, CacheError
from ddxr.handles import open_shared
from ddxr.index import set_ddxr_index
from ddxr.schema import FLOAT_LEVELS, POINT_DIM, validate_dataset

#: Version of the file layout; files written by a newer layout are refused.
SCHEMA_VERSION: int = 1
#: The only engine ddxr reads and writes with.
ENGINE = "netcdf4"
#: Group of the runs table inside a cache file.
RUNS_GROUP = "runs"

_COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}
_POINT_CHUNK = 1 << 14  # points per chunk: small enough that reading a sweep decompresses little
_CATEGORIES_ATTR = "ddxr_categories"  # on a codes variable: the variable holding its distinct strings
_JSON_ATTRS = "ddxr_json_attrs"  # names of the attributes stored as JSON text
_BOOLEAN_ATTR = "ddxr_boolean"  # on an int8 variable: it holds booleans (decoded by ddxr, see _encode_booleans)
_INDEXES_ATTR = "ddxr_indexes"  # coordinates indexed without being dimension coordinates (runs: run_id along run)
_READ_ERRORS = (OSError, RuntimeError, ValueError, KeyError, IndexError)  # what netCDF4/HDF5 raise on bad files


def write_dataset(curves: xr.Dataset, runs: xr.Dataset, path: str | Path) -> Path:
    """Write the curves and the runs table to one netCDF file, atomically.

    Parameters
    ----------
    curves : xarray.Dataset
        The curves Dataset of docs/dataset.md §2, with a MultiIndex (ddxr's or stock) over ``point``.
    runs : xarray.Dataset
        The runs table (dimension ``run``); written as group ``runs``.
    path : str or pathlib.Path
        Target file; its folder is created if needed. An existing file is replaced only once the new one is complete.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    BuildError
        If a point is duplicated by (lineage, run_id, step), an index level holds missing values, or a string
        variable holds missing values (netCDF would bring them back as ``''``: use explicit sentinels).
    CacheError
        If the file cannot be written.

    Notes
    -----
    ``ddxr_version`` and ``created`` (UTC ISO 8601) are stamped on both groups when absent; ``schema_version`` is
    always the writer's :data:`SCHEMA_VERSION`. Numeric variables are compressed with zlib (level 4) and shuffle.
    """
    path = Path(path)
    encoded_curves, encoded_runs = encode(curves, runs)

    def write(target: Path) -> None:
        encoded_curves.to_netcdf(target, mode="w", engine=ENGINE, encoding=_encodings(encoded_curves))
        encoded_runs.to_netcdf(target, mode="a", group=RUNS_GROUP, engine=ENGINE, encoding=_encodings(encoded_runs))

    _replace_atomically(path, write)
    return path


def open_dataset(path: str | Path, chunks: Mapping[str, int] | int | str | None = None) -> xr.Dataset:
    """Open the curves of a cache file, lazily, with ddxr's index on ``point``.

    Parameters
    ----------
    path : str or pathlib.Path
        A file written by :func:`write_dataset`.
    chunks : mapping, int, str or None
        Passed to :func:`xarray.open_dataset`: ``None`` loads variables lazily with numpy on first use; anything
        else backs them with dask chunks (e.g. ``{"point": 100_000}``).

    Returns
    -------
    xarray.Dataset
        The curves, identical to what was written; only the ``point`` index is read now, every variable on use.

    Raises
    ------
    CacheError
        If the file is missing, truncated, corrupt, not a ddxr cache, or written by a newer schema.
    """
    path = Path(path)
    return decode_curves(_open(path, group=None, chunks=chunks), path)


def open_runs(path: str | Path) -> xr.Dataset:
    """Open the runs table (group ``runs``) of a cache file.

    Parameters
    ----------
    path : str or pathlib.Path
        A file written by :func:`write_dataset`.

    Returns
    -------
    xarray.Dataset
        The runs table, dimension ``run``, read into memory (one row per run: small).

    Raises
    ------
    CacheError
        If the file is missing, truncated, corrupt, lacks the runs group, or was written by a newer schema.
    """
    path = Path(path)
    return decode_runs(_open(path, group=RUNS_GROUP, chunks=None), path)


def encode(curves: xr.Dataset, runs: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset]:
    """Return the curves and the runs table as ddxr stores them (netCDF here, zarr in ddxr.zarr_store).

    Parameters
    ----------
    curves, runs : xarray.Dataset
        As for :func:`write_dataset`.

    Returns
    -------
    tuple of xarray.Dataset
        ``(curves, runs)`` checked, stamped with provenance and encoded; write them with any xarray writer.

    Raises
    ------
    BuildError
        As :func:`write_dataset`.
    """
    curves = _checked_curves(curves)
    _check_strings(runs, RUNS_GROUP)
    encoded_curves = _encode_booleans(_encode_curves(_stamped(curves)))
    encoded_runs = _encode_booleans(_encode_attrs_of(_encode_indexes(_stamped(runs.drop_encoding()))))
    return encoded_curves, encoded_runs


def decode_curves(raw: xr.Dataset, where: str | Path) -> xr.Dataset:
    """Return the curves from what xarray read of a stored root group (:func:`encode`'s first result), on any storage.

    Parameters
    ----------
    raw : xarray.Dataset
        Opened without default indexes (``create_default_indexes=False``); closed when the result is closed.
    where : str or pathlib.Path
        The file or store, named in errors.

    Raises
    ------
    CacheError
        If ``raw`` is not a ddxr curves group, is of a newer schema, or its codes are unreadable.
    """
    _check_schema(raw, where)
    try:
        curves = _decode_curves(raw, where)
    except BaseException as error:
        raw.close()
        if isinstance(error, _READ_ERRORS | BuildError):  # a corrupt file can fail only once its codes are read
            raise _unreadable(where, error) from error
        raise
    return _closing(curves, raw)


def decode_runs(raw: xr.Dataset, where: str | Path) -> xr.Dataset:
    """Return the runs table, in memory, from what xarray read of a stored runs group; see :func:`decode_curves`."""
    _check_schema(raw, where)
    try:
        runs = _decode_indexes(_decode_attrs_of(_decode_booleans(raw.load())))
    except BaseException as error:
        raw.close()
        if isinstance(error, _READ_ERRORS):
            raise _unreadable(where, error, RUNS_GROUP) from error
        raise
    return _closing(runs, raw)


def fingerprint(parts: Mapping[str, object]) -> str:
    """Stable hex digest of what a build depends on, for naming cache files.

    Parameters
    ----------
    parts : mapping
        JSON-like description of the inputs: DataDecide file stats (sizes, mtimes or hashes), store stats (row
        counts, max timestamps), build options. Values may be str, numbers, bools, None, paths, dates, numpy
        scalars, and lists, tuples, sets or mappings of those. :data:`SCHEMA_VERSION` is always included.

    Returns
    -------
    str
        The first 16 hex digits of the SHA-256 of the canonical JSON (sorted keys), equal for equal parts.

    Raises
    ------
    CacheError
        If a value cannot be described as JSON.

    Examples
    --------
    >>> fingerprint({"options": {"metrics": "core"}}) == fingerprint({"options": {"metrics": "core"}})
    True
    >>> len(fingerprint({"a": 1}))
    16
    """
    canonical = json.dumps(
        {"parts": _jsonable(parts, "parts"), "schema_version": SCHEMA_VERSION},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def cached_build(
    path: str | Path, build: Callable[[], tuple[xr.Dataset, xr.Dataset]], *, refresh: bool = False
) -> tuple[xr.Dataset, xr.Dataset]:
    """Open the cache file at ``path``, building and writing it first when missing or when ``refresh`` is set.

    A file lock (``<path>.lock``) keeps concurrent builders apart: the second one waits, finds the file written by
    the first and opens it instead of building again. The file name (usually a :func:`fingerprint`) is the caller's
    business: a stale cache is one whose fingerprint, hence path, changed.

    Parameters
    ----------
    path : str or pathlib.Path
        Cache file.
    build : callable
        Returns ``(curves, runs)``; called at most once, only when the file must be (re)built.
    refresh : bool
        Rebuild even if the file exists.

    Returns
    -------
    tuple of xarray.Dataset
        ``(curves, runs)`` as opened from the file by :func:`open_dataset` and :func:`open_runs`.

    Raises
    ------
    CacheError
        If an existing file is unreadable (rebuild with ``refresh=True`` or delete it).
    """
    path = Path(path)
    if refresh or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(f"{path}.lock"):
            if refresh or not path.exists():  # another builder may have finished while we waited
                write_dataset(*build(), path)
    return open_dataset(path), open_runs(path)


# --- validation -----------------------------------------------------------------------------------------------------


def _checked_curves(curves: xr.Dataset) -> xr.Dataset:
    """Return the curves with a clean ddxr index, after checking the Dataset contract the file format relies on."""
    validate_dataset(curves)
    curves = set_ddxr_index(curves.drop_encoding())  # drops unused level values
    _check_strings(curves, "curves")
    return curves


def _check_strings(ds: xr.Dataset, where: str) -> None:
    for name, variable in ds.variables.items():
        # MultiIndex levels are checked through their codes instead (set_ddxr_index)
        if variable.dtype.kind in "OUT" and not isinstance(ds.xindexes.get(name), PandasMultiIndex):
            missing = int(pd.isna(np.asarray(variable.values).reshape(-1)).sum())
            if missing:
                raise BuildError(
                    f"{where} variable {name!r}: expected strings, found {missing} missing values; netCDF would "
                    "bring them back as '' — fill them with an explicit sentinel such as 'unknown'"
                )


# --- encoding -------------------------------------------------------------------------------------------------------


def _stamped(ds: xr.Dataset) -> xr.Dataset:
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    attrs = {"ddxr_version": __version__, "created": created, **ds.attrs, "schema_version": SCHEMA_VERSION}
    return ds.assign_attrs(attrs)


def _encode_curves(curves: xr.Dataset) -> xr.Dataset:
    levshape = [len(level) for level in curves.indexes[POINT_DIM].levels]
    if np.prod(levshape, dtype=float) >= np.iinfo(np.int64).max:  # raveled codes must fit int64
        raise CacheError(
            f"curves Dataset: the {POINT_DIM!r} index has {levshape} distinct level values, too many to encode as "
            "one int64 per point; split the Dataset before writing"
        )
    encoded = cf_xarray.encode_multi_index_as_compress(curves, POINT_DIM)
    return _encode_attrs_of(_encode_categories(encoded))


def _encode_categories(ds: xr.Dataset) -> xr.Dataset:
    """Strings along ``point`` → int32 codes plus one small variable of distinct values each."""
    encoded = ds.copy()
    for name, variable in ds.variables.items():
        if variable.dims == (POINT_DIM,) and variable.dtype.kind in "OUT":
            codes, uniques = pd.factorize(np.asarray(variable.values, dtype=object))
            table = f"{name}__categories"
            encoded[name] = xr.Variable(
                variable.dims, codes.astype(np.int32), attrs={**variable.attrs, _CATEGORIES_ATTR: table}
            )
            encoded[table] = xr.Variable((table,), np.asarray(uniques, dtype=object))
    return encoded


def _encode_booleans(ds: xr.Dataset) -> xr.Dataset:
    """Booleans → int8 flagged for ddxr's own decoding.

    xarray decodes its own boolean encoding through ``apply_ufunc``, whose first call imports dask (seconds on a
    cold start); reading int8 and casting in ddxr keeps opening a file fast.
    """
    encoded = ds.copy()
    for name, variable in ds.variables.items():
        if variable.dtype == bool:
            encoded[name] = xr.Variable(
                variable.dims, variable.values.astype(np.int8), attrs={**variable.attrs, _BOOLEAN_ATTR: 1}
            )
    return encoded


def _decode_booleans(ds: xr.Dataset) -> xr.Dataset:
    """Decode flagged int8 variables back to booleans, in memory (used for the small runs table)."""
    flagged = [name for name, variable in ds.variables.items() if _BOOLEAN_ATTR in variable.attrs]
    for name in flagged:
        variable = ds.variables[name]
        attrs = {key: value for key, value in variable.attrs.items() if key != _BOOLEAN_ATTR}
        ds[name] = xr.Variable(variable.dims, np.asarray(variable.values).astype(bool), attrs=attrs)
    return ds


def _encode_indexes(ds: xr.Dataset) -> xr.Dataset:
    """Name the indexed non-dimension coordinates: netCDF restores only dimension coordinates as indexes."""
    names = [name for name, index in ds.xindexes.items() if name not in ds.dims and type(index) is PandasIndex]
    return ds.reset_index(names).assign_attrs({_INDEXES_ATTR: json.dumps(names)}) if names else ds


def _encode_attrs_of(ds: xr.Dataset) -> xr.Dataset:
    encoded = ds.copy()
    encoded.attrs = _encode_attrs(ds.attrs, "Dataset")
    for name, variable in encoded.variables.items():
        variable.attrs = _encode_attrs(variable.attrs, f"variable {name!r}")
    return encoded


def _encode_attrs(attrs: Mapping[Hashable, Any], owner: str) -> dict[Hashable, Any]:
    """Encode attrs for netCDF: str, numbers and numeric arrays stay; dict, list, bool and None go as JSON text."""

    def native(value: Any) -> bool:
        is_number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        return isinstance(value, str) or is_number or (isinstance(value, np.ndarray) and value.dtype.kind in "iuf")

    as_json = [key for key, value in attrs.items() if not native(value)]
    encoded = {
        key: json.dumps(_jsonable(value, f"{owner} attribute {key!r}")) if key in as_json else value
        for key, value in attrs.items()
    }
    if as_json:
        encoded[_JSON_ATTRS] = json.dumps(as_json)
    return encoded


def _encodings(ds: xr.Dataset) -> dict[Hashable, dict[str, Any]]:
    """Return encodings: zlib + shuffle on numeric variables, points chunked so a sweep reads only its neighbourhood."""
    encodings: dict[Hashable, dict[str, Any]] = {}
    for name, variable in ds.variables.items():
        if variable.dtype.kind not in "biufM" or variable.size == 0:
            continue
        encodings[name] = dict(_COMPRESSION)
        if variable.dims == (POINT_DIM,):
            encodings[name]["chunksizes"] = (min(variable.size, _POINT_CHUNK),)
    return encodings


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary file in the target folder, then rename it over ``path`` (atomic on one file system)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise CacheError(f"{path}: cannot write the cache file ({error}); check the folder is writable") from error
    finally:
        temporary.unlink(missing_ok=True)


# --- decoding -------------------------------------------------------------------------------------------------------


def _open(path: Path, group: str | None, chunks: Any) -> xr.Dataset:
    if not path.is_file():
        raise CacheError(f"{path}: no such cache file; build it (cached_build) or check the path")
    try:
        # one handle per file version for every open: several handles on one file, some closed by the garbage
        # collector, crash netCDF-C/HDF5 (see ddxr.handles); variables are read from disk when used
        store = xr.backends.NetCDF4DataStore(open_shared(path), group=group)
        # the curves' dimension coordinates are index codes and level tables: no pandas index needed for them
        ds = xr.open_dataset(store, chunks=chunks, create_default_indexes=group is not None)
    except _READ_ERRORS as error:
        raise _unreadable(path, error, group) from error
    return ds


def _check_schema(ds: xr.Dataset, where: str | Path) -> None:
    version = _schema_version(ds.attrs.get("schema_version"))
    if version is None or version > SCHEMA_VERSION:
        ds.close()
        if version is None:
            raise CacheError(
                f"{where}: expected a ddxr cache file with an integer schema_version attribute, found none"
            )
        raise CacheError(
            f"{where}: written by a newer ddxr (schema {version} > {SCHEMA_VERSION}); upgrade ddxr or rebuild"
        )


def _schema_version(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _closing(decoded: xr.Dataset, raw: xr.Dataset) -> xr.Dataset:
    """Make closing the decoded Dataset close the file behind ``raw``."""
    if decoded is not raw:
        decoded.set_close(raw.close)
    return decoded


def _unreadable(path: str | Path, error: Exception, group: str | None = None) -> CacheError:
    where = f" (group {group!r})" if group else ""
    return CacheError(
        f"{path}{where}: expected a readable ddxr netCDF cache, found a truncated, corrupt or foreign file "
        f"({type(error).__name__}: {error}); rebuild with refresh=True or delete the file"
    )


def _decode_curves(raw: xr.Dataset, path: str | Path) -> xr.Dataset:
    if "compress" not in raw.variables.get(POINT_DIM, xr.Variable((), 0)).attrs:
        raise CacheError(f"{path}: expected a ddxr curves file with a compressed {POINT_DIM!r} index, found none")
    return set_ddxr_index(_decode_point_index(_decode_attrs_of(_decode_point_variables(raw))))


def _decode_point_variables(raw: xr.Dataset) -> xr.Dataset:
    """Point variables → lazy arrays reading only the file chunks a selection touches; codes → strings."""
    tables = [
        variable.attrs[_CATEGORIES_ATTR] for variable in raw.variables.values() if _CATEGORIES_ATTR in variable.attrs
    ]
    lazy = {}
    for name, variable in raw.variables.items():  # one wrap per variable, never per point
        if variable.dims != (POINT_DIM,) or name == POINT_DIM:
            continue
        table = variable.attrs.get(_CATEGORIES_ATTR)
        # object, not <U: a fixed-width copy per point would take bytes × longest string
        strings = None if table is None else np.asarray(raw[table].values, dtype=object)
        boolean = _BOOLEAN_ATTR in variable.attrs
        attrs = {key: value for key, value in variable.attrs.items() if key not in (_CATEGORIES_ATTR, _BOOLEAN_ATTR)}
        lazy[name] = xr.Variable(
            variable.dims, _lazy(variable, strings, boolean), attrs=attrs, encoding=variable.encoding
        )
    coords = {name: variable for name, variable in lazy.items() if name in raw.coords}
    data = {name: variable for name, variable in lazy.items() if name not in raw.coords}
    return raw.drop_vars(tables).assign_coords(coords).assign(data)


def _lazy(variable: xr.Variable, strings: np.ndarray | None, boolean: bool) -> Any:
    if variable.chunks is not None:  # dask reads whole chunks already; only strings and booleans need decoding
        if boolean:
            return variable.data.astype(bool)
        return variable.data if strings is None else variable.data.map_blocks(strings.take, dtype=object)
    # cached like xarray's own lazy variables: to_dataframe reads `.data` several times
    return indexing.MemoryCachedArray(
        indexing.CopyOnWriteArray(indexing.LazilyIndexedArray(_PointArray(variable, strings, boolean)))
    )


class _PointArray(BackendArray):
    """A lazily opened point variable that reads an integer selection chunk range by chunk range.

    netCDF4 reads an integer array element by element (~30 µs each); reading the touched chunks as slices and
    gathering in memory turns a 5,000-point sweep from seconds into milliseconds.
    """

    def __init__(self, variable: xr.Variable, strings: np.ndarray | None, boolean: bool = False) -> None:
        self.variable = variable
        self.strings = strings
        self.boolean = boolean
        self.shape = variable.shape
        self.dtype = np.dtype(object) if strings is not None else np.dtype(bool) if boolean else variable.dtype
        self.chunk = int(variable.encoding.get("chunksizes", (_POINT_CHUNK,))[0])

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        (positions,) = key
        if isinstance(positions, slice) or np.ndim(positions) == 0:
            values = np.asarray(self.variable[positions].values)
        else:
            values = self._gather(np.asarray(positions, dtype=np.int64))
        if self.boolean:
            return values.astype(bool)
        return values if self.strings is None else self.strings.take(values)

    def _gather(self, positions: np.ndarray) -> np.ndarray:
        touched = np.unique(positions // self.chunk)
        if len(touched) == 0:
            return np.asarray(self.variable[:0].values)
        first = np.r_[0, np.flatnonzero(np.diff(touched) != 1) + 1]  # runs of consecutive chunks
        starts = touched[first] * self.chunk
        stops = np.minimum((touched[np.r_[first[1:] - 1, len(touched) - 1]] + 1) * self.chunk, self.shape[0])
        pieces = [np.asarray(self.variable[start:stop].values) for start, stop in zip(starts, stops, strict=True)]
        offsets = np.r_[0, np.cumsum(stops - starts)[:-1]] - starts  # file position → position in the pieces
        run = np.searchsorted(starts, positions, side="right") - 1
        return np.concatenate(pieces)[positions + offsets[run]]


def _decode_point_index(raw: xr.Dataset) -> xr.Dataset:
    """CF compression by gathering → MultiIndex, from the stored codes (no re-factorizing of 2 M values).

    Equivalent to ``cf_xarray.decode_compress_to_multi_index``, which also drops coordinates that no data variable
    carries; here every coordinate is kept.
    """
    names = raw[POINT_DIM].attrs["compress"].split(" ")
    # netCDF cannot type an empty string variable: it comes back float64
    levels = [pd.Index(raw[name].values, name=name, dtype=_level_dtype(name, raw[name].size)) for name in names]
    codes = np.unravel_index(np.asarray(raw[POINT_DIM].values), [len(level) for level in levels])
    index = pd.MultiIndex(levels=levels, codes=codes, names=names, verify_integrity=False)
    attrs = {name: raw[name].attrs for name in names}
    point_attrs = {key: value for key, value in raw[POINT_DIM].attrs.items() if key != "compress"}
    decoded = raw.drop_vars([POINT_DIM, *names]).assign_coords(xr.Coordinates.from_pandas_multiindex(index, POINT_DIM))
    decoded[POINT_DIM].attrs = point_attrs
    for name in names:
        decoded[name].attrs = attrs[name]
    return decoded


def _level_dtype(name: str, size: int) -> type | None:
    return object if size == 0 and name not in FLOAT_LEVELS else None


def _decode_indexes(ds: xr.Dataset) -> xr.Dataset:
    names = json.loads(ds.attrs.pop(_INDEXES_ATTR, "[]"))
    for name in names:
        ds = ds.set_xindex(name)
    return ds


def _decode_attrs_of(ds: xr.Dataset) -> xr.Dataset:
    ds.attrs = _decode_attrs(ds.attrs)
    for variable in ds.variables.values():
        variable.attrs = _decode_attrs(variable.attrs)
    return ds


def _decode_attrs(attrs: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
    as_json = json.loads(attrs.get(_JSON_ATTRS, "[]"))
    return {key: json.loads(value) if key in as_json else value for key, value in attrs.items() if key != _JSON_ATTRS}


def _jsonable(value: Any, where: Hashable) -> Any:
    """``value`` as plain JSON types; ``where`` names it in errors."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(item, where) for item in value), key=repr)
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(item, where) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | pd.Timestamp):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise CacheError(
        f"{where}: expected str, numbers, bools, None, paths, dates or lists/mappings of them, found "
        f"{type(value).__name__}; convert it before fingerprinting or storing it as an attribute"
    )


def is_ddxr_cache(path: str | Path) -> bool:
    """Whether ``path`` is a file ddxr wrote (a netCDF file stamped with ``ddxr_version`` and ``schema_version``).

    Reads only the file's root attributes, so it is cheap on any file. Commands use it before replacing a file, so
    that they never overwrite one ddxr did not write.

    Parameters
    ----------
    path : str or pathlib.Path
        Any path.

    Returns
    -------
    bool
        False for a missing path, a folder, or a file that is not a readable ddxr netCDF file.
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        manager = open_shared(path)  # the handle every open shares: a second one on the file could crash HDF5
        try:
            return {"ddxr_version", "schema_version"} <= set(manager.acquire().ncattrs())
        finally:
            manager.close()
    except (*_READ_ERRORS, CacheError):
        return False
