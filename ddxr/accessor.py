"""The ``ds.ddxr`` accessor: one-line wrappers over ddxr's functions (xarray-einstats' pattern).

Each method's docstring points to the function it calls; the accessor stores nothing but the Dataset.
"""

from __future__ import annotations

import xarray as xr

from ddxr import analysis, frames, index


@xr.register_dataset_accessor("ddxr")
class DdxrAccessor:
    """Selection, export and analyses of a ddxr curves Dataset, as ``ds.ddxr.<method>``."""

    def __init__(self, dataset: xr.Dataset) -> None:
        self._ds = dataset

    def select(self, **labels) -> xr.Dataset:
        """Select points by index levels or point coordinates; see :func:`ddxr.index.select`."""
        return index.select(self._ds, **labels)

    def to_frame(self, metrics=None, melt: bool = False, dropna: bool = True, prefix: str = "shared", runs=None):
        """Long DataFrame for plotting; see :func:`ddxr.frames.to_frame`."""
        return frames.to_frame(self._ds, metrics=metrics, melt=melt, dropna=dropna, prefix=prefix, runs=runs)

    def mean_over_seeds(self, metrics=None) -> xr.Dataset:
        """Seed means of pretraining lineages; see :func:`ddxr.analysis.mean_over_seeds`."""
        return analysis.mean_over_seeds(self._ds, metrics=metrics)

    def std_over_seeds(self, metrics=None) -> xr.Dataset:
        """Seed standard deviations of pretraining lineages; see :func:`ddxr.analysis.std_over_seeds`."""
        return analysis.std_over_seeds(self._ds, metrics=metrics)

    def at_tokens(self, tokens, metrics=None, method: str = "linear") -> xr.Dataset:
        """Each lineage's values at given cumulative tokens; see :func:`ddxr.analysis.at_tokens`."""
        return analysis.at_tokens(self._ds, tokens, metrics=metrics, method=method)

    def final(self, phase: str = "pretraining", metrics=None) -> xr.Dataset:
        """Each lineage's last measured value per metric; see :func:`ddxr.analysis.final`."""
        return analysis.final(self._ds, phase=phase, metrics=metrics)

    def decision_accuracy(self, metric: str, small: str, target: str = "1B", **kwargs):
        """Pairwise agreement of recipe rankings across scales; see :func:`ddxr.analysis.decision_accuracy`."""
        return analysis.decision_accuracy(self._ds, metric, small, target=target, **kwargs)

    def rank_correlation(self, metric: str, small: str, target: str = "1B", **kwargs):
        """Rank correlation of recipes across scales; see :func:`ddxr.analysis.rank_correlation`."""
        return analysis.rank_correlation(self._ds, metric, small, target=target, **kwargs)

    def posttraining_decision_accuracy(self, metric: str, **kwargs):
        """Agreement of pretraining and post-training rankings.

        See :func:`ddxr.analysis.posttraining_decision_accuracy`.
        """
        return analysis.posttraining_decision_accuracy(self._ds, metric, **kwargs)
