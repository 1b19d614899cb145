"""Paired coders between ddxr's in-memory variables and what a file stores (netCDF today, any array store).

Each coder follows xarray's :class:`~xarray.coding.variables.VariableCoder` contract: ``decode(encode(v))`` gives
``v`` back, attrs included, and ``decode`` leaves variables it does not recognise untouched, so coders can be chained
in any order. They only touch attributes ddxr writes (``ddxr_*``) or CF's own, so a file decoded by plain xarray
still reads sensibly (see :mod:`ddxr.cache` for the file layout).

- :class:`JsonAttrsCoder`: attributes netCDF cannot hold (dicts, lists, bools, None) ↔ JSON text;
- :class:`NullableBooleanCoder`: booleans with missing values (True/False/None) ↔ int8 with a ``_FillValue`` of -1;
- :class:`CategoricalCoder`: strings (and index levels) along a long dimension ↔ integer codes (as narrow as the table
  allows) plus a small table of distinct values, next to a plain copy that readers without ddxr use.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from xarray.coding.variables import VariableCoder

from ddxr.errors import CacheError

#: Attribute listing the attributes of its owner that are stored as JSON text.
JSON_ATTRS = "ddxr_json_attrs"
#: On a codes variable: the variable holding its distinct values.
VALUES_ATTR = "ddxr_values"
#: On a codes variable: the variable (and plain copy) it encodes.
DECODES_ATTR = "ddxr_decodes"
#: Suffixes of the variables :class:`CategoricalCoder` writes next to the plain copy ``name``.
CODES_SUFFIX, VALUES_SUFFIX, VALUE_DIM_SUFFIX = "__codes", "__values", "__value"
#: ``dtype`` attribute marking a boolean with missing values (pandas' name for the type).
NULLABLE_BOOLEAN = "boolean"


class JsonAttrsCoder(VariableCoder):
    """Attributes netCDF cannot hold (dict, list, bool, None, dates, paths) ↔ JSON text, listed in ``ddxr_json_attrs``.

    Examples
    --------
    >>> coder = JsonAttrsCoder()
    >>> variable = xr.Variable("x", [1.0], attrs={"report": {"runs": 3}, "higher_is_better": True, "units": "FLOPs"})
    >>> encoded = coder.encode(variable)
    >>> encoded.attrs["report"], encoded.attrs["units"]
    ('{"runs": 3}', 'FLOPs')
    >>> coder.decode(encoded).attrs == variable.attrs
    True
    """

    def encode(self, variable: xr.Variable, name: Hashable | None = None) -> xr.Variable:
        """Store the non-native attributes of ``variable`` as JSON text."""
        encoded = variable.copy(deep=False)
        encoded.attrs = encode_attrs(variable.attrs, f"variable {name!r}")
        return encoded

    def decode(self, variable: xr.Variable, name: Hashable | None = None) -> xr.Variable:
        """Parse the attributes listed in ``ddxr_json_attrs`` back from JSON text."""
        decoded = variable.copy(deep=False)
        decoded.attrs = decode_attrs(variable.attrs, f"variable {name!r}")
        return decoded


def encode_attrs(attrs: Mapping[Hashable, Any], owner: str) -> dict[Hashable, Any]:
    """Return ``attrs`` with every value netCDF cannot hold as JSON text (see :class:`JsonAttrsCoder`).

    Raises
    ------
    CacheError
        If a value is not JSON-like (``owner`` names it).
    """

    def native(value: Any) -> bool:
        is_number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        return isinstance(value, str) or is_number or (isinstance(value, np.ndarray) and value.dtype.kind in "iuf")

    as_json = [key for key, value in attrs.items() if not native(value)]
    encoded = {
        key: json.dumps(jsonable(value, f"{owner} attribute {key!r}")) if key in as_json else value
        for key, value in attrs.items()
    }
    if as_json:
        encoded[JSON_ATTRS] = json.dumps(as_json)
    return encoded


def decode_attrs(attrs: Mapping[Hashable, Any], owner: str) -> dict[Hashable, Any]:
    """Invert :func:`encode_attrs`.

    Raises
    ------
    CacheError
        If an attribute listed as JSON (or the list itself) is not valid JSON text.
    """
    as_json = _json(attrs.get(JSON_ATTRS, "[]"), f"{owner} attribute {JSON_ATTRS!r}")
    if not isinstance(as_json, list):
        raise CacheError(f"{owner} attribute {JSON_ATTRS!r}: expected a JSON list of names, found {as_json!r}")
    return {
        key: _json(value, f"{owner} attribute {key!r}") if key in as_json else value
        for key, value in attrs.items()
        if key != JSON_ATTRS
    }


def _json(text: Any, where: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CacheError(f"{where}: expected JSON text, found {str(text)[:60]!r} ({error})") from error


def jsonable(value: Any, where: Hashable) -> Any:
    """Return ``value`` as plain JSON types; ``where`` names it in errors.

    Raises
    ------
    CacheError
        If a value is not a str, number, bool, None, path, date or a list/mapping of those.
    """
    if isinstance(value, Mapping):
        return {str(key): jsonable(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((jsonable(item, where) for item in value), key=repr)
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(item, where) for item in value]
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


def is_nullable_boolean(variable: xr.Variable) -> bool:
    """Tell whether ``variable`` holds booleans with missing values (an object array of True, False, None).

    Decided from the dtype, then from the first value, before any scan: strings (millions of them along ``point``,
    or index levels that would have to be materialized from their index) are never read in full.
    """
    if variable.dtype != object or variable.size == 0:
        return False
    if isinstance(np.asarray(variable[(slice(0, 1),) * variable.ndim].values).flat[0], str):
        return False
    values = np.asarray(variable.values, dtype=object).reshape(-1)
    present = values[~pd.isna(values)]
    return (
        len(present) > 0
        and isinstance(present[0], bool | np.bool_)
        and bool(pd.Series(present).map(type).isin([bool, np.bool_]).all())
    )


class NullableBooleanCoder(VariableCoder):
    """Booleans with missing values (object arrays of True, False, None) ↔ int8 0/1 with ``_FillValue`` -1.

    Plain xarray masks the fill value and shows 0.0/1.0/NaN with CF ``flag_meanings = "false true"``; ddxr decodes
    the int8 (or that masked float) back to True/False/None. Booleans without missing values use xarray's own
    encoding. (Object arrays rather than pandas ``boolean`` arrays, because xarray cannot compare the latter when they
    hold missing values: ``identical`` would call a Dataset different from its copy.)

    Examples
    --------
    >>> variable = xr.Variable("run", np.array([True, None, False], dtype=object))
    >>> encoded = NullableBooleanCoder().encode(variable)
    >>> encoded.values.tolist(), encoded.encoding["_FillValue"]
    ([1, -1, 0], -1)
    >>> NullableBooleanCoder().decode(encoded).values.tolist()
    [True, None, False]
    """

    def encode(self, variable: xr.Variable, name: Hashable | None = None) -> xr.Variable:
        """Encode a nullable boolean variable as int8 codes; leave anything else unchanged."""
        if not is_nullable_boolean(variable):
            return variable
        values = np.asarray(variable.values, dtype=object)
        codes = np.where(pd.isna(values), -1, values == True).astype(np.int8)  # noqa: E712 (elementwise, objects)
        attrs = {**variable.attrs, "dtype": NULLABLE_BOOLEAN, "flag_values": np.array([0, 1], np.int8)}
        attrs["flag_meanings"] = "false true"
        encoding = {**variable.encoding, "_FillValue": -1}
        return xr.Variable(variable.dims, codes, attrs=attrs, encoding=encoding, fastpath=True)

    def decode(self, variable: xr.Variable, name: Hashable | None = None) -> xr.Variable:
        """Decode True/False/None from the int8 codes (-1: missing) or their masked float form (NaN: missing)."""
        if variable.attrs.get("dtype") != NULLABLE_BOOLEAN:
            return variable
        raw = np.asarray(variable.values)
        missing = pd.isna(raw) | (raw == -1)
        if not np.isin(raw[~missing], (0, 1)).all():
            raise CacheError(f"variable {name!r}: expected booleans stored as 0, 1 or -1 (missing), found other values")
        values = np.where(missing, None, raw == 1).astype(object)
        attrs = {
            key: value for key, value in variable.attrs.items() if key not in ("dtype", "flag_values", "flag_meanings")
        }
        encoding = {key: value for key, value in variable.encoding.items() if key != "_FillValue"}
        return xr.Variable(variable.dims, values, attrs=attrs, encoding=encoding, fastpath=True)


class EpochSecondsCoder(VariableCoder):
    """Datetimes of whole seconds, none missing → int64 CF ``seconds since 1970-01-01`` (xarray decodes them).

    xarray's own encoder stores the same instants, but asks first whether the array is a dask array, which imports
    dask (~0.05 s, the largest import of a refresh). Anything else (fractions of a second, NaT, an encoding already
    set) is left to xarray.

    Examples
    --------
    >>> variable = xr.Variable("run", np.array(["2025-09-01T12:00:00", "2025-09-02"], dtype="datetime64[ns]"))
    >>> encoded = EpochSecondsCoder().encode(variable)
    >>> encoded.values.tolist(), encoded.attrs["units"]
    ([1756728000, 1756771200], 'seconds since 1970-01-01')
    >>> xr.decode_cf(xr.Dataset({"t": encoded}))["t"].values.tolist() == variable.values.tolist()
    True
    """

    def encode(self, variable: xr.Variable, name: Hashable | None = None) -> xr.Variable:
        """Encode whole-second datetimes without missing values as seconds since the epoch; leave the rest."""
        if variable.dtype.kind != "M" or variable.encoding.keys() & {"units", "calendar", "dtype"}:
            return variable
        values = np.asarray(variable.values)
        seconds = values.astype("datetime64[s]")
        if np.isnat(values).any() or (seconds != values).any():
            return variable
        attrs = {**variable.attrs, "units": "seconds since 1970-01-01", "calendar": "proleptic_gregorian"}
        return xr.Variable(variable.dims, seconds.view(np.int64), attrs, variable.encoding, fastpath=True)

    def decode(self, variable: xr.Variable, name: Hashable | None = None) -> xr.Variable:
        """Leave the variable to xarray's CF time decoding (the encoding is plain CF)."""
        return variable


