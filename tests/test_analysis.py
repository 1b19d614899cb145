"""Tests of ddxr.analysis on hand-made Datasets whose answers are known or computed by a plain pandas/numpy oracle."""

from __future__ import annotations

import doctest
import itertools
from pathlib import Path

import cf_xarray
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import xarray as xr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from xarray.indexes import PandasMultiIndex

from ddxr import analysis
from ddxr.analysis import (
    AGGREGATED_SEED,
    at_tokens,
    decision_accuracy,
    final,
    mean_over_seeds,
    posttraining_decision_accuracy,
    rank_correlation,
    seed_mean_prefixes,
    std_over_seeds,
)
from ddxr.errors import DdxrError, InvalidArgumentError, SelectionError
from ddxr.schema import LEVELS as INDEX_LEVELS
from ddxr.schema import POINT_COORDS
from ddxr.synthetic.curves import compute_at, tokens_at
from ddxr.vocabulary import DATA, RECIPES, SIZES

LEVELS = list(INDEX_LEVELS)
HIGHER_IS_BETTER = {"hellaswag": True, "olmes_9_average": True, "pile_valppl": False, "train_loss": False}
NAN = np.nan


def dataset(rows: pd.DataFrame, index_type: type[PandasMultiIndex] = PandasMultiIndex) -> xr.Dataset:
    """Return a ddxr Dataset from one row per point: point coordinates plus metric columns of HIGHER_IS_BETTER."""
    coords = xr.Coordinates.from_xindex(index_type(pd.MultiIndex.from_frame(rows[LEVELS]), "point"))
    metrics = {
        name: ("point", rows[name].to_numpy(np.float32), {"higher_is_better": better, "long_name": name})
        for name, better in HIGHER_IS_BETTER.items()
        if name in rows
    }
    ds = xr.Dataset(metrics, coords=coords, attrs={"fingerprint": "test"})
    return ds.assign_coords({name: ("point", rows[name].to_numpy()) for name in POINT_COORDS if name not in LEVELS})


def with_attrs(ds: xr.Dataset, name: str, **attrs: object) -> xr.Dataset:
    """Return a shallow copy of ``ds`` whose variable ``name`` has some attrs replaced (None removes one)."""
    copy = ds.copy()
    copy[name].attrs = {key: value for key, value in {**ds[name].attrs, **attrs}.items() if value is not None}
    return copy


def pretraining(params: str, data: str, seed: int, steps, **metrics) -> pd.DataFrame:
    """Points of a pretraining-only lineage; tokens and compute by the DataDecide formulas."""
    steps = np.asarray(steps, dtype=np.int64)
    tokens = tokens_at(params, steps)
    lineage = f"{params}/{RECIPES.loc[data, 'slug']}/seed{seed}"
    return pd.DataFrame(
        {
            "lineage": lineage,
            "params": params,
            "data": data,
            "learning_rate": 0.0,
            "cumulative_tokens": tokens,
            "run_id": lineage,
            "run_type": "pretraining",
            "seed": seed,
            "step": steps,
            "pretraining_phase": True,
            "cumulative_compute": compute_at(params, tokens),
            "tokens_estimated": False,
            **metrics,
        }
    )


def posttraining(
    parent: pd.DataFrame, run_id: str, learning_rate: float, steps, run_type: str = "supervised_ft", **metrics
) -> pd.DataFrame:
    """Return a post-training lineage: ``parent``'s points (renamed) followed by the run's own, 1e6 tokens per step."""
    steps = np.asarray(steps, dtype=np.int64)
    first = parent.iloc[-1]
    tokens = first["cumulative_tokens"] + steps * 1e6
    own = pd.DataFrame(
        {
            "lineage": run_id,
            "params": first["params"],
            "data": first["data"],
            "learning_rate": learning_rate,
            "cumulative_tokens": tokens,
            "run_id": run_id,
            "run_type": run_type,
            "seed": first["seed"],
            "step": steps,
            "pretraining_phase": False,
            "cumulative_compute": compute_at(first["params"], tokens),
            "tokens_estimated": False,
            **metrics,
        }
    )
    return pd.concat([parent.assign(lineage=run_id, learning_rate=learning_rate), own], ignore_index=True)


