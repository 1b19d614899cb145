"""Load your own W&B runs and their history into a W&B store that ``ddxr build`` reads.

Usage: ``python examples/load_wandb_runs.py postgresql://localhost/wandb`` (default ``sqlite:///runs.db``).

One finetuning run of a 150M DCLM-Baseline checkpoint is written by hand so the script runs anywhere; with the W&B
API the same two frames come from ``wandb.Api().runs("entity/project")``::

    runs = pd.DataFrame([{"run_id": r.id, "run_name": r.name, "state": r.state, "project": r.project,
                          "entity": r.entity, "created_at": r.created_at, "config": dict(r.config),
                          "summary": dict(r.summary), "system_attrs": {"tags": r.tags}} for r in api_runs])
    history = pd.concat(r.history(samples=100_000).select_dtypes("number").assign(run_id=r.id) for r in api_runs)
    history = history.rename(columns={"_step": "step", "_timestamp": "timestamp", "_runtime": "runtime"})
"""

import sys

import pandas as pd

import ddxr

url = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///runs.db"
run_id = "250901-155734_test_finetune_DD-dclm-baseline-150M_Ft_learning_rate=5e-05"

# one row per run; config and summary are plain dicts (W&B's run.config and run.summary)
runs = pd.DataFrame(
    {
        "run_id": [run_id],
        "run_name": [run_id],
        "state": ["finished"],
        "project": ["ft-scaling"],
        "entity": ["ml-moe"],
        "created_at": ["2025-09-01T22:57:34Z"],
        "config": [{"learning_rate": 5e-05, "model_name_or_path": "allenai/DataDecide-dclm-baseline-150M"}],
        "summary": [{"train_loss": 1.52, "total_tokens": 1_330_254_868}],
        "system_attrs": [{"tags": ["finetune"]}],
    }
)
# one row per logged step; every column besides run_id, step, timestamp and runtime is a metric
history = pd.DataFrame(
    {
        "run_id": run_id,
        "step": [100, 200, 300],
        "timestamp": [1756767600.0, 1756768200.0, 1756768800.0],  # epoch seconds (or datetimes)
        "train_loss": [2.31, 1.87, 1.52],
        "learning_rate": [5e-05, 4.1e-05, 2.9e-05],
        "total_tokens": [91_000_000, 182_000_000, 273_000_000],
    }
)

with ddxr.WandBStore(url) as store:
    store.create_tables()  # layout B; a store that already has these tables keeps its rows
    store.store_runs(runs)  # replaces runs with the same run_id
    store.store_history(history)  # replaces the whole history of every run in the frame
    stored = store.read_history([run_id], ["train_loss", "total_tokens"])
    print(f"{len(store.read_runs())} run(s), {len(stored)} history rows in {store.url_redacted}")
    print(stored[["step", "train_loss", "total_tokens"]].to_string(index=False))