class CategoricalCoder:
    """Strings (or index levels) along a long dimension ↔ a plain copy, integer codes and a table of distinct values.

    ``encode(name, variable)`` gives three variables: ``name`` itself (the plain copy, for readers without ddxr),
    ``name__codes`` (integers along the same dimension, of :func:`code_dtype`, ``ddxr_values`` naming the table) and
    ``name__values`` (the
    distinct values, on their own dimension ``name__value``, which no stock ``.sel`` can reach by a level's name).
    ``decode(name, codes, values)`` is the inverse, ``decode(*encode(...))`` the identity. Codes that point outside
    the table are refused, never read as another value.

    Examples
    --------
    >>> coder = CategoricalCoder()
    >>> encoded = coder.encode("params", xr.Variable("point", np.array(["4M", "1B", "4M"], dtype=object)))
    >>> encoded["params__codes"].values.tolist(), encoded["params__values"].values.tolist()
    ([0, 1, 0], ['4M', '1B'])
    >>> coder.decode("params", encoded["params__codes"], encoded["params__values"]).values.tolist()
    ['4M', '1B', '4M']
    """

    def encode(
        self, name: str, variable: xr.Variable, factorized: tuple[np.ndarray, np.ndarray] | None = None
    ) -> dict[str, xr.Variable]:
        """Return the plain copy, codes and table of ``variable``; ``factorized`` (codes, uniques) skips factorizing."""
        (dim,) = variable.dims
        if factorized is None:
            values = np.asarray(variable.values)
            codes, uniques = factorize(values.astype(object) if values.dtype.kind in "OUT" else values)
        else:
            codes, uniques = factorized
        uniques = np.asarray(uniques, dtype=object if variable.dtype.kind in "OUT" else variable.dtype)
        table = f"{name}{VALUES_SUFFIX}"
        codes_attrs = {**variable.attrs, VALUES_ATTR: table, DECODES_ATTR: name}
        return {
            name: variable,
            f"{name}{CODES_SUFFIX}": xr.Variable(
                dim, np.asarray(codes, dtype=code_dtype(len(uniques))), attrs=codes_attrs, fastpath=True
            ),
            table: xr.Variable(f"{name}{VALUE_DIM_SUFFIX}", uniques, fastpath=True),
        }

    def decode(self, name: str, codes: xr.Variable, values: xr.Variable) -> xr.Variable:
        """Return the variable from its codes and table (eager); attrs come from the codes variable."""
        table = checked_table(name, codes, values)
        values = table.take(checked_codes(name, np.asarray(codes.values), len(table)))
        return xr.Variable(codes.dims, values, attrs=codes_attrs(codes), fastpath=True)


