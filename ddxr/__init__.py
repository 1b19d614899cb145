"""ddxr: language-model training runs as one labelled xarray Dataset."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ddxr.errors import BuildError, CacheError, DdxrError, LinkError, SelectionError, SourceError

try:
    __version__ = version("ddxr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BuildError",
    "CacheError",
    "DdxrError",
    "LinkError",
    "SelectionError",
    "SourceError",
    "__version__",
]
