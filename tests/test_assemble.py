"""assemble_curves: lazy metric variables gathered through row pointers, one sort, coordinates built once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

from ddxr.assemble import _point_order, assemble_curves
from ddxr.index import point_coordinates
from ddxr.schema import LEVELS, POINT_DIM

VARIABLES = ["train_loss", "lr_at_step", "arc_challenge", "olmes_9_average"]
STRINGS = ["lineage", "run_id", "run_type", "params", "data", "eval_run"]


def _attrs(name: str) -> dict:
    return {"long_name": name}


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Points of two pretraining lineages and two post-training lineages, and the two metric tables they point into."""
    rng = np.random.default_rng(0)
    pretraining = pd.DataFrame(
        {
            "arc_challenge": rng.random(6),
            "olmes_9_average": [0.1, np.nan, 0.3, 0.4, np.nan, 0.6],
            "lr_at_step": [1e-3, 2e-3, np.nan, 1e-3, 2e-3, 3e-3],
            "train_loss": 9.0,  # never gathered: train_loss is the post-training history's own
        }
    )
    posttraining = pd.DataFrame(
        {"arc_challenge": [0.7, 0.8], "olmes_9_average": [0.75, np.nan]}, index=pd.Index(["sft-a", "dpo-b"])
    )
    pre = pd.DataFrame(
        {
            "lineage": ["4M/c4/seed0"] * 3 + ["4M/c4/seed1"] * 3,
            "run_id": ["4M/c4/seed0"] * 3 + ["4M/c4/seed1"] * 3,
            "run_type": "pretraining",
            "step": [0, 100, 200] * 2,
            "learning_rate": 0.0,
            "pretraining_phase": True,
            "cumulative_tokens": [0.0, 1e6, 2e6] * 2,
            "train_loss": np.nan,
            "lr_at_step": np.nan,
            "pretraining_row": np.arange(6),
            "eval_run": "",
        }
    )
    prefix = pre.iloc[:2].assign(lineage="sft-a", learning_rate=1e-5)
    prefix_b = pre.iloc[:2].assign(lineage="dpo-b", learning_rate=1e-6)
    sft = pd.DataFrame(
        {
            "lineage": "sft-a",
            "run_id": "sft-a",
            "run_type": "supervised_ft",
            "step": [1, 2, 3],
            "learning_rate": 1e-5,
            "pretraining_phase": False,
            "cumulative_tokens": [1.1e6, 1.2e6, 1.3e6],
            "train_loss": [2.0, 1.9, np.nan],
            "lr_at_step": [1e-5, 5e-6, 0.0],
            "pretraining_row": -1,
            "eval_run": ["", "", "sft-a"],
        }
    )
    dpo = sft.assign(lineage="dpo-b", eval_run="")
    dpo_own = sft.assign(
        lineage="dpo-b", run_id="dpo-b", run_type="dpo", learning_rate=1e-6, eval_run=["", "", "dpo-b"]
    ).assign(cumulative_tokens=[1.4e6, 1.5e6, 1.6e6])
    points = pd.concat([dpo_own, pre, sft, prefix, dpo, prefix_b], ignore_index=True)  # any order: assembly sorts
    points = points.assign(
        params="4M",
        data="C4",
        seed=0,
        cumulative_compute=points["cumulative_tokens"] * 6.0,
        tokens_estimated=points["run_type"] == "dpo",
    )
    return points, pretraining, posttraining


def _assembled(points: pd.DataFrame, pretraining: pd.DataFrame, posttraining: pd.DataFrame) -> xr.Dataset:
    return assemble_curves(points, pretraining, posttraining, VARIABLES, _attrs, attrs={"title": "test"})


def _expected_values(points: pd.DataFrame, pretraining: pd.DataFrame, posttraining: pd.DataFrame) -> pd.DataFrame:
    """Each metric point by point, as the build layers them: history, then pretraining rows, then evaluations."""
    expected = pd.DataFrame(index=points.index, columns=VARIABLES, dtype="float64")
    for name in ("train_loss", "lr_at_step"):
        expected[name] = points[name]
    on_pretraining = points["pretraining_row"] >= 0
    rows = points.loc[on_pretraining, "pretraining_row"]
    for name in ("lr_at_step", "arc_challenge", "olmes_9_average"):
        expected.loc[on_pretraining, name] = pretraining[name].to_numpy()[rows]
    evaluated = points["eval_run"].isin(posttraining.index)
    for name in posttraining.columns:
        expected.loc[evaluated, name] = posttraining.loc[points.loc[evaluated, "eval_run"], name].to_numpy()
    return expected.astype("float32")


def test_metric_variables_are_lazy_and_read_as_the_tables_say(tables):
    points, pretraining, posttraining = tables
    curves = _assembled(points, pretraining, posttraining)
    assert not any(curves[name].variable._in_memory for name in VARIABLES)  # nothing points x variables is built
    # match each point by its key: the assembled points are sorted
    order = pd.MultiIndex.from_arrays([curves[name].values for name in ("lineage", "run_id", "step")])
    expected = _expected_values(points, pretraining, posttraining)
    expected.index = pd.MultiIndex.from_frame(points[["lineage", "run_id", "step"]])
    for name in VARIABLES:
        assert curves[name].dtype == np.float32 and curves[name].attrs == {"long_name": name}
        np.testing.assert_array_equal(curves[name].values, expected.loc[order, name].to_numpy(), err_msg=name)