def code_dtype(size: int) -> np.dtype:
    """Return the narrowest signed integer type of the codes of a table of ``size`` values.

    The thresholds are pandas' own (``MultiIndex`` and ``Categorical`` codes), so codes read from a file become an
    index without a conversion; narrow codes also make a file's index quicker to read.

    Examples
    --------
    >>> [str(code_dtype(size)) for size in (14, 3_099, 1_633_858)]
    ['int8', 'int16', 'int32']
    """
    for dtype in (np.int8, np.int16, np.int32):
        if size < np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``pandas.factorize(values)`` of a 1-D array, hashing only the first value of each run of equal values.

    Along ``point`` a string such as ``run_id`` repeats over whole runs of points: comparing neighbours is several
    times cheaper than hashing millions of strings. Codes and uniques are exactly pandas' (order of first appearance,
    missing values coded -1).

    Examples
    --------
    >>> codes, uniques = factorize(np.array(["b", "b", "a", "b"], dtype=object))
    >>> codes.tolist(), uniques.tolist()
    ([0, 0, 1, 0], ['b', 'a'])
    """
    starts, lengths = equal_runs(values)
    codes, uniques = pd.factorize(values[starts])
    return np.repeat(codes, lengths), uniques


def equal_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the start positions and lengths of the runs of equal neighbours of a 1-D array.

    Values that cannot tell whether they equal their neighbour (``pandas.NA``) make every value a run of its own.

    Examples
    --------
    >>> starts, lengths = equal_runs(np.array(["a", "a", "b", "a"], dtype=object))
    >>> starts.tolist(), lengths.tolist()
    ([0, 2, 3], [2, 1, 1])
    """
    try:
        differs = values[1:] != values[:-1]
    except TypeError:
        differs = np.ones(max(values.size - 1, 0), dtype=bool)
    starts = np.flatnonzero(np.r_[values.size > 0, differs])
    return starts, np.diff(np.r_[starts, values.size])


