"""The managers' tables → the curves Dataset (dim ``point``) and the runs Dataset (dim ``run``), docs/dataset.md §2.

Metric variables are gathered column by column from two tables through row pointers (pretraining checkpoints and
end-of-run evaluations), lazily: the wide point × metric matrix is never built, in pandas or in the Dataset, and each
variable is float32 from the start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from ddxr.index import level_codes, point_coordinates, with_pandas_index
from ddxr.managers.evaluations import HISTORY_VARIABLES
from ddxr.schema import COORDS, KEYS, LEVELS, POINT_DIM, validate_points

_COORD_ATTRS = {
    "lineage": {
        "long_name": "lineage",
        "description": "leaf run_id of a post-training chain, or {params}/{slug}/seed{seed} for pretraining only",
    },
    "params": {"long_name": "DataDecide model size label"},
    "data": {"long_name": "DataDecide data recipe"},
    "learning_rate": {
        "long_name": "peak learning rate of the lineage's leaf post-training run",
        "description": "configured peak (W&B's config copy, config, launch arguments or run name; see the runs "
        "table's learning_rate_source), constant along the lineage; 0.0 for pretraining-only lineages",
    },
    "cumulative_tokens": {
        "long_name": "tokens seen since pretraining began",
        "units": "tokens",
        "formula": "pretraining tokens; post-training: tokens at the base checkpoint + repaired total_tokens "
        "(DPO: + parent's final tokens + training_step x effective batch x tokens per pair, estimated)",
    },
    "cumulative_compute": {
        "long_name": "training compute since pretraining began",
        "units": "FLOPs",
        "formula": "FLOPs per token of the size x cumulative_tokens, the factor being DataDecide's own "
        "compute / tokens (6 x N; the published tables use the true non-embedding N, e.g. 3,744,832 for 4M); "
        "pretraining checkpoints take DataDecide's compute, checkpoints without one (perplexity only) and "
        "post-training points the same factor, so each model's compute is one line through its base checkpoint",
    },
    "run_id": {"long_name": "run of the point (W&B run_id, or the pretraining lineage id)"},
    "run_type": {"long_name": "pretraining, supervised_ft or dpo"},
    "seed": {"long_name": "DataDecide pretraining seed (0-4)"},
    "step": {"long_name": "phase-local step (pretraining step or post-training optimizer step)"},
    "pretraining_phase": {"long_name": "point comes from the pretraining base"},
    "tokens_estimated": {"long_name": "cumulative_tokens of this point rests on an estimate"},
}


def assemble_curves(
    points: pd.DataFrame,
    pretraining_metrics: pd.DataFrame,
    posttraining_metrics: pd.DataFrame,
    variables: Sequence[str],
    variable_attrs: Callable[[str], dict],
    attrs: dict | None = None,
    lineage_created: pd.Series | None = None,
) -> xr.Dataset:
    """Build the curves Dataset.

    Metric variables are lazy, like those of a file opened with ``cache=False``: each read gathers the values it
    selects from the metric tables afresh, so a writer going variable by variable holds one variable at a time and
    the Dataset itself holds the (small) tables, never points × variables. ``.load()`` keeps them in memory.

    Parameters
    ----------
    points : pandas.DataFrame
        One row per point (``TrainingProgressionManager.points()``), with ``pretraining_row`` pointing into
        ``pretraining_metrics`` (-1: none) and ``eval_run`` naming the run whose evaluations sit on the point.
    pretraining_metrics : pandas.DataFrame
        Standardized pretraining metrics, row-aligned with the pointers.
    posttraining_metrics : pandas.DataFrame
        Standardized end-of-run evaluations indexed by ``run_id``.
    variables : sequence of str
        Metric variables to include, in order.
    variable_attrs : callable
        Attributes of a variable by name (``EvaluationManager.variable_attrs``).
    attrs : dict, optional
        Dataset attributes.
    lineage_created : pandas.Series, optional
        Creation time of each post-training lineage's leaf run, indexed by lineage id: the point order of
        :func:`lineage_ranks`. Without it, lineages are in id order.

    Returns
    -------
    xarray.Dataset
    """
    order = _point_order(points, lineage_created)
    # only the key columns are sorted as a table; the others are sorted one by one as they become variables
    keys = points[list(dict.fromkeys((*LEVELS, *KEYS)))].take(order).reset_index(drop=True)
    validate_points(keys)
    pretraining = _Pointers(points["pretraining_row"].to_numpy(np.int64)[order])
    evaluations = _Pointers(_table_rows(posttraining_metrics.index, points["eval_run"])[order])
    data_vars = {}
    for name in variables:  # one lazy array per variable; nothing the size of the points is built here
        layers = []
        if name in pretraining_metrics and name != "train_loss":
            layers.append((_float32(pretraining_metrics[name]), pretraining))
        if name in posttraining_metrics:
            layers.append((_float32(posttraining_metrics[name]), evaluations))
        base = points[name].to_numpy(np.float32)[order] if name in HISTORY_VARIABLES else None
        data_vars[name] = xr.Variable(
            POINT_DIM, indexing.LazilyIndexedArray(_GatheredMetric(base, layers, len(order))), variable_attrs(name)
        )
    dataset = xr.Dataset(data_vars, coords=_point_coords(keys, points, order), attrs=attrs or {})
    for name in LEVELS:  # level variables are made by the index: their attrs are set afterwards
        dataset[name].attrs.update(_COORD_ATTRS[name])
    return dataset


def lineage_ranks(lineages: pd.Index, created: pd.Series | None) -> np.ndarray:
    """Rank of each lineage in the point order: pretraining-only lineages, then post-training ones by creation.

    Pretraining-only lineages (absent from ``created``) come first, by id; then post-training lineages by their leaf
    run's creation time (unknown first), then id. New runs are normally the newest: their lineages sort last, so a
    refresh that adds them appends to the file (:mod:`ddxr.refresh`).

    Parameters
    ----------
    lineages : pandas.Index
        Distinct lineage ids, sorted.
    created : pandas.Series or None
        Leaf creation time (datetime64, NaT when unknown) indexed by post-training lineage id; None: id order.
    """
    if created is None:
        return np.arange(len(lineages))
    stamps = pd.DatetimeIndex(created.reindex(lineages)).asi8  # NaT is the smallest integer: unknown first
    order = np.lexsort((np.arange(len(lineages)), stamps, lineages.isin(created.index)))
    ranks = np.empty(len(lineages), dtype=np.int64)
    ranks[order] = np.arange(len(lineages))
    return ranks


def lineage_created(runs: pd.DataFrame) -> pd.Series:
    """Creation time of each linked run (the lineage it is the leaf of) from a runs table, for :func:`lineage_ranks`."""
    linked = runs[runs["link_status"] == "linked"]
    return pd.Series(linked["created_at"].to_numpy(), index=pd.Index(linked["run_id"], dtype=object))


def _point_order(points: pd.DataFrame, created: pd.Series | None = None) -> np.ndarray:
    """Positions that sort points by lineage (:func:`lineage_ranks`), pretraining phase first, tokens and step.

    The progression lays each phase of a lineage out in token and step order already: sorting by lineage and phase
    alone then gives the same order (checked in one pass) at a fraction of the cost of sorting by all four keys.
    """
    lineage, values = level_codes(points["lineage"])
    rank = lineage_ranks(pd.Index(values), created)[lineage]
    group = 2 * rank + ~points["pretraining_phase"].to_numpy(bool)
    tokens, step = points["cumulative_tokens"].to_numpy(), points["step"].to_numpy()
    order = np.argsort(group, kind="stable")
    same, ordered_tokens, ordered_step = group[order], tokens[order], step[order]
    rising = (ordered_tokens[1:] > ordered_tokens[:-1]) | (
        (ordered_tokens[1:] == ordered_tokens[:-1]) & (ordered_step[1:] >= ordered_step[:-1])
    )
    if (rising | (same[1:] != same[:-1])).all():
        return order
    return np.lexsort((step, tokens, group))


def _table_rows(index: pd.Index, run_ids: pd.Series) -> np.ndarray:
    """Row of each point's run in a table indexed by run id (-1: none); categoricals are looked up by category."""
    if isinstance(run_ids.dtype, pd.CategoricalDtype):
        return np.append(index.get_indexer(run_ids.cat.categories), -1)[run_ids.cat.codes.to_numpy()]
    return index.get_indexer(run_ids)