def test_points_are_sorted_by_lineage_phase_tokens_and_step(tables):
    curves = _assembled(*tables)
    frame = pd.DataFrame(
        {name: curves[name].values for name in ("lineage", "pretraining_phase", "cumulative_tokens", "step")}
    )
    ordered = frame.sort_values(list(frame.columns), ascending=[True, False, True, True], kind="stable")
    pd.testing.assert_frame_equal(frame, ordered.reset_index(drop=True))
    assert list(curves.xindexes[POINT_DIM].index.names) == list(LEVELS)


@pytest.mark.parametrize(
    "key",
    [
        slice(None),
        slice(3, 11),
        slice(2, None, 3),
        slice(None, None, -2),
        [5, 1, 1, 9, 0],
        [],
        4,
        -1,
        "mask",
    ],
)
def test_lazy_reads_equal_a_loaded_copy_under_any_selection(tables, key):
    curves = _assembled(*tables)
    if isinstance(key, str):
        key = curves["step"].values > 1
    xr.testing.assert_identical(curves.isel(point=key), curves.load().isel(point=key))


def test_each_read_is_a_fresh_array(tables):
    curves = _assembled(*tables)
    for name in ("train_loss", "arc_challenge"):
        values = curves[name].values
        before = values.copy()
        values[:] = -1.0  # the caller owns what it read: the next read is unchanged
        np.testing.assert_array_equal(curves[name].values, before)


def test_string_columns_as_categoricals_or_strings_assemble_alike(tables):
    points, pretraining, posttraining = tables
    plain = _assembled(points, pretraining, posttraining)
    shuffled = points.sample(frac=1.0, random_state=1)
    categorical = shuffled.astype({name: "category" for name in STRINGS})
    # categories in any order, some unused: the assembly orders by the strings, not by the codes
    categorical = categorical.assign(
        lineage=categorical["lineage"]
        .cat.add_categories(["zz-unused"])
        .cat.reorder_categories(["zz-unused", "sft-a", "4M/c4/seed1", "dpo-b", "4M/c4/seed0"])
    )
    again = _assembled(categorical, pretraining, posttraining)
    xr.testing.assert_identical(again.load(), plain.load())
    index, other = plain.xindexes[POINT_DIM].index, again.xindexes[POINT_DIM].index
    for level, level_again in zip(index.levels, other.levels, strict=True):
        pd.testing.assert_index_equal(level, level_again)
    np.testing.assert_array_equal(np.asarray(index.codes), np.asarray(other.codes))
    assert again["run_id"].dtype == object and again["seed"].dtype == np.int64


levels_frames = st.lists(
    st.tuples(
        st.sampled_from(["b", "a", "c/d", "é"]),
        st.sampled_from(["4M", "150M"]),
        st.sampled_from(["C4", "Dolma1.7"]),
        st.sampled_from([0.0, 1e-5, 3e-5]),
        st.floats(0, 1e12, allow_nan=False),
    ),
    min_size=1,
    max_size=30,
).map(lambda rows: pd.DataFrame(rows, columns=list(LEVELS)))


@given(levels_frames, st.booleans())
def test_point_coordinates_index_like_from_frame(frame, categorical):
    expected = pd.MultiIndex.from_frame(frame)
    if categorical:  # categories unsorted, with one unused
        frame = frame.assign(lineage=pd.Categorical(frame["lineage"], categories=["é", "c/d", "b", "a", "unused"]))
    index = point_coordinates(frame).to_dataset().xindexes[POINT_DIM].index
    for level, level_expected in zip(index.levels, expected.levels, strict=True):
        pd.testing.assert_index_equal(level, level_expected, exact=False)
    np.testing.assert_array_equal(np.asarray(index.codes), np.asarray(expected.codes))


order_rows = st.lists(
    st.tuples(st.integers(0, 2), st.booleans(), st.sampled_from([0.0, 1.0, 2.0, np.nan]), st.integers(0, 2))
)


@given(order_rows)
def test_point_order_is_the_stable_sort_by_lineage_phase_tokens_and_step(rows):
    """Whether or not each phase of a lineage is already in token and step order."""
    frame = pd.DataFrame(rows, columns=["lineage", "pretraining_phase", "cumulative_tokens", "step"]).astype(
        {"lineage": str, "pretraining_phase": bool, "cumulative_tokens": float, "step": "int64"}
    )
    expected = frame.sort_values(list(frame.columns), ascending=[True, False, True, True], kind="stable").index
    assert _point_order(frame).tolist() == expected.tolist()


def test_assembling_the_runs_table_does_not_import_dask() -> None:
    # importing dask costs a tenth of a second or more; a build or refresh that never uses it must not pay it
    script = textwrap.dedent(
        """
        import sys
        import pandas as pd
        from ddxr.assemble import assemble_runs

        created = pd.to_datetime(["2024-01-02", "2024-01-01"], utc=True)
        runs = pd.DataFrame({"run_id": ["b", "a"], "created_at": created})
        assert assemble_runs(runs).indexes["run_id"].tolist() == ["b", "a"]
        print("dask" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
