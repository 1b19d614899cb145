"""Benchmark of the netCDF cache at the scale of a full build (docs/dataset.md §5, docs/sources.md §9).

Builds, with numpy only, a curves Dataset of ~27,000 pretraining points plus 2,000 post-training lineages of 1,000
steps (each repeating ~25 base points), ~60 float32 metrics (NaN on post-training points except train_loss and
lr_at_step) and a runs table of 2,000 runs; writes it and times opening, selecting a learning-rate sweep and
exporting it to a DataFrame (target: under 0.3 s). With ``--lazy`` the metrics are computed when read, as the
assembled curves hold them: the write reads them one at a time, and its peak memory shows it.

Run: ``.venv/bin/python benchmarks/bench_cache.py [--post-lineages 2000] [--steps 1000] [--folder /tmp] [--lazy]``
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from ddxr.cache import open_dataset, open_runs, write_dataset
from ddxr.index import POINT_DIM, point_coordinates
from ddxr.synthetic.curves import checkpoint_steps, compute_at, tokens_at
from ddxr.vocabulary import DATA, PARAMS

SWEEP = {"params": "150M", "data": "Dolma1.7", "learning_rate": [1e-5, 3e-5, 1e-4, 3e-4]}
LEARNING_RATES = np.array([5e-6, 1e-5, 3e-5, 1e-4, 3e-4])
N_METRICS = 58  # + train_loss and lr_at_step = 60 variables
TOKENS_PER_STEP = 128 * 4096  # post-training: 128 sequences of 4,096 tokens per optimizer step


def pretraining_frame(seeds: int = 3) -> pd.DataFrame:
    """One row per pretraining checkpoint of every (params, data, seed)."""
    steps = {params: checkpoint_steps(params) for params in PARAMS}
    per_size = pd.DataFrame([(params, step) for params in PARAMS for step in steps[params]], columns=["params", "step"])
    models = pd.MultiIndex.from_product([DATA, range(seeds)], names=["data", "seed"]).to_frame(index=False)
    frame = per_size.merge(models, how="cross")
    frame["lineage"] = frame["params"] + "/" + frame["data"] + "/seed" + frame["seed"].astype(str)
    frame["run_id"] = frame["lineage"]
    frame["run_type"] = "pretraining"
    frame["learning_rate"] = 0.0
    frame["pretraining_phase"] = True
    frame["tokens_estimated"] = False
    frame["cumulative_tokens"] = tokens_at(frame["params"].to_numpy(), frame["step"].to_numpy())
    return frame


def posttraining_frame(pretraining: pd.DataFrame, lineages: int, steps: int, rng: np.random.Generator) -> pd.DataFrame:
    """Each lineage: its base's first checkpoints (seed 0) then ``steps`` supervised finetuning steps."""
    bases = pretraining[pretraining["seed"] == 0].groupby(["params", "data"], as_index=False)["step"].max()
    bases = bases.sample(lineages, replace=True, random_state=0).reset_index(drop=True)
    bases["base_step"] = bases["step"] // 2 // 1250 * 1250 + 1250
    bases["learning_rate"] = rng.choice(LEARNING_RATES, size=lineages)
    number = pd.Series(np.arange(lineages)).astype(str).str.zfill(6)
    lr = pd.Series(bases["learning_rate"].map("{:g}".format))
    bases["lineage"] = "2509" + number + "_finetune_DD-" + bases["params"] + "-" + bases["data"] + "_lr=" + lr
    base_tokens = tokens_at(bases["params"].to_numpy(), bases["base_step"].to_numpy())

    base_points = bases.merge(
        pretraining[pretraining["seed"] == 0].drop(columns=["lineage", "learning_rate"]), on=["params", "data"]
    )
    base_points = base_points[base_points["step_y"] <= base_points["base_step"]].rename(columns={"step_y": "step"})
    base_points = base_points.drop(columns="step_x")

    post = bases.loc[np.repeat(bases.index, steps)].reset_index(drop=True)
    post["step"] = np.tile(np.arange(1, steps + 1), lineages)
    post["cumulative_tokens"] = np.repeat(base_tokens, steps) + post["step"] * TOKENS_PER_STEP
    post["run_id"] = post["lineage"]
    post["run_type"] = "supervised_ft"
    post["seed"] = 0
    post["pretraining_phase"] = False
    post["tokens_estimated"] = False
    columns = [
        "lineage",
        "params",
        "data",
        "seed",
        "step",
        "run_id",
        "run_type",
        "learning_rate",
        "pretraining_phase",
        "tokens_estimated",
        "cumulative_tokens",
    ]
    frame = pd.concat([base_points[columns], post[columns]], ignore_index=True)
    return frame.sort_values(["lineage", "pretraining_phase", "step"], ascending=[True, False, True], kind="stable")


def metric_attrs(task: str, metric: str, higher_is_better: bool) -> dict[str, object]:
    """Return the attrs every metric variable carries (docs/dataset.md §2)."""
    return {
        "long_name": f"{task} {metric}",
        "task": task,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "source": "benchmark",
    }


