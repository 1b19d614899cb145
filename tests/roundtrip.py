"""Shared test helpers for cache files: valid example datasets and a hypothesis strategy.

``roundtrip()`` and the assertions live in :mod:`ddxr.testing`, re-exported here.

Import from any test module (pytest puts ``tests/`` on ``sys.path``)::

    from roundtrip import example_datasets, roundtrip, curves_datasets

    with roundtrip(curves, runs) as (curves_back, runs_back):
        xr.testing.assert_identical(curves_back.load(), curves)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from hypothesis import strategies as st

import ddxr
from ddxr.cache import SCHEMA_VERSION
from ddxr.index import point_coordinates
from ddxr.schema import POINT_DIM, RUN_TYPES
from ddxr.synthetic.curves import checkpoint_steps, compute_at, perplexity, primary_score, tokens_at
from ddxr.testing import assert_roundtrip, roundtrip
from ddxr.vocabulary import PRETRAINING_LEARNING_RATE, RECIPES

__all__ = ["assert_roundtrip", "curves_datasets", "example_datasets", "roundtrip"]

#: Provenance attrs every assembled Dataset carries (docs/dataset.md §2); with them a round trip is exactly identical.
PROVENANCE = {
    "ddxr_version": ddxr.__version__,
    "schema_version": SCHEMA_VERSION,
    "created": "2026-01-02T03:04:05+00:00",
}


# --- example datasets -----------------------------------------------------------------------------------------------

_BASE = {"params": "150M", "data": "Dolma1.7", "seed": 0, "base_step": 6250}
_SFT_RATES = (1e-5, 3e-5, 1e-4)
_SFT_STEPS, _DPO_STEPS = 4, 3
_SFT_TOKENS_PER_STEP, _DPO_TOKENS_PER_STEP = 262_144.0, 99_712.0


def example_datasets() -> tuple[xr.Dataset, xr.Dataset]:
    """Return a small valid ``(curves, runs)`` pair following docs/dataset.md §2.

    Four pretraining-only lineages (4M and 150M on two recipes, one with a ``/`` in its name), three supervised
    finetuning lineages from 150M/Dolma1.7 step 6250 (learning rates 1e-5, 3e-5, 1e-4) and one DPO lineage on the
    1e-5 SFT run, whose DPO tokens are estimated. Values come from the noise-free synthetic curves.
    """
    pretraining = _pretraining_points()
    sft = _posttraining_points(pd.Series(_SFT_RATES), "sft", _SFT_STEPS, _SFT_TOKENS_PER_STEP, offset=0.0)
    dpo = _posttraining_points(
        pd.Series([2e-7]), "dpo", _DPO_STEPS, _DPO_TOKENS_PER_STEP, offset=_SFT_STEPS * _SFT_TOKENS_PER_STEP
    )
    dpo_lineage = dpo["run_id"].iloc[0]
    base = pretraining[(pretraining["lineage"] == "150M/dolma1_7/seed0") & (pretraining["step"] <= _BASE["base_step"])]
    leaves = pd.concat([sft, dpo]).groupby("lineage", as_index=False)["learning_rate"].first()
    # every post-training lineage starts with its base's checkpoints; the DPO lineage also holds its SFT parent
    base_points = base.drop(columns=["lineage", "learning_rate"]).merge(leaves, how="cross")
    sft_parent = sft[sft["learning_rate"] == _SFT_RATES[0]].assign(lineage=dpo_lineage, learning_rate=2e-7)
    lineages = [pretraining, base_points, sft, sft_parent, dpo]
    frame = pd.concat(lineages, ignore_index=True)
    return _curves(frame), _runs(sft, dpo)


def _pretraining_points() -> pd.DataFrame:
    models = pd.DataFrame(
        {"params": ["4M", "4M", "150M", "150M"], "data": ["Dolma1.7", "DCLM-Baseline 25% / Dolma 75%"] * 2}
    )
    steps = pd.concat([pd.DataFrame({"params": p, "step": checkpoint_steps(p)[:8]}) for p in ("4M", "150M")])
    frame = models.merge(steps, on="params").assign(seed=0, run_type="pretraining", pretraining_phase=True)
    frame["lineage"] = frame["params"] + "/" + frame["data"].map(RECIPES["slug"]) + "/seed0"
    frame["run_id"] = frame["lineage"]
    frame["learning_rate"] = PRETRAINING_LEARNING_RATE
    frame["tokens_estimated"] = False
    frame["cumulative_tokens"] = tokens_at(frame["params"].to_numpy(), frame["step"].to_numpy())
    return frame


def _posttraining_points(
    rates: pd.Series, kind: str, steps: int, tokens_per_step: float, offset: float
) -> pd.DataFrame:
    run_ids = f"2509{kind}_DD-dolma1_7-150M-{_BASE['base_step']}-0_lr=" + rates.map("{:g}".format)
    frame = pd.DataFrame(
        {"run_id": np.repeat(run_ids.to_numpy(), steps), "learning_rate": np.repeat(rates.to_numpy(), steps)}
    )
    frame["step"] = np.tile(np.arange(1, steps + 1), len(rates))
    base_tokens = float(tokens_at(_BASE["params"], _BASE["base_step"]))
    frame["cumulative_tokens"] = base_tokens + offset + frame["step"] * tokens_per_step
    return frame.assign(
        lineage=frame["run_id"],
        params=_BASE["params"],
        data=_BASE["data"],
        seed=_BASE["seed"],
        run_type="supervised_ft" if kind == "sft" else "dpo",
        pretraining_phase=False,
        tokens_estimated=kind == "dpo",
    )


def curve_coordinates(
    frame: pd.DataFrame, phase: np.ndarray, compute: np.ndarray, tokens_estimated: np.ndarray | None = None
) -> xr.Coordinates:
    """Return the point coordinates of a curves Dataset made from a table with one row per point."""
    estimated = np.zeros(len(frame), dtype=bool) if tokens_estimated is None else tokens_estimated
    return point_coordinates(frame).assign(
        run_id=(POINT_DIM, frame["run_id"].to_numpy(dtype=object)),
        run_type=(POINT_DIM, frame["run_type"].to_numpy(dtype=object)),
        seed=(POINT_DIM, frame["seed"].to_numpy(np.int64)),
        step=(POINT_DIM, frame["step"].to_numpy(np.int64)),
        pretraining_phase=(POINT_DIM, phase),
        cumulative_compute=(POINT_DIM, compute),
        tokens_estimated=(POINT_DIM, estimated),
    )


def _curves(frame: pd.DataFrame) -> xr.Dataset:
    phase = frame["pretraining_phase"].to_numpy()
    compute = compute_at(frame["params"].to_numpy(), frame["cumulative_tokens"].to_numpy())
    evaluated = np.where(phase, 1.0, np.nan)  # evaluations exist at pretraining checkpoints only here
    loss = np.where(phase, np.nan, 2.0 - frame["step"].to_numpy() / 100)

    def metric(values: np.ndarray, long_name: str, task: str, name: str, higher: bool, source: str) -> tuple:
        attrs = {"long_name": long_name, "task": task, "metric": name, "higher_is_better": higher, "source": source}
        return (POINT_DIM, np.asarray(values, dtype=np.float32), attrs)

    data_vars = {
        "train_loss": metric(loss, "training loss", "train", "loss", False, "wandb history"),
        "lr_at_step": metric(np.where(phase, 1e-3, 1e-5), "learning rate at step", "train", "lr", False, "schedule"),
        "arc_challenge": metric(
            primary_score("arc_challenge", compute, frame["data"].to_numpy()) * evaluated,
            "ARC-Challenge primary score",
            "arc_challenge",
            "acc_uncond",
            True,
            "datadecide",
        ),
        "pile_valppl": metric(
            perplexity("pile", compute, frame["data"].to_numpy()) * evaluated,
            "Pile perplexity",
            "pile",
            "valppl",
            False,
            "datadecide",
        ),
    }
    coords = curve_coordinates(frame, phase, compute, frame["tokens_estimated"].to_numpy(bool))
    curves = xr.Dataset(data_vars, coords=coords)
    curves["cumulative_tokens"].attrs = {
        "units": "tokens",
        "formula": "base checkpoint tokens + post-training total_tokens",
    }
    curves["cumulative_compute"].attrs = {"units": "FLOPs", "formula": "6 * N * cumulative_tokens"}
    report = {"runs_read": 4, "linked": 4, "unlinked": 0, "skipped": {"no history": 0}, "estimated_tokens": ["dpo"]}
    return curves.assign_attrs(
        {**PROVENANCE, "sources": "synthetic example", "fingerprint": "0123456789abcdef", "build_report": report}
    )


def _runs(sft: pd.DataFrame, dpo: pd.DataFrame) -> xr.Dataset:
    first = pd.concat([sft, dpo]).groupby("run_id", sort=False).first()
    sft_ids = sft["run_id"].unique()
    runs = xr.Dataset(
        {
            "run_type": ("run", first["run_type"].to_numpy(dtype=object)),
            "state": ("run", np.array(["finished", "crashed", "finished", "running"], dtype=object)),
            "parent_run_id": ("run", np.array(["none", "none", "none", sft_ids[0]], dtype=object)),
            "learning_rate": ("run", first["learning_rate"].to_numpy(np.float64)),
            "base_step": ("run", np.full(len(first), _BASE["base_step"], dtype=np.int64)),
            "tokens_estimated": ("run", first["tokens_estimated"].to_numpy(bool)),
            "created_at": (
                "run",
                pd.to_datetime(
                    ["2025-08-19T05:36:01", "2025-08-21T10:00:00.123456789", "2025-09-10T00:00:00", "NaT"],
                    format="ISO8601",
                ).to_numpy("datetime64[ns]"),
            ),
        },
        coords={"run_id": ("run", first.index.to_numpy(dtype=object))},
    ).set_xindex("run_id")
    return runs.assign_attrs(PROVENANCE)


# --- hypothesis strategy --------------------------------------------------------------------------------------------

LINEAGE_POOL = (
    "150M/dolma1_7/seed0",
    "4M/dclm-baseline-25p-dolma1.7-75p/seed1",
    "2509_sft_lr=1e-05",
    "dpo ünïcode %,+()",
    "a",
)
PARAMS_POOL = ("4M", "20M", "150M", "1B")
DATA_POOL = ("Dolma1.7", "C4", "DCLM-Baseline 25% / Dolma 75%", "Falcon+CC (QC 10%)")
#: Includes 3e-5 computed two ways (3e-5 and 3 * 1e-5 differ in the last bit) to exercise tolerant matching.
LEARNING_RATE_POOL = (PRETRAINING_LEARNING_RATE, 5e-7, 1e-5, 3e-5, 3 * 1e-5, 1e-4)
TOKENS_POOL = (0.0, 65_536.0, 491_520_000.0, 5_734_400_000.0, 5_825_730_008.0, 1.5e10)

_ATTR_KEYS = ("note", "sources", "build_report", "fingerprint", "higher_is_better", "long_name", "formula")
_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=12)
_ATTR_VALUES = st.recursive(
    st.one_of(_TEXT, st.integers(-(2**31), 2**31), st.floats(allow_nan=False, width=64), st.booleans(), st.none()),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(_TEXT, children, max_size=3)),
    max_leaves=6,
)
attrs_dicts = st.dictionaries(st.sampled_from(_ATTR_KEYS), _ATTR_VALUES, max_size=3)


@st.composite
def curves_datasets(draw: st.DrawFn, max_points: int = 25) -> xr.Dataset:
    """Return valid curves Datasets.

    Level values drawn from small pools (so points share them), random NaN-holed float32 metrics, unique
    (lineage, run_id, step), random JSON-like attrs, and the provenance attrs.
    """
    n = draw(st.integers(1, max_points))

    def column(pool: tuple) -> list:
        return draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))

    frame = pd.DataFrame(
        {
            "lineage": column(LINEAGE_POOL),
            "params": column(PARAMS_POOL),
            "data": column(DATA_POOL),
            "learning_rate": column(LEARNING_RATE_POOL),
            "cumulative_tokens": column(TOKENS_POOL),
            "run_type": column(RUN_TYPES),
        }
    )
    frame["run_id"] = frame["lineage"] + "/" + frame["run_type"]
    frame["step"] = frame.groupby("lineage").cumcount() * draw(st.integers(1, 1250))  # unique within a lineage
    metric_names = draw(
        st.lists(st.sampled_from(("train_loss", "arc_challenge", "pile_valppl")), unique=True, max_size=3)
    )
    values = st.floats(width=32, allow_nan=True, allow_infinity=False)
    data_vars = {
        name: (POINT_DIM, np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=np.float32), draw(attrs_dicts))
        for name in metric_names
    }
    coords = point_coordinates(frame).assign(
        run_id=(POINT_DIM, frame["run_id"].to_numpy(dtype=object)),
        run_type=(POINT_DIM, frame["run_type"].to_numpy(dtype=object)),
        seed=(POINT_DIM, np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=np.int64)),
        step=(POINT_DIM, frame["step"].to_numpy(np.int64)),
        pretraining_phase=(POINT_DIM, (frame["run_type"] == "pretraining").to_numpy()),
        cumulative_compute=(POINT_DIM, 6 * 151_898_880 * frame["cumulative_tokens"].to_numpy()),
        tokens_estimated=(POINT_DIM, np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))),
    )
    curves = xr.Dataset(data_vars, coords=coords)
    curves["cumulative_tokens"].attrs = draw(attrs_dicts)
    return curves.assign_attrs({**draw(attrs_dicts), **PROVENANCE})
