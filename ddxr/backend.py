"""xarray backend for ddxr cache files: ``xr.open_dataset(path, engine="ddxr")``, ``xr.open_datatree(...)``.

Registered under the ``xarray.backends`` entry point group as ``ddxr``, so with ddxr installed::

    curves = xr.open_dataset("cache/ddxr-0123456789abcdef.nc", engine="ddxr")  # == ddxr.open_dataset(path)
    tree = xr.open_datatree("cache/ddxr-0123456789abcdef.nc", engine="ddxr")  # curves at "/", runs at "/runs"

Plain ``xr.open_dataset(path)`` keeps using xarray's netCDF4 engine (the standard engines are tried first); what it
shows is described in ``docs/file_format.md``. This module imports nothing heavy at import time: xarray loads every
installed backend when it lists engines.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import xarray as xr
from xarray.backends import BackendEntrypoint

_SUFFIXES = (".nc", ".nc4", ".netcdf")


class DdxrBackendEntrypoint(BackendEntrypoint):
    """Open ddxr cache files with xarray: the curves with ddxr's index on ``point``, and the runs table.

    ``open_dataset`` returns exactly :func:`ddxr.open_dataset`, ``open_datatree`` a tree with the curves at the root
    and the runs table (:func:`ddxr.open_runs`) as the child ``runs``.

    A tree node inherits its parent's indexed coordinates, so in the tree the runs columns named like a level of the
    curves' index (``params``, ``data``, ``learning_rate``) would be hidden behind the curves' point coordinates
    (``tree["runs"]["learning_rate"]`` would silently answer with the curves' values). The tree therefore names them
    ``run_params``, ``run_data``, ``run_learning_rate``; everything else in ``tree["runs"]`` is exactly
    :func:`ddxr.open_runs`.
    """

    description = "ddxr cache files: training curves with a selectable point index, and their runs table"
    open_dataset_parameters = ("filename_or_obj", "drop_variables")
    supports_groups = True

    def open_dataset(  # type: ignore[override]  # xarray's signature takes **kwargs; ours names what it reads
        self,
        filename_or_obj: str | os.PathLike[Any],
        *,
        drop_variables: str | Iterable[str] | None = None,
    ) -> xr.Dataset:
        """Open the curves of a cache file, as :func:`ddxr.open_dataset` returns them.

        Parameters
        ----------
        filename_or_obj : str or os.PathLike
            Path of a ddxr cache file.
        drop_variables : str or iterable of str, optional
            Metrics or point coordinates (not index levels) to leave out. (``chunks=`` is xarray's business.)

        Raises
        ------
        ddxr.errors.CacheError
            If the file is not a readable ddxr cache of this schema.
        """
        from ddxr.cache import open_dataset  # the build stack loads only when a file is opened

        return open_dataset(_path(filename_or_obj), drop_variables=drop_variables)

    def open_datatree(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[Any],
        *,
        drop_variables: str | Iterable[str] | None = None,
    ) -> xr.DataTree:
        """Open the curves at the root and the runs table as child ``runs``.

        ``drop_variables`` applies to both groups (a name missing from a group is ignored there).
        """
        return xr.DataTree.from_dict(self.open_groups_as_dict(filename_or_obj, drop_variables=drop_variables))

    def open_groups_as_dict(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[Any],
        *,
        drop_variables: str | Iterable[str] | None = None,
    ) -> dict[str, xr.Dataset]:
        """Open ``{"/": curves, "/runs": runs}``, for :func:`xarray.open_groups`."""
        from ddxr.cache import RUNS_GROUP, open_dataset, open_runs

        path = _path(filename_or_obj)
        names = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables or [])
        curves = open_dataset(path, drop_variables=names or None)
        runs = open_runs(path, drop_variables=names or None)
        return {"/": curves, f"/{RUNS_GROUP}": runs.rename(inherited_names(curves, runs))}

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Tell whether ``filename_or_obj`` is a path to a cache file ddxr wrote."""
        if not isinstance(filename_or_obj, str | os.PathLike) or Path(filename_or_obj).suffix not in _SUFFIXES:
            return False
        from ddxr.cache import is_ddxr_cache

        return is_ddxr_cache(filename_or_obj)


def inherited_names(parent: xr.Dataset, child: xr.Dataset) -> dict[str, str]:
    """Return renames that keep ``child``'s variables visible under ``parent`` in a tree: ``name`` → ``run_<name>``.

    Examples
    --------
    >>> parent = xr.Dataset(coords={"params": ("point", ["4M"])}).set_xindex("params")
    >>> inherited_names(parent, xr.Dataset({"params": ("run", ["4M"]), "state": ("run", ["finished"])}))
    {'params': 'run_params'}
    """
    return {str(name): f"run_{name}" for name in child.variables if name in parent.xindexes}


def _path(filename_or_obj: Any) -> Path:
    if not isinstance(filename_or_obj, str | os.PathLike):
        from ddxr.errors import CacheError

        raise CacheError(
            f"engine='ddxr' opens ddxr cache files by path, found {type(filename_or_obj).__name__}; pass the path"
        )
    return Path(filename_or_obj)
