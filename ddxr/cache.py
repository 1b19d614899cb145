"""The netCDF cache: one file holds the curves (root group) and the runs table (group ``runs``).

File layout (schema 3; ``docs/file_format.md`` has the full description). It is chosen so that a colleague who opens
the file with plain xarray, without ddxr, gets right answers or an error, never a silently wrong selection:

- Every point coordinate, index levels included, is stored as a plain variable along ``point`` holding its values
  (strings as zlib-compressed character arrays, numbers and booleans as themselves), and none of them is a netCDF
  coordinate: stock xarray would build an index for a coordinate on the fly and cut an unsorted one by position,
  so a label range could silently miss points. Plain ``ds.sel(params="150M")`` raises (no such coordinate), and
  ``ds.isel(point=ds.params == "150M")`` selects exactly the right points. ``ddxr_coordinates`` names the variables
  ddxr restores as coordinates; the runs table's ``run_id`` is stored the same way (``ddxr_indexes``).
- Next to each string coordinate and each index level ``X`` sit ddxr's compact copy: ``X__codes`` (integers along
  ``point``, as narrow as the table allows) and ``X__values`` (its distinct values, on dimension ``X__value``). ddxr
  builds its index from these without reading or factorizing millions of strings; their dimension names match no
  coordinate a user would select.
- Booleans use xarray's own encoding (int8 with ``dtype = "bool"``) in both groups, so plain xarray reads them as
  booleans; booleans with missing values (runs table) are int8 with ``_FillValue`` -1 and CF ``flag_meanings``.
- Attributes netCDF cannot hold (dicts, lists, bools, None) are JSON text listed in ``ddxr_json_attrs``.
- ``Conventions = "CF-1.8"``; ``ddxr_decoding`` says in one sentence how to read the file without ddxr;
  ``schema_version`` is refused when it is not this module's :data:`SCHEMA_VERSION` (rebuild: ``ddxr build --refresh``).

Files are written to a temporary name in the target folder (``.<name>.<32 hex digits>.tmp``, removed by the next
build if a killed build left it) and moved into place with ``os.replace``, so readers never see half a file. Nothing
is pickled.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import filelock
import h5py
import numpy as np
import pandas as pd
import xarray as xr
from xarray.backends import BackendArray
from xarray.backends.netCDF4_ import NetCDF4ArrayWrapper
from xarray.core import indexing
from xarray.indexes import PandasIndex

from ddxr._version import __version__
from ddxr.coders import (
    CODES_SUFFIX,
    DECODES_ATTR,
    VALUE_DIM_SUFFIX,
    VALUES_ATTR,
    VALUES_SUFFIX,
    CategoricalCoder,
    EpochSecondsCoder,
    JsonAttrsCoder,
    NullableBooleanCoder,
    checked_codes,
    checked_table,
    codes_attrs,
    decode_attrs,
    encode_attrs,
    equal_runs,
    is_nullable_boolean,
    jsonable,
)
from ddxr.errors import BuildError, CacheError, DdxrError, InvalidArgumentError
from ddxr.handles import SharedFileManager, open_shared, recent_memo
from ddxr.index import DdxrIndex, index_coordinates, set_ddxr_index, with_pandas_index
from ddxr.schema import FLOAT_LEVELS, LEVELS, POINT_DIM, RUN_DIM, validate_dataset

#: Version of the file layout; files of another layout are refused with a request to rebuild them.
SCHEMA_VERSION: int = 3
#: The only engine ddxr reads and writes netCDF with.
ENGINE = "netcdf4"
#: Group of the runs table inside a cache file.
RUNS_GROUP = "runs"
#: Group of what an incremental refresh compares the sources with (:mod:`ddxr.refresh`); no open reads it.
BASIS_GROUP = "refresh_basis"
#: CF conventions the file follows.
CONVENTIONS = "CF-1.8"
#: How to read a file without ddxr, in one sentence (attribute ``ddxr_decoding`` of both groups).
DECODING = (
    "Without ddxr, the point coordinates are plain variables along 'point' that no .sel can reach (select with a "
    "mask: ds.isel(point=(ds.params == '150M') & (ds.learning_rate == 1e-5)); the '*__codes'/'*__values' variables "
    "are ddxr's compact copy of the strings and levels); with ddxr installed, xr.open_dataset(path, engine='ddxr') "
    "gives the labelled Dataset with .sel on every level."
)

_COMPRESSION = {"zlib": True, "complevel": 1}
# bytes of a chunk along point: small, so that reading a sweep decompresses little, and within zlib's 64 KiB window,
# which it then never slides (sliding rehashes the window: a chunk of 65,536 bytes compresses ~40% slower)
_CHUNK_BYTES = 64_000
_CONTIGUOUS_READ = 1 << 14  # points read at a time from a variable stored without chunks
_WRITE_CHUNK_CACHE = 1 << 20  # bytes of chunks each variable keeps in memory while the file is written
_WRITE_SLICE_BYTES = 1 << 25  # bytes of a plain string copy gathered at a time while it is written
_NEAR_UNIQUE_CODES = 4  # bytes per code (int32): codes of a table of 32,767 values or more are stored uncompressed
# elements per chunk of what is stored uncompressed along an unlimited dimension (tables, near-unique codes): a few
# large chunks, read whole at disk speed (HDF5 stores nothing contiguously along an unlimited dimension)
_PLAIN_CHUNK = 1 << 20
_INDEXES_ATTR = "ddxr_indexes"  # indexed coordinates that are not dimension coordinates (runs: run_id along run)
_COORDINATES_ATTR = "ddxr_coordinates"  # the point variables ddxr restores as coordinates
# describe the file, not the data: not part of the decoded Dataset
_FILE_ATTRS = ("Conventions", "ddxr_decoding", _COORDINATES_ATTR)
# what netCDF4/HDF5 raise on damaged files (an unreadable HDF5 attribute is an AttributeError, a bad type a TypeError)
_READ_ERRORS = (OSError, RuntimeError, ValueError, KeyError, IndexError, AttributeError, TypeError, OverflowError)
_REBUILD = "rebuild it with `ddxr build --refresh` (or delete the file)"
_JSON = JsonAttrsCoder()
_BOOLEANS = NullableBooleanCoder()
_TIMES = EpochSecondsCoder()
_CATEGORIES = CategoricalCoder()
_IMMUTABLE = (str, bytes, int, float, np.generic, np.dtype, type(None))  # attribute values copies may share
_CURVES_MEMO = "curves"  # a recent file's memo: (drop list, curves as decoded), see _remembered_curves


def write_dataset(
    curves: xr.Dataset, runs: xr.Dataset, path: str | Path, basis: Mapping[str, bytes] | None = None
) -> Path:
    """Write the curves and the runs table to one netCDF file, atomically.

    Parameters
    ----------
    curves : xarray.Dataset
        The curves Dataset of docs/dataset.md §2, with a MultiIndex (ddxr's or stock) over ``point``.
    runs : xarray.Dataset
        The runs table (dimension ``run``); written as group ``runs``.
    path : str or pathlib.Path
        Target file; its folder is created if needed. An existing file is replaced only once the new one is complete.
    basis : mapping of str to bytes, optional
        What a later incremental refresh compares the sources with (:mod:`ddxr.refresh`), kept in group
        :data:`BASIS_GROUP`, which no open reads.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    BuildError
        If the curves break the Dataset contract (:func:`ddxr.schema.validate_dataset`), or a string variable holds
        missing values (netCDF would bring them back as ``''``: use explicit sentinels).
    CacheError
        If the file cannot be written.

    Notes
    -----
    ``ddxr_version`` and ``created`` (UTC ISO 8601) are stamped on both groups when absent; ``schema_version`` is
    always the writer's :data:`SCHEMA_VERSION`. Variables are compressed with zlib level 1 (see :func:`_encodings`).

    The curves are written one variable at a time, and their data variables are read only then: lazily indexed
    metrics (e.g. computed on access) are loaded one by one as they are written, so memory holds one at a time.

    ``point``, the dimensions of the tables of distinct values and ``run`` are unlimited, so that a refresh can
    grow the file in place (:func:`ddxr.refresh.refresh_file`).
    """
    path = Path(path)
    encoded_curves, encoded_runs = encode(curves, runs)
    encoded_curves = _as_utf8_bytes(encoded_curves)

    def write(target: Path) -> None:
        store = _WriteStore.open(target, mode="w")
        try:
            _dump_by_variable(encoded_curves, store)
            encoded_runs.dump_to_store(
                store.get_child_store(RUNS_GROUP),
                encoding=_encodings(encoded_runs),
                unlimited_dims=[RUN_DIM] if RUN_DIM in encoded_runs.dims else [],
            )
            if basis is not None:
                write_basis(store.ds, basis)
        finally:
            store.close()

    replace_atomically(path, write)
    return path


def open_dataset(
    path: str | Path,
    chunks: Mapping[str, int] | int | str | None = None,
    drop_variables: str | Iterable[Hashable] | None = None,
) -> xr.Dataset:
    """Open the curves of a cache file, lazily, with ddxr's index on ``point``.

    Parameters
    ----------
    path : str or pathlib.Path
        A file written by :func:`write_dataset`.
    chunks : mapping, int, str or None
        Passed to :func:`xarray.open_dataset`: ``None`` loads variables lazily with numpy on first use; anything
        else backs them with dask chunks (e.g. ``{"point": 100_000}``).
    drop_variables : str or iterable of str, optional
        Variables (metrics or point coordinates other than the index levels) to leave out; they are never read.

    Returns
    -------
    xarray.Dataset
        The curves, identical to what was written; only the ``point`` index is read now, every variable on use.

    Raises
    ------
    CacheError
        If the file is missing, truncated, corrupt, not a ddxr cache, or of another schema.
    InvalidArgumentError
        If ``drop_variables`` names an index level (the index needs every level).
    """
    path = Path(path)
    if chunks is not None:  # dask-backed variables are built by xarray at each open
        return decode_curves(_open(path, group=None, chunks=chunks), path, drop_variables)
    manager = _shared(path)
    try:
        curves = _bound(_remembered_curves(manager, path, _drop_list(drop_variables)), manager)
    except BaseException:
        manager.close()
        raise
    curves.set_close(manager.close)
    return curves


def open_runs(path: str | Path, drop_variables: str | Iterable[Hashable] | None = None) -> xr.Dataset:
    """Open the runs table (group ``runs``) of a cache file.

    Parameters
    ----------
    path : str or pathlib.Path
        A file written by :func:`write_dataset`.
    drop_variables : str or iterable of str, optional
        Columns of the runs table to leave out.

    Returns
    -------
    xarray.Dataset
        The runs table, dimension ``run``, read into memory (one row per run: small).

    Raises
    ------
    CacheError
        If the file is missing, truncated, corrupt, lacks the runs group, or is of another schema.
    """
    path = Path(path)
    return decode_runs(_open(path, group=RUNS_GROUP, chunks=None), path, drop_variables)


def encode(curves: xr.Dataset, runs: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset]:
    """Return the curves and the runs table as ddxr stores them (netCDF here, zarr in ddxr.zarr_store).

    Parameters
    ----------
    curves, runs : xarray.Dataset
        As for :func:`write_dataset`.

    Returns
    -------
    tuple of xarray.Dataset
        ``(curves, runs)`` checked, stamped with provenance and encoded (the layout of the module docstring);
        write them with any xarray writer.

    Raises
    ------
    BuildError
        As :func:`write_dataset`.
    """
    curves = _checked_curves(curves)
    return _encode_curves(_stamped(curves)), encode_runs(runs)


def encode_runs(runs: xr.Dataset) -> xr.Dataset:
    """Return the runs table as ddxr stores it (see :func:`encode`)."""
    _check_strings(runs, RUNS_GROUP)
    return _encode_variables(_encode_indexes(_stamped(runs.drop_encoding())))


def decode_curves(
    raw: xr.Dataset, where: str | Path, drop_variables: str | Iterable[Hashable] | None = None
) -> xr.Dataset:
    """Return the curves from what xarray read of a stored root group (:func:`encode`'s first result), on any storage.

    Parameters
    ----------
    raw : xarray.Dataset
        Opened without default indexes (``create_default_indexes=False``); closed when the result is closed.
    where : str or pathlib.Path
        The file or store, named in errors.
    drop_variables : str or iterable of str, optional
        As for :func:`open_dataset`.

    Raises
    ------
    CacheError
        If ``raw`` is not a ddxr curves group of this schema, or is damaged (any failure of decoding it).
    """
    _check_schema(raw, where)
    try:
        curves = _decode_curves(raw, where, _drop_list(drop_variables))
    except BaseException as error:
        raw.close()
        raise _as_cache_error(error, where) from error
    return _closing(curves, raw)


def decode_runs(
    raw: xr.Dataset, where: str | Path, drop_variables: str | Iterable[Hashable] | None = None
) -> xr.Dataset:
    """Return the runs table, in memory, from what xarray read of a stored runs group; see :func:`decode_curves`."""
    _check_schema(raw, where)
    try:
        raw = raw.drop_vars([name for name in _drop_list(drop_variables) if name in raw.variables])
        runs = _decode_indexes(_decode_variables(raw.load(), RUNS_GROUP))
    except BaseException as error:
        raw.close()
        raise _as_cache_error(error, where, RUNS_GROUP) from error
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
        {"parts": jsonable(parts, "parts"), "schema_version": SCHEMA_VERSION},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def cached_build(
    path: str | Path,
    build: Callable[[], tuple],
    *,
    refresh: bool = False,
    update: Callable[[Path], bool] | None = None,
) -> Path:
    """Return the cache file at ``path``, building and writing it first when missing or when ``refresh`` is set.

    A file lock (``<path>.lock``) keeps concurrent builders apart: the second one waits, finds the file written by
    the first and opens it instead of building again. The file name (usually a :func:`fingerprint`) is the caller's
    business: a stale cache is one whose fingerprint, hence path, changed. A build also removes the temporary files
    that killed builds left in the folder (only ddxr's own, and only those no running build is writing).

    Parameters
    ----------
    path : str or pathlib.Path
        Cache file.
    build : callable
        Returns ``(curves, runs)`` or ``(curves, runs, basis)`` (see :func:`write_dataset`); called at most once,
        only when the file must be (re)built.
    refresh : bool
        Rebuild even if the file exists (``update`` is not tried).
    update : callable, optional
        Tries to write the file without a build (an incremental refresh of an older file): called with a temporary
        path in the target folder, returns whether it wrote it; when it did not, ``build`` runs.

    Returns
    -------
    pathlib.Path
        The file, for :func:`open_dataset` and :func:`open_runs` (a caller opens only what it uses).
    """
    path = Path(path)
    if refresh or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(f"{path}.lock"):
            if refresh or not path.exists():  # another builder may have finished while we waited
                remove_leftover_temporaries(path)
                if refresh or update is None or not replace_atomically(path, update):
                    curves, runs, *basis = build()
                    write_dataset(curves, runs, path, *basis)
    return path


#: Name of the temporary file a write goes to: ``.<target name>.<32 hex digits>.tmp`` in the target's folder.
TEMPORARY_NAME = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{32}\.tmp$")


def remove_leftover_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files killed writes left next to ``path``; call with ``path``'s lock held.

    Only names of :data:`TEMPORARY_NAME` are touched: those of ``path`` itself (its lock is held, so no write of
    it is running) and those of other targets whose lock is free (no build of them is running).

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    removed = []
    for candidate in path.parent.glob(".*.tmp"):
        match = TEMPORARY_NAME.match(candidate.name)
        if match is None:
            continue
        target = candidate.with_name(match["target"])
        if target != path:
            try:
                with filelock.FileLock(f"{target}.lock", timeout=0):
                    pass
            except filelock.Timeout:  # a build of that file is writing it right now
                continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


# --- validation -----------------------------------------------------------------------------------------------------


def _checked_curves(curves: xr.Dataset) -> xr.Dataset:
    """Return the curves with a clean ddxr index, after checking the Dataset contract the file format relies on."""
    validate_dataset(curves)
    curves = set_ddxr_index(curves.drop_encoding())  # drops unused level values
    _check_strings(curves, "curves")
    return curves


def _check_strings(ds: xr.Dataset, where: str) -> None:
    for name, variable in ds.variables.items():
        # MultiIndex levels are checked through their codes instead (validate_dataset)
        if variable.dtype.kind in "OUT" and name not in (POINT_DIM, *LEVELS) and not is_nullable_boolean(variable):
            values = np.asarray(variable.values).reshape(-1)
            starts, lengths = equal_runs(values)  # strings repeat along point: test one value per run
            missing = int(lengths[pd.isna(values[starts])].sum())
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
    """Encode the ddxr index as plain level coordinates along ``point``; strings and levels get codes and tables."""
    index = curves.xindexes[POINT_DIM].index
    plain = curves.drop_indexes([POINT_DIM, *LEVELS]).drop_vars(POINT_DIM)
    extra: dict[Hashable, xr.Variable] = {}
    for name, variable in plain.variables.items():
        if variable.dims != (POINT_DIM,) or not (name in LEVELS or variable.dtype.kind in "OUT"):
            continue
        factorized = None
        if name in LEVELS:  # the index's own codes: no re-factorizing of millions of values
            position = LEVELS.index(name)
            factorized = (index.codes[position], index.levels[position].to_numpy())
        encoded = _CATEGORIES.encode(str(name), variable.to_base_variable(), factorized)
        extra.update({key: value for key, value in encoded.items() if key != name})
    # no coordinates in the file: stock .sel must not reach the point variables (module docstring)
    encoded = plain.assign(extra).reset_coords().assign_attrs({_COORDINATES_ATTR: json.dumps(list(plain.coords))})
    return _encode_variables(encoded)


def _encode_variables(ds: xr.Dataset) -> xr.Dataset:
    """Encode nullable booleans, whole-second datetimes and attrs netCDF cannot hold; add the file's own attributes.

    Booleans become int8, datetimes seconds since the epoch, attrs JSON. Decides from dtypes and attrs: no float
    variable is read (lazily indexed metrics stay unread).
    """
    variables = {
        name: _JSON.encode(_TIMES.encode(_BOOLEANS.encode(variable, name), name), name)
        for name, variable in ds.variables.items()
    }
    attrs = encode_attrs({**ds.attrs, "Conventions": CONVENTIONS, "ddxr_decoding": DECODING}, "Dataset")
    return _replaced(ds, variables, attrs)


def _replaced(ds: xr.Dataset, variables: Mapping[Hashable, xr.Variable], attrs: Mapping[Hashable, Any]) -> xr.Dataset:
    """Return ``ds`` with some of its variables replaced, in one construction (no merge per variable)."""
    data_vars = {name: variables.get(name, ds.variables[name]) for name in ds.data_vars}
    coords = {name: variables.get(name, ds.variables[name]) for name in ds.coords}
    return xr.Dataset(data_vars, coords=xr.Coordinates(coords, indexes={}), attrs=attrs)


def _encode_indexes(ds: xr.Dataset) -> xr.Dataset:
    """Store the indexed non-dimension coordinates as plain variables, named in an attribute ddxr re-indexes."""
    names = [name for name, index in ds.xindexes.items() if name not in ds.dims and type(index) is PandasIndex]
    return ds.reset_index(names).reset_coords(names).assign_attrs({_INDEXES_ATTR: json.dumps(names)}) if names else ds


def _encodings(ds: xr.Dataset) -> dict[Hashable, dict[str, Any]]:
    """Return encodings: zlib level 1 on what is along ``point`` (with shuffle on numbers), in chunks of ~64 kB.

    The writer drops the shuffle of float variables that are mostly NaN (:func:`_mostly_missing`).

    Starts from each variable's own encoding, which only the coders set (the Datasets are written without theirs).
    Level 1 compresses about twice as fast as level 4, for some 15% more bytes. ddxr's compact copy is read whole on
    every open: tables of distinct values, and the codes of tables too large for int16 codes (near-unique values,
    such as ``cumulative_tokens``, which compress little), are stored uncompressed, so opening reads them at disk
    speed.
    """
    encodings: dict[Hashable, dict[str, Any]] = {}
    for name, variable in ds.variables.items():
        encodings[name] = encoding = dict(variable.encoding)
        near_unique_codes = DECODES_ATTR in variable.attrs and variable.dtype.itemsize >= _NEAR_UNIQUE_CODES
        long = variable.dims[:1] in ((POINT_DIM,), (RUN_DIM,))  # not a table of distinct values
        if variable.ndim == 1 and variable.dims[0] != RUN_DIM and (near_unique_codes or not long):
            encoding["chunksizes"] = (min(_PLAIN_CHUNK, max(variable.size, 1)),)
        if variable.size == 0 or variable.dtype.kind not in "biufMS" or near_unique_codes or not long:
            continue
        encoding.update(_COMPRESSION, shuffle=variable.dtype.kind != "S")
        if variable.dims == (POINT_DIM,):
            points = min(variable.size, max(1, _CHUNK_BYTES // variable.dtype.itemsize))
            # strings are written as characters, one more dimension: whole strings in a chunk
            encoding["chunksizes"] = (points, variable.dtype.itemsize) if variable.dtype.kind == "S" else (points,)
    return encodings


def _dump_by_variable(ds: xr.Dataset, store: _WriteStore) -> None:
    """Write ``ds`` to ``store`` variable by variable.

    xarray encodes (reads) every variable of a Dataset before writing the first: one variable at a time, a lazily
    indexed variable is read only while it is written, and freed before the next.
    """
    encodings = _encodings(ds)
    # the point dimension and the tables' grow when a refresh appends (ddxr.refresh)
    unlimited = [dim for dim in ds.dims if dim == POINT_DIM or str(dim).endswith(VALUE_DIM_SUFFIX)]
    xr.Dataset(attrs=ds.attrs).dump_to_store(store)
    for name, variable in ds.variables.items():
        own = [dim for dim in unlimited if dim in variable.dims]
        encoding = encodings[name]
        if encoding.get("shuffle") and variable.dtype.kind == "f" and variable.dims == (POINT_DIM,):
            variable = variable.copy(data=variable.to_numpy())  # read once, here: the write takes it from memory
            encoding = {**encoding, "shuffle": not _mostly_missing(variable.values)}
        xr.Dataset({name: variable}).dump_to_store(store, encoding={name: encoding}, unlimited_dims=own)


def _mostly_missing(values: np.ndarray) -> bool:
    """Whether more than half of ``values`` are NaN: stored without shuffle, which only helps the numbers.

    Such a column (an evaluation logged at a few points of each lineage) is mostly one repeated bit pattern that zlib
    compresses as well unshuffled, or better (the large benchmark file: 1.6% smaller in all), and unshuffling would
    cost every read a pass over each chunk.
    """
    return 2 * int(np.count_nonzero(np.isnan(values))) > values.size


class _WriteStore(xr.backends.NetCDF4DataStore):
    """xarray's netCDF4 store, whose variables keep at most :data:`_WRITE_CHUNK_CACHE` bytes of chunks in memory.

    netCDF-C gives every variable a chunk cache of 64 MB that lives until the file is closed: each variable of a few
    MB would stay in memory, uncompressed, until the whole file is written (and filling fresh memory costs more CPU
    than compressing). With a small cache each chunk is compressed and written out as soon as it is complete.
    """

    def encode(self, variables: dict, attributes: dict) -> tuple[dict, dict]:
        """Encode as xarray does, except the plain string copies (:class:`_Gathered`): they stay lazy.

        xarray would turn a whole copy into characters at once (1.3 GB for ``run_id`` at 10 M points); each copy's
        encoding (dimensions, attributes) is taken from its first string.
        """
        gathered = {name: values for name, variable in variables.items() if (values := _gathered(variable))}
        firsts = {name: variables[name][:1].load() for name in gathered}
        encoded, attributes = super().encode({**variables, **firsts}, attributes)
        for name, values in gathered.items():
            first = encoded[name]
            lazy = indexing.LazilyIndexedArray(values.characters())
            encoded[name] = xr.Variable(first.dims, lazy, first.attrs, first.encoding)
        return encoded, attributes

    def prepare_variable(
        self, name: Hashable, variable: xr.Variable, check_encoding: bool = False, unlimited_dims: Any = None
    ) -> tuple[Any, Any]:
        """Create the variable as xarray does, with a small chunk cache; a plain string copy is written in slices."""
        characters = _gathered(variable)
        target, source = super().prepare_variable(
            name, variable[:0] if characters else variable, check_encoding=check_encoding, unlimited_dims=unlimited_dims
        )
        created = self.ds.variables[name]
        if created.chunking() != "contiguous":
            created.set_var_chunk_cache(size=_WRITE_CHUNK_CACHE)
        return (_InSlices(target), characters) if characters else (target, source)


class _InSlices:
    """A variable's target that writes a lazily gathered source :data:`_WRITE_SLICE_BYTES` at a time along ``point``."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __setitem__(self, key: Any, source: _Gathered) -> None:
        step = max(1, _WRITE_SLICE_BYTES // max(1, source.row_bytes))
        for start in range(0, source.shape[0], step):
            piece = slice(start, min(start + step, source.shape[0]))  # point is unlimited: a slice is never clipped
            self.target[piece] = source[indexing.BasicIndexer((piece,))]


def _gathered(variable: xr.Variable) -> _Gathered | None:
    """Return the :class:`_Gathered` values of a variable, else None (also once it was indexed: then it is not all)."""
    data = variable._data  # xarray's own wrapper; .data would read it
    if isinstance(data, indexing.LazilyIndexedArray) and isinstance(data.array, _Gathered):
        if all(isinstance(key, slice) and key == slice(None) for key in data.key.tuple):
            return data.array
    return None


def _as_utf8_bytes(ds: xr.Dataset) -> xr.Dataset:
    """Encode the plain string copies along ``point`` as fixed-width UTF-8 bytes (netCDF character arrays).

    The bytes are gathered from each table of distinct values when the copy is written, not before: xarray would
    encode each of millions of strings in Python, and the copies of all the strings at once take hundreds of MB.
    """
    copies = {}
    for name, variable in ds.variables.items():
        codes = f"{name}{CODES_SUFFIX}"
        if variable.dims == (POINT_DIM,) and variable.dtype.kind in "OUT" and codes in ds.variables and variable.size:
            table = np.array([value.encode("utf-8") for value in ds[f"{name}{VALUES_SUFFIX}"].values.tolist()])
            # room to spare, so that a refresh can append longer strings in place (trailing NULs compress to nothing)
            table = table.astype(f"S{-(-table.dtype.itemsize * 3 // 16) * 8}")  # 1.5 x the longest, in 8s
            utf8 = indexing.LazilyIndexedArray(_Gathered(table, ds[codes].values))
            copies[name] = xr.Variable(variable.dims, utf8, attrs={**variable.attrs, "_Encoding": "utf-8"})
    return _replaced(ds, copies, ds.attrs)


class _Gathered(BackendArray):
    """The values of a table at given codes (along the first dimension), gathered when read."""

    def __init__(self, table: np.ndarray, codes: np.ndarray) -> None:
        self.table = table
        self.codes = codes
        self.shape = codes.shape + table.shape[1:]
        self.dtype = table.dtype
        self.row_bytes = table[:1].nbytes

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        values = self.table[self.codes[key[0]]]
        return values[(slice(None), *key[1:])] if len(key) > 1 else values

    def characters(self) -> _Gathered:
        """Return the fixed-width strings as netCDF characters: one more dimension, one byte each."""
        width = self.table.dtype.itemsize
        return _Gathered(self.table.view("S1").reshape(len(self.table), width), self.codes)


def replace_atomically(path: Path, write: Callable[[Path], bool | None]) -> bool:
    """Write to a temporary file in the target folder, then rename it over ``path`` (atomic on one file system).

    ``write`` may return False to give up: ``path`` is then left as it was. Returns whether ``path`` was replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if write(temporary) is False:
            return False
        os.replace(temporary, path)
        return True
    except OSError as error:
        raise CacheError(f"{path}: cannot write the cache file ({error}); check the folder is writable") from error
    finally:
        temporary.unlink(missing_ok=True)


def write_basis(file: Any, basis: Mapping[str, bytes]) -> None:
    """Write (or overwrite) the refresh basis of an open netCDF4 file: one byte variable per entry, in the basis group.

    Each variable grows along its own unlimited dimension; attribute ``size`` says how many of its bytes are its own.
    """
    group = file.groups.get(BASIS_GROUP) or file.createGroup(BASIS_GROUP)
    for key, content in basis.items():
        if key not in group.variables:
            group.createDimension(f"{key}_byte", None)
            group.createVariable(key, np.uint8, (f"{key}_byte",), zlib=False, chunksizes=(_PLAIN_CHUNK,))
        data = np.frombuffer(content, dtype=np.uint8)
        group[key][: len(data)] = data
        group[key].setncattr("size", len(data))


def read_basis(path: Path) -> dict[str, bytes] | None:
    """Return the refresh basis of a cache file (:func:`write_basis`); None when it has none or cannot be read.

    Read through HDF5 alone: the netCDF library would first read the metadata of every variable of the file.
    """
    try:
        with h5py.File(path, "r", locking=False) as file:
            group = file.get(BASIS_GROUP)
            if group is None:
                return None
            return {  # the entries; their dimensions are HDF5 datasets too, without a size
                key: variable[: int(np.asarray(variable.attrs["size"]).reshape(-1)[0])].tobytes()
                for key, variable in group.items()
                if "size" in variable.attrs
            }
    except _READ_ERRORS:
        return None


# --- decoding -------------------------------------------------------------------------------------------------------


def _shared(path: Path, group: str | None = None) -> SharedFileManager:
    """Return a manager over the one handle of the file at ``path`` (ddxr.handles); CacheError if unreadable."""
    if not path.is_file():
        raise CacheError(f"{path}: no such cache file; build it with `ddxr build` or check the path")
    try:
        # one handle per file version for every open: several handles on one file, some closed by the garbage
        # collector, crash netCDF-C/HDF5 (see ddxr.handles); variables are read from disk when used
        return open_shared(path)
    except _READ_ERRORS as error:
        raise _unreadable(path, error, group) from error


def _open(path: Path, group: str | None, chunks: Any, manager: SharedFileManager | None = None) -> xr.Dataset:
    manager = manager or _shared(path, group)
    try:
        store = _ReadStore(manager, group=group)
        # the curves have no dimension coordinate to index; the runs table's are restored by _decode_indexes
        return xr.open_dataset(
            store,
            engine=xr.backends.StoreBackendEntrypoint,
            chunks=chunks,
            create_default_indexes=group is not None,
        )
    except _READ_ERRORS as error:
        manager.close()
        raise _unreadable(path, error, group) from error


class _ReadStore(xr.backends.NetCDF4DataStore):
    """xarray's netCDF4 store, with variable-length strings read as the Python strings netCDF4 gives.

    xarray would "decode" them with an ``astype(str)`` that imports dask.array when dask is installed: 0.3-0.5 s of
    the first open in a process, for value tables that need no decoding.
    """

    def open_store_variable(self, name: str, var: Any) -> xr.Variable:
        """Open one variable as xarray does, without the marker that makes xarray decode its strings again."""
        variable = super().open_store_variable(name, var)
        if variable.encoding.get("dtype") is str:
            del variable.encoding["dtype"]
        if self._group is None and isinstance(self._manager, SharedFileManager) and variable.dtype.kind in "biuf":
            variable.data = indexing.LazilyIndexedArray(_SharedFileArray(name, self))
        return variable


def _forward(item: Any) -> bool:
    return isinstance(item, int | np.integer) or (isinstance(item, slice) and (item.step or 1) > 0)


class _SharedFileArray(NetCDF4ArrayWrapper):
    """xarray's netCDF4 array of a number variable, read through the shared file's h5py companion.

    netCDF-C asks every variable of the file for its extent at each read (the ``point`` dimension is unlimited):
    ~1 µs per variable in the file, 180 µs a read in a file of 160 variables, where h5py takes 5 µs (ddxr.handles).
    Keys of integers and forward slices go to h5py (xarray turns backward slices into forward ones first); any
    other key is read by netCDF4 as before.
    """

    __slots__ = ()

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        if all(_forward(item) for item in key):
            return self.datastore._manager.hdf5_variable(self.variable_name)[key]
        return super()._getitem(key)


def _remembered_curves(manager: SharedFileManager, path: Path, drop: list[Hashable]) -> xr.Dataset:
    """Return the decoded curves of the file behind ``manager``, decoded once per file version while it is recent.

    What opening decodes (the point index, string tables, attributes) only depends on the file, so it is kept in
    the file's memo (ddxr.handles) and every later open copies it with :func:`_bound` instead of reading it again.
    """
    memo = recent_memo(manager)
    remembered = memo.get(_CURVES_MEMO)
    if remembered is not None and remembered[0] == drop:
        return remembered[1]
    curves = decode_curves(_open(path, None, None, manager), path, drop)
    memo[_CURVES_MEMO] = (drop, curves)  # refers to the file through `manager`, which never refers to the memo
    return curves


def _bound(curves: xr.Dataset, manager: SharedFileManager) -> xr.Dataset:
    """Return a copy of remembered curves reading through ``manager``, with lazy caches and attributes of its own.

    The copy shares the (immutable) index and string tables; each lazy variable gets new memory-cache and
    copy-on-write wrappers (loading or writing one Dataset's values never shows in another) and a file array bound to
    this open's manager, so that closing a Dataset releases exactly its own use of the file.
    """
    stores: dict[int, xr.backends.NetCDF4DataStore] = {}
    bound = curves.copy()
    for variable in bound.variables.values():
        if isinstance(variable._data, indexing.MemoryCachedArray):
            variable.data = _cached(_rebound(variable._data.array.array, manager, stores))
        variable.attrs = _own(variable.attrs)
        variable.encoding = _own(variable.encoding)
    bound.attrs = _own(bound.attrs)
    return bound


def _own(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    """Return a copy of ``mapping`` sharing no mutable value (a deepcopy costs ~20 µs a dict; most values are text)."""
    return {key: value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value) for key, value in mapping.items()}


def _rebound(array: Any, manager: SharedFileManager, stores: dict[int, xr.backends.NetCDF4DataStore]) -> Any:
    """Return a copy of a chain of lazy wrappers (ddxr's, xarray's decoders) whose file array reads via ``manager``."""
    rebound = copy.copy(array)
    if isinstance(array, NetCDF4ArrayWrapper):
        store = stores.get(id(array.datastore))
        if store is None:
            store = stores[id(array.datastore)] = copy.copy(array.datastore)
            store._manager = manager
        rebound.datastore = store
    else:
        rebound.array = _rebound(array.array, manager, stores)
    return rebound


def _cached(array: Any) -> indexing.MemoryCachedArray:
    """Wrap a lazy array as xarray wraps the variables it opens (to_dataframe reads ``.data`` several times)."""
    return indexing.MemoryCachedArray(indexing.CopyOnWriteArray(array))


def _check_schema(ds: xr.Dataset, path: str | Path) -> None:
    version = _schema_version(ds.attrs.get("schema_version"))
    if version == SCHEMA_VERSION:
        return
    ds.close()
    if version is None:
        raise CacheError(f"{path}: expected a ddxr cache file with an integer schema_version attribute, found none")
    if version > SCHEMA_VERSION:
        raise CacheError(f"{path}: written by a newer ddxr (schema {version} > {SCHEMA_VERSION}); upgrade ddxr")
    raise CacheError(
        f"{path}: written by an older ddxr (file layout {version}, this ddxr reads {SCHEMA_VERSION}); {_REBUILD}"
    )


def _schema_version(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _closing(decoded: xr.Dataset, raw: xr.Dataset) -> xr.Dataset:
    """Make closing the decoded Dataset close the file behind ``raw``."""
    if decoded is not raw:
        decoded.set_close(raw.close)
    return decoded


def _unreadable(path: str | Path, error: BaseException, group: str | None = None) -> CacheError:
    where = f" (group {group!r})" if group else ""
    return CacheError(
        f"{path}{where}: expected a readable ddxr netCDF cache, found a truncated, corrupt or foreign file "
        f"({type(error).__name__}: {error}); {_REBUILD}"
    )


def _as_cache_error(error: BaseException, path: str | Path, group: str | None = None) -> BaseException:
    """Return what decoding a damaged file raised as a CacheError naming the file (ddxr errors, interrupts as is).

    A decoder facing arbitrary bytes can fail in any way (a JSON attribute that is not JSON, a table of the wrong
    type, codes outside their table); every such failure means the same thing to the user: rebuild the file.
    """
    if isinstance(error, CacheError):
        where = f" (group {group!r})" if group else ""
        if str(error).startswith(str(path)):
            return error
        hint = "" if "ddxr build" in str(error) else f"; the file is damaged: {_REBUILD}"
        return CacheError(f"{path}{where}: {error}{hint}")
    if isinstance(error, DdxrError) or not isinstance(error, Exception):
        return error
    return _unreadable(path, error, group)


def _drop_list(drop_variables: str | Iterable[Hashable] | None) -> list[Hashable]:
    if drop_variables is None:
        return []
    return [drop_variables] if isinstance(drop_variables, str) else list(drop_variables)


def _decode_curves(raw: xr.Dataset, path: str | Path, drop: list[Hashable]) -> xr.Dataset:
    coded = {
        variable.attrs[DECODES_ATTR]: name for name, variable in raw.variables.items() if DECODES_ATTR in variable.attrs
    }
    absent = [name for name in LEVELS if name not in coded]
    if absent:
        raise CacheError(f"{path}: expected a ddxr curves group with codes of the index levels, missing {absent}")
    levels = [name for name in drop if name in LEVELS]
    if levels:
        raise InvalidArgumentError(
            f"drop_variables={levels}: index levels cannot be dropped; drop metrics or other coordinates"
        )
    coordinates = set(json.loads(raw.attrs.get(_COORDINATES_ATTR, "[]")))
    # the plain copies are for readers without ddxr: ddxr reads the codes instead, and never touches the copies
    dropped = [
        *coded,
        *(f"{name}{suffix}" for name in drop if name in coded for suffix in (CODES_SUFFIX, VALUES_SUFFIX)),
    ]
    variables = {name: variable for name, variable in raw.variables.items() if name not in {*dropped, *drop}}
    kept = {name: codes for name, codes in coded.items() if name not in drop}
    lazy = _decode_point_variables(variables, kept, path)
    bookkeeping = {*kept.values(), *(variables[codes].attrs[VALUES_ATTR] for codes in kept.values())}
    rest = {name: variable for name, variable in variables.items() if name not in bookkeeping | lazy.keys()}
    attrs = decode_attrs({key: value for key, value in raw.attrs.items() if key not in _FILE_ATTRS}, "Dataset")
    coords = {name: variable for name, variable in lazy.items() if name in coordinates}
    index, level_attrs = _point_index(variables, {name: coded[name] for name in LEVELS})
    # one construction (each costs ~0.2 ms a variable); the order is the column order of to_dataframe: coordinates,
    # data, then the index levels
    decoded = xr.Dataset({**rest, **coords, **lazy}, coords=index, attrs=attrs).set_coords(list(coords))
    for name in LEVELS:
        decoded[name].attrs = level_attrs[name]
    return decoded


def _decode_point_variables(
    variables: Mapping[Hashable, xr.Variable], coded: Mapping[str, str], path: str | Path
) -> dict[Hashable, xr.Variable]:
    """Decode point variables as lazy arrays reading only the chunks a selection touches; codes → values."""
    point = [variable for variable in variables.values() if variable.dims == (POINT_DIM,)]
    dask = bool(point) and point[0].chunks is not None  # opened with chunks=: every variable is dask-backed
    lazy: dict[Hashable, xr.Variable] = {}
    for name, codes_name in coded.items():
        if name in LEVELS:
            continue
        codes = variables[codes_name]
        table = checked_table(name, codes, variables[codes.attrs[VALUES_ATTR]])
        attrs = decode_attrs(codes_attrs(codes), f"variable {name!r}")
        data = _lazy(name, codes, table, path, dask)
        lazy[name] = xr.Variable(POINT_DIM, data, attrs=attrs, encoding=codes.encoding)
    bookkeeping = {*coded.values(), *(variables[codes].attrs[VALUES_ATTR] for codes in coded.values())}
    for name, variable in variables.items():  # one wrap per variable, never per point
        if variable.dims == (POINT_DIM,) and name not in bookkeeping:
            attrs = decode_attrs(variable.attrs, f"variable {name!r}")
            data = _lazy(name, variable, None, path, dask)
            lazy[name] = xr.Variable(POINT_DIM, data, attrs=attrs, encoding=variable.encoding)
    return lazy


def _lazy(name: Hashable, variable: xr.Variable, strings: np.ndarray | None, path: str | Path, dask: bool) -> Any:
    if dask:  # dask reads whole chunks already; only strings need decoding
        if strings is None:
            return variable.data
        return variable.data.map_blocks(functools.partial(_take, strings=strings, name=name), dtype=object)
    return _cached(indexing.LazilyIndexedArray(_PointArray(name, variable, strings, path)))


def _take(codes: np.ndarray, strings: np.ndarray, name: Hashable) -> np.ndarray:
    """Return the values of checked codes (a module function, so dask can pickle it to worker processes)."""
    return strings.take(checked_codes(str(name), codes, len(strings)))


class _PointArray(BackendArray):
    """A lazily opened point variable that reads an integer selection chunk range by chunk range.

    netCDF4 reads an integer array element by element (~30 µs each); reading the touched chunks as slices and
    gathering in memory turns a 5,000-point sweep from seconds into milliseconds. Codes are checked against their
    table and read errors of a damaged file surface as :class:`~ddxr.errors.CacheError`.
    """

    def __init__(self, name: Hashable, variable: xr.Variable, strings: np.ndarray | None, path: str | Path) -> None:
        self.name = name
        self.array = _undecoded(variable)
        self.strings = strings
        self.path = path
        self.shape = variable.shape
        self.dtype = np.dtype(object) if strings is not None else variable.dtype
        self.chunk = int(variable.encoding.get("chunksizes", (_CONTIGUOUS_READ,))[0])

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        if isinstance(key, indexing.BasicIndexer | indexing.OuterIndexer):
            # one dimension: the key is the positions themselves (xarray's adapter would decompose it into a backend
            # key and an in-memory key, a third of an export's time on ~170 variables)
            return self._read(key.tuple)
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        (positions,) = key
        try:
            if isinstance(positions, slice):
                values = self._slice(positions)
            elif np.ndim(positions) == 0:
                values = self._basic(positions)
            else:
                positions = np.asarray(positions, dtype=np.int64)
                values = self._gather(np.where(positions < 0, positions + self.shape[0], positions))
        except _READ_ERRORS as error:
            raise _unreadable(self.path, error) from error
        return values if self.strings is None else _take(values, self.strings, self.name)

    def _basic(self, key: slice | int) -> np.ndarray:
        return np.asarray(self.array[indexing.BasicIndexer((key,))])

    def _slice(self, key: slice) -> np.ndarray:
        """Read a slice forwards, reversing backward ones in memory (xarray's own split fails on empty ones)."""
        picked = range(*key.indices(self.shape[0]))
        if not picked:
            return self._basic(slice(0, 0))
        if picked.step > 0:
            return self._basic(slice(picked.start, picked.stop, picked.step))
        return self._basic(slice(picked[-1], picked[0] + 1, -picked.step))[::-1]

    def _gather(self, positions: np.ndarray) -> np.ndarray:
        touched = np.flatnonzero(np.bincount(positions // self.chunk))  # a file has few chunks: count, not sort
        if len(touched) == 0:
            return self._basic(slice(0, 0))
        ends = np.flatnonzero(np.diff(touched) != 1)  # runs of consecutive chunks: one read each
        starts = touched[np.concatenate(([0], ends + 1))] * self.chunk
        stops = np.minimum((touched[np.append(ends, -1)] + 1) * self.chunk, self.shape[0])
        if len(starts) == 1:
            return self._basic(slice(starts[0], stops[0]))[positions - starts[0]]
        pieces = [self._basic(slice(start, stop)) for start, stop in zip(starts, stops, strict=True)]
        offsets = np.cumsum(stops - starts) - (stops - starts) - starts  # file position → position in the pieces
        run = np.searchsorted(starts, positions, side="right") - 1
        return np.concatenate(pieces)[positions + offsets[run]]


def _undecoded(variable: xr.Variable) -> Any:
    """Return what reads ``variable`` with the least work: its backend array when xarray decodes nothing, else its data.

    xarray wraps each variable it opens in a memory cache, a copy-on-write guard and a lazy indexer, plus one wrapper
    per decoding step (booleans, masks, scales). Most point variables (metrics, integers) need no decoding: indexing
    their backend array directly skips ~0.4 ms of wrappers a read, most of the time of an export of ~170 variables.
    Anything else (a decoding step, an array already in memory) is indexed through xarray's own wrappers.
    """
    array = variable._data
    while isinstance(array, indexing.MemoryCachedArray | indexing.CopyOnWriteArray):
        array = array.array
    whole = isinstance(array, indexing.LazilyIndexedArray) and all(key == slice(None) for key in array.key.tuple)
    if whole and isinstance(array.array, BackendArray) and array.array.dtype == variable.dtype:
        return array.array
    return indexing.as_indexable(variable._data)


def _point_index(
    variables: Mapping[Hashable, xr.Variable], coded: Mapping[str, str]
) -> tuple[xr.Coordinates, dict[str, dict[Hashable, Any]]]:
    """Return ddxr's index over ``point`` from the level codes and tables (no re-factorizing), and the level attrs.

    The tables hold exactly the values some point carries (the writer drops the others) and every code is checked to
    point into its table, so the index is built as is.
    """
    levels, codes, attrs = [], [], {}
    for name in LEVELS:
        level_codes = variables[coded[name]]
        table = checked_table(name, level_codes, variables[level_codes.attrs[VALUES_ATTR]])
        # netCDF cannot type an empty string variable: it comes back float64
        levels.append(
            pd.Index(
                table, name=name, dtype=object if table.size == 0 and name not in FLOAT_LEVELS else None, copy=False
            )
        )
        codes.append(checked_codes(name, np.asarray(level_codes.values), len(table)))
        attrs[name] = decode_attrs(codes_attrs(level_codes), f"variable {name!r}")
    index = pd.MultiIndex(levels=levels, codes=codes, names=list(LEVELS), verify_integrity=False)
    return index_coordinates(DdxrIndex(index, POINT_DIM)), attrs


def _decode_variables(ds: xr.Dataset, group: str) -> xr.Dataset:
    """Invert :func:`_encode_variables` on a Dataset read into memory."""
    decoded = ds.copy()
    for name, variable in ds.variables.items():
        decoded[name] = _JSON.decode(_BOOLEANS.decode(variable, name), name)
    owner = f"group {group!r}"
    decoded.attrs = decode_attrs({key: value for key, value in ds.attrs.items() if key not in _FILE_ATTRS}, owner)
    return decoded


def _decode_indexes(ds: xr.Dataset) -> xr.Dataset:
    names = json.loads(ds.attrs.pop(_INDEXES_ATTR, "[]"))
    for name in names:
        ds = with_pandas_index(ds.set_coords(name), name)
    return ds


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