def final_scores(scores: dict[str, dict[str, list[float]]], metric: str = "hellaswag") -> pd.DataFrame:
    """Pretraining-only lineages scored at their final step only: ``scores[params][data]`` = one value per seed."""
    return pd.concat(
        [
            pretraining(params, data, seed, [0, SIZES.loc[params, "final_step"]], **{metric: [NAN, value]})
            for params, recipes in scores.items()
            for data, values in recipes.items()
            for seed, value in enumerate(values)
        ],
        ignore_index=True,
    )


def ranking(small: list[float], target: list[float], metric: str = "hellaswag") -> xr.Dataset:
    """One seed per recipe at 150M (``small``) and 1B (``target``), recipes in DATA order."""
    return dataset(
        final_scores(
            {
                "150M": dict(zip(DATA, ([v] for v in small), strict=False)),
                "1B": dict(zip(DATA, ([v] for v in target), strict=False)),
            },
            metric,
        )
    )


def roundtrip(ds: xr.Dataset, path: Path) -> xr.Dataset:
    """Write ``ds`` to netCDF the way a cache does (compressed MultiIndex, 0/1 attrs) and open it lazily."""
    encoded = cf_xarray.encode_multi_index_as_compress(ds, "point")
    for name in HIGHER_IS_BETTER:
        if name in encoded:
            encoded[name] = encoded[name].assign_attrs(
                higher_is_better=np.int8(encoded[name].attrs["higher_is_better"])
            )
    encoded.to_netcdf(path, engine="netcdf4")
    return cf_xarray.decode_compress_to_multi_index(xr.open_dataset(path, engine="netcdf4", chunks={}), "point")


@pytest.fixture
def sweep() -> xr.Dataset:
    """4M/C4 with seeds 0–2 and 4M/Dolma1.7 with seed 0, plus SFT lineages (two LRs) and a DPO on one of them."""
    steps = [0, 1250, 2500, 5725]
    seeds = [
        pretraining("4M", "C4", seed, steps, hellaswag=[NAN, 0.3 + seed, 0.4 + seed, 0.5 + seed]) for seed in range(3)
    ]
    seeds[2].loc[1, "hellaswag"] = NAN  # seed 2 not measured at step 1250
    dolma = pretraining("4M", "Dolma1.7", 0, steps, hellaswag=[NAN, 0.2, 0.25, 0.3], pile_valppl=[90.0, 60, 50, 40])
    sft_a = posttraining(seeds[1], "sft-a", 1e-5, [100, 200], train_loss=[2.0, 1.5], hellaswag=[NAN, 0.7])
    sft_b = posttraining(seeds[1].iloc[:3], "sft-b", 1e-4, [100], train_loss=[1.8], hellaswag=[0.6])
    dpo = posttraining(sft_a, "dpo-a", 2e-7, [0, 1, 2], run_type="dpo", hellaswag=[0.65, NAN, 0.9])  # starts at SFT end
    return dataset(pd.concat([*seeds, dolma, sft_a, sft_b, dpo], ignore_index=True))


# --- seed statistics -------------------------------------------------------------------------------------------


def test_mean_over_seeds_follows_the_contract(sweep: xr.Dataset) -> None:
    mean = mean_over_seeds(sweep, ["hellaswag"])
    c4 = mean.isel(point=np.flatnonzero(mean["lineage"].to_numpy() == "4M/c4/mean"))
    np.testing.assert_allclose(c4["hellaswag"], [NAN, 0.8, 1.4, 1.5], rtol=1e-6)  # step 1250: seeds 0 and 1 only
    assert c4["hellaswag"].dtype == np.float32
    assert c4["hellaswag"].attrs == {"higher_is_better": True, "long_name": "hellaswag", "cell_methods": "seed: mean"}
    assert c4["n_seeds"].values.tolist() == [3, 3, 3, 3]
    assert set(mean["seed"].values) == {AGGREGATED_SEED}
    assert set(mean["run_id"].values) == set(mean["lineage"].values) == {"4M/c4/mean", "4M/dolma1_7/mean"}
    assert set(mean["learning_rate"].values) == {0.0} and mean["pretraining_phase"].values.all()
    np.testing.assert_array_equal(c4["cumulative_tokens"], tokens_at("4M", [0, 1250, 2500, 5725]))
    assert list(mean.indexes["point"].names) == LEVELS
    assert mean.attrs == sweep.attrs


