"""Throughput and memory of WandBStore on PostgreSQL: bulk history writes and streamed key-selected reads.

Writes ``--runs`` × ``--steps`` history rows (4 metric keys) into a fresh database (created, then dropped), times
``store_history``, then times ``iter_history`` of 3 keys over all runs once per ``--chunk-sizes`` value. Each phase
runs in its own process so its peak RSS is its own: the read peaks must follow the chunk size, not the history
size.

    python benchmarks/bench_wandb_store.py                      # 2,000 runs × 1,000 steps, chunks 10k and 100k
    python benchmarks/bench_wandb_store.py --runs 200 --steps 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid

import numpy as np
import pandas as pd
import psycopg2

from ddxr.sources.wandb_store import WandBStore

READ_KEYS = ["train_loss", "learning_rate", "total_tokens"]


def synthetic_history(n_runs: int, n_steps: int) -> pd.DataFrame:
    """``n_runs`` SFT-like histories: a step every 10, decaying loss, linear-decay LR, a token counter."""
    rng = np.random.default_rng(0)
    step = np.tile(np.arange(1, n_steps + 1) * 10, n_runs)
    progress = step / (10 * n_steps)
    return pd.DataFrame(
        {
            "run_id": np.repeat([f"bench-run-{i:05d}" for i in range(n_runs)], n_steps),
            "step": step,
            "timestamp": 1.7555e9 + step * 3.1,
            "runtime": step * 3.1,
            "train_loss": 2.5 * np.exp(-3 * progress) + rng.normal(0, 0.02, step.size),
            "learning_rate": 5e-5 * (1 - progress),
            "total_tokens": step * 91_000 + rng.integers(0, 1_000, step.size),
            "epoch": progress * 2,
        }
    )


def runs_frame(run_ids: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": run_ids,
            "run_name": run_ids,
            "state": "finished",
            "project": "ft-scaling",
            "entity": "ml-moe",
            "created_at": pd.Timestamp("2025-09-01", tz="UTC"),
            "config": [{"learning_rate": 5e-5, "num_train_epochs": 2}] * len(run_ids),
        }
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def write_phase(url: str, n_runs: int, n_steps: int) -> dict:
    history = synthetic_history(n_runs, n_steps)
    with WandBStore(url) as store:
        store.create_tables()
        store.store_runs(runs_frame(history["run_id"].unique()))
        baseline = peak_rss_mb()
        start = time.perf_counter()
        rows = store.store_history(history)
        seconds = time.perf_counter() - start
    return {
        "phase": "store_history",
        "rows": rows,
        "seconds": seconds,
        "baseline_rss_mb": baseline,
        "baseline_label": "with the input frame built",
        "peak_rss_mb": peak_rss_mb(),
    }


def read_phase(url: str, chunk_size: int) -> dict:
    baseline = peak_rss_mb()
    with WandBStore(url) as store:
        start = time.perf_counter()
        rows = chunks = 0
        for chunk in store.iter_history(None, READ_KEYS, chunk_size=chunk_size):
            rows += len(chunk)
            chunks += 1
        seconds = time.perf_counter() - start
    return {
        "phase": f"iter_history chunk_size={chunk_size:,}",
        "rows": rows,
        "chunks": chunks,
        "seconds": seconds,
        "baseline_rss_mb": baseline,
        "baseline_label": "after imports",
        "peak_rss_mb": peak_rss_mb(),
    }


def run_phase(*arguments: str) -> dict:
    """One phase in a fresh interpreter, so ru_maxrss is that phase's own peak."""
    output = subprocess.run([sys.executable, __file__, *arguments], check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def report(result: dict) -> None:
    rate = result["rows"] / result["seconds"]
    chunks = f", {result['chunks']} chunks" if "chunks" in result else ""
    print(
        f"{result['phase']:<32} {result['rows']:>10,} rows in {result['seconds']:6.2f} s = {rate:>10,.0f} rows/s, "
        f"peak RSS {result['peak_rss_mb']:.0f} MB ({result['baseline_rss_mb']:.0f} MB {result['baseline_label']})"
        f"{chunks}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=os.environ.get("DDXR_TEST_PG", "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--runs", type=int, default=2_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--phase", choices=["write", "read"], help=argparse.SUPPRESS)  # set by the parent process
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--chunk-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "write":
        print(json.dumps(write_phase(args.url, args.runs, args.steps)))
        return
    if args.phase == "read":
        print(json.dumps(read_phase(args.url, args.chunk_size)))
        return

    name = f"ddxr_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = psycopg2.connect(f"{args.server}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.server}/{name}"
    try:
        print(f"{args.runs:,} runs × {args.steps:,} steps, 4 metric keys, PostgreSQL database {name}")
        report(run_phase("--phase", "write", "--url", url, "--runs", str(args.runs), "--steps", str(args.steps)))
        for chunk_size in args.chunk_sizes:
            report(run_phase("--phase", "read", "--url", url, "--chunk-size", str(chunk_size)))
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
