"""Check: what a build recovers from the same generated runs stored in layout B and in layout A.

Writes the generator's default store (``ddxr.synthetic.generate`` defaults: 5 sizes x 6 recipes, 60 runs) three
times — layout B, layout A as the older downloader left it (merged ``raw_data`` only), and layout A with the launch
metadata and W&B run attributes kept in columns — builds each, and prints per layout the post-training scores in the
Dataset (distinct run x OLMES task primary scores at a run's end) and the runs whose peak learning rate equals the
generator's truth, next to the truth's totals.

    python benchmarks/layout_fidelity.py [--pg postgresql://postgres@127.0.0.1:5432]

Without ``--pg`` the stores are SQLite files in a temporary folder; with it, throwaway PostgreSQL databases that are
dropped at the end.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2

from ddxr.facade import DataDecideNext
from ddxr.synthetic import generate
from ddxr.vocabulary import OLMES_TASKS

LAYOUTS = {"B": {}, "A": {"store_layout": "A"}, "A + attributes": {"store_layout": "A", "layout_a_attributes": True}}


def recovered(folder: Path, url: str, options: dict) -> dict[str, int]:
    truth = generate(folder, store_url=url, **options).runs.set_index("run_id")
    dd = DataDecideNext(folder, url, cache_dir=folder / "cache", progress=False)
    curves, _ = dd.build()
    post = curves.isel(point=np.flatnonzero(~curves["pretraining_phase"].to_numpy()))
    scores = post[list(OLMES_TASKS)].to_dataframe()[list(OLMES_TASKS)].set_index(post["run_id"].to_numpy())
    scores = scores.stack().dropna()
    links = dd.runs_table().set_index("run_id")
    expected = truth["learning_rate"].reindex(links.index)
    return {
        "scores": int((~scores.index.duplicated()).sum()),
        "scores_truth": int(truth.loc[links.index[links["in_curves"]], list(OLMES_TASKS)].notna().sum().sum()),
        "peak_lr": int(np.isclose(links["learning_rate"], expected, rtol=1e-12, atol=0).sum()),
        "runs": len(links),
        "lr_sources": links["learning_rate_source"].value_counts().to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", metavar="SERVER", help="PostgreSQL server URL without a database name")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as temporary:
        for label, options in LAYOUTS.items():
            folder = Path(temporary) / label.replace(" ", "")
            if args.pg:
                name = f"ddxr_layouts_{uuid.uuid4().hex[:8]}"
                admin = psycopg2.connect(f"{args.pg}/postgres")
                admin.autocommit = True
                admin.cursor().execute(f'CREATE DATABASE "{name}"')
                try:
                    rows[label] = recovered(folder, f"{args.pg}/{name}", options)
                finally:
                    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    admin.close()
            else:
                rows[label] = recovered(folder, f"sqlite:///{folder}.db", options)
    table = pd.DataFrame(rows).T
    print(f"store: {'PostgreSQL' if args.pg else 'SQLite'}, generator defaults")
    print(table.to_string())


if __name__ == "__main__":
    main()