@settings(max_examples=25, deadline=None)
@given(
    measured=st.lists(st.booleans(), min_size=24, max_size=24),
    kept=st.lists(st.booleans(), min_size=24, max_size=24),
    seed=st.integers(0, 2**31),
)
def test_seed_statistics_match_a_pandas_groupby(measured: list[bool], kept: list[bool], seed: int) -> None:
    values = np.where(measured, np.random.default_rng(seed).normal(size=24), NAN).astype(np.float32)
    grid = pd.DataFrame(
        itertools.product(["4M", "1B"], ["C4", "Falcon"], range(3), [0, 1250]),
        columns=["params", "data", "seed", "step"],
    ).assign(hellaswag=values)
    grid = grid.loc[np.asarray(kept) | (grid["seed"] == 0).to_numpy()]  # seeds may lack checkpoints; seed 0 has all
    rows = [
        pretraining(p, d, s, group["step"].to_numpy(), hellaswag=group["hellaswag"].to_numpy())
        for (p, d, s), group in grid.groupby(["params", "data", "seed"])
    ]
    ds = dataset(pd.concat(rows, ignore_index=True))
    grouped = grid.astype({"hellaswag": np.float64}).groupby(["params", "data", "step"])["hellaswag"]
    for result, expected in ((mean_over_seeds(ds), grouped.mean()), (std_over_seeds(ds), grouped.std())):
        frame = result.to_dataframe().reset_index().set_index(["params", "data", "step"]).sort_index()
        pd.testing.assert_series_equal(
            frame["hellaswag"].astype(np.float64),
            expected.sort_index(),
            check_names=False,
            check_index_type=False,
            rtol=1e-5,
        )
        pd.testing.assert_series_equal(
            frame["n_seeds"],
            grid.groupby(["params", "data", "step"])["seed"].nunique().sort_index(),
            check_names=False,
            check_index_type=False,
        )


def test_seed_statistics_count_a_repeated_prefix_once(sweep: xr.Dataset) -> None:
    dolma_and_sft = pd.concat(
        [
            pretraining("4M", "Dolma1.7", 0, [0, 1250], hellaswag=[0.1, 0.2]),
            posttraining(pretraining("4M", "Dolma1.7", 0, [0, 1250], hellaswag=[0.1, 0.2]), "sft", 1e-5, [10]),
        ],
        ignore_index=True,
    )
    mean = mean_over_seeds(dataset(dolma_and_sft))
    assert mean["n_seeds"].values.tolist() == [1, 1]
    np.testing.assert_allclose(mean["hellaswag"], [0.1, 0.2], rtol=1e-6)
    assert np.isnan(std_over_seeds(dataset(dolma_and_sft))["hellaswag"]).all()  # one seed: no spread


def test_seed_mean_prefixes_replaces_only_post_training_prefixes(sweep: xr.Dataset) -> None:
    result = seed_mean_prefixes(sweep, "hellaswag")
    before, after = sweep.to_dataframe().reset_index(), result.to_dataframe().reset_index()
    prefix = after["pretraining_phase"] & ~after["lineage"].str.contains("/")  # post-training lineages have no "/"
    sft_a = after.loc[prefix & (after["lineage"] == "sft-a")]
    np.testing.assert_allclose(sft_a["hellaswag"], [NAN, 0.8, 1.4, 1.5], rtol=1e-6)
    assert set(sft_a["run_id"]) == {"4M/c4/mean"} and set(sft_a["seed"]) == {AGGREGATED_SEED}
    untouched = ~prefix
    pd.testing.assert_frame_equal(after.loc[untouched], before.loc[untouched, after.columns])
    assert result.sizes == sweep.sizes and "train_loss" not in result


