"""The managers' tables → the curves Dataset (dim ``point``) and the runs Dataset (dim ``run``), docs/dataset.md §2.

Metric variables are gathered column by column from two tables through row pointers (pretraining checkpoints and
end-of-run evaluations), so the wide point × metric matrix is never built in pandas and each variable is float32
from the start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ddxr.index import point_coordinates
from ddxr.managers.evaluations import HISTORY_VARIABLES
from ddxr.schema import COORDS, LEVELS, POINT_DIM, validate_points

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


def _gather(values: pd.Series, rows: np.ndarray, present: np.ndarray, out: np.ndarray) -> None:
    out[present] = values.to_numpy(np.float32, na_value=np.nan)[rows[present]]


def assemble_curves(
    points: pd.DataFrame,
    pretraining_metrics: pd.DataFrame,
    posttraining_metrics: pd.DataFrame,
    variables: Sequence[str],
    variable_attrs: Callable[[str], dict],
    attrs: dict | None = None,
) -> xr.Dataset:
    """Build the curves Dataset.

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

    Returns
    -------
    xarray.Dataset
    """
    points = points.sort_values(
        ["lineage", "pretraining_phase", "cumulative_tokens", "step"],
        ascending=[True, False, True, True],
        kind="stable",
    ).reset_index(drop=True)
    validate_points(points)
    pretraining_rows = points["pretraining_row"].to_numpy(np.int64)
    has_pretraining = pretraining_rows >= 0
    eval_rows = posttraining_metrics.index.get_indexer(points["eval_run"])
    has_eval = eval_rows >= 0

    data_vars = {}
    for name in variables:
        values = np.full(len(points), np.nan, dtype=np.float32)
        if name in HISTORY_VARIABLES:
            values[:] = points[name].to_numpy(np.float32)
        if name in pretraining_metrics and name != "train_loss":
            _gather(pretraining_metrics[name], pretraining_rows, has_pretraining, values)
        if name in posttraining_metrics:
            _gather(posttraining_metrics[name], eval_rows, has_eval, values)
        data_vars[name] = xr.Variable(POINT_DIM, values, attrs=variable_attrs(name))

    coords = point_coordinates(points[list(LEVELS)])
    dataset = xr.Dataset(data_vars, coords=coords, attrs=attrs or {})
    dataset = dataset.assign_coords({name: (POINT_DIM, _coordinate_values(points[name])) for name in COORDS})
    for name, coord_attrs in _COORD_ATTRS.items():
        dataset[name].attrs.update(coord_attrs)
    return dataset


def _coordinate_values(column: pd.Series) -> np.ndarray:
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
        data_vars[name] = ("run", values)
    dataset = xr.Dataset(data_vars, coords={"run_id": ("run", table.index.astype(str).to_numpy(dtype=object))})
    dataset = dataset.set_xindex("run_id")
    dataset.attrs["missing_values"] = f'strings "", integers {MISSING_INT}, floats NaN, booleans None; timestamps UTC'
    return dataset
