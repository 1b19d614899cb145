"""Benchmark of reading a large cache file: open + sweep + export, and analyses with and without dask chunks.

Each measurement runs in a fresh Python process; its peak resident memory is that process's own high-water mark
(``VmHWM``; ``ru_maxrss`` would carry the parent's over ``exec``). ``--file`` is any ddxr cache file, e.g. the one
``benchmarks/run.py --scale large`` builds; when it does not exist, the file ``bench_cache.py`` builds (full
pretraining grid plus ``--post-lineages`` finetuning lineages of ``--steps`` steps, 60 float32 metrics) is written
there once and reused. Analyses read ``--metric`` (default: ``task00_primary`` when the file has it, else
``olmes_9_average``); ``mean_over_seeds`` reads every metric. Dask runs its threaded scheduler with ``--threads``
workers.

Prints, per measurement: wall and CPU seconds, the peak resident memory right after opening and the peak overall.

    python benchmarks/bench_lazy.py [--file /tmp/ddxr-bench.nc] [--metric NAME] [--threads 2] [--chunk 262144]
                                    [--post-lineages 2000] [--steps 1000]

On the large build (10,000 runs: 10.17 M points x 159 variables, 439 MB; ``olmes_9_average``; 2026-12-07, load
about 1, number variables read through h5py) every analysis gives the same result with and without chunks
({"point": 262144}, 2 threads):

    measurement                  chunks  wall s  CPU s  peak GiB
    open + sweep + to_dataframe  none      0.92   0.91     0.57   (a first open: decodes the index of 10 M points)
    mean_over_seeds              none     28.1   28.2      7.71   (the open's memory cache keeps every metric read)
    mean_over_seeds              262144   18.3   18.6      1.97
    at_tokens                    262144   14.2   14.4      2.13
    decision_accuracy            262144    6.6    6.8      1.97

With chunks the peak is the point table of ``frames.point_coords`` (one row per point) plus a batch of metrics. It
was 4.0-4.5 GiB while that table copied every point's text into Arrow strings (1 GB for ``lineage`` alone).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_MEASURE = """
import json, sys, time
import dask
import ddxr
from ddxr import analysis

path, task, chunk, metric, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
dask.config.set(scheduler="threads", num_workers=threads)
SWEEP = {"params": "150M", "data": "Dolma1.7", "learning_rate": [1e-5, 3e-5, 1e-4, 3e-4]}
TASKS = {
    "open + sweep + to_dataframe": lambda ds: len(ds.sel(**SWEEP).to_dataframe()),
    "mean_over_seeds": lambda ds: float(analysis.mean_over_seeds(ds)[metric].mean()),
    "at_tokens": lambda ds: float(analysis.at_tokens(ds, [1e9, 5e9, 2e10], metric)[metric].mean()),
    "decision_accuracy": lambda ds: analysis.decision_accuracy(ds, metric, "150M", "1B").value,
}

def high_water_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 2**10

if task.startswith("open"):  # warm: the first open pays one-time imports
    with ddxr.open_dataset(path) as ds:
        TASKS[task](ds)
wall, cpu = time.perf_counter(), time.process_time()
ds = ddxr.open_dataset(path, chunks={"point": chunk} if chunk else None)
opened = high_water_mib()
result = TASKS[task](ds)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "opened_mib": opened,
                  "peak_mib": high_water_mib(), "result": result}))
"""


def measure(path: Path, task: str, chunk: int, metric: str, threads: int) -> dict:
    command = [sys.executable, "-c", _MEASURE, str(path), task, str(chunk), metric, str(threads)]
    output = subprocess.run(command, check=True, text=True, capture_output=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def default_metric(path: Path) -> str:
    """``task00_primary`` in a ``bench_cache.py`` file, else the OLMES average every real build has."""
    import ddxr

    with ddxr.open_dataset(path) as ds:
        return "task00_primary" if "task00_primary" in ds.data_vars else "olmes_9_average"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=Path("/tmp/ddxr-bench.nc"))
    parser.add_argument("--post-lineages", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=1 << 18, help="points per dask chunk")
    parser.add_argument("--metric", help="metric the analyses read (default: task00_primary or olmes_9_average)")
    parser.add_argument("--threads", type=int, default=2, help="dask threaded scheduler workers")
    args = parser.parse_args()

    if not args.file.is_file():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_cache import build

        from ddxr.cache import write_dataset

        write_dataset(*build(args.post_lineages, args.steps), args.file)
    metric = args.metric or default_metric(args.file)
    print(f"{args.file}: {args.file.stat().st_size / 1e6:.1f} MB; metric {metric}, {args.threads} dask threads")
    print(f"{'measurement':<40} {'chunks':>8} {'wall s':>7} {'CPU s':>7} {'open MiB':>9} {'peak MiB':>9}  result")
    runs = [("open + sweep + to_dataframe", 0)]
    runs += [
        (task, chunk) for task in ("mean_over_seeds", "at_tokens", "decision_accuracy") for chunk in (0, args.chunk)
    ]
    for task, chunk in runs:
        row = measure(args.file, task, chunk, metric, args.threads)
        print(
            f"{task:<40} {chunk or 'none':>8} {row['wall']:7.2f} {row['cpu']:7.2f} {row['opened_mib']:9.0f} "
            f"{row['peak_mib']:9.0f}  {row['result']}"
        )


if __name__ == "__main__":
    main()
