"""Research analyses of a ddxr Dataset: seed statistics, values at equal tokens, final values, decision accuracy.

Every function takes a Dataset of the contract (docs/dataset.md §2), in memory or opened lazily, and reads its
coordinates by name, never through label selection on index levels. Points are sorted once along their lineages
(lineage, cumulative tokens, run type, step); every lineage is then handled by the same whole-array numpy
operations, and metrics are read in batches that bound memory on builds with ≈1,900 metrics. On a file opened with
``chunks=`` (dask), each batch is computed from its chunks when the analysis reaches it and nothing is loaded into the
Dataset, so memory holds the point coordinates and one batch of metrics, never every metric; the results equal those
without chunks.

Conventions shared by all functions:

- A metric value of NaN means "not measured at this point"; statistics and interpolation use measured values only.
- A *pretraining-only lineage* is one whose points all have ``pretraining_phase`` True (lineage id
  ``"{params}/{slug}/seed{seed}"``); the pretraining prefix of a post-training lineage repeats its base's points up to
  the base checkpoint, which is not the base run's final checkpoint in general.
- Aggregated lineages are named ``"{params}/{slug}/mean"`` (or ``/std``) after the pretraining lineage ids
  ``"{params}/{slug}/seed{seed}"`` (the recipe's HF slug, as display names may contain ``/``), and carry seed
  :data:`AGGREGATED_SEED` (-1), never a DataDecide seed (0–4).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import ArrayLike
from xarray.indexes import PandasMultiIndex

from ddxr.errors import DdxrError, InvalidArgumentError, SelectionError
from ddxr.frames import metric_matrix, metric_names, point_coords, point_order
from ddxr.schema import LEVELS, POINT_COORDS, pretraining_lineage_id
from ddxr.vocabulary import PARAMS, PRETRAINING_LEARNING_RATE

#: Seed of lineages aggregated over seeds.
AGGREGATED_SEED = -1

Metrics = str | Iterable[str] | None
Phase = Literal["pretraining", "posttraining", "any"]

_SEED_KEYS = ["params", "data", "step"]
_LINEAGE_COORDS = ["params", "data", "learning_rate", "run_type", "seed"]
_CELL_METHODS = {"mean": "mean", "std": "standard_deviation"}  # CF cell_methods spelling
_BATCH_CELLS = 1 << 22  # float64 cells per metric batch (32 MiB)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidArgumentError(
            f"{name}={value!r} is not supported; expected one of {', '.join(map(repr, choices))}"
        )


def _check_params(label: str) -> None:
    if label not in PARAMS:
        raise SelectionError(f"params={label!r} is not a DataDecide size; expected one of {', '.join(PARAMS)}")


def _batches(names: list[str], cells_per_metric: int) -> Iterator[list[str]]:
    """Consecutive groups of metric names whose float64 working arrays fit in :data:`_BATCH_CELLS`."""
    size = max(1, _BATCH_CELLS // max(cells_per_metric, 1))
    for start in range(0, len(names), size):
        yield names[start : start + size]


def _float_dtype(ds: xr.Dataset, name: str) -> np.dtype:
    """Return the variable's dtype if it can hold NaN (float32 metrics stay float32), else float64."""
    return np.result_type(ds[name].dtype, np.float32)


def _higher_is_better(ds: xr.Dataset, name: str) -> bool:
    """Return the ``higher_is_better`` attr of a metric, also as netCDF stores booleans (0/1 or "true"/"false")."""
    metric_names(ds, name)
    value = ds[name].attrs.get("higher_is_better")
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value is not None and not isinstance(value, str) and np.ndim(value) == 0 and value in (0, 1):
        return bool(value)
    raise DdxrError(
        f"metric {name!r} has higher_is_better={value!r} in its attrs, expected True or False — set "
        f"ds[{name!r}].attrs['higher_is_better'] to say which direction is better"
    )


def _pretraining_only(points: pd.DataFrame) -> np.ndarray:
    """Tell per point whether its lineage consists of pretraining points only."""
    return points.groupby("lineage", sort=False)["pretraining_phase"].transform("all").to_numpy(dtype=bool)


