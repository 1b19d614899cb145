"""Benchmark: read the full-scale raw DataDecide exports (≈1.41 M downstream rows) with ``read_datadecide``.

Generates all 14 sizes × 25 recipes once into ``cache/bench/datadecide/`` (reruns reuse the files), then reads them
in a fresh subprocess so that the peak resident memory (``ru_maxrss``) is the reader's alone.
Targets: under 30 s and under 4 GB.

    python benchmarks/bench_datadecide.py [--regenerate]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from ddxr.sources.datadecide import DOWNSTREAM_FILE, PPL_FILE
from ddxr.synthetic.pretraining import write_datadecide

CACHE = Path(__file__).resolve().parents[1] / "cache" / "bench"
TARGET_SECONDS, TARGET_BYTES = 30.0, 4 * 2**30

# Runs in a fresh interpreter: the import is outside the timing, as a user's session would have it loaded.
_READ = """
import json, resource, sys, time
from ddxr.sources.datadecide import read_datadecide
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
evals = read_datadecide(sys.argv[1])
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_bytes": usage.ru_maxrss * 1024,
                  "rows": len(evals.table), "columns": evals.table.shape[1], "skipped": len(evals.skipped)}))
"""


def generate(regenerate: bool) -> None:
    folder = CACHE / "datadecide"
    if not regenerate and (folder / DOWNSTREAM_FILE).is_file() and (folder / PPL_FILE).is_file():
        print(f"using the generated exports in {folder}")
        return
    start, cpu = time.perf_counter(), time.process_time()
    write_datadecide(CACHE, layouts=("raw",))
    print(
        f"generated the full-scale raw exports in {time.perf_counter() - start:.1f} s wall, "
        f"{time.process_time() - cpu:.1f} s CPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regenerate", action="store_true", help="generate the exports again")
    generate(parser.parse_args().regenerate)
    folder = CACHE / "datadecide"
    for name in (DOWNSTREAM_FILE, PPL_FILE):
        path = folder / name
        print(f"{name}: {pq.ParquetFile(path).metadata.num_rows:,} rows, {path.stat().st_size / 2**20:,.0f} MiB")
    load = os.getloadavg()[0]
    output = subprocess.run([sys.executable, "-c", _READ, str(CACHE)], check=True, capture_output=True, text=True)
    result = json.loads(output.stdout)
    print(
        f"read_datadecide: {result['seconds']:.1f} s wall (target < {TARGET_SECONDS:.0f} s), "
        f"{result['cpu_seconds']:.1f} s CPU on {os.cpu_count()} cores (load average {load:.1f} before the run), "
        f"peak RSS {result['peak_bytes'] / 2**30:.2f} GiB (target < {TARGET_BYTES / 2**30:.0f} GiB)"
    )
    print(f"table: {result['rows']:,} rows × {result['columns']:,} columns, {result['skipped']} skipped")
    met = result["seconds"] < TARGET_SECONDS and result["peak_bytes"] < TARGET_BYTES
    print("targets met" if met else "targets MISSED")


if __name__ == "__main__":
    main()
