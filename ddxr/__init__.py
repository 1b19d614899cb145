"""ddxr: language-model training runs as one labelled xarray Dataset.

Public API: :class:`DataDecideNext`, :func:`open_dataset`, :func:`open_runs` and the error types. Importing ddxr
registers the ``ds.ddxr`` accessor.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ddxr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from ddxr import accessor as _accessor  # noqa: F401  (registers ds.ddxr)
from ddxr.cache import open_dataset, open_runs
from ddxr.errors import BuildError, CacheError, DdxrError, LinkError, SelectionError, SourceError
from ddxr.facade import DataDecideNext

__all__ = [
    "BuildError",
    "CacheError",
    "DataDecideNext",
    "DdxrError",
    "LinkError",
    "SelectionError",
    "SourceError",
    "__version__",
    "open_dataset",
    "open_runs",
]