@dataclass(frozen=True)
class _Lineages:
    """A Dataset's points sorted along their lineages, and where each lineage starts and ends in that order."""

    points: pd.DataFrame  # sorted points, fresh RangeIndex
    order: np.ndarray  # position in the Dataset of each sorted point
    codes: np.ndarray  # lineage number of each sorted point, lineages numbered in label order
    starts: np.ndarray  # first sorted position of each lineage
    ends: np.ndarray  # last sorted position of each lineage

    @classmethod
    def of(cls, ds: xr.Dataset) -> _Lineages:
        points = point_coords(ds)
        if points.empty:
            raise SelectionError("the Dataset holds no points — select fewer labels before this analysis")
        order = point_order(points)
        points = points.iloc[order].reset_index(drop=True)
        codes = pd.factorize(points["lineage"], sort=True)[0]
        numbers = np.arange(codes[-1] + 1)
        return cls(points, order, codes, np.searchsorted(codes, numbers), np.searchsorted(codes, numbers, "right") - 1)

    @property
    def tokens(self) -> np.ndarray:
        return self.points["cumulative_tokens"].to_numpy(dtype=np.float64)

    def table(self) -> pd.DataFrame:
        """One row per lineage: its id and the coordinates of its last point (so ``run_type`` is the leaf's)."""
        return self.points.iloc[self.ends][["lineage", *_LINEAGE_COORDS]].reset_index(drop=True)

    def last_at_or_before(self, queries: np.ndarray) -> np.ndarray:
        """Sorted position of each lineage's last point with tokens ≤ each query, its start − 1 if none.

        One ``searchsorted`` serves all lineages: points are keyed by lineage number × width + token rank, which
        increases along the sorted points.
        """
        unique = np.unique(self.tokens)
        width = unique.size + 1
        keys = self.codes * width + np.searchsorted(unique, self.tokens)
        bounds = np.arange(self.starts.size)[:, None] * width + np.searchsorted(unique, queries, "right")[None, :]
        return np.searchsorted(keys, bounds) - 1


def _last_measured(values: np.ndarray) -> np.ndarray:
    """Per row and metric, the row of the last measured (non-NaN) value at or before it; -1 if none."""
    rows = np.arange(len(values))[:, None]
    return np.maximum.accumulate(np.where(np.isnan(values), -1, rows), axis=0)


def _next_measured(values: np.ndarray) -> np.ndarray:
    """Per row and metric, the row of the first measured value at or after it; ``len(values)`` if none."""
    rows = np.arange(len(values))[:, None]
    return np.minimum.accumulate(np.where(np.isnan(values), len(values), rows)[::-1], axis=0)[::-1]


def _interpolate(lineages: _Lineages, values: np.ndarray, queries: np.ndarray, method: str) -> np.ndarray:
    """Values of sorted points (point, metric) at query tokens, as an array (lineage, query, metric)."""
    tokens, n_points, n_metrics = lineages.tokens, values.shape[0], values.shape[1]
    position = lineages.last_at_or_before(queries) + 1  # index into the padded fills below
    before = np.vstack([np.full((1, n_metrics), -1), _last_measured(values)])[position]
    after = np.vstack([_next_measured(values), np.full((1, n_metrics), n_points)])[position]
    has_before = before >= lineages.starts[:, None, None]
    has_after = after <= lineages.ends[:, None, None]
    columns = np.arange(n_metrics)
    before, after = np.clip(before, 0, n_points - 1), np.clip(after, 0, n_points - 1)
    x0, y0, x1, y1 = tokens[before], values[before, columns], tokens[after], values[after, columns]
    query = queries[None, :, None]
    if method == "linear":
        with np.errstate(divide="ignore", invalid="ignore"):  # only where no bracketing pair exists
            between = y0 + (y1 - y0) * (query - x0) / (x1 - x0)
        return np.where(has_before & (x0 == query), y0, np.where(has_before & has_after, between, np.nan))
    in_range = (query >= tokens[lineages.starts][:, None, None]) & (query <= tokens[lineages.ends][:, None, None])
    if method == "previous":
        return np.where(has_before & in_range, y0, np.nan)
    take_after = has_after & (~has_before | (x1 - query < query - x0))
    return np.where((has_before | has_after) & in_range, np.where(take_after, y1, y0), np.nan)


def _lineage_dataset(
    ds: xr.Dataset, table: pd.DataFrame, variables: dict[str, np.ndarray], dims: tuple[str, ...], coords: dict
) -> xr.Dataset:
    """Return a Dataset along ``lineage`` with per-lineage coordinates; metrics keep their dtype and attrs."""
    lineage_coords = {"lineage": ("lineage", table["lineage"].to_numpy(dtype=object))}
    lineage_coords |= {name: ("lineage", table[name].to_numpy(), ds[name].attrs) for name in _LINEAGE_COORDS}
    data_vars = {
        name: (dims, values.astype(_float_dtype(ds, name)), ds[name].attrs) for name, values in variables.items()
    }
    return xr.Dataset(data_vars, coords=lineage_coords | coords, attrs=ds.attrs)