def codes_attrs(codes: xr.Variable) -> dict[Hashable, Any]:
    """Return the attrs of the decoded variable: the codes variable's, without ddxr's bookkeeping."""
    return {key: value for key, value in codes.attrs.items() if key not in (VALUES_ATTR, DECODES_ATTR)}


def checked_table(name: str, codes: xr.Variable, values: xr.Variable) -> np.ndarray:
    """Return the table of distinct values of a codes variable, as a 1-D array (strings as objects).

    Raises
    ------
    CacheError
        If the table is not 1-D or the codes are not integers.
    """
    if values.ndim != 1 or codes.ndim != 1 or codes.dtype.kind not in "iu":
        raise CacheError(
            f"variable {name!r}: expected 1-D integer codes and a 1-D table of values, found {codes.dtype} codes "
            f"with {codes.ndim} and a table with {values.ndim} dimensions"
        )
    table = np.asarray(values.values)
    return table.astype(object) if table.dtype.kind in "OUS" else table


def checked_codes(name: str, codes: np.ndarray, size: int) -> np.ndarray:
    """Return ``codes`` after checking each points into a table of ``size`` values.

    Raises
    ------
    CacheError
        If a code is negative or not below ``size`` (a damaged file, or one edited by hand).
    """
    if codes.size and (codes.min() < 0 or codes.max() >= size):
        raise CacheError(
            f"variable {name!r}: expected codes in [0, {size}) pointing into its table of values, found codes from "
            f"{codes.min()} to {codes.max()}: the file is damaged; rebuild it with `ddxr build --refresh`"
        )
    return codes