class ComputedMetric(BackendArray):
    """A metric computed when read (evaluations exist for pretraining checkpoints only)."""

    def __init__(self, phase: np.ndarray, seed: int) -> None:
        self.phase, self.seed = phase, seed
        self.shape, self.dtype = phase.shape, np.dtype(np.float32)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self.compute)

    def compute(self, key: tuple = (slice(None),)) -> np.ndarray:
        values = np.random.default_rng(self.seed).random(self.shape[0], dtype=np.float32)
        return np.where(self.phase, values, np.float32(np.nan))[key]


def build(lineages: int, steps: int, lazy: bool = False) -> tuple[xr.Dataset, xr.Dataset]:
    """Return the curves and runs Datasets at benchmark scale; ``lazy``: metrics computed when read."""
    rng = np.random.default_rng(0)
    pretraining = pretraining_frame()
    frame = pd.concat([pretraining, posttraining_frame(pretraining, lineages, steps, rng)], ignore_index=True)
    n = len(frame)
    phase = frame["pretraining_phase"].to_numpy()
    compute = compute_at(frame["params"].to_numpy(), frame["cumulative_tokens"].to_numpy())

    metrics = {}
    for i in range(N_METRICS):
        computed = ComputedMetric(phase, seed=i)
        values = indexing.LazilyIndexedArray(computed) if lazy else computed.compute()
        metrics[f"task{i:02d}_primary"] = (POINT_DIM, values, metric_attrs(f"task{i:02d}", "primary_metric", True))
    loss = np.where(phase, np.nan, rng.random(n) + 1).astype(np.float32)
    metrics["train_loss"] = (POINT_DIM, loss, metric_attrs("train", "loss", False))
    metrics["lr_at_step"] = (POINT_DIM, rng.random(n, dtype=np.float32), metric_attrs("train", "lr", False))

    coords = point_coordinates(frame)
    curves = xr.Dataset(metrics, coords=coords).assign_coords(
        run_id=(POINT_DIM, frame["run_id"].to_numpy(dtype=object)),
        run_type=(POINT_DIM, frame["run_type"].to_numpy(dtype=object)),
        seed=(POINT_DIM, frame["seed"].to_numpy("int64")),
        step=(POINT_DIM, frame["step"].to_numpy("int64")),
        pretraining_phase=(POINT_DIM, phase),
        cumulative_compute=(POINT_DIM, compute),
        tokens_estimated=(POINT_DIM, frame["tokens_estimated"].to_numpy(bool)),
    )
    curves["cumulative_tokens"].attrs = {"units": "tokens", "formula": "base tokens + post-training total_tokens"}
    curves["cumulative_compute"].attrs = {"units": "FLOPs", "formula": "6 * N * cumulative_tokens"}
    curves.attrs = {"build_report": {"runs_read": lineages, "skipped": {}}, "sources": "benchmark"}

    run_ids = frame.loc[~frame["pretraining_phase"], "run_id"].unique()
    runs = xr.Dataset(
        {
            "state": ("run", rng.choice(np.array(["finished", "crashed", "running"], dtype=object), len(run_ids))),
            "learning_rate": ("run", rng.choice(LEARNING_RATES, len(run_ids))),
            "num_train_epochs": ("run", rng.integers(1, 3, len(run_ids))),
            "tokens_repaired": ("run", rng.random(len(run_ids)) < 0.1),
            "created_at": (
                "run",
                pd.date_range("2025-08-19", periods=len(run_ids), freq="17min").to_numpy("datetime64[ns]"),
            ),
        },
        coords={"run_id": ("run", np.asarray(run_ids, dtype=object))},
    ).set_xindex("run_id")
    return curves, runs


def timed(label: str, action: Callable[[], object], repeat: int = 3) -> object:
    """Best of ``repeat`` wall and CPU times of ``action`` (CPU shows the cost on a busy machine); prints both."""
    best_wall, best_cpu, result = np.inf, np.inf, None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = action()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    print(f"{label:<40} {best_wall:8.3f} s wall {best_cpu:8.3f} s CPU")
    return result


def peak_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def sweep(path: Path) -> pd.DataFrame:
    """Return what a researcher does first: open, select one learning-rate sweep, export it."""
    with open_dataset(path) as ds:
        return ds.sel(**SWEEP).to_dataframe()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--post-lineages", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--lazy", action="store_true", help="metrics computed when read, one at a time by the write")
    args = parser.parse_args()

    curves, runs = timed("build in memory (numpy)", lambda: build(args.post_lineages, args.steps, args.lazy), repeat=1)
    print(f"points: {curves.sizes[POINT_DIM]:,}, variables: {len(curves.data_vars)}, runs: {runs.sizes['run']:,}")
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        path = Path(folder) / "bench.nc"
        before = peak_mib()
        timed("write_dataset", lambda: write_dataset(curves, runs, path), repeat=1)
        print(f"{'peak memory before / after the write':<40} {before:8.0f} / {peak_mib():.0f} MiB")
        print(f"{'file size':<40} {path.stat().st_size / 1e6:8.1f} MB")
        timed("open_dataset", lambda: open_dataset(path).close())
        timed("open_runs", lambda: open_runs(path).close())
        frame = timed("open + sel(sweep) + to_dataframe", lambda: sweep(path), repeat=5)
        print(f"sweep rows: {len(frame):,} (target time < 0.3 s)")


if __name__ == "__main__":
    main()