def _point_dataset(ds: xr.Dataset, points: pd.DataFrame, variables: dict[str, np.ndarray]) -> xr.Dataset:
    """Return a Dataset of the contract from point coordinates and metric arrays, with ``ds``'s index type and attrs."""
    index = pd.MultiIndex.from_frame(points[list(LEVELS)])
    template = ds.xindexes.get("point")
    index_type = type(template) if isinstance(template, PandasMultiIndex) else PandasMultiIndex
    result = xr.Dataset(
        {name: ("point", values, ds[name].attrs) for name, values in variables.items()},
        coords=xr.Coordinates.from_xindex(index_type(index, "point")),
        attrs=ds.attrs,
    )
    others = [name for name in points.columns if name not in LEVELS]
    result = result.assign_coords(
        {name: ("point", points[name].to_numpy(), ds[name].attrs if name in ds.coords else {}) for name in others}
    )
    for level in LEVELS:
        result[level].attrs.update(ds[level].attrs)
    return result


def _seed_statistic(
    ds: xr.Dataset, points: pd.DataFrame, names: list[str], statistic: str
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Per (params, data, step): point coordinates of the aggregated lineage, and each metric's statistic."""
    pretraining = points["pretraining_phase"].to_numpy(dtype=bool)
    # prefixes of post-training lineages repeat their base's points: count each checkpoint once
    rows = np.flatnonzero(pretraining & ~points.duplicated(["run_id", "step"]).to_numpy())
    if rows.size == 0:
        raise SelectionError("the Dataset holds no pretraining points (pretraining_phase True) to aggregate over seeds")
    keys = points.iloc[rows]
    groups = keys.groupby(_SEED_KEYS, sort=True).ngroup().to_numpy()
    table = keys.groupby(groups).agg(
        params=("params", "first"),
        data=("data", "first"),
        step=("step", "first"),
        cumulative_tokens=("cumulative_tokens", "mean"),
        cumulative_compute=("cumulative_compute", "mean"),
        tokens_estimated=("tokens_estimated", "any"),
        n_seeds=("seed", "nunique"),
    )
    table["lineage"] = pretraining_lineage_id(table["params"], table["data"], statistic)
    table = table.assign(
        run_id=table["lineage"],
        run_type="pretraining",
        seed=np.int64(AGGREGATED_SEED),
        pretraining_phase=True,
        learning_rate=PRETRAINING_LEARNING_RATE,
    )[[*POINT_COORDS, "n_seeds"]].reset_index(drop=True)
    variables = {}
    for batch in _batches(names, len(points)):
        values = pd.DataFrame(metric_matrix(ds, batch)[rows], columns=batch).groupby(groups).agg(statistic)
        variables |= {name: values[name].to_numpy().astype(_float_dtype(ds, name)) for name in batch}
    return table, variables


def _over_seeds(ds: xr.Dataset, metrics: Metrics, statistic: Literal["mean", "std"]) -> xr.Dataset:
    names = metric_names(ds, metrics)
    points = point_coords(ds)
    table, variables = _seed_statistic(ds, points, names, statistic)
    order = point_order(table)
    result = _point_dataset(
        ds, table.iloc[order].reset_index(drop=True), {name: values[order] for name, values in variables.items()}
    )
    for name in names:
        result[name].attrs["cell_methods"] = f"seed: {_CELL_METHODS[statistic]}"
    result["n_seeds"].attrs.update(long_name="number of seeds with a checkpoint at this step")
    return result


def mean_over_seeds(ds: xr.Dataset, metrics: Metrics = None) -> xr.Dataset:
    """Mean over seeds of the pretraining curves, matching points by params, data and step.

    Parameters
    ----------
    ds : xarray.Dataset
        A ddxr Dataset. Every pretraining point counts, wherever it sits: a checkpoint repeated in the prefixes of
        post-training lineages (same ``run_id`` and ``step``) counts once.
    metrics : str, iterable of str or None, optional
        Metrics to aggregate; None for every metric.

    Returns
    -------
    xarray.Dataset
        A Dataset of the same contract with one lineage per (params, data), id ``"{params}/{slug}/mean"``
        (also its ``run_id``), ``seed`` = :data:`AGGREGATED_SEED` (-1), ``learning_rate`` 0.0, ``run_type``
        ``"pretraining"``, ``cumulative_tokens`` and ``cumulative_compute`` averaged (equal across seeds by
        construction), and a point coordinate ``n_seeds`` (int64): the number of seeds with a checkpoint at that
        step. A metric's mean uses the seeds where it was measured (NaN only if none was); metrics keep their dtype
        and attrs plus ``cell_methods = "seed: mean"``.

    Raises
    ------
    SelectionError
        If a metric is unknown or the Dataset holds no pretraining points.
    DdxrError
        If the Dataset lacks a point coordinate.

    See Also
    --------
    std_over_seeds, seed_mean_prefixes
    """
    return _over_seeds(ds, metrics, "mean")


def std_over_seeds(ds: xr.Dataset, metrics: Metrics = None) -> xr.Dataset:
    """Sample standard deviation over seeds (ddof=1) of the pretraining curves, by params, data and step.

    Same layout as :func:`mean_over_seeds`, with lineage ids ``"{params}/{slug}/std"`` and ``cell_methods =
    "seed: standard_deviation"``. A step measured on a single seed has NaN: one seed says nothing about spread.
    """
    return _over_seeds(ds, metrics, "std")


def seed_mean_prefixes(ds: xr.Dataset, metrics: Metrics = None) -> xr.Dataset:
    """Replace the pretraining prefix of every post-training lineage by the seed mean of its base.

    A prefix point (params, data, seed, step) takes the mean over the seeds of (params, data) at that step, as
    :func:`mean_over_seeds` computes it from the pretraining points of ``ds``; its ``run_id`` becomes
    ``"{params}/{slug}/mean"`` and its ``seed`` :data:`AGGREGATED_SEED`. Post-training points and pretraining-only
    lineages are returned unchanged, in the original point order.

    Parameters
    ----------
    ds : xarray.Dataset
        A ddxr Dataset holding the pretraining-only lineages to average (a prefix with no sibling seeds in ``ds``
        averages over itself).
    metrics : str, iterable of str or None, optional
        Metrics to return; None for every metric.

    Returns
    -------
    xarray.Dataset
        The Dataset with the same points and the selected metrics.
    """
    names = metric_names(ds, metrics)
    points = point_coords(ds)
    table, means = _seed_statistic(ds, points, names, "mean")
    prefix = np.flatnonzero(points["pretraining_phase"].to_numpy(dtype=bool) & ~_pretraining_only(points))
    keys = pd.MultiIndex.from_frame(points.iloc[prefix][_SEED_KEYS])
    source = pd.MultiIndex.from_frame(table[_SEED_KEYS]).get_indexer(keys)  # every prefix point is in the mean
    points.loc[prefix, "run_id"] = table["run_id"].to_numpy()[source]
    points.loc[prefix, "seed"] = AGGREGATED_SEED
    variables = {}
    for name in names:
        values = ds[name].to_numpy().astype(_float_dtype(ds, name))
        values[prefix] = means[name][source]
        variables[name] = values
    return _point_dataset(ds, points, variables)


def at_tokens(
    ds: xr.Dataset,
    tokens: ArrayLike,
    metrics: Metrics = None,
    method: Literal["linear", "nearest", "previous"] = "linear",
) -> xr.Dataset:
    """Value of every lineage at given cumulative token counts.

    Only points where a metric was measured count for that metric; no value is extrapolated.

    Parameters
    ----------
    ds : xarray.Dataset
        A ddxr Dataset.
    tokens : float or iterable of float
        Cumulative token counts.
    metrics : str, iterable of str or None, optional
        Metrics to evaluate; None for every metric.
    method : {"linear", "nearest", "previous"}, default "linear"
        ``"linear"``: linear interpolation between the measured points on either side; NaN outside the metric's
        first and last measured token of the lineage. ``"previous"``: the last measured value at or before the
        token (a step function). ``"nearest"``: the measured value nearest in tokens, the earlier one on a tie.
        ``"previous"`` and ``"nearest"`` are NaN outside the lineage's first and last token. When several points
        share a token count (a DPO run starting where its SFT parent ended), the last in training order counts.

    Returns
    -------
    xarray.Dataset
        Dims (lineage, tokens), lineages sorted by id; lineage coordinates ``params``, ``data``,
        ``learning_rate``, ``seed`` and ``run_type`` (the leaf run's); metrics keep their dtype and attrs.

    Raises
    ------
    SelectionError
        If a metric is unknown or the Dataset holds no points.
    DdxrError
        If ``method`` is unknown or the Dataset lacks a point coordinate.
    """
    _check_choice("method", method, ("linear", "nearest", "previous"))
    names = metric_names(ds, metrics)
    queries = np.atleast_1d(np.asarray(tokens, dtype=np.float64))
    if queries.ndim != 1:
        raise DdxrError(f"tokens must be a number or a flat sequence of numbers, got an array of shape {queries.shape}")
    lineages = _Lineages.of(ds)
    variables = {}
    for batch in _batches(names, max(len(lineages.order), lineages.starts.size * queries.size)):
        result = _interpolate(lineages, metric_matrix(ds, batch, lineages.order), queries, method)
        variables |= {name: result[..., column] for column, name in enumerate(batch)}
    token_coord = {"tokens": ("tokens", queries, {**ds["cumulative_tokens"].attrs, "long_name": "cumulative tokens"})}
    return _lineage_dataset(ds, lineages.table(), variables, ("lineage", "tokens"), token_coord)


def _phase_mask(points: pd.DataFrame, phase: Phase) -> np.ndarray:
    pretraining = points["pretraining_phase"].to_numpy(dtype=bool)
    return {"pretraining": pretraining, "posttraining": ~pretraining, "any": np.ones_like(pretraining)}[phase]


def final(ds: xr.Dataset, phase: Phase = "pretraining", metrics: Metrics = None) -> xr.Dataset:
    """Each lineage's last measured value of each metric within a training phase.

    Parameters
    ----------
    ds : xarray.Dataset
        A ddxr Dataset.
    phase : {"pretraining", "posttraining", "any"}, default "pretraining"
        Points considered: ``pretraining_phase`` True, False, or all. For a post-training lineage the pretraining
        final is its base checkpoint's value.
    metrics : str, iterable of str or None, optional
        Metrics to read; None for every metric.

    Returns
    -------
    xarray.Dataset
        Dim ``lineage`` (sorted by id), holding the lineages with at least one point in the phase; coordinates
        ``params``, ``data``, ``learning_rate``, ``seed``, ``run_type`` (the leaf run's) and, per metric,
        ``<metric>_cumulative_tokens``: the cumulative tokens of the point that value comes from. Both are NaN where
        the metric was never measured in the phase.

    Raises
    ------
    SelectionError
        If a metric is unknown or the Dataset holds no points.
    DdxrError
        If ``phase`` is unknown or the Dataset lacks a point coordinate.
    """
    _check_choice("phase", phase, ("pretraining", "posttraining", "any"))
    names = metric_names(ds, metrics)
    lineages = _Lineages.of(ds)
    in_phase = _phase_mask(lineages.points, phase)
    present = np.bincount(lineages.codes[in_phase], minlength=lineages.starts.size) > 0
    tokens = lineages.tokens
    variables, coords = {}, {}
    for batch in _batches(names, len(tokens)):
        values = metric_matrix(ds, batch, lineages.order)
        values[~in_phase] = np.nan
        last = _last_measured(values)[lineages.ends][present]
        found = last >= lineages.starts[present, None]
        rows = np.maximum(last, 0)
        chosen = np.where(found, values[rows, np.arange(len(batch))], np.nan)
        at = np.where(found, tokens[rows], np.nan)
        for column, name in enumerate(batch):
            variables[name] = chosen[:, column]
            coords[f"{name}_cumulative_tokens"] = ("lineage", at[:, column], ds["cumulative_tokens"].attrs)
    table = lineages.table().loc[present].reset_index(drop=True)
    return _lineage_dataset(ds, table, variables, ("lineage",), coords)


@dataclass(frozen=True)
class RankingAgreement:
    """How well the order of data recipes at one scale predicts their order at another.

    ``float(result)`` is ``result.value``.

    Attributes
    ----------
    measure : str
        ``"decision_accuracy"``, ``"spearman"`` or ``"kendall"``.
    value : float
        The measure.
    n_recipes : int
        Recipes measured at both scales.
    n_pairs : int
        Recipe pairs compared, ``n_recipes * (n_recipes - 1) / 2``.
    n_ties : int
        Pairs whose order is a tie at either scale.
    dropped_recipes : tuple of str
        Recipes asked for or present at one scale but not measured at both, left out of both.

    Examples
    --------
    >>> float(RankingAgreement("decision_accuracy", 0.75, 4, 6, 1, ()))
    0.75
    """

    measure: str
    value: float
    n_recipes: int
    n_pairs: int
    n_ties: int
    dropped_recipes: tuple[str, ...]

    def __float__(self) -> float:
        """Return the agreement value, so the result reads as a number."""
        return float(self.value)


def _pair_orders(values: np.ndarray) -> np.ndarray:
    """Order of every recipe pair (i < j) from a (recipe, seed) array: +1 if i is better, -1 if worse, 0 a tie.

    Each seed measured on both recipes votes with the sign of their difference; the order is the sign of the sum of
    votes, so one column gives the plain order and several give a majority vote.
    """
    first, second = np.triu_indices(len(values), k=1)
    return np.sign(np.nansum(np.sign(values[first] - values[second]), axis=1))


def _compare(small: pd.DataFrame, target: pd.DataFrame, measure: str, what: str) -> RankingAgreement:
    """Agreement of two (recipe × seed) tables of oriented values (higher is better at both)."""
    kept = small.notna().any(axis=1) & target.notna().any(axis=1)
    if kept.sum() < 2:
        raise SelectionError(
            f"{what} needs at least two recipes measured at both scales; found {int(kept.sum())} "
            f"({', '.join(kept.index[kept]) or 'none'}) — choose another metric, size or step"
        )
    small_values, target_values = small.loc[kept].to_numpy(), target.loc[kept].to_numpy()
    small_orders, target_orders = _pair_orders(small_values), _pair_orders(target_values)
    if measure == "decision_accuracy":  # a tie at either scale is a coin flip: half an agreement
        value = float(np.mean((1.0 + small_orders * target_orders) / 2.0))
    elif measure == "kendall":  # tau-b from the pair orders
        denominator = np.sqrt(np.sum(small_orders**2) * np.sum(target_orders**2))
        value = float(np.sum(small_orders * target_orders) / denominator) if denominator else np.nan
    else:  # Spearman: Pearson correlation of average ranks
        value = float(pd.Series(small_values[:, 0]).rank().corr(pd.Series(target_values[:, 0]).rank()))
    return RankingAgreement(
        measure=measure,
        value=value,
        n_recipes=int(kept.sum()),
        n_pairs=small_orders.size,
        n_ties=int(np.count_nonzero((small_orders == 0) | (target_orders == 0))),
        dropped_recipes=tuple(kept.index[~kept]),
    )


def _scale_mask(points: pd.DataFrame, params: str, step: int | None) -> np.ndarray:
    """Points of the pretraining-only lineages of one size, at one step if given."""
    _check_params(params)
    pretraining_only = _pretraining_only(points)
    mask = pretraining_only & (points["params"] == params).to_numpy()
    if not mask.any():
        present = [label for label in PARAMS if label in set(points.loc[pretraining_only, "params"])]
        raise SelectionError(
            f"no pretraining-only lineage with params={params!r} in the Dataset; sizes present: "
            f"{', '.join(present) or 'none'} — choose one of them or build with that size"
        )
    if step is None:
        return mask
    steps = np.unique(points.loc[mask, "step"])
    mask &= (points["step"] == step).to_numpy()
    if not mask.any():
        raise SelectionError(
            f"no pretraining checkpoint at step {step} for params={params!r}; steps present: "
            f"{', '.join(map(str, steps[:20]))}{' …' if steps.size > 20 else ''} — pick one of them"
        )
    return mask


def _scale_values(
    ds: xr.Dataset, points: pd.DataFrame, metric: str, params: str, step: int | None, tokens: float | None
) -> pd.DataFrame:
    """Recipe × seed table of a metric for one size, oriented so that higher is better.

    The value is the final one, the one at ``step``, or the one at ``tokens`` (linear interpolation).
    """
    subset = ds.isel(point=np.flatnonzero(_scale_mask(points, params, step)))
    if tokens is None:
        result = final(subset, "pretraining", metric)
    else:
        result = at_tokens(subset, tokens, metric).isel(tokens=0)
    sign = 1.0 if _higher_is_better(ds, metric) else -1.0
    values = pd.Series(sign * result[metric].to_numpy().astype(np.float64), name="value")
    keys = [pd.Series(result[name].to_numpy(), name=name) for name in ("data", "seed")]
    return values.groupby(keys).mean().unstack("seed")


def _recipe_tables(
    ds: xr.Dataset,
    metric: str,
    small: str,
    target: str,
    target_metric: str | None,
    small_step: int | None,
    small_tokens: float | None,
    data: Iterable[str] | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Oriented recipe × seed tables at the small and the target scale, on a common recipe index."""
    if small_step is not None and small_tokens is not None:
        raise InvalidArgumentError(
            "give small_step or small_tokens, not both: they locate the same small-scale checkpoint"
        )
    points = point_coords(ds)
    small_table = _scale_values(ds, points, metric, small, small_step, small_tokens)
    target_table = _scale_values(ds, points, target_metric or metric, target, None, None)
    recipes = small_table.index.union(target_table.index) if data is None else pd.Index(list(data), dtype="str")
    return small_table.reindex(recipes), target_table.reindex(recipes)


def decision_accuracy(
    ds: xr.Dataset,
    metric: str,
    small: str,
    target: str = "1B",
    *,
    target_metric: str | None = None,
    small_step: int | None = None,
    small_tokens: float | None = None,
    seeds: Literal["mean", "majority"] = "mean",
    data: Iterable[str] | None = None,
) -> RankingAgreement:
    """DataDecide's decision accuracy: the share of recipe pairs ordered alike at a small and a target scale.

    Each pretraining-only lineage of size ``small`` gives its value of ``metric`` at its final checkpoint (last
    measured value), at ``small_step`` or at ``small_tokens``; each of size ``target`` its final value of
    ``target_metric``. Values are oriented by each metric's ``higher_is_better`` attr, so a lower-is-better proxy
    (perplexity) can predict a higher-is-better target (accuracy).

    Parameters
    ----------
    ds : xarray.Dataset
        A ddxr Dataset with pretraining-only lineages of both sizes.
    metric : str
        Metric ranking the recipes at the small scale.
    small, target : str
        Size labels (``"150M"``, ``"1B"``).
    target_metric : str, optional
        Metric ranking the recipes at the target scale; ``metric`` by default.
    small_step : int, optional
        Small-scale checkpoint step instead of the final one; a seed without that checkpoint counts as missing.
    small_tokens : float, optional
        Small-scale cumulative tokens instead of the final checkpoint (linear interpolation, see :func:`at_tokens`).
    seeds : {"mean", "majority"}, default "mean"
        ``"mean"``: average each recipe over its measured seeds, then order the pair. ``"majority"``: every seed
        measured on both recipes votes for the pair's order; the order is the majority, a tied vote is a tie.
        Each scale uses its own seeds (1B has five, smaller sizes three).
    data : iterable of str, optional
        Recipes to compare; all recipes present by default.

    Returns
    -------
    RankingAgreement
        ``value`` = mean over pairs of 1 (same order), 0 (opposite order) or 1/2 (a tie at either scale: breaking
        it at random agrees half the time). Recipes not measured at both scales are dropped from both and listed
        in ``dropped_recipes``.

    Raises
    ------
    SelectionError
        For an unknown metric or size, a size or step without pretraining-only lineages, or fewer than two
        recipes measured at both scales.
    DdxrError
        For a metric without ``higher_is_better``, an unknown ``seeds`` choice, or both ``small_step`` and
        ``small_tokens``.
    """
    _check_choice("seeds", seeds, ("mean", "majority"))
    small_table, target_table = _recipe_tables(ds, metric, small, target, target_metric, small_step, small_tokens, data)
    if seeds == "mean":
        small_table, target_table = small_table.mean(axis=1).to_frame(), target_table.mean(axis=1).to_frame()
    return _compare(small_table, target_table, "decision_accuracy", f"decision accuracy of {metric!r}")


def rank_correlation(
    ds: xr.Dataset,
    metric: str,
    small: str,
    target: str = "1B",
    method: Literal["spearman", "kendall"] = "spearman",
    *,
    target_metric: str | None = None,
    small_step: int | None = None,
    small_tokens: float | None = None,
    data: Iterable[str] | None = None,
) -> RankingAgreement:
    """Rank correlation between the recipes' seed-mean values at a small and at a target scale.

    Values are chosen and oriented as in :func:`decision_accuracy` (so +1 means the small scale orders the recipes
    exactly as the target does, even for a lower-is-better proxy), then averaged over seeds.

    Parameters
    ----------
    method : {"spearman", "kendall"}, default "spearman"
        Spearman's rho (Pearson correlation of average ranks) or Kendall's tau-b; both are computed without scipy
        and match ``scipy.stats.spearmanr`` and ``scipy.stats.kendalltau``, ties included.

    Other parameters are those of :func:`decision_accuracy`.

    Returns
    -------
    RankingAgreement
        ``value`` is the correlation (NaN if every recipe ties at a scale).
    """
    _check_choice("method", method, ("spearman", "kendall"))
    small_table, target_table = _recipe_tables(ds, metric, small, target, target_metric, small_step, small_tokens, data)
    return _compare(
        small_table.mean(axis=1).to_frame(), target_table.mean(axis=1).to_frame(), method, f"{method} of {metric!r}"
    )


def _final_frame(ds: xr.Dataset, phase: Phase, metric: str) -> pd.DataFrame:
    result = final(ds, phase, metric)
    columns = ["lineage", *_LINEAGE_COORDS, metric, f"{metric}_cumulative_tokens"]
    return pd.DataFrame({name: result[name].to_numpy() for name in columns})


def posttraining_decision_accuracy(
    ds: xr.Dataset,
    metric: str,
    params: str | None = None,
    run_type: Literal["supervised_ft", "dpo"] = "supervised_ft",
    *,
    aggregate: Literal["best", "mean"] = "best",
    data: Iterable[str] | None = None,
) -> RankingAgreement:
    """Measure whether the pretraining order of recipes survives post-training (decision accuracy between the two).

    For the post-training lineages of one size whose leaf run has ``run_type``, each recipe is scored twice:
    before, by the mean over its distinct base checkpoints of the pretraining final value (the base checkpoint's);
    after, by aggregating the post-training final values of its lineages. The two orders are compared pair by pair
    as in :func:`decision_accuracy` (ties count one half).

    Parameters
    ----------
    ds : xarray.Dataset
        A ddxr Dataset with post-training lineages.
    metric : str
        Metric measured in both phases (``olmes_9_average`` or a task's primary score).
    params : str, optional
        Size to compare within; may be omitted when the selected lineages have a single size.
    run_type : {"supervised_ft", "dpo"}, default "supervised_ft"
        Run type of the lineages' leaf run.
    aggregate : {"best", "mean"}, default "best"
        How a recipe's several post-training lineages (learning rates, budgets, bases) make one score: the best
        value (by ``higher_is_better``: each recipe at its tuned learning rate) or their mean.
    data : iterable of str, optional
        Recipes to compare; all recipes present by default.

    Returns
    -------
    RankingAgreement
        Recipes without a measured value in either phase are dropped from both and listed.

    Raises
    ------
    SelectionError
        For an unknown metric or size, no matching post-training lineages, several sizes without ``params``, or
        fewer than two recipes measured in both phases.
    DdxrError
        For an unknown ``run_type`` or ``aggregate`` or a metric without ``higher_is_better``.
    """
    _check_choice("run_type", run_type, ("supervised_ft", "dpo"))
    _check_choice("aggregate", aggregate, ("best", "mean"))
    sign = 1.0 if _higher_is_better(ds, metric) else -1.0
    after = _final_frame(ds, "posttraining", metric)
    after = after.loc[after["run_type"] == run_type]
    if params is not None:
        _check_params(params)
        after = after.loc[after["params"] == params]
    sizes = [label for label in PARAMS if label in set(after["params"])]
    if len(sizes) != 1:
        found = f"sizes {', '.join(sizes)}: pass params= to pick one" if sizes else "none — check run_type and params"
        raise SelectionError(f"post-training decision accuracy compares {run_type} lineages of one size; found {found}")
    before = _final_frame(ds, "pretraining", metric).set_index("lineage").loc[after["lineage"]]
    # lineages sharing a base repeat its value: one vote per base checkpoint (seed and tokens)
    bases = before.drop_duplicates(["data", "seed", f"{metric}_cumulative_tokens"])
    small = (sign * bases.groupby("data")[metric].mean()).to_frame()
    scores = (sign * after[metric]).groupby(after["data"])
    target = (scores.max() if aggregate == "best" else scores.mean()).to_frame()
    recipes = small.index.union(target.index) if data is None else pd.Index(list(data), dtype="str")
    what = f"post-training decision accuracy of {metric!r} at {sizes[0]}"
    return _compare(small.reindex(recipes), target.reindex(recipes), "decision_accuracy", what)
