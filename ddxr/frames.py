"""Plot-ready DataFrames from a ddxr Dataset.

:func:`to_frame` turns the points of a Dataset (docs/dataset.md §2) into the flat table plotting libraries take as is:
one row per point (or per point and metric with ``melt=True``), every point coordinate a column, readable dtypes,
ordered categoricals for the sizes and learning rates so that legends and facets sort numerically. The helpers
that read the point coordinates and resolve metric names are shared with :mod:`ddxr.analysis`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import xarray as xr

from ddxr.errors import DdxrError, SelectionError
from ddxr.schema import POINT_COORDS, RUN_TYPES
from ddxr.vocabulary import PARAMS, PRETRAINING_LEARNING_RATE

#: Label of the learning-rate sentinel of pretraining-only lineages.
PRETRAINING_LABEL = "pretraining"

#: Significant digits of a learning-rate label.
LABEL_DIGITS = 6

_DTYPES = {
    "lineage": "str",
    "data": "str",
    "learning_rate": "float64",
    "cumulative_tokens": "float64",
    "run_id": "str",
    "run_type": "str",
    "seed": "int64",
    "step": "int64",
    "pretraining_phase": "bool",
    "cumulative_compute": "float64",
    "tokens_estimated": "bool",
}


def metric_names(ds: xr.Dataset, metrics: str | Iterable[str] | None = None) -> list[str]:
    """Resolve a metric selection to data variable names along ``point``.

    Parameters
    ----------
    ds : xarray.Dataset
        A ddxr Dataset.
    metrics : str, iterable of str or None, optional
        One name, several names, or None for every data variable along ``point``.

    Returns
    -------
    list of str
        The names, in the order given (Dataset order for None), without repeats.

    Raises
    ------
    SelectionError
        If a name is not a data variable along ``point``.
    """
    available = [name for name, variable in ds.data_vars.items() if variable.dims == ("point",)]
    if metrics is None:
        return available
    names = list(dict.fromkeys([metrics] if isinstance(metrics, str) else metrics))
    unknown = [name for name in names if name not in available]
    if unknown:
        shown = ", ".join(available[:12]) + (" …" if len(available) > 12 else "")
        raise SelectionError(
            f"unknown metric(s) {', '.join(map(repr, unknown))}: not a data variable along 'point' of this Dataset; "
            f"available ({len(available)}): {shown or 'none'} — pick names from ds.data_vars"
        )
    return names


def point_coords(ds: xr.Dataset) -> pd.DataFrame:
    """Every point coordinate of a Dataset as a column, in point order, with a fresh RangeIndex.

    Works whatever index ``point`` carries (ddxr's, xarray's stock MultiIndex after reading netCDF, or none after
    ``reset_index``), because each coordinate is read by name. Coordinates beyond the contract's (such as
    ``n_seeds``) follow the contract's columns.

    Parameters
    ----------
    ds : xarray.Dataset
        A ddxr Dataset (docs/dataset.md §2).

    Returns
    -------
    pandas.DataFrame
        One row per point.

    Raises
    ------
    DdxrError
        If the Dataset has no ``point`` dimension or lacks a contract coordinate.
    """
    missing = [name for name in POINT_COORDS if name not in ds.coords or ds[name].dims != ("point",)]
    if missing:
        raise DdxrError(
            f"the Dataset lacks point coordinate(s) {', '.join(map(repr, missing))}: expected a ddxr Dataset "
            f"(docs/dataset.md §2) with coordinates {', '.join(POINT_COORDS)} along 'point' — build it with ddxr, "
            "or add them with ds.assign_coords"
        )
    extra = [name for name, coord in ds.coords.items() if coord.dims == ("point",) and name not in POINT_COORDS]
    index = ds.indexes.get("point")
    levels = set(index.names) if isinstance(index, pd.MultiIndex) else set()
    # index levels straight from the index: one string per distinct value and its codes, where converting the
    # level coordinate to numpy would create a Python string per point (hundreds of MB on large files)
    return pd.DataFrame(
        {
            name: index.get_level_values(name) if name in levels else ds[name].to_numpy()
            for name in (*POINT_COORDS, *extra)
            if name != "point"
        }
    )


def point_order(points: pd.DataFrame) -> np.ndarray:
    """Positions that sort points along their lineages: by lineage, cumulative tokens, run type, then step.

    Run type breaks token ties so that a parent's points come before its child's (a DPO run may start at the very
    token count where its SFT parent ended).
    """
    lineage_codes = pd.factorize(points["lineage"], sort=True)[0]
    phase_rank = pd.Categorical(points["run_type"], categories=RUN_TYPES).codes
    return np.lexsort((points["step"].to_numpy(), phase_rank, points["cumulative_tokens"].to_numpy(), lineage_codes))


def params_categorical(params: Iterable[str]) -> pd.Categorical:
    """Size labels as an ordered categorical in numeric order, holding only the sizes present.

    Raises
    ------
    DdxrError
        If a label is not a DataDecide size.

    Examples
    --------
    >>> params_categorical(["1B", "150M", "4M", "150M"]).categories.tolist()
    ['4M', '150M', '1B']
    """
    values = pd.Series(params, dtype="str")
    present = set(values.unique())
    unknown = sorted(present - set(PARAMS))
    if unknown:
        raise DdxrError(
            f"params holds {', '.join(map(repr, unknown))}, not DataDecide size labels; expected one of "
            f"{', '.join(PARAMS)} — fix the params coordinate"
        )
    return pd.Categorical(values, categories=[label for label in PARAMS if label in present], ordered=True)


def learning_rate_labels(learning_rate: Iterable[float]) -> pd.Categorical:
    """Learning rates as readable labels, an ordered categorical in numeric order holding only the rates present.

    A label is the rate in scientific notation with at most :data:`LABEL_DIGITS` significant digits and no trailing
    zeros (``1e-05``, ``3.5e-05``), so float noise such as ``3.0000000000000004e-05`` still reads ``3e-05``; rates
    equal to that precision share a label. The pretraining sentinel 0.0 reads ``"pretraining"`` and sorts first.

    Examples
    --------
    >>> labels = learning_rate_labels([1e-4, 0.0, 3.5e-5, 1e-4])
    >>> labels.tolist()
    ['1e-04', 'pretraining', '3.5e-05', '1e-04']
    >>> labels.categories.tolist()
    ['pretraining', '3.5e-05', '1e-04']
    """
    rates, codes = np.unique(np.asarray(list(learning_rate), dtype=np.float64), return_inverse=True)
    names = pd.Index(
        [
            PRETRAINING_LABEL
            if rate == PRETRAINING_LEARNING_RATE
            # round first: with precision= numpy leaves a bare "." ("3.e-05") when it cuts float noise
            else np.format_float_scientific(float(f"{rate:.{LABEL_DIGITS}g}"), trim="-")
            for rate in rates  # one label per distinct rate, not per row
        ],
        dtype="str",
    )
    categories = names.unique()  # sorted rates: rates sharing a label are neighbours
    return pd.Categorical.from_codes(categories.get_indexer(names)[codes], categories=categories, ordered=True)


def metric_matrix(ds: xr.Dataset, names: list[str], order: np.ndarray | None = None) -> np.ndarray:
    """Values of some metrics as a float64 array of shape (point, metric), rows optionally reordered."""
    values = np.empty((ds.sizes["point"], len(names)), dtype=np.float64)
    for column, name in enumerate(names):  # one variable at a time: lazy files load only what is asked for
        values[:, column] = ds[name].to_numpy()
    return values if order is None else values[order]


def _identity_columns(points: pd.DataFrame) -> pd.DataFrame:
    """Point coordinates with readable dtypes, plus the ``phase`` and ``learning_rate_label`` columns."""
    nulls = points.columns[points.isna().any().to_numpy()].tolist()
    if nulls:
        raise DdxrError(
            f"point coordinate(s) {', '.join(map(repr, nulls))} hold missing values; a ddxr Dataset uses sentinels "
            "instead (docs/dataset.md §2) — rebuild the Dataset or fill them"
        )
    frame = points.astype({name: dtype for name, dtype in _DTYPES.items() if name in points.columns})
    frame["params"] = params_categorical(frame["params"])
    frame.insert(
        frame.columns.get_loc("learning_rate") + 1, "learning_rate_label", learning_rate_labels(frame["learning_rate"])
    )
    phase = np.where(frame["pretraining_phase"].to_numpy(), RUN_TYPES[0], frame["run_type"].to_numpy())
    frame.insert(frame.columns.get_loc("pretraining_phase") + 1, "phase", pd.array(phase, dtype="str"))
    return frame


def _rows(identity: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """Some rows of the identity columns; categories no row uses any more are dropped (legends show no ghosts)."""
    frame = identity.iloc[positions].reset_index(drop=True)
    for name in ("params", "learning_rate_label"):
        frame[name] = frame[name].cat.remove_unused_categories()
    return frame


def _long(identity: pd.DataFrame, names: list[str], values: np.ndarray, dropna: bool) -> pd.DataFrame:
    """Stack metric columns into ``metric``/``value`` rows, metric by metric, keeping only measured values."""
    keep = ~np.isnan(values.T) if dropna else np.ones(values.T.shape, dtype=bool)
    metric_index, point_index = np.nonzero(keep)  # metric-major: each metric's rows stay together
    frame = _rows(identity, point_index)
    frame["metric"] = pd.array(np.asarray(names, dtype=object)[metric_index], dtype="str")
    frame["value"] = values[point_index, metric_index]
    return frame


def _wide(identity: pd.DataFrame, names: list[str], values: np.ndarray, dropna: bool) -> pd.DataFrame:
    """Identity columns and one column per metric, without the points where no metric was measured."""
    rows = np.flatnonzero(~np.isnan(values).all(axis=1)) if dropna and names else np.arange(len(values))
    return pd.concat([_rows(identity, rows), pd.DataFrame(values[rows], columns=pd.Index(names, dtype="str"))], axis=1)


def to_frame(
    ds: xr.Dataset,
    metrics: str | Iterable[str] | None = None,
    melt: bool = False,
    dropna: bool = True,
) -> pd.DataFrame:
    """Points of a Dataset as a flat DataFrame for plotting (seaborn, dr_plotter, matplotlib).

    Parameters
    ----------
    ds : xarray.Dataset
        A ddxr Dataset (docs/dataset.md §2), in memory or lazily opened from netCDF.
    metrics : str, iterable of str or None, optional
        Metric variables to include; None for every data variable along ``point``.
    melt : bool, default False
        False: one row per point, one float64 column per metric (wide). True: one row per point and metric, with a
        ``metric`` (str) and a ``value`` (float64) column (long), metrics in the order selected.
    dropna : bool, default True
        Wide: drop points where every selected metric is NaN. Long: drop NaN values metric by metric, so a metric
        measured at few points (end-of-run evals) keeps all of them.

    Returns
    -------
    pandas.DataFrame
        A fresh RangeIndex and flat string column names. Columns: the point coordinates ``lineage`` (str),
        ``params`` (ordered categorical in numeric size order, only the sizes present), ``data`` (str),
        ``learning_rate`` (float64), ``learning_rate_label`` (ordered categorical of labels such as ``"1e-05"``,
        ``"pretraining"`` for the 0.0 sentinel, numeric order, only the rates present), ``cumulative_tokens``,
        ``run_id``, ``run_type``, ``seed`` (int64), ``step`` (int64), ``pretraining_phase`` (bool), ``phase``
        (str: ``"pretraining"``, ``"supervised_ft"`` or ``"dpo"``), ``cumulative_compute`` (float64),
        ``tokens_estimated`` (bool), any further point coordinates, then the metrics. Rows follow each lineage in
        training order (lineage, cumulative tokens, run type, step).

    Raises
    ------
    SelectionError
        If a metric is not a data variable along ``point``.
    DdxrError
        If the Dataset lacks a point coordinate or a coordinate holds missing values.

    Examples
    --------
    Draw every lineage's curve, post-training learning rates as colours (``ds`` is a ddxr Dataset):

    >>> frame = to_frame(ds, "olmes_9_average", melt=True)  # doctest: +SKIP
    >>> sns.lineplot(data=frame, x="cumulative_tokens", y="value", hue="learning_rate_label", style="phase",
    ...              units="lineage", estimator=None)  # doctest: +SKIP
    """
    names = metric_names(ds, metrics)
    points = point_coords(ds)
    order = point_order(points)
    identity = _identity_columns(points.iloc[order])
    values = metric_matrix(ds, names, order)
    return (_long if melt else _wide)(identity, names, values, dropna)
