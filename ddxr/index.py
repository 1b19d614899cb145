"""ddxr's MultiIndex over training points: ``.sel`` with scalars, lists and slices on every level.

xarray's stock :class:`~xarray.indexes.PandasMultiIndex` refuses lists and slices on levels and drops a level that is
selected by a scalar. :class:`DdxrIndex` overrides ``sel`` with one boolean mask over level values, so any
combination of levels can be selected and every level is kept (``to_dataframe()`` has the same columns whatever was
selected). :func:`select` adds the non-index point coordinates (``run_id``, ``step``, ...) to the same semantics.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from xarray.core.indexing import IndexSelResult
from xarray.indexes import PandasIndex, PandasMultiIndex

from ddxr.errors import BuildError, SelectionError
from ddxr.schema import FLOAT_LEVELS, LEVELS, POINT_DIM, check_complete, check_levels

#: Relative tolerance of float matching: ``1e-5`` typed by a user matches a stored ``1.0000000000000001e-05``.
RELATIVE_TOLERANCE = 1e-9

_SHOWN_VALUES = 5  # available values quoted in an error message
_FEW_VALUES = 16  # level values a selection finds by comparing codes, one pass each; more: one gather through a table


class DdxrIndex(PandasMultiIndex):
    """MultiIndex of the ``point`` dimension that selects with scalars, lists and slices on any level.

    Selection semantics, per level (any subset of levels, combined with *and*):

    - scalar: the points whose level value equals it (the level is kept, unlike the stock index);
    - list, tuple, set or 1-D array: membership;
    - ``slice(a, b)``: ``a <= value <= b``, both ends inclusive, ``None`` open (lexical on string levels);
    - float levels (``learning_rate``, ``cumulative_tokens``) match scalars, lists and slice ends within a relative
      tolerance of :data:`RELATIVE_TOLERANCE`; ``method="nearest"`` (optionally with ``tolerance``) picks the closest
      stored value for each scalar or list element there, and exact matching elsewhere.

    The result keeps the original point order; unused level values are removed from the new index. A scalar or list
    element that matches no point raises :class:`~ddxr.errors.SelectionError` (a ``KeyError``); a slice that
    matches nothing gives zero points. Labels for the ``point`` dimension itself keep xarray's stock behaviour.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame(
    ...     {
    ...         "lineage": ["a", "a", "b"],
    ...         "params": ["150M", "150M", "1B"],
    ...         "data": ["C4", "C4", "C4"],
    ...         "learning_rate": [1e-5, 1e-5, 3e-5],
    ...         "cumulative_tokens": [1.0, 2.0, 3.0],
    ...     }
    ... )
    >>> ds = xr.Dataset(coords=point_coordinates(frame))
    >>> ds.sel(learning_rate=[1e-5, 3e-5], cumulative_tokens=slice(2, None)).sizes["point"]
    2
    >>> list(ds.sel(params="150M").to_dataframe().reset_index().columns)
    ['lineage', 'params', 'data', 'learning_rate', 'cumulative_tokens']
    """

    __slots__ = ()

    @classmethod
    def from_variables(cls, variables: Mapping[Any, xr.Variable], *, options: Mapping[str, Any]) -> DdxrIndex:
        """Build the index from level coordinates (``ds.set_xindex(list(LEVELS), DdxrIndex)``), checking the contract.

        Raises
        ------
        BuildError
            If the coordinates are not exactly the levels of :data:`~ddxr.schema.LEVELS` along ``point``, or a level
            holds missing values.
        """
        check_levels(list(variables), "set_xindex")
        dims = {variable.dims for variable in variables.values()}
        if dims != {(POINT_DIM,)}:
            raise BuildError(f"set_xindex: expected the levels along ({POINT_DIM!r},), found dimensions {sorted(dims)}")
        check_complete(
            {name: int(pd.isna(variable.values).sum()) for name, variable in variables.items()}, "set_xindex"
        )
        ordered = {name: variables[name] for name in LEVELS}
        index = pd.MultiIndex.from_arrays([variable.values for variable in ordered.values()], names=list(LEVELS))
        dtypes = {name: variable.dtype for name, variable in ordered.items()}
        return cls(_without_unused_levels(index), POINT_DIM, level_coords_dtype=dtypes)

    def sel(self, labels: dict[Any, Any], method: str | None = None, tolerance: Any = None) -> IndexSelResult:
        """Select points by lists, slices or scalars on any level (see :meth:`positions`)."""
        if not set(labels) <= set(self.index.names):  # labels for the `point` dimension itself: stock behaviour
            if method is not None or tolerance is not None:
                raise SelectionError(f"method={method!r}/tolerance= apply to levels {LEVELS}, not to {POINT_DIM!r}")
            return super().sel(labels)
        return IndexSelResult({self.dim: self.positions(labels, method=method, tolerance=tolerance)})

    def isel(self, indexers: Mapping[Any, Any]) -> PandasMultiIndex | None:
        """Select points by position, keeping ddxr's index type."""
        new = super().isel(indexers)
        if isinstance(new, PandasMultiIndex) and new is not self:
            # a subset should not advertise level values that no point of it carries
            return new._replace(_without_unused_levels(new.index))
        return new

    def mask(self, labels: Mapping[Hashable, Any], method: str | None = None, tolerance: Any = None) -> np.ndarray:
        """Boolean mask with one entry per point: True where the point matches every label (see :meth:`positions`)."""
        mask = np.zeros(len(self.index), dtype=bool)
        mask[self.positions(labels, method=method, tolerance=tolerance)] = True
        return mask

    def positions(self, labels: Mapping[Hashable, Any], method: str | None = None, tolerance: Any = None) -> np.ndarray:
        """Positions, in point order, of the points matching every label.

        ``labels`` maps level names to a scalar, list or slice (see the class docstring). Matching runs on the (few)
        level values; the first level passes over every point's codes, each next one over the points still
        matching only (on 10 M points a sweep's second and third levels look at ~5 % of them).
        """
        unknown = [name for name in labels if name not in self.index.names]
        if unknown:
            raise SelectionError(f"unknown level(s) {unknown}: expected one of {list(self.index.names)}")
        _check_method(method, tolerance)
        chosen = None  # every point
        for name, label in labels.items():  # one pass per selected level, never per point
            matched = self._level_mask(self.index.names.index(name), label, method, tolerance, chosen)
            chosen = np.flatnonzero(matched) if chosen is None else chosen[matched]
        return np.arange(len(self.index)) if chosen is None else chosen

    def _level_mask(
        self, position: int, label: Any, method: str | None, tolerance: Any, among: np.ndarray | None
    ) -> np.ndarray:
        """Boolean mask of the points ``among`` (all if None) whose value of one level matches ``label``.

        A scalar or list element must match a value some point carries (concat and align may leave values no point
        carries): the exact way counts the points of every value first. Exact matching tries the quick way first.
        """
        name = self.index.names[position]
        codes = self.index.codes[position]
        candidates = codes if among is None else codes[among]
        values = np.asarray(self.index.levels[position])
        tolerant = name in FLOAT_LEVELS
        if method is None:
            points = _matched_points(codes, candidates, values, label, name, tolerant)
            if points is not None:
                return points
        present = np.bincount(codes, minlength=len(values)).astype(bool)
        matched = np.zeros(len(values), dtype=bool)
        matched[present] = match_values(
            values[present], label, name=name, tolerant=tolerant, method=method, tolerance=tolerance
        )
        return matched[candidates]