def test_results_keep_the_index_type_of_their_input() -> None:
    class DdxrLikeIndex(PandasMultiIndex):
        """Stands for ddxr's MultiIndex subclass."""

    ds = dataset(pretraining("4M", "C4", 0, [0, 1250], hellaswag=[0.1, 0.2]), index_type=DdxrLikeIndex)
    assert type(mean_over_seeds(ds).xindexes["point"]) is DdxrLikeIndex
    assert type(seed_mean_prefixes(ds).xindexes["point"]) is DdxrLikeIndex


# --- values at equal tokens -----------------------------------------------------------------------------------


@st.composite
def curves(draw: st.DrawFn) -> pd.DataFrame:
    """Pretraining-only lineages with distinct increasing tokens and randomly unmeasured points."""
    frames = []
    for number in range(draw(st.integers(1, 4))):
        size = draw(st.integers(1, 8))
        tokens = np.cumsum(draw(st.lists(st.integers(1, 1000), min_size=size, max_size=size))).astype(float)
        values = draw(st.lists(st.one_of(st.none(), st.floats(-10, 10, width=32)), min_size=size, max_size=size))
        rows = pretraining("4M", DATA[number], number, np.arange(size), hellaswag=np.array(values, dtype=float))
        frames.append(rows.assign(cumulative_tokens=tokens + draw(st.integers(0, 500))))
    return pd.concat(frames, ignore_index=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=curves(), queries=st.lists(st.floats(-100, 10_000), min_size=1, max_size=6))
def test_at_tokens_linear_matches_numpy_interp_per_lineage(rows: pd.DataFrame, queries: list[float]) -> None:
    result = at_tokens(dataset(rows), queries, "hellaswag")
    for lineage, points in rows.groupby("lineage"):
        measured = points.dropna(subset="hellaswag")
        x, y = measured["cumulative_tokens"].to_numpy(), measured["hellaswag"].to_numpy(np.float32).astype(float)
        expected = np.interp(queries, x, y) if len(x) else np.full(len(queries), NAN)
        outside = (np.asarray(queries) < x.min(initial=np.inf)) | (np.asarray(queries) > x.max(initial=-np.inf))
        expected[outside] = NAN
        np.testing.assert_allclose(result["hellaswag"].sel(lineage=lineage), expected, rtol=1e-6, atol=1e-6)


def test_at_tokens_methods_on_a_sparse_curve() -> None:
    rows = pretraining("4M", "C4", 0, [0, 1, 2, 3], hellaswag=[NAN, 1.0, 2.0, NAN]).assign(
        cumulative_tokens=[0.0, 10, 20, 40]
    )
    queries = [-1, 0, 5, 10, 15, 16, 20, 35, 40, 45]
    expected = {
        "linear": [NAN, NAN, NAN, 1.0, 1.5, 1.6, 2.0, NAN, NAN, NAN],
        "previous": [NAN, NAN, NAN, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, NAN],
        "nearest": [NAN, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, NAN],  # 15 is a tie: the earlier point wins
    }
    for method, values in expected.items():
        result = at_tokens(dataset(rows), queries, "hellaswag", method=method)
        np.testing.assert_allclose(result["hellaswag"].isel(lineage=0), values, rtol=1e-6, err_msg=method)


