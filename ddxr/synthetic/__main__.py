"""``python -m ddxr.synthetic OUT_DIR``: write synthetic DataDecide files and a W&B store, print what was written."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ddxr.errors import DdxrError
from ddxr.sources.wandb_store import WandBStore
from ddxr.synthetic import DEMO_DATA, DEMO_PARAMS, SyntheticTruth, generate
from ddxr.vocabulary import DATA, PARAMS

#: Runs of ``--full``: as many as the real store held on 2025-11-10.
FULL_RUNS = 517


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success, 1 on a ddxr error)."""
    args = _parser().parse_args(argv)
    params, data = (PARAMS, DATA) if args.full else (DEMO_PARAMS, DEMO_DATA)
    n_runs = args.runs if args.runs is not None else (FULL_RUNS if args.full else 60)
    options = {"params": params, "data": data, "n_runs": n_runs, "random_seed": args.seed, "store_layout": args.layout}
    options["layout_a_attributes"] = args.layout_a_attributes
    try:
        truth = generate(args.out_dir, store_url=args.db, **options)
        print(summary(truth, params, data))
    except DdxrError as error:
        print(f"python -m ddxr.synthetic: error: {error}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddxr.synthetic",
        description="Write synthetic DataDecide files and a W&B store of post-training runs with known ground truth.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="folder for datadecide/ (and wandb.db)")
    parser.add_argument("--db", metavar="URL", help="empty W&B store URL (default: sqlite:///OUT_DIR/wandb.db)")
    parser.add_argument("--runs", metavar="N", type=int, help=f"post-training runs (60; {FULL_RUNS} with --full)")
    parser.add_argument("--seed", metavar="S", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--layout",
        choices=("B", "A"),
        default="B",
        help="W&B table layout: B (separate JSON columns, default) or A (the older downloader's merged raw_data)",
    )
    parser.add_argument(
        "--layout-a-attributes",
        action="store_true",
        help="with --layout A: keep the launch metadata and W&B run attributes in columns next to raw_data",
    )
    parser.add_argument(
        "--full", action="store_true", help="all 14 sizes and 25 recipes instead of the demo sample (slow)"
    )
    return parser


def summary(truth: SyntheticTruth, params: Sequence[str], data: Sequence[str]) -> str:
    """Return what :func:`generate` wrote: files, runs by type and state, history rows and the messy runs."""
    runs = truth.runs
    files = sorted(path for path in truth.pretraining_dir.iterdir() if path.is_file())
    with WandBStore(truth.store_url) as store:
        stats = store.stats()
    by_state = pd.crosstab(runs["run_type"], runs["state"])
    messy = runs.loc[runs["mess"] != "", ["mess", "run_id"]]
    lines = [
        f"pretraining ({len(params)} sizes x {len(data)} recipes): {truth.pretraining_dir}",
        *(f"  {path.name:<28} {path.stat().st_size / 1e6:9.1f} MB" for path in files),
        f"W&B store: {stats['url']}",
        f"  runs: {stats['wandb_runs']['rows']}, history rows: {stats['wandb_history']['rows']}",
        *("  " + line for line in by_state.to_string().splitlines()),
        f"  unlinked (expected): {int((runs['expected_link_status'] == 'unlinked').sum())}",
        f"messy runs: {len(messy)}",
        *(f"  {row.mess:<20} {row.run_id}" for row in messy.itertuples(index=False)),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
