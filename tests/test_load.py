"""``ddxr load``: W&B exports (parquet, JSONL) into a real PostgreSQL store, with progress and counted skips."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ddxr import WandBStore
from ddxr.cli import main
from ddxr.errors import InvalidArgumentError, SourceError
from ddxr.sources.exports import load_export

KEYS = ["train_loss", "total_tokens", "learning_rate"]


@pytest.fixture(scope="module")
def sample_history(real_samples: Path) -> pd.DataFrame:
    return pd.read_parquet(real_samples / "wandb_history_sample.parquet")


def _stored_history(url: str) -> pd.DataFrame:
    with WandBStore(url) as store:
        return store.read_history(None, KEYS).sort_values(["run_id", "step"], ignore_index=True)


def _assert_history_equals(url: str, expected: pd.DataFrame) -> None:
    stored = _stored_history(url)
    expected = expected.sort_values(["run_id", "step"], ignore_index=True)
    assert stored["run_id"].tolist() == expected["run_id"].tolist()
    assert stored["step"].tolist() == expected["step"].tolist()
    for key in KEYS:
        np.testing.assert_allclose(stored[key].to_numpy(float), expected[key].to_numpy(float), rtol=1e-12)


def test_parquet_export_loads_every_run_and_row_with_progress_lines(pg_url, real_samples, sample_history, capsys):
    argv = ["load", "--runs", str(real_samples / "wandb_runs_sample.parquet")]
    argv += ["--history", str(real_samples / "wandb_history_sample.parquet"), "--db", pg_url, "--chunk-size", "1000"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "loaded 6 runs and 2,549 history rows"
    # not a terminal: one plain line per batch, no carriage returns or cursor escapes
    assert captured.err.splitlines() == [
        "ddxr load: (1000/2549 rows)",
        "ddxr load: (2000/2549 rows)",
        "ddxr load: (2549/2549 rows)",
    ]
    with WandBStore(pg_url) as store:
        runs = store.read_runs()
    assert len(runs) == 6
    crashed = runs.set_index("run_id").loc["2025_08_18-22_30_05_allenai--DataDecide-dolma1_7-4M_main_default"]
    assert crashed["state"] == "crashed" and crashed["tags"] == ["finetune", "hidden"]
    _assert_history_equals(pg_url, sample_history)


def test_loading_twice_gives_the_same_store_and_quiet_prints_no_progress(pg_url, real_samples, sample_history, capsys):
    argv = ["load", "--runs", str(real_samples / "wandb_runs_sample.parquet")]
    argv += ["--history", str(real_samples / "wandb_history_sample.parquet"), "--db", pg_url, "--quiet"]
    assert main(argv) == 0 and main(argv) == 0
    assert capsys.readouterr().err == ""
    _assert_history_equals(pg_url, sample_history)


def test_rows_of_a_run_spread_over_batches_are_written_together(pg_url, real_samples, sample_history, tmp_path):
    # a store write replaces a run's whole history: interleaved runs and small batches must still keep every row
    shuffled = sample_history.sample(frac=1.0, random_state=3)
    shuffled.to_parquet(tmp_path / "wandb_history_shuffled.parquet", row_group_size=97)
    with WandBStore(pg_url) as store:
        report = load_export(
            store,
            real_samples / "wandb_runs_sample.parquet",
            tmp_path / "wandb_history_shuffled.parquet",
            chunk_size=97,
            progress=False,
        )
    assert (report.runs, report.history_rows, dict(report.skipped)) == (6, 2549, {})
    _assert_history_equals(pg_url, sample_history)


def _jsonl_export(folder: Path, real_samples: Path, history: pd.DataFrame) -> pd.DataFrame:
    """Return the real samples written as a JSONL export (runs.jsonl, history.jsonl, manifest.json) plus bad lines."""
    runs = pd.read_parquet(real_samples / "wandb_runs_sample.parquet")
    lines = []
    for run in runs.to_dict("records"):
        attrs = json.loads(run["system_attrs"])
        record = {
            "run_id": run["run_id"],
            "name": run["run_name"],
            "state": run["state"],
            "created_at": run["created_at"],
            "tags": attrs["tags"],
            "config": json.loads(run["config"]),
            "summary_metrics": json.loads(run["summary"]),
            "system_metrics": json.loads(run["system_metrics"]),
            "metadata": json.loads(run["wandb_metadata"]),
            "history_keys": [],
        }
        lines.append({"run": record, "exported_at": "2025-11-10T00:00:00Z"})
    lines.append({"run": {"run_id": "", "name": "no id", "created_at": "2025-11-10T00:00:00Z"}})
    lines.append({"run": {"run_id": "bad-date", "name": "bad-date", "created_at": "yesterday"}})
    (folder / "runs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "manifest.json").write_text(json.dumps({"entity": "ml-moe", "project": "ft-scaling"}))
    metrics = history[KEYS].to_dict("records")
    rows = [
        {
            "run_id": run_id,
            "step": int(step),
            "timestamp": timestamp,
            "runtime": runtime,
            "wandb_metadata": {"runtime": runtime},
            "metrics": {key: value for key, value in values.items() if not pd.isna(value)},
            "extra": {},
        }
        for run_id, step, timestamp, runtime, values in zip(
            history["run_id"], history["step"], history["timestamp"], history["runtime"], metrics, strict=True
        )
    ]
    first = rows[0]["run_id"]
    rows += [
        {"run_id": None, "step": 5, "metrics": {"train_loss": 1.0}},
        {"run_id": first, "step": 2.5, "metrics": {"train_loss": 1.0}},
        {"run_id": "not-exported", "step": 1, "metrics": {"train_loss": 1.0}},
        {"run_id": first, "step": 999_999, "metrics": {"train_loss": "n/a", "media": {"_type": "image-file"}}},
    ]
    (folder / "history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return runs


def test_jsonl_export_folder_loads_with_every_skip_counted(pg_url, real_samples, sample_history, tmp_path, capsys):
    _jsonl_export(tmp_path, real_samples, sample_history)
    assert main(["load", str(tmp_path), "--db", pg_url, "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:1] == ["loaded 6 runs and 2,550 history rows"]
    assert sorted(out[1:-1]) == [
        "skipped 1: history rows of runs not in the runs file",
        "skipped 1: history rows whose step is not an integer",
        "skipped 1: history rows without a run_id",
        "skipped 1: history values of 'media' that are not numbers (stored as missing)",
        "skipped 1: history values of 'train_loss' that are not numbers (stored as missing)",
        "skipped 1: runs whose created_at is not an ISO timestamp",
        "skipped 1: runs without a run_id",
    ]
    assert out[-1].startswith("into postgresql")
    with WandBStore(pg_url) as store:
        runs = store.read_runs().set_index("run_id")
    assert set(runs["project"]) == {"ft-scaling"} and set(runs["entity"]) == {"ml-moe"}
    dpo = runs.loc[runs.index.str.contains("dpo_tune_cache")].iloc[0]
    assert dpo["config"]["learning_rate"] == 2e-07
    # the row whose values were not numbers is kept with missing values
    extra = sample_history.iloc[:0].reindex([0]).assign(run_id=sample_history["run_id"].iloc[0], step=999_999)
    _assert_history_equals(pg_url, pd.concat([sample_history, extra], ignore_index=True))


def test_loaded_store_builds_like_the_real_samples(pg_url, real_samples, tmp_path, capsys):
    argv = ["load", "--runs", str(real_samples / "wandb_runs_sample.parquet")]
    argv += ["--history", str(real_samples / "wandb_history_sample.parquet"), "--db", pg_url, "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()
    # the build with its output captured, as in a log: progress as plain lines, errors on their own line
    build = ["build", "--datadecide", str(real_samples / "pretrain_metrics_sample.parquet"), "--db", pg_url]
    assert main([*build, "--out", str(tmp_path / "r.nc")]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.err + captured.out and "\r" not in captured.err + captured.out
    # one line per completed stage, the last one counting all of them
    stages = captured.err.splitlines()
    assert all(line.startswith("ddxr build: ") for line in stages)
    assert re.fullmatch(r"ddxr build: .+ \((\d+)/\1 stage\)", stages[-1]) and len(stages) >= 5
    assert "runs_linked: 6" in captured.out
    (tmp_path / "broken.parquet").write_text("not parquet")
    build[2] = str(tmp_path / "broken.parquet")
    assert main([*build, "--out", str(tmp_path / "r2.nc")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("ddxr build: ") and "broken.parquet" in err.splitlines()[-1]


def test_bad_exports_are_clear_errors(pg_url, tmp_path, capsys):
    assert main(["load", str(tmp_path / "missing"), "--db", pg_url]) == 1
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("")
    assert main(["load", str(tmp_path), "--db", pg_url]) == 1
    err = capsys.readouterr().err.strip()
    assert "expected runs.jsonl and history.jsonl" in err and "--runs FILE --history FILE" in err
    assert len(err.splitlines()) == 1
    assert main(["load", str(tmp_path), "--runs", "r.jsonl", "--db", pg_url]) == 1
    assert "both --runs FILE and --history FILE" in capsys.readouterr().err
    with WandBStore(pg_url) as store:
        with pytest.raises(InvalidArgumentError, match=r"ends in \.parquet or \.jsonl"):
            load_export(store, tmp_path / "notes.txt", tmp_path / "notes.txt")
        with pytest.raises(SourceError, match="does not exist"):
            load_export(store, tmp_path / "runs.jsonl", tmp_path / "history.jsonl")


def test_readme_example_is_the_example_file_and_loads_into_postgresql(pg_url):
    root = Path(__file__).resolve().parents[1]
    script = root / "examples" / "load_wandb_runs.py"
    readme = (root / "README.md").read_text()
    block = readme.split("<!-- example: examples/load_wandb_runs.py -->\n```python\n", 1)[1].split("```", 1)[0]
    assert script.read_text().endswith(block)  # the README quotes the script's code whole
    result = subprocess.run([sys.executable, str(script), pg_url], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[0] == f"1 run(s), 3 history rows in {pg_url}"
    with WandBStore(pg_url) as store:
        runs = store.read_runs()
        history = store.read_history(None, ["train_loss", "total_tokens"])
    assert runs["config"].iloc[0]["learning_rate"] == 5e-05 and runs["tags"].iloc[0] == ["finetune"]
    assert history["train_loss"].tolist() == [2.31, 1.87, 1.52]
    assert history["total_tokens"].tolist() == [91_000_000, 182_000_000, 273_000_000]


def test_a_layout_a_runs_table_is_refused_not_misread(pg_url, real_samples, tmp_path):
    runs = pd.read_parquet(real_samples / "wandb_runs_sample.parquet")
    runs = runs.rename(columns={"config": "raw_data"}).drop(columns=["summary"])
    runs.to_parquet(tmp_path / "wandb_runs.parquet")
    with WandBStore(pg_url) as store, pytest.raises(SourceError, match="layout-A runs table .* ddxr build --db"):
        load_export(store, tmp_path / "wandb_runs.parquet", real_samples / "wandb_history_sample.parquet")