def test_at_tokens_returns_lineage_coordinates_and_takes_the_latest_of_tied_points(sweep: xr.Dataset) -> None:
    start = float(sweep["cumulative_tokens"].values[sweep["run_id"].values == "sft-a"].max())  # DPO's first point too
    result = at_tokens(sweep, [start, start + 1e6, start + 2e6], ["hellaswag", "train_loss"])
    assert result["hellaswag"].dims == ("lineage", "tokens") and result["hellaswag"].dtype == np.float32
    assert result["lineage"].values.tolist() == sorted(set(sweep["lineage"].values))
    dpo = result.sel(lineage="dpo-a")
    assert (str(dpo["run_type"].values), int(dpo["seed"]), float(dpo["learning_rate"])) == ("dpo", 1, 2e-7)
    np.testing.assert_allclose(dpo["hellaswag"], [0.65, 0.775, 0.9], rtol=1e-6)  # DPO's 0.65, not SFT's 0.7
    np.testing.assert_allclose(dpo["train_loss"], [1.5, NAN, NAN])  # not measured in DPO: no extrapolation
    assert result["tokens"].values.tolist() == [start, start + 1e6, start + 2e6]


def test_at_tokens_rejects_an_unknown_method(sweep: xr.Dataset) -> None:
    with pytest.raises(InvalidArgumentError, match="method='cubic' is not supported; expected one of 'linear'"):
        at_tokens(sweep, 1e6, method="cubic")


# --- final values ---------------------------------------------------------------------------------------------


def test_final_per_phase(sweep: xr.Dataset) -> None:
    pre = final(sweep, "pretraining", ["hellaswag", "pile_valppl"])
    assert pre["lineage"].size == 7
    assert float(pre["hellaswag"].sel(lineage="4M/c4/seed2")) == pytest.approx(2.5)
    assert float(pre["hellaswag"].sel(lineage="sft-b")) == pytest.approx(1.4)  # its base checkpoint, step 2500
    assert float(pre["hellaswag_cumulative_tokens"].sel(lineage="sft-b")) == tokens_at("4M", 2500)
    assert float(pre["pile_valppl"].sel(lineage="4M/dolma1_7/seed0")) == 40.0
    assert np.isnan(pre["pile_valppl"].sel(lineage="sft-a")) and np.isnan(
        pre["pile_valppl_cumulative_tokens"].sel(lineage="sft-a")
    )
    post = final(sweep, "posttraining", "hellaswag")
    assert post["lineage"].values.tolist() == [
        "dpo-a",
        "sft-a",
        "sft-b",
    ]  # pretraining-only lineages have no such phase
    np.testing.assert_allclose(post["hellaswag"], [0.9, 0.7, 0.6], rtol=1e-6)
    assert post["run_type"].values.tolist() == ["dpo", "supervised_ft", "supervised_ft"]
    any_phase = final(sweep, "any", "train_loss")
    assert float(any_phase["train_loss"].sel(lineage="dpo-a")) == 1.5  # the last measured value, in the SFT part
    assert np.isnan(any_phase["train_loss"].sel(lineage="4M/c4/seed0"))


def test_final_rejects_an_unknown_phase(sweep: xr.Dataset) -> None:
    with pytest.raises(DdxrError, match="phase='sft' is not supported"):
        final(sweep, "sft")


# --- decision accuracy and rank correlation -------------------------------------------------------------------


def pair_agreement_oracle(small: np.ndarray, target: np.ndarray) -> float:
    """Decision accuracy by brute force: 1 per agreeing pair, 1/2 per pair tied at either scale."""
    scores = [
        0.5
        if small[i] == small[j] or target[i] == target[j]
        else float((small[i] > small[j]) == (target[i] > target[j]))
        for i, j in itertools.combinations(range(len(small)), 2)
    ]
    return float(np.mean(scores))


@pytest.mark.parametrize(
    ("small", "target", "expected"),
    [
        ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6], 1.0),
        ([0.3, 0.2, 0.1], [0.4, 0.5, 0.6], 0.0),
        ([0.2, 0.1, 0.3], [0.4, 0.5, 0.6], 2 / 3),
    ],
    ids=["identical", "reversed", "one-swapped-pair"],
)
def test_decision_accuracy_on_hand_made_rankings(small: list[float], target: list[float], expected: float) -> None:
    result = decision_accuracy(ranking(small, target), "hellaswag", "150M")
    assert result.value == pytest.approx(expected) and float(result) == pytest.approx(expected)
    assert (result.n_recipes, result.n_pairs, result.n_ties, result.dropped_recipes) == (3, 3, 0, ())


