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
from ddxr.vocabulary import PARAMS, PRETRAINING_LEARNING_RATE, UNKNOWN_LEARNING_RATE

#: Label of the learning-rate sentinel of pretraining-only lineages.
PRETRAINING_LABEL = "pretraining"

#: Label of the learning-rate sentinel of lineages whose rate no source records.
UNKNOWN_LABEL = "unknown"

#: Layouts of the points several lineages share, for :func:`to_frame`.
PREFIXES = ("shared", "copied")

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
            f"available ({len(available)}): {shown or 'none'} — pick names from the available ones"
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
    # level coordinate to numpy would create a Python string per point (hundreds of MB on large files); strings stay
    # Python objects shared by the points (pandas would copy each point's text into Arrow: 2.5 GB at 10 M points)
    columns = {
        name: _level_values(index, name) if name in levels else ds[name].to_numpy()
        for name in (*POINT_COORDS, *extra)
        if name != "point"
    }
    return pd.DataFrame({name: pd.Series(values, dtype=values.dtype, copy=False) for name, values in columns.items()})


def _level_values(index: pd.MultiIndex, name: str) -> np.ndarray:
    """Values of one index level per point; text as the level's own string objects, taken by the level codes."""
    position = index.names.index(name)
    level, codes = index.levels[position], index.codes[position]
    if level.dtype.kind in "biuf" or (codes < 0).any():
        return index.get_level_values(name).to_numpy()
    return level.to_numpy(dtype=object)[codes]


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
            else UNKNOWN_LABEL
            if rate == UNKNOWN_LEARNING_RATE
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
    """Point coordinates with readable dtypes (``params`` an ordered categorical in size order)."""
    nulls = points.columns[points.isna().any().to_numpy()].tolist()
    if nulls:
        raise DdxrError(
            f"point coordinate(s) {', '.join(map(repr, nulls))} hold missing values; a ddxr Dataset uses sentinels "
            "instead (docs/dataset.md §2) — rebuild the Dataset or fill them"
        )
    frame = points.astype({name: dtype for name, dtype in _DTYPES.items() if name in points.columns})
    frame["params"] = params_categorical(frame["params"])
    return frame


def _segment_order(points: pd.DataFrame) -> np.ndarray:
    """Positions that sort points by lineage, then run type (pretraining, SFT, DPO), cumulative tokens and step.

    Each run's points along a lineage are then contiguous: one drawn segment.
    """
    lineage_codes = pd.factorize(points["lineage"], sort=True)[0]
    phase_rank = pd.Categorical(points["run_type"], categories=RUN_TYPES).codes
    return np.lexsort((points["step"].to_numpy(), points["cumulative_tokens"].to_numpy(), phase_rank, lineage_codes))


def run_learning_rates(points: pd.DataFrame, runs: xr.Dataset | None = None) -> pd.Series:
    """Peak learning rate of every run that produced a point, indexed by ``run_id``.

    A post-training run's rate is the ``learning_rate`` of its own lineage (the lineage named after the run), or,
    when that lineage is not among the points (a DPO lineage selected without its SFT parent's), the ``runs`` table's.
    Pretraining runs get :data:`~ddxr.vocabulary.PRETRAINING_LEARNING_RATE`; a rate known to neither
    :data:`~ddxr.vocabulary.UNKNOWN_LEARNING_RATE`.
    """
    run_ids = pd.Index(pd.unique(points["run_id"]), dtype="str")
    pretraining = points["pretraining_phase"].to_numpy(bool)
    own = points[~pretraining & (points["lineage"] == points["run_id"]).to_numpy()].drop_duplicates("run_id")
    rates = pd.Series(own["learning_rate"].to_numpy(np.float64), index=pd.Index(own["run_id"], dtype="str"))
    rates = rates.reindex(run_ids)
    if runs is not None and "learning_rate" in runs:
        recorded = pd.Series(
            runs["learning_rate"].to_numpy().astype(np.float64), index=pd.Index(runs["run_id"].to_numpy(), dtype="str")
        )
        rates = rates.fillna(recorded[~recorded.index.duplicated()].reindex(run_ids))
    rates[run_ids.isin(points.loc[pretraining, "run_id"])] = PRETRAINING_LEARNING_RATE
    return rates.fillna(UNKNOWN_LEARNING_RATE)


