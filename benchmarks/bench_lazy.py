"""Benchmark of reading a large cache file: open + sweep + export, and analyses with and without dask chunks.

Each measurement runs in a fresh Python process so its peak resident memory (``ru_maxrss``) is its own. The file is
the one ``bench_cache.py`` builds (full pretraining grid plus ``--post-lineages`` finetuning lineages of ``--steps``
steps, 60 float32 metrics), written once to ``--file`` and reused.

Prints, per measurement: wall and CPU seconds, resident memory right after opening and the peak.

    python benchmarks/bench_lazy.py [--file /tmp/ddxr-bench.nc] [--post-lineages 2000] [--steps 1000] [--chunk 262144]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_MEASURE = """
import json, resource, sys, time
import dask
import ddxr
from ddxr import analysis

path, task, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
dask.config.set(scheduler="threads", num_workers=2)
SWEEP = {"params": "150M", "data": "Dolma1.7", "learning_rate": [1e-5, 3e-5, 1e-4, 3e-4]}
TASKS = {
    "open + sweep + to_dataframe": lambda ds: len(ds.sel(**SWEEP).to_dataframe()),
    "mean_over_seeds": lambda ds: float(analysis.mean_over_seeds(ds)["task00_primary"].mean()),
    "at_tokens": lambda ds: float(analysis.at_tokens(ds, [1e9, 5e9, 2e10])["task00_primary"].mean()),
    "decision_accuracy": lambda ds: analysis.decision_accuracy(ds, "task00_primary", "150M", "1B").value,
}
if task.startswith("open"):  # warm: the first open pays one-time imports
    with ddxr.open_dataset(path) as ds:
        TASKS[task](ds)
wall, cpu = time.perf_counter(), time.process_time()
ds = ddxr.open_dataset(path, chunks={"point": chunk} if chunk else None)
opened = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
result = TASKS[task](ds)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "opened_mib": opened,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, "result": result}))
"""


def measure(path: Path, task: str, chunk: int) -> dict:
    output = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), task, str(chunk)], check=True, text=True, capture_output=True
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=Path("/tmp/ddxr-bench.nc"))
    parser.add_argument("--post-lineages", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=1 << 18, help="points per dask chunk")
    args = parser.parse_args()

    if not args.file.is_file():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_cache import build

        from ddxr.cache import write_dataset

        write_dataset(*build(args.post_lineages, args.steps), args.file)
    print(f"{args.file}: {args.file.stat().st_size / 1e6:.1f} MB")
    print(f"{'measurement':<40} {'chunks':>8} {'wall s':>7} {'CPU s':>7} {'open MiB':>9} {'peak MiB':>9}  result")
    runs = [("open + sweep + to_dataframe", 0)]
    runs += [
        (task, chunk) for task in ("mean_over_seeds", "at_tokens", "decision_accuracy") for chunk in (0, args.chunk)
    ]
    for task, chunk in runs:
        row = measure(args.file, task, chunk)
        print(
            f"{task:<40} {chunk or 'none':>8} {row['wall']:7.2f} {row['cpu']:7.2f} {row['opened_mib']:9.0f} "
            f"{row['peak_mib']:9.0f}  {row['result']}"
        )


if __name__ == "__main__":
    main()