def test_decision_accuracy_over_25_recipes_counts_300_pairs() -> None:
    rng = np.random.default_rng(7)
    small, target = rng.normal(size=25), rng.normal(size=25)
    ds = ranking(small.tolist(), target.tolist())
    result = decision_accuracy(ds, "hellaswag", "150M")
    assert (result.n_recipes, result.n_pairs) == (25, 300)
    assert result.value == pytest.approx(pair_agreement_oracle(small.astype(np.float32), target.astype(np.float32)))


def test_decision_accuracy_counts_a_tie_as_half_an_agreement() -> None:
    result = decision_accuracy(ranking([0.1, 0.1, 0.3], [0.4, 0.5, 0.6]), "hellaswag", "150M")
    assert result.value == pytest.approx((0.5 + 1 + 1) / 3) and result.n_ties == 1


def test_decision_accuracy_drops_recipes_missing_at_one_scale() -> None:
    ds = ranking([0.1, 0.2, 0.3, 0.9], [0.4, 0.5, 0.6, NAN])
    result = decision_accuracy(ds, "hellaswag", "150M", data=[*DATA[:4], "Not A Recipe"])
    assert result.value == 1.0 and result.n_recipes == 3
    assert result.dropped_recipes == (DATA[3], "Not A Recipe")


def test_decision_accuracy_orients_by_higher_is_better() -> None:
    rows = final_scores(
        {"150M": {data: [ppl] for data, ppl in zip(DATA, [30.0, 20.0, 10.0], strict=False)}}, "pile_valppl"
    )
    rows = pd.concat(
        [rows, final_scores({"1B": {data: [acc] for data, acc in zip(DATA, [0.4, 0.5, 0.6], strict=False)}})]
    )
    ds = dataset(rows.reset_index(drop=True))
    assert decision_accuracy(ds, "pile_valppl", "150M", target_metric="hellaswag").value == 1.0  # lower ppl = better
    misread = with_attrs(ds, "pile_valppl", higher_is_better=True)
    assert decision_accuracy(misread, "pile_valppl", "150M", target_metric="hellaswag").value == 0.0


def test_decision_accuracy_seed_handling() -> None:
    # recipe 0 wins on the mean through one lucky seed; recipe 1 wins two seeds out of three
    ds = dataset(
        final_scores(
            {"150M": {DATA[0]: [0.9, 0.1, 0.1], DATA[1]: [0.2, 0.2, 0.2]}, "1B": {DATA[0]: [0.1], DATA[1]: [0.2]}}
        )
    )
    assert decision_accuracy(ds, "hellaswag", "150M", seeds="mean").value == 0.0
    assert decision_accuracy(ds, "hellaswag", "150M", seeds="majority").value == 1.0


def test_decision_accuracy_at_an_intermediate_checkpoint() -> None:
    rows = pd.concat(
        [
            pretraining("150M", DATA[0], 0, [0, 1250, 38157], hellaswag=[NAN, 0.30, 0.40]),
            pretraining("150M", DATA[1], 0, [0, 1250, 38157], hellaswag=[NAN, 0.20, 0.50]),
            final_scores({"1B": {DATA[0]: [0.4], DATA[1]: [0.5]}}),
        ],
        ignore_index=True,
    )
    ds = dataset(rows)
    assert decision_accuracy(ds, "hellaswag", "150M").value == 1.0
    assert decision_accuracy(ds, "hellaswag", "150M", small_step=1250).value == 0.0
    assert decision_accuracy(ds, "hellaswag", "150M", small_tokens=float(tokens_at("150M", 1250))).value == 0.0
    with pytest.raises(
        SelectionError, match=r"no pretraining checkpoint at step 999 for params='150M'; steps present: 0, 1250, 38157"
    ):
        decision_accuracy(ds, "hellaswag", "150M", small_step=999)
    with pytest.raises(InvalidArgumentError, match="give small_step or small_tokens, not both"):
        decision_accuracy(ds, "hellaswag", "150M", small_step=1250, small_tokens=1e9)