def _segments(points: pd.DataFrame, layout: np.ndarray) -> pd.DataFrame:
    """Return the runs of each lineage along ``layout`` (positions of ``points`` in segment order), one row each.

    Columns: the first and last index into ``layout``, the segment's ``lineage``, ``run_id``, ``run_type``,
    ``params``, ``data``, ``seed``; ``anchor``, the position in ``points`` of the point the segment starts from (the
    previous run's last point along the lineage: the base checkpoint for SFT, the SFT run's end for DPO), -1 for the
    first run of a lineage or when that point is not strictly before the segment's first one; ``parent``, that
    previous run ("" for none); ``base_step``, the step of the lineage's last pretraining point.
    """
    lineage = points["lineage"].to_numpy()[layout]
    run_id = points["run_id"].to_numpy()[layout]
    starts = np.flatnonzero(np.r_[True, (lineage[1:] != lineage[:-1]) | (run_id[1:] != run_id[:-1])])
    ends = np.r_[starts[1:], len(layout)] - 1
    columns = ["lineage", "run_id", "run_type", "pretraining_phase", "params", "data", "seed"]
    table = points.iloc[layout[starts]][columns].reset_index(drop=True).assign(first=starts, last=ends)
    continued = np.r_[False, table["lineage"].to_numpy()[1:] == table["lineage"].to_numpy()[:-1]]
    previous = layout[np.r_[0, ends[:-1]]]
    tokens = points["cumulative_tokens"].to_numpy()
    anchored = continued & ~table["pretraining_phase"].to_numpy(bool) & (tokens[previous] < tokens[layout[starts]])
    table["anchor"] = np.where(anchored, previous, -1)
    table["parent"] = np.where(continued, np.concatenate([[""], table["run_id"].to_numpy()[:-1]]), "")
    pretraining_end = table["last"].where(table["pretraining_phase"]).groupby(table["lineage"]).transform("max")
    table["base_step"] = np.where(
        pretraining_end.notna(), points["step"].to_numpy()[layout[pretraining_end.fillna(0).to_numpy(np.int64)]], -1
    )
    return table


