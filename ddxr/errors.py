"""ddxr's exception types.

Messages follow one shape: what was expected, what was found, where (file, run, column), and what to do.
"""

from __future__ import annotations


class DdxrError(Exception):
    """Base class of every error ddxr raises on purpose."""


class InvalidArgumentError(DdxrError, ValueError):
    """An argument has an invalid value or type (a ``ValueError``, as xarray's argument errors are).

    Examples
    --------
    >>> from ddxr import WandBStore
    >>> try:
    ...     WandBStore("sqlite://", chunk_size=0)
    ... except ValueError as error:
    ...     print(error)
    chunk_size must be a positive integer, got 0
    """


class SourceError(DdxrError):
    """An input (DataDecide file, W&B store) is missing, unreachable or malformed."""


class LinkError(DdxrError):
    """A post-training run cannot be tied to its pretraining base or parent run."""


class BuildError(DdxrError):
    """The assembled Dataset would break its contract (duplicate points, missing index values)."""


class SelectionError(DdxrError, KeyError):
    """A label selection names an unknown level or matches nothing it must match."""

    def __str__(self) -> str:
        """Return the message as written (KeyError would quote it; it is prose, not a key)."""
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class CacheError(DdxrError):
    """A cache file is unreadable, truncated, corrupt or written by a newer schema."""
