"""Benchmark: build at full DataDecide scale plus 2,000 post-training runs × 1,000 steps, then use the file.

Sources: full-scale DataDecide evaluations in datadec's ``full_eval`` layout (14 sizes × 25 recipes, all seeds;
generated once into ``cache/bench-full-eval/``; the raw-export parse is timed by ``bench_datadecide.py``) and 2,000
generated W&B runs written into a fresh PostgreSQL database, vacuumed as a store that has been read before would
be, and dropped at the end. The build runs in a fresh subprocess so its peak resident memory is its own.

Prints: assembly time and peak memory (targets: under 60 s, under 6 GB), then for the file written from that build
its size, write time, ``open_dataset`` time, and open + ``.sel`` of one sweep + ``to_dataframe()`` (target under
0.5 s).

    python benchmarks/bench_build.py [--runs 2000] [--steps 1000] [--pg postgresql://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2

from ddxr.sources.wandb_store import WandBStore
from ddxr.synthetic.posttraining import generate_posttraining
from ddxr.synthetic.pretraining import write_datadecide
from ddxr.vocabulary import DATA, PARAMS

CACHE = Path(__file__).resolve().parents[1] / "cache" / "bench"
FULL_EVAL = CACHE.parent / "bench-full-eval"

_BUILD = """
import json, resource, sys, time
from ddxr.cache import write_dataset
from ddxr.facade import DataDecideNext
start = time.perf_counter()
dd = DataDecideNext(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3], progress=False)
curves, runs = dd.build()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
write_dataset(curves, runs, sys.argv[4])
write_seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_bytes": peak, "points": curves.sizes["point"],
                  "variables": len(curves.data_vars), "runs": runs.sizes["run"], "write_seconds": write_seconds,
                  "report": json.loads(curves.attrs["build_report"])}))
"""

_USE = """
import json, sys, time
start = time.perf_counter()
import ddxr
imported = time.perf_counter() - start

def use():
    start = time.perf_counter()
    ds = ddxr.open_dataset(sys.argv[1])
    opened = time.perf_counter() - start
    frame = ds.sel(params="150M", data="Dolma1.7", learning_rate=[1e-5, 3e-5, 1e-4, 3e-4]).to_dataframe()
    return opened, time.perf_counter() - start, len(frame)

# the first open in a process also pays xarray's one-time lazy imports (dask, on decoding strings)
cold_open, cold, rows = use()
warm_open, warm, _ = use()
print(json.dumps({"import": imported, "cold_open": cold_open, "cold": cold, "open": warm_open,
                  "open_sel_to_dataframe": warm, "rows": rows}))
"""


def _run(script: str, *args: str) -> dict:
    output = subprocess.run([sys.executable, "-c", script, *args], check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def pretraining_sources() -> Path:
    if not (FULL_EVAL / "datadecide" / "full_eval.parquet").is_file():
        start = time.perf_counter()
        write_datadecide(FULL_EVAL, layouts=("full_eval",))
        print(f"generated full-scale DataDecide full_eval in {time.perf_counter() - start:.1f} s")
    return FULL_EVAL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    data_dir = pretraining_sources()
    database = f"ddxr_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(f"{args.pg}/postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{database}"')
    url = f"{args.pg}/{database}"
    try:
        start = time.perf_counter()
        runs, history, _ = generate_posttraining(args.runs, params=PARAMS, data=DATA, steps_per_run=args.steps)
        store = WandBStore(url)
        store.create_tables()
        store.store_runs(runs)
        store.store_history(history)
        store.close()
        # a freshly COPYed table sets its hint bits on first read: vacuum, as a store read before would be
        admin_db = psycopg2.connect(url)
        admin_db.autocommit = True
        admin_db.cursor().execute("VACUUM ANALYZE")
        admin_db.close()
        print(f"stored {len(runs):,} runs and {len(history):,} history rows in {time.perf_counter() - start:.1f} s")

        out = CACHE / "bench-build.nc"
        build = _run(_BUILD, str(data_dir), url, str(CACHE / "cache"), str(out))
        print(
            f"build: {build['seconds']:.1f} s, peak {build['peak_bytes'] / 2**30:.2f} GiB "
            f"(targets 60 s, 6 GiB) — {build['points']:,} points, {build['variables']} variables, "
            f"{build['runs']:,} runs"
        )
        print(f"file: {out.stat().st_size / 2**20:,.1f} MiB, write {build['write_seconds']:.1f} s")
        use = min((_run(_USE, str(out)) for _ in range(3)), key=lambda figures: figures["open_sel_to_dataframe"])
        print(
            f"open_dataset {use['open']:.3f} s; open + sel(150M, Dolma1.7, 4 learning rates) + to_dataframe "
            f"{use['open_sel_to_dataframe']:.3f} s for {use['rows']:,} rows (target 0.5 s; best of 3). First open "
            f"in a fresh process: {use['cold_open']:.3f} s, with sel + to_dataframe {use['cold']:.3f} s "
            f"(xarray's one-time imports); import ddxr {use['import']:.2f} s"
        )
        print("build report:", json.dumps(build["report"]["progression"]))
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