def _shared_layout(points: pd.DataFrame, layout: np.ndarray, copied: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Return the layout and segments of ``prefix="shared"``: every point once, in the segment of its own run.

    A point several lineages hold (the pretraining prefix, an SFT run continued by DPO) is kept once, preferring the
    copy in the run's own lineage; each segment is then one run, named by its ``run_id`` as lineage, with the anchor
    and parent the run has in the lineages that hold it.
    """
    own = (points["lineage"] == points["run_id"]).to_numpy()[layout]
    keys = pd.DataFrame(
        {
            "run": pd.factorize(points["run_id"])[0][layout],
            "step": points["step"].to_numpy()[layout],
            "copy": ~own,
            "position": layout,
        }
    )
    kept = keys.sort_values(["run", "step", "copy"], kind="stable").drop_duplicates(["run", "step"])["position"]
    kept = kept.to_numpy()
    runs_first = _segment_order(points.iloc[kept].assign(lineage=points["run_id"].to_numpy()[kept]))
    shared = kept[runs_first]
    segments = _segments(points.assign(lineage=points["run_id"]), shared)
    # anchor and parent of a run are the same in every lineage holding it: read them from its first copy
    facts = copied.assign(copy=copied["lineage"] != copied["run_id"]).sort_values("copy", kind="stable")
    facts = facts.drop_duplicates("run_id").set_index("run_id")
    for name in ("anchor", "parent", "base_step"):
        segments[name] = facts[name].reindex(segments["run_id"]).to_numpy()
    return shared, segments


def _drawn_rows(segments: pd.DataFrame, layout: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the frame: the position in ``points`` of each, its segment, and whether it is its segment's anchor."""
    has_anchor = (segments["anchor"] >= 0).to_numpy()
    lengths = (segments["last"] - segments["first"] + 1).to_numpy() + has_anchor
    segment = np.repeat(np.arange(len(segments)), lengths)
    offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    anchor = has_anchor[segment] & (offset == 0)
    inside = segments["first"].to_numpy()[segment] + offset - has_anchor[segment]
    source = np.where(anchor, segments["anchor"].to_numpy()[segment], layout[np.minimum(inside, len(layout) - 1)])
    return source, segment, anchor


def _rate_names(rates: pd.Series) -> pd.Series:
    """``lr=<label>`` for post-training rates (``lr=unknown`` for the unknown sentinel)."""
    labels = learning_rate_labels(rates.to_numpy()).astype(str)
    return pd.Series("lr=" + labels, index=rates.index)


def curve_names(segments: pd.DataFrame, rates: pd.Series) -> pd.Series:
    """Return a readable name per segment, unique per (lineage, run_id) segment.

    ``pretraining seed 0``, ``SFT lr=1e-05``, ``DPO lr=1e-06 ← SFT lr=1e-05``; prefixed with params and data when the
    segments span several; qualified with the base (``from seed 0 step 5725``) where two runs would share a name,
    then numbered (``#2``) if they still do. A segment that only leads to its lineage's leaf run (the copied
    pretraining prefix, the SFT part of a DPO lineage) is named after that leaf too: ``pretraining seed 0 (for SFT
    lr=1e-05)``.
    """
    run_rate = _rate_names(rates)
    kind = segments["run_type"].map({"supervised_ft": "SFT", "dpo": "DPO"})
    seed = segments["seed"].astype("int64")
    seed_name = seed.astype(str).where(seed >= 0, "mean")  # a negative seed marks a mean over seeds
    name = pd.Series(
        np.where(
            segments["pretraining_phase"].to_numpy(bool),
            "pretraining seed " + seed_name,
            kind.fillna(segments["run_type"]) + " " + run_rate.reindex(segments["run_id"]).to_numpy(),
        ),
        index=segments.index,
    )
    parent_kind = segments["parent"].map(segments.drop_duplicates("run_id").set_index("run_id")["run_type"])
    chained = (segments["run_type"] == "dpo") & (parent_kind == "supervised_ft")
    parent_name = "SFT " + run_rate.reindex(segments["parent"]).fillna("").to_numpy()
    name = name.where(~chained, name + " ← " + parent_name)
    if segments[["params", "data"]].drop_duplicates().shape[0] > 1:
        name = segments["params"].astype(str) + " " + segments["data"].astype(str) + " " + name
    # runs sharing a name (same rate and kind): say which base each started from, then number what still collides
    key = segments["run_id"]
    clash = key.groupby(name).transform("nunique") > 1
    base = " from seed " + seed_name + " step " + segments["base_step"].astype(str)
    name = name.where(~clash | segments["pretraining_phase"], name + base)
    rank = (
        pd.Series(pd.factorize(key, sort=True)[0], index=key.index).groupby(name).rank(method="dense").astype("int64")
    )
    clash = key.groupby(name).transform("nunique") > 1
    name = name.where(~clash, name + " #" + rank.astype(str))
    # copies leading to a lineage's leaf run carry the leaf's name (copied layout only)
    leaf = name[segments["lineage"] == segments["run_id"]]
    leaf.index = segments.loc[leaf.index, "lineage"]
    leaf_name = segments["lineage"].map(leaf[~leaf.index.duplicated()]).fillna(segments["lineage"])
    return name.where(segments["lineage"] == segments["run_id"], name + " (for " + leaf_name + ")")


def _rows(frame: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """Return some rows of the identity columns, dropping categories no row uses (legends show no ghosts)."""
    rows = frame.iloc[positions].reset_index(drop=True)
    for name in ("params", "learning_rate_label", "curve"):
        rows[name] = rows[name].cat.remove_unused_categories()
    return rows


def _lonely_anchors(identity: pd.DataFrame, measured: np.ndarray) -> np.ndarray:
    """Anchors of segments with no measured point of their own, per column of ``measured`` (rows x metrics).

    Such an anchor would draw a one-point segment of the base for a metric its run never measured.
    """
    anchor = identity["anchor"].to_numpy()
    segment = identity["curve"].cat.codes.to_numpy()
    own = np.zeros((len(identity["curve"].cat.categories), measured.shape[1]), dtype=np.int64)
    np.add.at(own, segment[~anchor], measured[~anchor].astype(np.int64))
    return anchor[:, None] & (own[segment] == 0)


def _long(identity: pd.DataFrame, names: list[str], values: np.ndarray, dropna: bool) -> pd.DataFrame:
    """Stack metric columns into ``metric``/``value`` rows, metric by metric, keeping only measured values."""
    measured = ~np.isnan(values)
    keep = (measured & ~_lonely_anchors(identity, measured)).T if dropna else np.ones(values.T.shape, dtype=bool)
    metric_index, point_index = np.nonzero(keep)  # metric-major: each metric's rows stay together
    frame = _rows(identity, point_index)
    frame["metric"] = pd.array(np.asarray(names, dtype=object)[metric_index], dtype="str")
    frame["value"] = values[point_index, metric_index]
    return frame


def _wide(identity: pd.DataFrame, names: list[str], values: np.ndarray, dropna: bool) -> pd.DataFrame:
    """Identity columns and one column per metric, without the points where no metric was measured."""
    if dropna and names:
        measured = ~np.isnan(values)
        rows = np.flatnonzero((measured & ~_lonely_anchors(identity, measured)).any(axis=1))
    else:
        rows = np.arange(len(values))
    return pd.concat([_rows(identity, rows), pd.DataFrame(values[rows], columns=pd.Index(names, dtype="str"))], axis=1)


def _drawn_points(
    ds: xr.Dataset, prefix: str = "shared", runs: xr.Dataset | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Return the identity columns of :func:`to_frame`, one row per drawn point, and the Dataset position of each row.

    Parameters
    ----------
    ds : xarray.Dataset
        A ddxr Dataset.
    prefix : {"shared", "copied"}
        See :func:`to_frame`.
    runs : xarray.Dataset, optional
        See :func:`to_frame`.

    Returns
    -------
    identity : pandas.DataFrame
        The columns of :func:`to_frame` before the metrics.
    positions : numpy.ndarray
        For each row, the position along ``point`` of the point it shows.
    """
    if prefix not in PREFIXES:
        raise DdxrError(f"prefix={prefix!r}: expected one of {', '.join(map(repr, PREFIXES))}")
    points = _identity_columns(point_coords(ds))
    layout = _segment_order(points)
    segments = _segments(points, layout)
    if prefix == "shared":
        layout, segments = _shared_layout(points, layout, segments)
    rates = run_learning_rates(points, runs)
    source, segment, anchor = _drawn_rows(segments, layout)
    names = curve_names(segments, rates)
    frame = points.iloc[source].reset_index(drop=True)
    run_of_row = segments["run_id"].to_numpy()[segment]
    if prefix == "shared":  # a point belongs to the lineage of the run that produced it
        frame["lineage"] = pd.array(run_of_row, dtype="str")
        frame["learning_rate"] = rates.reindex(run_of_row).to_numpy()
    position = frame.columns.get_loc("learning_rate") + 1
    frame.insert(position, "learning_rate_label", learning_rate_labels(rates.reindex(run_of_row).to_numpy()))
    frame.insert(1, "curve", _curve_categorical(names, segments, rates)[segment])
    phase = np.where(segments["pretraining_phase"].to_numpy(bool), RUN_TYPES[0], segments["run_type"].to_numpy())
    position = frame.columns.get_loc("pretraining_phase") + 1
    frame.insert(position, "phase", pd.array(phase[segment], dtype="str"))
    frame.insert(position + 1, "anchor", anchor)
    return frame, source


def _curve_categorical(names: pd.Series, segments: pd.DataFrame, rates: pd.Series) -> pd.Categorical:
    """Curve names as an ordered categorical: by size, recipe, phase, learning rate, parent's rate, then name."""
    order = pd.DataFrame(
        {
            "params": params_categorical(segments["params"]).codes,
            "data": segments["data"].to_numpy(),
            "phase": pd.Categorical(segments["run_type"], categories=RUN_TYPES).codes,
            "rate": rates.reindex(segments["run_id"]).to_numpy(),
            "parent_rate": rates.reindex(segments["parent"]).fillna(0.0).to_numpy(),
            "name": names.to_numpy(),
        }
    ).sort_values(["params", "data", "phase", "rate", "parent_rate", "name"], kind="stable")
    categories = pd.Index(order["name"].unique(), dtype="str")
    return pd.Categorical.from_codes(categories.get_indexer(names), categories=categories, ordered=True)


def to_frame(
    ds: xr.Dataset,
    metrics: str | Iterable[str] | None = None,
    melt: bool = False,
    dropna: bool = True,
    prefix: str = "shared",
    runs: xr.Dataset | None = None,
) -> pd.DataFrame:
    """Points of a Dataset as a flat DataFrame for plotting (seaborn, dr_plotter, matplotlib): one row per drawn point.

    The rows are *drawn segments*: one per run along a lineage (``curve`` names it), each post-training segment
    starting with the point it continues from, so that any plotter drawing one line per group draws every lineage
    correctly. ``prefix`` chooses whether a point several lineages share (the pretraining prefix of a base, an SFT
    run continued by DPO) is drawn once or once per lineage.

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
    prefix : {"shared", "copied"}, default "shared"
        ``"shared"``: every point once, in the segment of the run that produced it: the pretraining prefix once per
        base (``curve`` ``"pretraining seed 0"``, ``lineage`` the base's pretraining lineage id, ``learning_rate``
        0.0), an SFT run once even when DPO continued it. Each point's ``lineage`` is then the lineage named after
        its run and ``learning_rate`` that run's rate. For plotters that draw one line per group — matplotlib
        ``frame.groupby("curve")``, seaborn ``hue="curve"`` or ``hue``/``style`` without ``units=``, dr_plotter —
        and for colouring by ``learning_rate_label``: the shared curve gets one colour and one legend entry.
        ``"copied"``: every lineage holds its whole curve from step 0 (the points as stored in the Dataset), its
        copies of shared points named after the lineage's leaf (``"pretraining seed 0 (for SFT lr=1e-05)"``). For
        per-lineage work: ``groupby("lineage")`` statistics, seaborn ``units="lineage"``, a facet per lineage.
    runs : xarray.Dataset, optional
        The runs table of the file (:func:`ddxr.open_runs`). Only needed for the rate of a run whose own lineage is
        not in ``ds`` (the SFT parent of a DPO lineage selected alone); without it that rate reads ``"unknown"``.

    Returns
    -------
    pandas.DataFrame
        A fresh RangeIndex and flat string column names. Columns: ``lineage`` (str), ``curve`` (ordered
        categorical: the drawn segment, unique per segment, ordered by size, recipe, phase and rate), ``params``
        (ordered categorical in numeric size order), ``data`` (str), ``learning_rate`` (float64),
        ``learning_rate_label`` (ordered categorical, numeric order: the rate of the run that produced the point,
        e.g. ``"1e-05"``, ``"pretraining"`` for pretraining points, ``"unknown"`` where no source records it),
        ``cumulative_tokens``, ``run_id``, ``run_type``, ``seed`` (int64), ``step`` (int64), ``pretraining_phase``
        (bool), ``phase`` (str: the segment's ``"pretraining"``, ``"supervised_ft"`` or ``"dpo"``), ``anchor``
        (bool: the row repeats the point a post-training segment starts from — the base checkpoint for SFT, the SFT
        run's last point for DPO — with that point's own ``run_id``, ``step`` and ``pretraining_phase``; drop these
        rows before counting points or computing statistics), ``cumulative_compute`` (float64),
        ``tokens_estimated`` (bool), any further point coordinates, then the metrics. Rows follow each segment in
        training order; within a segment ``cumulative_tokens`` strictly increases. Only categories in use are kept.

    Raises
    ------
    SelectionError
        If a metric is not a data variable along ``point``.
    DdxrError
        If the Dataset lacks a point coordinate, a coordinate holds missing values, or ``prefix`` is unknown.

    Examples
    --------
    Draw every segment of a sweep, post-training learning rates as colours (``ds`` is a ddxr Dataset):

    >>> frame = to_frame(ds.sel(params="150M", data="Dolma1.7"), "olmes_9_average", melt=True)  # doctest: +SKIP
    >>> sns.lineplot(data=frame, x="cumulative_tokens", y="value", hue="learning_rate_label", style="curve",
    ...              estimator=None, sort=False)  # doctest: +SKIP
    >>> for curve, line in frame.groupby("curve", observed=True):  # doctest: +SKIP
    ...     plt.plot(line["cumulative_tokens"], line["value"], label=curve)
    """
    names = metric_names(ds, metrics)
    identity, positions = _drawn_points(ds, prefix, runs)
    values = metric_matrix(ds, names)[positions]
    return (_long if melt else _wide)(identity, names, values, dropna)