def _float32(column: pd.Series) -> np.ndarray:
    return column.to_numpy(np.float32, na_value=np.nan)


def _point_coords(levels: pd.DataFrame, points: pd.DataFrame, order: np.ndarray) -> xr.Coordinates:
    """Return the ``point`` MultiIndex (from the sorted ``levels``) and the other point coordinates, in ``order``."""
    index = point_coordinates(levels)
    others = {
        # fastpath: xarray would otherwise pass millions of strings through a pandas Series to look for dates
        name: xr.Variable(POINT_DIM, _coordinate_values(points[name])[order], _COORD_ATTRS[name], fastpath=True)
        for name in COORDS
    }
    return xr.Coordinates({**index.variables, **others}, indexes=index.xindexes)


class _Pointers:
    """Where one metric table meets the points: the sorted positions of the points that have a row, and the rows.

    Parameters
    ----------
    rows : numpy.ndarray
        The table row of every point, -1 for none.
    """

    def __init__(self, rows: np.ndarray) -> None:
        self.positions = np.flatnonzero(rows >= 0)
        self.rows = rows[self.positions]
        # a sentinel past the last point: a binary search then always lands on a valid element
        self.positions = np.append(self.positions, len(rows))

    def locate(self, selected: range | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return where, among ``selected`` points, those with a row are, and their rows.

        Parameters
        ----------
        selected : range or numpy.ndarray
            Points selected: a range, or sorted non-negative positions (what xarray's outer indexing passes).
        """
        if isinstance(selected, range) and selected.step == 1:  # whole reads and chunks: two binary searches
            first, last = np.searchsorted(self.positions, [selected.start, selected.stop])
            return self.positions[first:last] - selected.start, self.rows[first:last]
        wanted = np.asarray(selected, dtype=np.int64).reshape(-1)
        found = np.searchsorted(self.positions, wanted)
        hit = self.positions[found] == wanted
        return np.flatnonzero(hit), self.rows[found[hit]]


class _GatheredMetric(BackendArray):
    """A float32 metric variable read from its metric tables through the points' row pointers.

    Parameters
    ----------
    base : numpy.ndarray or None
        Values every point starts with (history variables), else NaN.
    layers : sequence of (numpy.ndarray, _Pointers)
        A table column and where its rows sit, in order: a later layer overwrites an earlier one where it has a row.
    size : int
        Number of points.
    """

    def __init__(self, base: np.ndarray | None, layers: Sequence[tuple[np.ndarray, _Pointers]], size: int) -> None:
        self.base = base
        self.layers = tuple(layers)
        self.shape = (size,)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        (selection,) = key
        if isinstance(selection, slice):
            selected = range(*selection.indices(self.shape[0]))
            shape: tuple[int, ...] = (len(selected),)
        else:
            selected = np.asarray(selection)
            shape = selected.shape
        if self.base is None:
            values = np.full(shape, np.nan, dtype=np.float32)
        else:
            values = np.array(self.base[selection], dtype=np.float32)  # a copy: the caller may write into it
        flat = values.reshape(-1)
        for column, pointers in self.layers:
            at, rows = pointers.locate(selected)
            flat[at] = column[rows]
        return values


def _coordinate_values(column: pd.Series) -> np.ndarray:
    if isinstance(column.dtype, pd.CategoricalDtype) and (column.cat.codes >= 0).all():
        # the few distinct values converted once, then spread by code (not one conversion per point)
        return _coordinate_values(pd.Series(column.cat.categories)).take(column.cat.codes.to_numpy())
    if column.dtype == bool or pd.api.types.is_bool_dtype(column):
        return column.to_numpy(bool)
    if pd.api.types.is_integer_dtype(column):
        return column.to_numpy(np.int64)
    if pd.api.types.is_float_dtype(column):
        return column.to_numpy(np.float64)
    values = column.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(values, skipna=False) == "string":  # already str: no copy of millions of strings
        return values
    return column.astype(str).to_numpy(dtype=object)


def _holds_booleans(column: pd.Series) -> bool:
    """Tell whether an object column holds only booleans or missing values (facts of runs the build did not follow)."""
    present = column.dropna()
    return column.dtype == object and len(present) > 0 and present.map(type).isin([bool, np.bool_]).all()


def _nullable_booleans(column: pd.Series) -> np.ndarray:
    present = column.notna().to_numpy()
    return np.where(present, column.to_numpy(dtype=object, na_value=False).astype(bool), None).astype(object)


#: Sentinel of a missing integer in the runs table (netCDF has no nullable integers).
MISSING_INT = -1


def assemble_runs(runs: pd.DataFrame) -> xr.Dataset:
    """Build the runs Dataset (dim ``run``, index ``run_id``) from a run-level table.

    Missing strings become ``""`` and missing integers :data:`MISSING_INT`, so the file round-trips exactly;
    booleans with missing values become object arrays of True, False and None; timestamps are stored in UTC without
    a zone.
    """
    table = runs.set_index("run_id")
    table.index.name = "run"
    data_vars = {}
    for name, column in table.items():
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            values = column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
        elif pd.api.types.is_bool_dtype(column) or _holds_booleans(column):
            # booleans with missing values stay booleans (True/False/None), never the strings 'True'/'False'/''
            values = column.to_numpy(bool) if column.notna().all() else _nullable_booleans(column)
        elif pd.api.types.is_integer_dtype(column):
            values = column.fillna(MISSING_INT).to_numpy(np.int64)
        elif pd.api.types.is_float_dtype(column):
            values = column.to_numpy(np.float64)
        else:
            values = column.fillna("").astype(str).to_numpy(dtype=object)
        # fastpath: the values are numpy arrays already; xarray's checks would import dask.array (0.5 s)
        data_vars[name] = xr.Variable("run", values, fastpath=True)
    run_ids = xr.Variable("run", table.index.astype(str).to_numpy(dtype=object), fastpath=True)
    dataset = xr.Dataset(data_vars, coords={"run_id": run_ids})
    dataset = with_pandas_index(dataset, "run_id")
    dataset.attrs["missing_values"] = f'strings "", integers {MISSING_INT}, floats NaN, booleans None; timestamps UTC'
    return dataset
