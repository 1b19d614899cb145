"""Check: ddxr's pretraining ``compute`` against the source's, over the generator's full checkpoint grid.

Generates the raw DataDecide exports for every size, recipe and seed (one task by default: compute does not depend
on the tasks), reads them with ddxr and prints the number of checkpoints, how many had no ``compute`` in the source
(perplexity only), whether compute / tokens is one constant per model, and the largest relative difference from the
source's compute (the generator's 6 × N × tokens) at every checkpoint with tokens. Target: 0.

    python benchmarks/compute_fidelity.py [--tasks hellaswag ...] [--nominal]

``--nominal`` rewrites the source's compute with the nominal parameter count (4M → 4e6) first, to show that ddxr
follows whatever N the source used.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from ddxr.sources.datadecide import read_datadecide
from ddxr.synthetic.pretraining import generate_pretraining
from ddxr.vocabulary import SIZES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["hellaswag"], help="raw task names to generate")
    parser.add_argument("--nominal", action="store_true", help="source compute with nominal N (4M -> 4e6)")
    args = parser.parse_args()
    downstream, ppl = generate_pretraining(tasks=args.tasks)
    column = "params_numeric" if args.nominal else "true_params"
    per_token = 6.0 * SIZES[column].astype(np.float64)
    downstream = downstream.assign(compute=downstream["params"].map(per_token) * downstream["tokens"])
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "datadecide").mkdir()
        downstream.to_parquet(Path(folder) / "datadecide" / "downstream_eval.parquet", index=False)
        ppl.to_parquet(Path(folder) / "datadecide" / "ppl_eval.parquet", index=False)
        table = read_datadecide(folder).table
    source = table["params"].map(per_token) * table["tokens"]
    trained = table["tokens"] > 0
    relative = (table["compute"] / source - 1.0)[trained].abs()
    ratio = (table["compute"] / table["tokens"])[trained]
    constant = ratio.groupby([table.loc[trained, name] for name in ("params", "data", "seed")]).nunique().eq(1)
    without = table[list(args.tasks)].isna().all(axis=1)  # no downstream row: the source gave no compute
    print(f"source N: {'nominal' if args.nominal else 'true'}; checkpoints: {len(table):,}")
    print(f"checkpoints without a source compute (perplexity only): {int(without.sum())}")
    print(f"models with one compute/tokens at every checkpoint: {int(constant.sum())} of {len(constant)}")
    print(f"largest relative difference from the source's compute: {relative.max():.3g}")


if __name__ == "__main__":
    main()