def _matched_points(
    codes: np.ndarray, candidates: np.ndarray, values: np.ndarray, label: Any, name: Hashable, tolerant: bool
) -> np.ndarray | None:
    """Return which ``candidates`` (codes of some points) match ``label``, matching every value of the level.

    When the label matches few values, one comparison of the candidates per value (vectorized, a fraction of a
    millisecond on millions of points) finds the points; each value must be carried by some point, which a hit
    shows (else every point's ``codes`` are looked at). None means a label element may match only values no point
    carries, or the match raised: the caller decides exactly.
    """
    try:
        matched = match_values(values, label, name=name, tolerant=tolerant)
    except SelectionError:
        return None
    wanted = np.flatnonzero(matched)
    if len(wanted) > _FEW_VALUES:  # a slice selects nothing through values no point carries; a long list: unsure
        return matched[candidates] if isinstance(label, slice) else None
    points = np.zeros(len(candidates), dtype=bool)
    for code in wanted:  # few values, one vectorized pass each
        hits = candidates == code
        carried = hits.any() or (candidates is not codes and bool((codes == code).any()))
        if not (isinstance(label, slice) or carried):
            return None
        points |= hits
    return points


def point_coordinates(frame: pd.DataFrame) -> xr.Coordinates:
    """Coordinates with a :class:`DdxrIndex` over ``point`` from a frame holding the level columns.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per point with the columns of :data:`LEVELS` (in any order; other columns are ignored).

    Returns
    -------
    xarray.Coordinates
        The ``point`` MultiIndex coordinate and its level coordinates, float levels as float64.

    Raises
    ------
    BuildError
        If a level column is missing or holds missing values.
    """
    missing = [name for name in LEVELS if name not in frame.columns]
    if missing:
        raise BuildError(
            f"point frame: expected level columns {list(LEVELS)}, missing {missing}; add them before assembling"
        )
    levels = frame[list(LEVELS)].astype(dict.fromkeys(FLOAT_LEVELS, "float64"))
    check_complete(levels.isna().sum().to_dict(), "point frame")
    codes, values = zip(*(level_codes(levels[name]) for name in LEVELS), strict=True)
    index = pd.MultiIndex(levels=values, codes=codes, names=list(LEVELS), verify_integrity=False)
    return xr.Coordinates.from_xindex(DdxrIndex(index, POINT_DIM))


