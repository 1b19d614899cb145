"""The Dataset contract (ddxr.schema): one spelling of the names, and checks that refuse what breaks it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from roundtrip import example_datasets

from ddxr import schema
from ddxr.errors import BuildError
from ddxr.index import DdxrIndex


@pytest.fixture(scope="module")
def curves() -> xr.Dataset:
    return example_datasets()[0]


def test_contract_names_are_the_dataset_s(curves: xr.Dataset) -> None:
    assert list(curves.xindexes[schema.POINT_DIM].index.names) == list(schema.LEVELS)
    assert set(schema.POINT_COORDS) == set(curves.coords) - {schema.POINT_DIM}
    assert set(np.unique(curves["run_type"].values)) == set(schema.RUN_TYPES)
    pretraining = curves.where(curves["run_type"] == "pretraining", drop=True)
    expected = schema.pretraining_lineage_id(
        pd.Series(pretraining["params"].values),
        pd.Series(pretraining["data"].values),
        pd.Series([0] * pretraining.sizes["point"]),
    )
    assert pretraining["run_id"].values.tolist() == expected.tolist()  # a pretraining run is named by its lineage


def test_set_xindex_builds_the_ddxr_index_in_level_order(curves: xr.Dataset) -> None:
    plain = curves.reset_index(schema.POINT_DIM)
    rebuilt = plain.set_xindex(list(reversed(schema.LEVELS)), DdxrIndex)
    index = rebuilt.xindexes["lineage"]
    assert isinstance(index, DdxrIndex)
    assert list(index.index.names) == list(schema.LEVELS)
    selection = {"params": "150M", "learning_rate": [1e-5, 3e-5]}
    assert rebuilt.sel(selection)["step"].values.tolist() == curves.sel(selection)["step"].values.tolist()
    assert rebuilt.sel(selection).sizes["point"] == 20


@pytest.mark.parametrize(
    ("levels", "message"),
    [(schema.LEVELS[:-1], "expected levels"), ((*schema.LEVELS, "run_id"), "expected levels")],
)
def test_set_xindex_refuses_other_levels(curves: xr.Dataset, levels: tuple, message: str) -> None:
    plain = curves.reset_index(schema.POINT_DIM)
    with pytest.raises(BuildError, match=message):
        plain.set_xindex(list(levels), DdxrIndex)


def test_set_xindex_refuses_missing_level_values(curves: xr.Dataset) -> None:
    plain = curves.reset_index(schema.POINT_DIM)
    holed = plain.assign_coords(learning_rate=plain["learning_rate"].where(plain["step"] > 0))
    with pytest.raises(BuildError, match="learning_rate: "):
        holed.set_xindex(list(schema.LEVELS), DdxrIndex)


def test_validate_points_refuses_duplicate_keys() -> None:
    frame = pd.DataFrame(
        {
            "lineage": ["a", "a", "b"],
            "params": ["4M"] * 3,
            "data": ["C4"] * 3,
            "learning_rate": [0.0] * 3,
            "cumulative_tokens": [1.0, 2.0, 1.0],
            "run_id": ["a", "a", "b"],
            "step": [5, 5, 5],
        }
    )
    schema.validate_points(frame.drop_duplicates(["lineage"]))
    with pytest.raises(
        BuildError, match=r"found 2 points sharing a key, e.g. \[\{'lineage': 'a', 'run_id': 'a', 'step': 5\}\]"
    ):
        schema.validate_points(frame)
    with pytest.raises(BuildError, match=r"missing \['step'\]"):
        schema.validate_points(frame.drop(columns="step"))


def test_validate_dataset_refuses_duplicates_and_missing_index(curves: xr.Dataset) -> None:
    schema.validate_dataset(curves)
    doubled = xr.concat([curves, curves.isel(point=[3])], dim="point")
    with pytest.raises(BuildError, match="found 2 points sharing a key"):
        schema.validate_dataset(doubled)
    with pytest.raises(BuildError, match="expected a MultiIndex over 'point'"):
        schema.validate_dataset(curves.reset_index("point"))


keys = st.lists(
    st.tuples(st.sampled_from(["a", "b", None]), st.sampled_from(["r1", "r2"]), st.integers(0, 3)), max_size=25
).map(lambda rows: pd.DataFrame(rows, columns=list(schema.KEYS)))


@given(keys, st.booleans())
def test_shared_keys_mark_what_duplicated_marks(frame, categorical):
    if categorical:
        frame = frame.astype({"lineage": "category", "run_id": "category"})
    codes = [schema._key_codes(column) for _, column in frame.items()]
    np.testing.assert_array_equal(schema._shared_keys(codes), frame.duplicated(keep=False).to_numpy())


def test_validate_points_refuses_duplicates_among_categoricals() -> None:
    frame = pd.DataFrame(
        {
            "lineage": pd.Categorical(["b", "a", "b"], categories=["b", "a"]),
            "params": "4M",
            "data": "C4",
            "learning_rate": 0.0,
            "cumulative_tokens": [1.0, 2.0, 3.0],
            "run_id": pd.Categorical(["x", "x", "x"]),
            "step": [5, 5, 5],
        }
    )
    with pytest.raises(BuildError, match=r"found 2 points sharing a key, e.g. \[\{'lineage': 'b', 'run_id': 'x'"):
        schema.validate_points(frame)
