"""``ds.ddxr`` calls the same functions as the modules, on a Dataset just opened from a file."""

from __future__ import annotations

import pandas as pd
import xarray as xr
from roundtrip import example_datasets, roundtrip

import ddxr  # noqa: F401  (registers the accessor)
from ddxr import analysis, frames, index


def test_accessor_methods_match_the_functions():
    curves, runs = example_datasets()
    with roundtrip(curves, runs) as (ds, _):
        pd.testing.assert_frame_equal(ds.ddxr.to_frame(melt=True), frames.to_frame(ds, melt=True))
        xr.testing.assert_identical(ds.ddxr.select(run_type="pretraining"), index.select(ds, run_type="pretraining"))
        xr.testing.assert_identical(ds.ddxr.final(), analysis.final(ds))
        xr.testing.assert_identical(ds.ddxr.final(phase="posttraining"), analysis.final(ds, phase="posttraining"))
        xr.testing.assert_identical(ds.ddxr.mean_over_seeds(), analysis.mean_over_seeds(ds))
        tokens = [1e8, 1e9]
        xr.testing.assert_identical(ds.ddxr.at_tokens(tokens), analysis.at_tokens(ds, tokens))


def test_select_keeps_every_level_for_to_frame():
    curves, runs = example_datasets()
    with roundtrip(curves, runs) as (ds, _):
        params = str(ds["params"].values[0])
        frame = ds.ddxr.select(params=params).ddxr.to_frame()
        assert set(frame["params"].astype(str)) == {params}
        assert {"lineage", "params", "data", "learning_rate", "cumulative_tokens"} <= set(frame.columns)
