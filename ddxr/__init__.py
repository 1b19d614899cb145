"""ddxr: language-model training runs as one labelled xarray Dataset.

Reading needs only :func:`open_dataset`, :func:`open_runs` and the ``ds.ddxr`` accessor (registered on import);
building from sources needs :class:`DataDecideNext` and :class:`WandBStore`, which load SQLAlchemy, psycopg2 and
pyarrow, so they are imported on first use and ``import ddxr`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ddxr import accessor as _accessor  # noqa: F401  (registers ds.ddxr)
from ddxr._version import __version__
from ddxr.cache import open_dataset, open_runs
from ddxr.errors import (
    BuildError,
    CacheError,
    DdxrError,
    InvalidArgumentError,
    LinkError,
    SelectionError,
    SourceError,
)

if TYPE_CHECKING:
    from ddxr.facade import DataDecideNext
    from ddxr.sources.wandb_store import WandBStore
    from ddxr.zarr_store import open_zarr, open_zarr_runs, to_zarr

#: The build layer's public names and their modules, imported when first used (PEP 562).
_LAZY = {
    "DataDecideNext": "ddxr.facade",
    "WandBStore": "ddxr.sources.wandb_store",
    "open_zarr": "ddxr.zarr_store",
    "open_zarr_runs": "ddxr.zarr_store",
    "to_zarr": "ddxr.zarr_store",
}

__all__ = [
    "BuildError",
    "CacheError",
    "DataDecideNext",
    "DdxrError",
    "InvalidArgumentError",
    "LinkError",
    "SelectionError",
    "SourceError",
    "WandBStore",
    "__version__",
    "open_dataset",
    "open_runs",
    "open_zarr",
    "open_zarr_runs",
    "to_zarr",
]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'ddxr' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