def level_codes(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes and sorted distinct values of one index level, as ``pandas.MultiIndex.from_frame`` makes them.

    The codes order like the values, and every value is used. A categorical is factorized through its used categories
    (a few thousand strings), not through its values (millions of points), and missing values get code -1; numbers
    (without missing values) are sorted, which beats hashing millions of distinct floats.
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        used = np.flatnonzero(np.bincount(codes + 1, minlength=len(column.cat.categories) + 1)[1:])
        ranks, values = pd.factorize(column.cat.categories[used], sort=True)
        recode = np.full(len(column.cat.categories) + 1, -1)  # the last entry: code -1 (missing) stays -1
        recode[used] = ranks
        return recode[codes], values
    if column.dtype.kind in "iuf" and not column.hasnans:
        values, codes = np.unique(column.to_numpy(), return_inverse=True)
        return codes, pd.Index(values, name=column.name)
    codes, values = pd.factorize(column, sort=True)
    return codes, values


def set_ddxr_index(ds: xr.Dataset) -> xr.Dataset:
    """(Re)install a :class:`DdxrIndex` on ``point`` from a stock MultiIndex or from plain level coordinates.

    Parameters
    ----------
    ds : xarray.Dataset
        Dataset whose ``point`` dimension carries either a ``PandasMultiIndex`` with the levels of :data:`LEVELS`
        (e.g. after ``cf_xarray`` decoding) or one coordinate per level without an index.

    Returns
    -------
    xarray.Dataset
        The same data with a :class:`DdxrIndex` whose levels are in :data:`LEVELS` order and hold only values some
        point carries; level attrs are kept.

    Raises
    ------
    BuildError
        If a level is missing or holds missing values.
    """
    current = ds.xindexes.get(POINT_DIM)
    if isinstance(current, PandasMultiIndex):
        check_levels(list(current.index.names), "Dataset")
        index = current.index.reorder_levels(list(LEVELS))
        check_complete(
            {name: int((codes < 0).sum()) for name, codes in zip(LEVELS, index.codes, strict=True)}, "Dataset"
        )
        dtypes = {name: current.level_coords_dtype[name] for name in LEVELS}
        ds = ds.drop_indexes([POINT_DIM, *LEVELS])
    else:
        missing = [name for name in LEVELS if name not in ds.coords]
        if missing:
            raise BuildError(
                f"Dataset: expected coordinates {list(LEVELS)} along {POINT_DIM!r}, missing {missing}; "
                "build it with ddxr.index.point_coordinates"
            )
        levels = pd.DataFrame({name: ds[name].values for name in LEVELS})
        check_complete(levels.isna().sum().to_dict(), "Dataset")
        index = pd.MultiIndex.from_frame(levels)
        dtypes = {name: ds[name].dtype for name in LEVELS}
        if POINT_DIM in ds.xindexes:
            ds = ds.drop_indexes(POINT_DIM)
    new = DdxrIndex(_without_unused_levels(index), POINT_DIM, level_coords_dtype=dtypes)
    keep = {name: ds[name].variable for name in (POINT_DIM, *LEVELS) if name in ds.variables}  # attrs, encoding
    coords = index_coordinates(new, keep)
    return ds.drop_vars([name for name in (POINT_DIM, *LEVELS) if name in ds.variables]).assign_coords(coords)


def index_coordinates(index: DdxrIndex, variables: Mapping[Hashable, xr.Variable] | None = None) -> xr.Coordinates:
    """Return the ``point`` and level coordinates of ``index``, as is (its levels must be :data:`LEVELS`, in order).

    Parameters
    ----------
    index : DdxrIndex
        The index.
    variables : mapping, optional
        Variables whose attrs and encoding the coordinates of the same name take.

    Returns
    -------
    xarray.Coordinates
        The coordinates, to assign to a Dataset with ``point`` as its dimension.
    """
    return xr.Coordinates(index.create_variables(variables), indexes=dict.fromkeys((POINT_DIM, *LEVELS), index))


def with_pandas_index(ds: xr.Dataset, name: Hashable) -> xr.Dataset:
    """Return ``ds`` with a pandas index on its one-dimensional coordinate ``name``, as ``ds.set_xindex(name)``.

    The index is made from a :class:`pandas.Index` of the values: ``set_xindex`` first asks whether they are a dask
    array, which imports dask (a tenth of a second or more) in a process that never uses it.
    """
    variable = ds[name].variable
    values = pd.Index(variable.values, dtype=object if variable.dtype.kind == "O" else None, name=name)
    index = PandasIndex(values, variable.dims[0], coord_dtype=variable.dtype)
    return ds.assign_coords(xr.Coordinates.from_xindex(index))


def select(ds: xr.Dataset, **labels: Any) -> xr.Dataset:
    """Select points like ``ds.sel``, on index levels and on the non-index point coordinates alike.

    Parameters
    ----------
    ds : xarray.Dataset
        Dataset with a :class:`DdxrIndex` on ``point``.
    **labels
        Coordinate name → scalar, list or ``slice`` (see :class:`DdxrIndex`); names may be levels
        (``params``, ``learning_rate``, ...) or 1-D point coordinates (``run_id``, ``run_type``, ``seed``, ``step``,
        ``pretraining_phase``, ``tokens_estimated``, ...). Float coordinates match with a relative tolerance.

    Returns
    -------
    xarray.Dataset
        The matching points, in their original order, with every level kept.

    Raises
    ------
    SelectionError
        If a name is neither a level nor a point coordinate, or a scalar or list element matches no point.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame(
    ...     {
    ...         "lineage": ["a", "a", "b"],
    ...         "params": ["150M", "150M", "1B"],
    ...         "data": ["C4", "C4", "C4"],
    ...         "learning_rate": [1e-5, 1e-5, 3e-5],
    ...         "cumulative_tokens": [1.0, 2.0, 3.0],
    ...     }
    ... )
    >>> ds = xr.Dataset(coords=point_coordinates(frame)).assign_coords(step=(POINT_DIM, [0, 10, 0]))
    >>> select(ds, params="150M", step=slice(5, None)).sizes["point"]
    1
    """
    index = ds.xindexes.get(POINT_DIM)
    if not isinstance(index, DdxrIndex):
        raise SelectionError(
            f"Dataset has no ddxr index on {POINT_DIM!r}; call ddxr.index.set_ddxr_index(ds) or open it with "
            "ddxr.open_dataset"
        )
    point_coords = [name for name, coord in ds.coords.items() if coord.dims == (POINT_DIM,) and name not in LEVELS]
    unknown = [name for name in labels if name not in LEVELS and name not in point_coords]
    if unknown:
        raise SelectionError(
            f"unknown level or point coordinate(s) {unknown}: expected one of {[*LEVELS, *point_coords]}"
        )
    mask = index.mask({name: label for name, label in labels.items() if name in LEVELS})
    for name in labels.keys() - set(LEVELS):  # one vectorized match per coordinate named
        values = ds[name].values
        mask &= match_values(values, labels[name], name=name, tolerant=values.dtype.kind in "fc")
    return ds.isel({POINT_DIM: np.flatnonzero(mask)})


def match_values(
    values: np.ndarray,
    label: Any,
    *,
    name: Hashable,
    tolerant: bool = False,
    method: str | None = None,
    tolerance: Any = None,
) -> np.ndarray:
    """Boolean mask over ``values`` of the elements a scalar, list or slice label selects.

    Parameters
    ----------
    values : numpy.ndarray
        1-D values of one level or coordinate.
    label : scalar, list-like or slice
        What to select.
    name : hashable
        Level or coordinate name, quoted in errors.
    tolerant : bool
        Match within :data:`RELATIVE_TOLERANCE` (float values).
    method, tolerance
        ``method="nearest"`` picks the closest value for each scalar or list element of a tolerant match.

    Raises
    ------
    SelectionError
        If a scalar or list element matches no value, or the label cannot be compared with the values.
    """
    if isinstance(label, slice):
        return _in_range(values, label, name, tolerant)
    wanted = _as_array(label)
    try:
        if not tolerant:
            matched = pd.Index(values).isin(wanted)
            found = pd.Index(wanted).isin(values)
        elif method == "nearest":
            matched, found = _nearest(values, wanted.astype("float64"), tolerance)
        else:
            matched, found = _close(values, wanted.astype("float64"))
    except (TypeError, ValueError) as error:
        raise SelectionError(
            f"{name}={label!r}: expected labels comparable with the {values.dtype} values of {name!r} ({error})"
        ) from error
    if not found.all():
        raise SelectionError(_not_found_message(name, wanted[~found], values, tolerant))
    return np.asarray(matched)


def _as_array(label: Any) -> np.ndarray:
    if isinstance(label, xr.DataArray | xr.Variable):
        label = label.values
    if isinstance(label, set | frozenset):
        label = list(label)
    wanted = np.asarray(label, dtype=object if isinstance(label, str) else None)
    return wanted.reshape(-1)


def _close(values: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values within RELATIVE_TOLERANCE of any wanted float, via binary search on the sorted values."""
    order, ordered = _sorted(values)
    radius = RELATIVE_TOLERANCE * np.abs(wanted)
    starts = np.searchsorted(ordered, wanted - radius, side="left")
    ends = np.searchsorted(ordered, wanted + radius, side="right")
    # mark every sorted position covered by some [start, end) without a loop over labels
    cover = np.zeros(len(values) + 1, dtype=np.int64)
    np.add.at(cover, starts, 1)
    np.add.at(cover, ends, -1)
    matched = np.zeros(len(values), dtype=bool)
    matched[order] = np.cumsum(cover[:-1]) > 0
    return matched, ends > starts


def _nearest(values: np.ndarray, wanted: np.ndarray, tolerance: Any) -> tuple[np.ndarray, np.ndarray]:
    order, ordered = _sorted(values)
    if len(ordered) == 0:
        return np.zeros(0, dtype=bool), np.zeros(len(wanted), dtype=bool)
    right = np.clip(np.searchsorted(ordered, wanted), 0, len(ordered) - 1)
    left = np.clip(right - 1, 0, len(ordered) - 1)
    closest = np.where(np.abs(ordered[left] - wanted) <= np.abs(ordered[right] - wanted), left, right)
    distance = np.abs(ordered[closest] - wanted)
    found = distance <= (np.inf if tolerance is None else float(tolerance))
    matched = np.zeros(len(values), dtype=bool)
    matched[order[closest[found]]] = True
    return matched, found


def _sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype="float64")
    if np.all(values[1:] >= values[:-1]):  # level values are usually sorted already: skip the sort
        return np.arange(len(values)), values
    order = np.argsort(values, kind="stable")
    return order, values[order]


def _in_range(values: np.ndarray, label: slice, name: Hashable, tolerant: bool) -> np.ndarray:
    if label.step is not None:
        raise SelectionError(f"{name}={label!r}: slices select a closed range of values and take no step")
    low, high = label.start, label.stop
    series = pd.Series(values)
    try:
        if tolerant:  # widen the ends like scalar matches, so typed bounds include stored values
            low = None if low is None else low - RELATIVE_TOLERANCE * abs(low)
            high = None if high is None else high + RELATIVE_TOLERANCE * abs(high)
        inside = np.ones(len(values), dtype=bool)
        if low is not None:
            inside &= (series >= low).to_numpy()
        if high is not None:
            inside &= (series <= high).to_numpy()
    except TypeError as error:
        raise SelectionError(
            f"{name}={label!r}: expected slice ends comparable with the {values.dtype} values of {name!r} ({error})"
        ) from error
    return inside


def _not_found_message(name: Hashable, missing: np.ndarray, values: np.ndarray, tolerant: bool) -> str:
    available = pd.unique(pd.Series(values))
    shown = ", ".join(repr(value) for value in sorted(available.tolist())[:_SHOWN_VALUES])
    more = f" (and {len(available) - _SHOWN_VALUES} more)" if len(available) > _SHOWN_VALUES else ""
    how = f" within relative tolerance {RELATIVE_TOLERANCE:g}" if tolerant else ""
    return (
        f"{name}={missing.tolist()!r} matches no point{how}; expected values of {name!r} such as {shown}{more} "
        "— check the spelling, or use a slice for a range"
    )


def _check_method(method: str | None, tolerance: Any) -> None:
    if method not in (None, "nearest"):
        raise SelectionError(f"method={method!r} is unsupported: ddxr selections take method=None or 'nearest'")
    if tolerance is not None and method is None:
        raise SelectionError("tolerance= needs method='nearest'")


def _without_unused_levels(index: pd.MultiIndex) -> pd.MultiIndex:
    """``index.remove_unused_levels()``, level by level only where some value is unused.

    pandas' version allocates arrays as long as each level: a selection of a few thousand points of an index whose
    ``cumulative_tokens`` level holds millions of values would pay for all of them.
    """
    levels, codes = list(index.levels), list(index.codes)
    for position, (level, level_codes) in enumerate(zip(index.levels, index.codes, strict=True)):
        used = _used_codes(level_codes, len(level))
        if len(used) < len(level):
            levels[position] = level.take(used)
            codes[position] = np.where(level_codes < 0, level_codes, np.searchsorted(used, level_codes))
    if all(new is old for new, old in zip(levels, index.levels, strict=True)):
        return index
    return pd.MultiIndex(levels=levels, codes=codes, names=index.names, verify_integrity=False)


def _used_codes(codes: np.ndarray, size: int) -> np.ndarray:
    """Return the distinct non-negative codes, sorted: counted when the codes outnumber the values, else sorted."""
    present = codes[codes >= 0] if codes.size and codes.min() < 0 else codes
    if len(present) >= size:
        return np.flatnonzero(np.bincount(present, minlength=size))
    return np.unique(present)