def test_decision_accuracy_errors_name_what_to_fix() -> None:
    ds = ranking([0.1, 0.2], [0.3, 0.4])
    with pytest.raises(SelectionError, match="unknown metric.*'mmlu_nope'.*available"):
        decision_accuracy(ds, "mmlu_nope", "150M")
    with pytest.raises(SelectionError, match="params='2B' is not a DataDecide size"):
        decision_accuracy(ds, "hellaswag", "2B")
    with pytest.raises(SelectionError, match="no pretraining-only lineage with params='300M'.*sizes present: 150M, 1B"):
        decision_accuracy(ds, "hellaswag", "300M")
    with pytest.raises(SelectionError, match="needs at least two recipes measured at both scales; found 1"):
        decision_accuracy(ds, "hellaswag", "150M", data=DATA[:1])
    with pytest.raises(DdxrError, match="lacks point coordinate.*'seed'"):
        decision_accuracy(ds.drop_vars("seed"), "hellaswag", "150M")
    with pytest.raises(DdxrError, match="higher_is_better=None.*set ds\\['hellaswag'\\]"):
        decision_accuracy(with_attrs(ds, "hellaswag", higher_is_better=None), "hellaswag", "150M")
    with pytest.raises(DdxrError, match="seeds='vote' is not supported"):
        decision_accuracy(ds, "hellaswag", "150M", seeds="vote")


@settings(max_examples=25, deadline=None)
@given(scores=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=3, max_size=12))
def test_rank_correlations_match_scipy(scores: list[tuple[int, int]]) -> None:
    small, target = (np.array(column, dtype=float) for column in zip(*scores, strict=True))
    assume(np.ptp(small) > 0 and np.ptp(target) > 0)
    ds = ranking(small.tolist(), target.tolist())
    spearman = rank_correlation(ds, "hellaswag", "150M", method="spearman")
    kendall = rank_correlation(ds, "hellaswag", "150M", method="kendall")
    assert spearman.value == pytest.approx(scipy.stats.spearmanr(small, target).statistic)
    assert kendall.value == pytest.approx(scipy.stats.kendalltau(small, target).statistic)
    assert (spearman.measure, kendall.measure, kendall.n_pairs) == (
        "spearman",
        "kendall",
        len(small) * (len(small) - 1) // 2,
    )
    assert decision_accuracy(ds, "hellaswag", "150M").value == pytest.approx(pair_agreement_oracle(small, target))


