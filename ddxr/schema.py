"""The Dataset contract, in one place: dimension, index levels, point coordinates, keys, run types, lineage ids.

Every module that builds, stores, selects or exports a ddxr Dataset takes these names from here, and the checks
below are the only spelling of the contract's rules (docs/dataset.md §2):

- one dimension, :data:`POINT_DIM`, with a MultiIndex over :data:`LEVELS` (no missing values on any level);
- the non-index point coordinates :data:`COORDS`;
- every point unique by :data:`KEYS`;
- ``run_type`` one of :data:`RUN_TYPES`; pretraining lineages named by :func:`pretraining_lineage_id`.

This module sits below everything else (it imports only :mod:`ddxr.errors` and :mod:`ddxr.vocabulary`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from xarray.indexes import PandasMultiIndex

from ddxr.coders import factorize
from ddxr.errors import BuildError
from ddxr.vocabulary import PRETRAINING_LEARNING_RATE, RECIPES

#: The dimension every training point lies on.
POINT_DIM = "point"
#: Levels of the ``point`` MultiIndex, in index order.
LEVELS = ("lineage", "params", "data", "learning_rate", "cumulative_tokens")
#: Levels that hold floats and are matched with a relative tolerance.
FLOAT_LEVELS = ("learning_rate", "cumulative_tokens")
#: Point coordinates outside the index, in order.
COORDS = ("run_id", "run_type", "seed", "step", "pretraining_phase", "cumulative_compute", "tokens_estimated")
#: Every point coordinate of the contract: the levels, then the other coordinates (the column order of exports).
POINT_COORDS = (*LEVELS, *COORDS)
#: Every point is unique by these coordinates (a DPO lineage holds pretraining, SFT and DPO points).
KEYS = ("lineage", "run_id", "step")
#: Run types in the order they follow each other along a lineage.
RUN_TYPES = ("pretraining", "supervised_ft", "dpo")
#: Dimension and index of the runs table.
RUN_DIM, RUN_INDEX = "run", "run_id"

_SHOWN = 3  # examples quoted in an error message


def pretraining_lineage_id(params: pd.Series, data: pd.Series, seed: pd.Series | str) -> pd.Series:
    """Lineage id of pretraining runs: ``{params}/{slug}/seed{seed}``.

    The recipe's HF slug stands in for its display name because three display names contain ``/``; a name outside
    the crosswalk keeps its own spelling. A string ``seed`` is used as the suffix itself (``"mean"``).

    Examples
    --------
    >>> pretraining_lineage_id(pd.Series(["150M"]), pd.Series(["Dolma1.7"]), pd.Series([0])).tolist()
    ['150M/dolma1_7/seed0']
    """
    slug = data.map(RECIPES["slug"]).fillna(data)
    suffix = seed if isinstance(seed, str) else "seed" + seed.astype("int64").astype(str)
    return params.astype(str) + "/" + slug + "/" + suffix


def check_levels(names: list, where: str) -> None:
    """Refuse an index whose level names are not exactly :data:`LEVELS` (in any order).

    Raises
    ------
    BuildError
        If a level is missing or an unknown one is present.
    """
    if set(names) != set(LEVELS) or len(names) != len(LEVELS):
        raise BuildError(
            f"{where} index {POINT_DIM!r}: expected levels {list(LEVELS)}, found {list(names)}; "
            "build it with ddxr.index.point_coordinates"
        )


def check_complete(missing: Mapping[str, int], where: str) -> None:
    """Refuse missing level values (``missing``: count per level): NaN breaks the encoding and ``.sel``.

    Raises
    ------
    BuildError
        If any count is positive.
    """
    if any(missing.values()):
        found = ", ".join(f"{name}: {count}" for name, count in missing.items() if count)
        raise BuildError(
            f"{where}: index levels must not hold missing values (NaN breaks encoding and .sel), found {found}; "
            f"use sentinels (learning_rate {PRETRAINING_LEARNING_RATE} for pretraining-only lineages)"
        )


def validate_points(points: pd.DataFrame, where: str = "point table") -> None:
    """Check the contract on a table with one row per point, before it becomes a Dataset.

    Parameters
    ----------
    points : pandas.DataFrame
        Columns :data:`LEVELS` and :data:`KEYS` at least.
    where : str
        What the table is, quoted in errors.

    Raises
    ------
    BuildError
        If a level or key column is missing, a level holds missing values, or a key occurs twice.
    """
    absent = [name for name in dict.fromkeys((*LEVELS, *KEYS)) if name not in points.columns]
    if absent:
        raise BuildError(f"{where}: expected columns {list(LEVELS)} and {list(KEYS)}, missing {absent}")
    check_complete(points[list(LEVELS)].isna().sum().to_dict(), where)
    keys = points[list(KEYS)]
    duplicated = _shared_keys([_key_codes(column) for _, column in keys.items()])
    if duplicated.any():
        raise _duplicates(where, keys[duplicated])


def validate_dataset(ds: xr.Dataset, where: str = "curves Dataset") -> None:
    """Check the contract on a Dataset: a complete MultiIndex over ``point`` and points unique by :data:`KEYS`.

    Parameters
    ----------
    ds : xarray.Dataset
        A Dataset with a MultiIndex (ddxr's or stock) over :data:`POINT_DIM`.
    where : str
        What the Dataset is, quoted in errors.

    Raises
    ------
    BuildError
        If the index is missing or has other levels, a level holds missing values, a key coordinate is missing, or
        two points share a key.
    """
    index = ds.xindexes.get(POINT_DIM)
    if not isinstance(index, PandasMultiIndex):
        raise BuildError(
            f"{where}: expected a MultiIndex over {POINT_DIM!r} with levels {list(LEVELS)}, found "
            f"{type(index).__name__ if index is not None else 'no index'}; build it with ddxr.index.point_coordinates"
        )
    names = list(index.index.names)
    check_levels(names, where)
    check_complete({name: int((codes < 0).sum()) for name, codes in zip(names, index.index.codes, strict=True)}, where)
    absent = [name for name in KEYS if name not in ds.coords or ds[name].dims != (POINT_DIM,)]
    if absent:
        raise BuildError(f"{where}: expected point coordinates {list(KEYS)} along {POINT_DIM!r}, missing {absent}")
    # integer keys compare much faster than two million strings: the lineage codes stand in for the lineage
    lineage = index.index.codes[names.index("lineage")]
    duplicated = _shared_keys([lineage, *(_key_codes(ds[name].values) for name in KEYS[1:])])
    if duplicated.any():
        raise _duplicates(where, pd.DataFrame({name: ds[name].values[duplicated] for name in KEYS}))


def _key_codes(values: pd.Series | np.ndarray) -> np.ndarray:
    """Return integers equal exactly where the values are (missing values equal each other, as in ``duplicated``)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy()
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iub":
        return np.asarray(values)
    return factorize(np.asarray(values))[0]  # strings repeat along point: hash one per run of equal neighbours


def _shared_keys(keys: Sequence[np.ndarray]) -> np.ndarray:
    """Mask the rows whose key (one integer array per key column) another row shares: ``duplicated(keep=False)``.

    One sort and a comparison of neighbours, several times faster than hashing millions of key tuples.
    """
    order = np.lexsort(keys[::-1])
    same = np.ones(max(len(order) - 1, 0), dtype=bool)
    for key in keys:
        ordered = key[order]
        same &= ordered[1:] == ordered[:-1]
    shared = np.zeros(len(order), dtype=bool)
    shared[1:] = same
    shared[:-1] |= same
    mask = np.empty_like(shared)
    mask[order] = shared
    return mask


def _duplicates(where: str, shared: pd.DataFrame) -> BuildError:
    examples = shared.drop_duplicates().head(_SHOWN).to_dict("records")
    return BuildError(
        f"{where}: expected points unique by {KEYS}, found {len(shared)} points sharing a key, e.g. {examples}; "
        "drop or merge the duplicates"
    )