def test_rank_correlation_is_oriented_and_nan_without_spread() -> None:
    ds = ranking([0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    assert rank_correlation(ds, "hellaswag", "150M").value == pytest.approx(-1.0)
    lower_better = with_attrs(ds, "hellaswag", higher_is_better=False)
    assert rank_correlation(lower_better, "hellaswag", "150M").value == pytest.approx(-1.0)  # both scales flip
    assert np.isnan(
        rank_correlation(ranking([0.1, 0.1, 0.1], [0.3, 0.2, 0.1]), "hellaswag", "150M", method="kendall").value
    )


# --- post-training decision accuracy --------------------------------------------------------------------------


@pytest.fixture
def finetuned() -> xr.Dataset:
    """150M recipes 0–2 finetuned at two learning rates; recipe 1 also from seed 1; DPO on recipes 0 and 2."""
    pretrained = {
        data: pretraining("150M", data, 0, [0, 38157], olmes_9_average=[NAN, acc])
        for data, acc in zip(DATA[:3], [0.75, 0.5, 0.375], strict=True)
    }
    second_seed = pretraining("150M", DATA[1], 1, [0, 38157], olmes_9_average=[NAN, 0.25])  # recipe 1: 0.375 too
    post = {DATA[0]: (0.60, 0.50), DATA[1]: (0.55, 0.70), DATA[2]: (0.40, 0.45)}
    lineages = [
        posttraining(pretrained[data], f"sft-{number}-{lr}", lr, [10, 20], olmes_9_average=[NAN, score])
        for number, (data, scores) in enumerate(post.items())
        for lr, score in zip((1e-5, 1e-4), scores, strict=True)
    ]
    lineages.append(posttraining(second_seed, "sft-seed1", 1e-5, [10], olmes_9_average=[0.3]))
    lineages.append(posttraining(pretrained[DATA[0]], "dpo-0", 1e-6, [10], run_type="dpo", olmes_9_average=[0.1]))
    lineages.append(posttraining(pretrained[DATA[2]], "dpo-2", 1e-6, [10], run_type="dpo", olmes_9_average=[0.2]))
    return dataset(pd.concat([*pretrained.values(), second_seed, *lineages], ignore_index=True))


def test_posttraining_decision_accuracy_best_and_mean(finetuned: xr.Dataset) -> None:
    # before: recipe 0 (0.75) > 1 (mean of its two bases, 0.375) = 2 (0.375); a tie counts one half
    best = posttraining_decision_accuracy(finetuned, "olmes_9_average", "150M")  # after: 1 (.70) > 0 (.60) > 2 (.45)
    assert (best.value, best.n_recipes, best.n_ties) == (pytest.approx((0 + 1 + 0.5) / 3), 3, 1)
    mean = posttraining_decision_accuracy(finetuned, "olmes_9_average", aggregate="mean")  # 0: .55, 1: .517, 2: .425
    assert mean.value == pytest.approx((1 + 1 + 0.5) / 3)
    dpo = posttraining_decision_accuracy(finetuned, "olmes_9_average", run_type="dpo", data=DATA[:3])
    assert (dpo.value, dpo.dropped_recipes) == (0.0, (DATA[1],))


def test_posttraining_decision_accuracy_errors(finetuned: xr.Dataset) -> None:
    with pytest.raises(SelectionError, match="needs at least two recipes measured at both scales; found 1"):
        posttraining_decision_accuracy(finetuned, "olmes_9_average", run_type="dpo", data=DATA[:2])
    with pytest.raises(SelectionError, match="found none — check run_type and params"):
        posttraining_decision_accuracy(finetuned, "olmes_9_average", params="1B")
    other_size = final_scores({"4M": {DATA[0]: [0.1]}}, "olmes_9_average")
    two_sizes = pd.concat(
        [finetuned.to_dataframe().reset_index(), posttraining(other_size, "sft-4M", 1e-5, [5], olmes_9_average=[0.2])]
    )
    with pytest.raises(SelectionError, match="found sizes 4M, 150M: pass params= to pick one"):
        posttraining_decision_accuracy(dataset(two_sizes.reset_index(drop=True)), "olmes_9_average")


# --- lazy files and docs --------------------------------------------------------------------------------------


def test_analyses_work_on_a_lazily_opened_netcdf_file(sweep: xr.Dataset, tmp_path: Path) -> None:
    opened = roundtrip(sweep, tmp_path / "sweep.nc")
    assert opened["hellaswag"].chunks is not None
    xr.testing.assert_allclose(at_tokens(opened, [1e8, 4e8], "hellaswag"), at_tokens(sweep, [1e8, 4e8], "hellaswag"))
    xr.testing.assert_allclose(
        final(opened, "posttraining").drop_attrs(deep=True), final(sweep, "posttraining").drop_attrs(deep=True)
    )
    expected = mean_over_seeds(sweep).to_dataframe()
    pd.testing.assert_frame_equal(
        mean_over_seeds(opened).to_dataframe(), expected, check_dtype=False, check_index_type=False
    )
    ds = ranking([0.1, 0.2, 0.3], [0.4, 0.6, 0.5])
    assert decision_accuracy(roundtrip(ds, tmp_path / "ranking.nc"), "hellaswag", "150M").value == pytest.approx(2 / 3)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(analysis).failed == 0
