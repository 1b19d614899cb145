"""RunRelationshipManager and the name/path parsers: real samples, every name family, hand-made stores, properties."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddxr.errors import LinkError, SourceError
from ddxr.managers import naming, relationships
from ddxr.managers.naming import (
    FULL_MIX_EPOCHS,
    FULL_MIX_TOKENS,
    nearest_size,
    parse_cli_args,
    parse_model_paths,
    parse_run_names,
)
from ddxr.managers.relationships import LINK_COLUMNS, RunRelationshipManager, last_evaluated_steps
from ddxr.synthetic.posttraining import generate_posttraining
from ddxr.vocabulary import PARAMS, RECIPE_CODES, RECIPES, SIZES

TRAINER = "/home/u/open-instruct/open_instruct/finetune.py"
DPO_TRAINER = "/home/u/open-instruct/open_instruct/dpo_tune_cache.py"
HF_CACHE = "/home/u/.cache/huggingface/hub/models--allenai--DataDecide-{slug}-{size}/snapshots/618a196fffb8d362"
OUTPUT_FOLDER = "/home/u/open-instruct/models/{folder}/model/{parent}/"

# the six real runs, by position in wandb_runs_sample.parquet
LEGACY, NO_HISTORY, DPO, FULL_MIX, MISSING_KEYS, MATCHED = range(6)


# ---------------------------------------------------------------------------------------------------- run builders
def run(
    name: str,
    *,
    config: dict | None = None,
    args: list[str] | None = None,
    program: str | None = TRAINER,
    tags: tuple[str, ...] = ("finetune",),
    layout: str = "B",
    state: str = "finished",
    created_at: str = "2025-09-01T00:00:00Z",
    run_id: str | None = None,
) -> dict:
    """One row of a runs table as WandBStore.read_runs() returns it."""
    metadata = {} if program is None and args is None else {"program": program, "args": args or [], "gpu_count": 2}
    return {
        "run_id": run_id or name,
        "run_name": name,
        "state": state,
        "project": "ft-scaling",
        "entity": "ml-moe",
        "created_at": pd.Timestamp(created_at),
        "layout": layout,
        "config": config or {},
        "summary": {},
        "wandb_metadata": metadata,
        "system_attrs": {"tags": list(tags)},
        "tags": list(tags),
        "history_line_count": 10,
    }


def store(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def links_of(*rows: dict, pretraining: pd.DataFrame | None = None) -> pd.DataFrame:
    return RunRelationshipManager(store(*rows), pretraining).links.set_index("run_id")


def sft_config(slug: str = "dolma1_7", size: str = "150M", **extra) -> dict:
    base = {
        "model_name_or_path": HF_CACHE.format(slug=slug, size=size),
        "learning_rate": 5e-06,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 16,
        "model_size": float(SIZES.loc[size, "wandb_model_size"]),
    }
    return {**base, **extra}


def pretraining_table(rows: list[tuple[str, str, int, int, float]]) -> pd.DataFrame:
    """Return a minimal DataDecide table: (params, data, seed, step, hellaswag)."""
    return pd.DataFrame(rows, columns=["params", "data", "seed", "step", "hellaswag"])


# ---------------------------------------------------------------------------------------------------- real samples
def real_runs(real_samples: Path, layout: str = "B", keep_metadata: bool = True) -> pd.DataFrame:
    """Return the real runs as WandBStore.read_runs() gives them; layout A merges the summary over the config.

    Without ``keep_metadata``, layout A keeps what the older downloader kept: no launch metadata, no W&B attributes.
    """
    raw = pd.read_parquet(real_samples / "wandb_runs_sample.parquet")
    runs = raw[["run_id", "run_name", "state", "project", "entity"]].copy()
    runs["created_at"] = pd.to_datetime(raw["created_at"], utc=True)
    for column in ("config", "summary", "wandb_metadata", "system_attrs"):
        runs[column] = raw[column].map(json.loads)
    runs["tags"] = runs["system_attrs"].str.get("tags")
    runs["layout"] = layout
    runs["history_line_count"] = runs["system_attrs"].str.get("historyLineCount")
    if layout == "A":
        merged = [{**config, **summary} for config, summary in zip(runs["config"], runs["summary"], strict=True)]
        runs["config"] = runs["summary"] = merged
        if not keep_metadata:
            runs["wandb_metadata"] = runs["system_attrs"] = [{} for _ in range(len(runs))]
    return runs


@pytest.fixture(scope="module")
def real(real_samples: Path) -> RunRelationshipManager:
    pretraining = pd.read_parquet(real_samples / "pretrain_metrics_sample.parquet")
    return RunRelationshipManager(real_runs(real_samples), pretraining)


EXPECTED_REAL = pd.DataFrame(
    [
        ("supervised_ft", "4M", "Dolma1.7", 0, 5725, 1e-4, "system_attrs"),
        ("supervised_ft", "4M", "Dolma1.7", 0, 5725, 5e-07, "system_attrs"),
        ("dpo", "4M", "Dolma1.7", 0, 5725, 2e-07, "system_attrs"),
        ("supervised_ft", "4M", "Dolma1.7", 0, 5725, 5e-05, "system_attrs"),
        ("supervised_ft", "150M", "DCLM-Baseline", 0, 38157, 5e-05, "args"),
        ("supervised_ft", "530M", "Dolma1.7", 2, 6250, 5e-06, "system_attrs"),
    ],
    columns=["run_type", "params", "data", "seed", "base_step", "learning_rate", "learning_rate_source"],
)


def test_real_runs_link_to_the_expected_bases(real: RunRelationshipManager) -> None:
    links = real.links
    assert list(links.columns) == LINK_COLUMNS
    assert (links["link_status"] == "linked").all()
    got = links[EXPECTED_REAL.columns].astype({"seed": "int64", "base_step": "int64"}).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, EXPECTED_REAL, check_dtype=False, rtol=1e-12)
    assert links["seed"].dtype == "Int64" and links["base_step"].dtype == "Int64"
    assert links["learning_rate"].dtype == np.float64


def test_real_learning_rates_never_come_from_the_summary(real: RunRelationshipManager) -> None:
    summary_rates = {3.5374e-06, 0.0, 3.5e-09, 4.428e-07}
    assert not set(real.links["learning_rate"]) & summary_rates
    assert real.links.loc[LEGACY, "learning_rate"] == 1e-4


def test_real_dpo_run_is_flagged_with_its_missing_parent(real: RunRelationshipManager) -> None:
    dpo = real.links.loc[DPO]
    assert (
        dpo["parent_run_id"] == "2025_08_21-15_03_00_test_finetune_DD-dolma1_7-4M_main_100M_toks_--learning_rate=5e-06"
    )
    assert not dpo["parent_in_store"]
    assert dpo["parent_tokens_estimate"] == 1e8
    assert dpo["link_reason"] == "parent not in store; base from name"
    assert dpo["model_path_kind"] == "output_dir"
    assert np.isnan(dpo["budget_tokens"])  # `100Mt` in a DPO name is the parent's budget, not the DPO's
    assert real.links["parent_tokens_estimate"].drop(DPO).isna().all()


def test_real_full_mix_and_missing_config_keys(real: RunRelationshipManager) -> None:
    full_mix, missing_keys = real.links.loc[FULL_MIX], real.links.loc[MISSING_KEYS]
    assert full_mix["num_train_epochs"] == 2 and full_mix["budget_tokens"] == FULL_MIX_TOKENS * 2
    # the 150M run has no learning_rate, model path, epochs or batch keys in its config: launch args fill them
    assert missing_keys["learning_rate_source"] == "args" and missing_keys["num_train_epochs"] == 2
    assert missing_keys["model_path_kind"] == "hf_cache" and missing_keys["finetune_seed"] == 8
    assert missing_keys["effective_batch"] == 4 * 16 * 2
    # full_eval sample stops at step 10,000: the final step is the vocabulary's, and the difference is reported
    assert "pretraining table 10000, vocabulary final step 38157" in missing_keys["conflicts"]


def test_real_matched_run_uses_the_name_checkpoint_not_pretrain_steps(real: RunRelationshipManager) -> None:
    matched = real.links.loc[MATCHED]
    assert (matched["params"], matched["seed"], matched["base_step"], matched["seed_token"]) == ("530M", 2, 6250, "2")
    assert (matched["match_params"], matched["match_metric"]) == ("150M", "c4_en")
    assert matched["budget_tokens"] == 1e8 and matched["max_train_samples"] == 140000
    assert matched["conflicts"] == ""  # model_size "530100000" (a string) agrees with path and name


def test_real_hyperparameters_state_and_tags(real: RunRelationshipManager) -> None:
    links = real.links
    assert links.loc[LEGACY, "state"] == "crashed" and links.loc[LEGACY, "link_status"] == "linked"
    assert links.loc[LEGACY, "tags"] == "finetune,hidden"
    assert links.loc[LEGACY, "reduce_loss"] == "sum" and pd.isna(links.loc[LEGACY, "max_train_samples"])
    # the no-history run's metadata comes from an update script: its (absent) gpu count is not trusted
    assert pd.isna(links.loc[NO_HISTORY, "gpu_count"]) and np.isnan(links.loc[NO_HISTORY, "effective_batch"])
    assert links.loc[NO_HISTORY, "budget_tokens"] == 1e6 and links.loc[NO_HISTORY, "max_train_samples"] == 1400
    assert links.loc[DPO, "max_seq_length"] == 2048 and links.loc[DPO, "logging_steps"] == 1
    assert links.loc[MATCHED, "created_at"] == pd.Timestamp("2025-09-13T00:30:23Z")


def test_real_lineages_and_report(real: RunRelationshipManager) -> None:
    chains = real.lineage_chains()
    assert list(chains.columns) == ["lineage", "run_id", "depth"]
    assert (chains["lineage"] == chains["run_id"]).all() and (chains["depth"] == 0).all() and len(chains) == 6
    lineage = real.get_run_lineage(real.links.loc[MATCHED, "run_id"])
    assert lineage["base"] == {"params": "530M", "data": "Dolma1.7", "seed": 2, "step": 6250}
    assert type(lineage["base"]["seed"]) is int and lineage["chain"] == [real.links.loc[MATCHED, "run_id"]]
    report = real.report.set_index("link_reason")
    assert report["runs"].sum() == 6 and report.loc["parent not in store; base from name", "runs"] == 1
    assert report.loc["", "with_conflicts"] == 1


def test_final_steps_ignore_perplexity_only_rows(real: RunRelationshipManager) -> None:
    steps = real.final_steps.set_index(["params", "data"])
    assert steps.loc[("4M", "Dolma1.7"), "table_step"] == 5725  # step 5735 has perplexities only
    assert steps.loc[("150M", "C4"), "vocabulary_step"] == 38157


@pytest.mark.parametrize("keep_metadata", [True, False])
def test_layout_a_never_uses_the_logged_rate(real_samples: Path, keep_metadata: bool) -> None:
    links = RunRelationshipManager(real_runs(real_samples, "A", keep_metadata)).links
    layout_b = RunRelationshipManager(real_runs(real_samples, "B")).links
    assert (links["link_status"] == "linked").all()
    assert not set(links["learning_rate"].dropna()) & {3.5374e-06, 0.0, 3.5e-09, 4.428e-07}  # summary values
    if keep_metadata:  # W&B's config copy and the launch args survive: every peak as in layout B, same sources
        pd.testing.assert_frame_equal(
            links[["learning_rate", "learning_rate_source"]], layout_b[["learning_rate", "learning_rate_source"]]
        )
        return
    named = [NO_HISTORY, DPO, FULL_MIX, MISSING_KEYS]
    assert links.loc[named, "learning_rate_source"].eq("name").all()
    assert links.loc[named, "learning_rate"].tolist() == [5e-07, 2e-07, 5e-05, 5e-05]  # the DPO's own, not lr=
    # the merged raw_data holds only the last logged rate: report it unknown rather than guess
    assert links.loc[[LEGACY, MATCHED], "learning_rate"].isna().all()
    assert (links.loc[[LEGACY, MATCHED], "learning_rate_source"] == "missing").all()
    assert links.loc[LEGACY, "link_reason"] == "learning_rate not found in run attributes, config, args or name"


def test_learning_rate_precedence() -> None:
    """W&B's config copy → layout-B config → last --learning_rate → name → an untrained layout-A raw_data value."""
    name = "250901-155734_test_finetune_DD-c4-150M_Ft_learning_rate=5e-05"
    unnamed = "250912-172812_match_150M_c4_finetune_100Mtx1_DD-d17-530M-6250-2"
    rows = [
        # (layout, name, system_attrs, config, args) -> (rate, source)
        ("B", name, {"config": '{"learning_rate": {"value": 1e-06}}'}, {"learning_rate": 2e-06}, [], 1e-06),
        ("B", name, {}, {"learning_rate": 2e-06}, ["--learning_rate", "3e-06"], 2e-06),
        (
            "A",
            name,
            {},
            {"learning_rate": 0.0, "_step": 100},
            ["--learning_rate=3e-06", "--learning_rate", "4e-06"],
            4e-06,
        ),
        ("A", name, {}, {"learning_rate": 0.0, "_step": 100}, [], 5e-05),
        ("A", unnamed, {}, {"learning_rate": 7e-06}, [], 7e-06),
        ("A", unnamed, {}, {"learning_rate": 0.0, "_step": 100}, [], np.nan),
    ]
    runs = pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(len(rows))],
            "run_name": [row[1] for row in rows],
            "state": "finished",
            "created_at": pd.Timestamp("2025-09-01", tz="UTC"),
            "layout": [row[0] for row in rows],
            "system_attrs": [row[2] for row in rows],
            "config": [row[3] for row in rows],
            "wandb_metadata": [{"args": row[4]} for row in rows],
            "tags": [[] for _ in rows],
        }
    )
    links = RunRelationshipManager(runs).links
    np.testing.assert_array_equal(links["learning_rate"], [row[5] for row in rows])
    expected = ["system_attrs", "config", "args", "name", "raw_data", "missing"]
    assert links["learning_rate_source"].tolist() == expected


def test_synthetic_store_links_match_its_ground_truth() -> None:
    runs, _, truth = generate_posttraining(40, random_seed=3)
    runs = runs.assign(
        layout="B",
        tags=runs["system_attrs"].str.get("tags"),
        created_at=pd.to_datetime(runs["created_at"]).dt.tz_localize("UTC"),
    )
    links = RunRelationshipManager(runs).links.set_index("run_id").loc[truth["run_id"]]
    truth = truth.set_index("run_id")
    assert links["link_status"].tolist() == truth["expected_link_status"].tolist()
    for column in ("run_type", "params", "data", "seed", "base_step"):
        pd.testing.assert_series_equal(links[column], truth[column], check_dtype=False, check_names=False)
    np.testing.assert_allclose(links["learning_rate"], truth["learning_rate"], rtol=1e-12)
    in_store = links["parent_run_id"].where(links["parent_in_store"])
    assert in_store.fillna("").tolist() == truth["parent_run_id"].fillna("").tolist()


# ---------------------------------------------------------------------------------------------------- name families
FAMILIES = [
    # name, family, recipe code, size, checkpoint, budget, epochs, learning rate
    (
        "2025_08_18-22_30_05_allenai--DataDecide-dolma1_7-4M_main_default__42__1755581965",
        "legacy",
        "dolma1_7",
        "4M",
        "main",
        np.nan,
        np.nan,
        None,
    ),
    (
        "2025_08_21-08_24_43_test_finetune_DD-dclm-baseline-25p-dolma1.7-75p-150M_main_10Mtx3_--learning_rate=5e-07",
        "dd",
        "dclm-baseline-25p-dolma1.7-75p",
        "150M",
        "main",
        3e7,
        3,
        "5e-07",
    ),
    (
        "2025_08_21-15_03_00_test_finetune_DD-dolma1_7-4M_main_100M_toks_--learning_rate=5e-06",
        "dd",
        "dolma1_7",
        "4M",
        "main",
        1e8,
        np.nan,
        "5e-06",
    ),
    (
        "250901-155734_test_finetune_DD-falcon-and-cc-qc-tulu-10p-1B_Ft_learning_rate=5e-05",
        "dd",
        "falcon-and-cc-qc-tulu-10p",
        "1B",
        "main",
        FULL_MIX_TOKENS * FULL_MIX_EPOCHS,
        FULL_MIX_EPOCHS,
        "5e-05",
    ),
    (
        "250905-101010_sweep_Ft_DD-dclm_qc7fw2-60M-13750-1_lr=0.0001",
        "dd",
        "dclm_qc7fw2",
        "60M",
        "13750-1",
        FULL_MIX_TOKENS * FULL_MIX_EPOCHS,
        FULL_MIX_EPOCHS,
        "0.0001",
    ),
    (
        "250912-172812_match_150M_finetune_100Mtx1_DD-d17-530M-6250-4",
        "dd",
        "d17",
        "530M",
        "6250-4",
        1e8,
        1,
        None,
    ),
    (
        "2025_08_20-11_00_00_loss_test_DD-c4-20M_main_default_--max_train_samples=1400_--reduce_loss=mean",
        "dd",
        "c4",
        "20M",
        "main",
        np.nan,
        np.nan,
        None,
    ),
    (
        "2025_08_27-07_52_26_test_dpo_tune_cache_dd__fineweb-edu-10M__main__100Mt_lr=5e-06_default_--learning_rate=2e-07",
        "dpo",
        "fineweb-edu",
        "10M",
        "main",
        np.nan,
        np.nan,
        "2e-07",
    ),
    ("2025_08_01-00_00_00_some_other_experiment", None, None, None, None, np.nan, np.nan, None),
]


@pytest.mark.parametrize(("name", "family", "code", "size", "checkpoint", "budget", "epochs", "rate"), FAMILIES)
def test_every_name_family_parses(name, family, code, size, checkpoint, budget, epochs, rate) -> None:
    fields = parse_run_names(pd.Series([name])).iloc[0]
    for column, expected in [
        ("family", family),
        ("recipe_code", code),
        ("size", size),
        ("checkpoint", checkpoint),
        ("learning_rate", rate),
    ]:
        assert pd.isna(fields[column]) if expected is None else fields[column] == expected, column
    np.testing.assert_equal([fields["budget_tokens"], fields["epochs"]], [budget, epochs])


def test_name_details_of_matched_loss_test_and_dpo_names() -> None:
    fields = parse_run_names(pd.Series([row[0] for row in FAMILIES])).set_axis([row[1] or "none" for row in FAMILIES])
    matched, loss_test, dpo = fields.iloc[5], fields.iloc[6], fields.iloc[7]
    assert (matched["match_params"], matched["match_metric"]) == ("150M", "pile")  # no metric: pile
    assert (matched["step"], matched["seed_index"]) == (6250, 4)
    assert (loss_test["max_train_samples"], loss_test["reduce_loss"]) == ("1400", "mean")
    assert (dpo["parent_budget_tokens"], dpo["parent_learning_rate"]) == (1e8, 5e-06)
    assert fields["match_params"].notna().sum() == 1


def test_every_family_links_through_the_manager() -> None:
    rows = [run(name, config={"learning_rate": 1e-5}) for name, *_ in FAMILIES]
    links = links_of(*rows)
    expected_linked = [row[0] for row in FAMILIES if row[1] is not None]
    assert links.loc[expected_linked, "link_status"].eq("linked").all()
    by_name = links.loc[[row[0] for row in FAMILIES]]
    assert by_name["data"].tolist()[:8] == [
        "Dolma1.7",
        "DCLM-Baseline 25% / Dolma 75%",
        "Dolma1.7",
        "Falcon+CC (QC Tulu 10%)",
        "DCLM-Baseline (QC 7%, FW2)",
        "Dolma1.7",
        "C4",
        "FineWeb-Edu",
    ]
    assert by_name["base_step"].tolist()[:8] == [5725, 38157, 5725, 69369, 13750, 6250, 14584, 15117]
    assert by_name["seed"].tolist()[:8] == [0, 0, 0, 0, 1, 4, 0, 0]
    assert by_name["run_type"].tolist()[7] == "dpo"
    loss_test = by_name.iloc[6]
    assert (loss_test["max_train_samples"], loss_test["reduce_loss"]) == (1400, "mean")
    no_block = by_name.iloc[8]
    assert no_block["link_status"] == "unlinked" and "no DataDecide block" in no_block["link_reason"]


# ---------------------------------------------------------------------------------------------------- unlinked runs
def test_unknown_recipe_code_leaves_the_run_unlinked_with_the_code() -> None:
    links = links_of(run("250901-000000_test_finetune_DD-dolma2_0-150M_main_1Mtx1_--learning_rate=1e-05"))
    row = links.iloc[0]
    assert row["link_status"] == "unlinked"
    assert row["link_reason"] == "unknown recipe code 'dolma2_0' in run name; add it to vocabulary.RECIPE_CODES"
    assert row[["params", "data", "seed", "base_step"]].isna().all()  # no half-parsed base to misuse


def test_seed_index_above_four_and_unknown_checkpoint_are_unlinked() -> None:
    links = links_of(
        run("250901-000000_test_finetune_Ft_DD-c4-90M-2500-7_lr=1e-05"),
        run("250901-000000_test_dpo_dd__c4-90M__step2500__10Mt_lr=1e-05_default_--learning_rate=1e-07"),
    )
    seven, odd = links.iloc[0], links.iloc[1]
    assert seven["link_status"] == "unlinked" and seven["seed_token"] == "7"
    assert seven["link_reason"] == "seed index 7 in run name is outside 0-4 (docs/sources.md §2.4)"
    assert odd["link_status"] == "unlinked" and "unrecognised checkpoint 'step2500'" in odd["link_reason"]


def test_crashed_and_running_runs_stay_linked() -> None:
    names = [f"250901-00000{i}_test_finetune_DD-c4-4M_main_1Mtx1_--learning_rate=1e-05" for i in range(3)]
    rows = [run(name, state=state) for name, state in zip(names, ["crashed", "running", "killed"], strict=True)]
    links = links_of(*rows)
    assert links["link_status"].eq("linked").all() and links["state"].tolist() == ["crashed", "running", "killed"]


# ---------------------------------------------------------------------------------------------------- sources
def test_model_path_wins_over_the_name_and_the_conflict_is_recorded() -> None:
    name = "250901-000000_test_finetune_DD-c4-150M_main_1Mtx1_--learning_rate=1e-05"
    row = links_of(run(name, config=sft_config("dolma1_7", "300M", learning_rate=1e-05))).iloc[0]
    assert (row["params"], row["data"], row["base_step"]) == ("300M", "Dolma1.7", 45787)
    assert "params: model path 300M, name 150M, model_size 300M" in row["conflicts"]
    assert "data: model path Dolma1.7, name C4" in row["conflicts"]
    assert row["link_status"] == "linked"


def test_name_wins_over_model_size_when_there_is_no_model_path() -> None:
    config = {"model_size": "151900000", "learning_rate": "5e-05"}
    row = links_of(run("250901-000000_test_finetune_DD-c4-300M_Ft_--learning_rate=5e-05", config=config)).iloc[0]
    assert row["params"] == "300M" and row["model_path_kind"] == "missing"
    assert row["conflicts"] == "params: name 300M, model_size 150M"
    assert row["learning_rate"] == 5e-05 and row["learning_rate_source"] == "config"  # "5e-05" read as a number


def test_hf_repo_id_model_path_and_unmatched_model_size() -> None:
    config = {"model_name_or_path": "allenai/DataDecide-fineweb-pro-16M", "model_size": 7e9}
    row = links_of(run("250901-000000_test_finetune_DD-fineweb_pro-16M_Ft_--learning_rate=5e-05", config=config))
    row = row.iloc[0]
    assert (row["model_path_kind"], row["params"], row["data"]) == ("hf_repo", "16M", "FineWeb-Pro")
    assert row["conflicts"] == "params: model_size 7000000000.0 matches no DataDecide size"


def test_numbers_given_as_strings_are_coerced_and_garbage_is_reported() -> None:
    config = sft_config(
        learning_rate="1e-05", per_device_train_batch_size="4", max_train_samples="140000", num_train_epochs="two"
    )
    row = links_of(run("250901-000000_test_finetune_DD-d17-150M_main_10Mtx2", config=config)).iloc[0]
    assert row["learning_rate"] == 1e-05 and row["per_device_train_batch_size"] == 4
    assert row["max_train_samples"] == 140000 and row["effective_batch"] == 4 * 16 * 2
    assert row["num_train_epochs"] == 2  # the unreadable config value falls through to the name's x2
    assert row["conflicts"] == "num_train_epochs: config value 'two' is not a number"


def test_launch_args_in_both_forms_last_one_wins_and_disagreement_is_reported() -> None:
    args = ["--learning_rate", "5e-06", "--num-train-epochs=3", "--seed", "8", "--learning_rate=2e-05"]
    config = {"model_name_or_path": HF_CACHE.format(slug="c4", size="14M"), "learning_rate": 1e-05}
    row = links_of(run("250901-000000_test_finetune_DD-c4-14M_main_1Mtx1", config=config, args=args)).iloc[0]
    assert row["learning_rate"] == 1e-05 and row["learning_rate_source"] == "config"
    assert row["num_train_epochs"] == 3 and row["finetune_seed"] == 8
    assert "learning_rate: config 1e-05, args 2e-05" in row["conflicts"]
    assert "num_train_epochs: args 3, name 1" in row["conflicts"]


def test_metadata_of_other_programs_is_ignored() -> None:
    args = ["--learning_rate", "9e-05", "--per_device_train_batch_size", "8"]
    update = run("250901-000000_test_finetune_DD-c4-14M_main_1Mtx1", args=args, program="/x/scripts/update_wandb.py")
    row = links_of(update).iloc[0]
    assert np.isnan(row["learning_rate"]) and pd.isna(row["per_device_train_batch_size"]) and pd.isna(row["gpu_count"])


@pytest.mark.parametrize(
    "signal",
    [
        {"program": DPO_TRAINER},
        {"tags": ("dpo_tune_cache",)},
        {"config": {"dpo_beta": 5, "learning_rate": 1e-07}},
    ],
)
def test_each_dpo_signal_sets_the_run_type(signal: dict) -> None:
    name = "250901-000000_test_finetune_DD-c4-14M_main_1Mtx1_--learning_rate=1e-07"
    sft, dpo = links_of(run(name + "_sft"), run(name, **signal))["run_type"]
    assert (sft, dpo) == ("supervised_ft", "dpo")


def test_tags_fall_back_to_the_launch_tags_of_the_config() -> None:
    name = "250901-000000_test_finetune_DD-c4-14M_main_1Mtx1_--learning_rate=1e-07"
    rows = [run(name, tags=(), config={"wandb_tags": "finetune,dclm-dolma"}), run(name + "_b", tags=("a", "b"))]
    assert links_of(*rows)["tags"].tolist() == ["finetune,dclm-dolma", "a,b"]


# ---------------------------------------------------------------------------------------------------- final step
def test_final_step_from_the_pretraining_table_when_it_reaches_the_end() -> None:
    table = pretraining_table(
        [
            ("4M", "C4", 0, 5725, 0.25),
            ("4M", "C4", 0, 5745, 0.26),  # a later evaluated checkpoint: the table wins
            ("4M", "C4", 0, 5755, np.nan),  # perplexity only: not an evaluated step
            ("4M", "C4", 1, 5800, 0.26),  # another seed: never the `main` base
            ("4M", "Falcon", 0, 5725, 0.25),
        ]
    )
    names = [f"250901-000000_test_finetune_DD-{slug}-4M_main_1Mtx1_--learning_rate=1e-05" for slug in ("c4", "falcon")]
    links = links_of(*(run(name) for name in names), pretraining=table)
    assert links["base_step"].tolist() == [5745, 5725]
    assert links.iloc[0]["conflicts"] == (
        "base_step: last evaluated step of seed 0 in the pretraining table 5745, vocabulary final step 5725"
    )
    assert links.iloc[1]["conflicts"] == ""
    assert last_evaluated_steps(table)["table_step"].tolist() == [5745, 5725]


def test_bad_pretraining_tables_raise_source_errors() -> None:
    rows = [run("250901-000000_test_finetune_DD-c4-4M_main_1Mtx1")]
    no_metrics = pd.DataFrame({"params": ["4M"], "data": ["C4"], "seed": [0], "step": [5725], "pile_valppl": [9.0]})
    with pytest.raises(SourceError, match="downstream evaluation columns"):
        RunRelationshipManager(store(*rows), no_metrics)
    with pytest.raises(SourceError, match=r"lacks \['seed'\]"):
        RunRelationshipManager(store(*rows), pretraining_table([]).drop(columns="seed"))


# ---------------------------------------------------------------------------------------------------- input errors
def test_malformed_runs_tables_raise_source_errors() -> None:
    good = store(run("250901-000000_test_finetune_DD-c4-4M_main_1Mtx1"))
    with pytest.raises(SourceError, match=r"lacks column\(s\) \['layout'\].*WandBStore.read_runs"):
        RunRelationshipManager(good.drop(columns="layout"))
    with pytest.raises(SourceError, match="repeats run_id"):
        RunRelationshipManager(pd.concat([good, good]))
    with pytest.raises(SourceError, match=r"'config' holds a str for run '250901.*json.loads"):
        RunRelationshipManager(good.assign(config=json.dumps({"learning_rate": 1e-5})))


# ---------------------------------------------------------------------------------------------------- lineages
P_NAME = "250901-000000_test_finetune_DD-dolma1_7-150M_main_100M_toks_--learning_rate=5e-06"
DPO_NAME = "250905-000000_test_dpo_tune_cache_dd__dolma1_7-150M__main__100Mt_lr=5e-06_default_--learning_rate={lr}"


def dpo_run(lr: str, parent: str = P_NAME, folder: str = "250901-000000_test_finetune_DD-dolma1_7-10M_main") -> dict:
    config = {"model_name_or_path": OUTPUT_FOLDER.format(folder=folder, parent=parent), "learning_rate": float(lr)}
    config |= {"dpo_beta": 5}
    return run(DPO_NAME.format(lr=lr), config=config, program=DPO_TRAINER, tags=("dpo_tune_cache",))


def sft_run(name: str, lr: float, slug: str = "dolma1_7", **extra) -> dict:
    return run(name, config=sft_config(slug, "150M", learning_rate=lr, **extra))


@pytest.fixture(scope="module")
def lineage_store() -> RunRelationshipManager:
    """Return an SFT parent with 2 DPO children, an SFT learning-rate sweep around it, and runs that must not mix in."""
    sweep = "250902-00000{i}_test_finetune_DD-dolma1_7-150M_main_100M_toks_--learning_rate={lr}"
    rows = [
        sft_run(P_NAME, 5e-06),
        sft_run(sweep.format(i=1, lr="1e-05"), 1e-05),
        sft_run(sweep.format(i=2, lr="5e-05"), 5e-05),
        sft_run(sweep.format(i=3, lr="5e-06"), 5e-06),  # rerun with the same hyperparameters: not a sweep point
        sft_run(sweep.format(i=4, lr="5e-06") + "_x2", 5e-06, num_train_epochs=2),  # differs in epochs
        sft_run("250902-000005_test_finetune_100Mtx1_DD-dolma1_7-150M-1250-1_lr=1e-05", 1e-05),  # other base
        sft_run("250902-000006_test_finetune_DD-c4-150M_main_100M_toks_--learning_rate=1e-05", 1e-05, slug="c4"),
        sft_run("250902-000007_test_finetune_DD-nonsense-150M_main_100M_toks", 1e-05, slug="nonsense"),
        dpo_run("1e-07"),
        dpo_run("2e-07"),
        dpo_run("3e-07", parent="250801-000000_gone_finetune_DD-dolma1_7-150M_main_100M_toks_--learning_rate=5e-06"),
        dpo_run("4e-07", parent="250902-000007_test_finetune_DD-nonsense-150M_main_100M_toks"),
    ]
    return RunRelationshipManager(store(*rows))


def test_dpo_children_inherit_the_parent_base_and_chain(lineage_store: RunRelationshipManager) -> None:
    child = DPO_NAME.format(lr="1e-07")
    lineage = lineage_store.get_run_lineage(child)
    assert lineage == {
        "run_id": child,
        "base": {"params": "150M", "data": "Dolma1.7", "seed": 0, "step": 38157},
        "chain": [P_NAME, child],
        "link_status": "linked",
        "link_reason": "",
    }
    row = lineage_store.links.set_index("run_id").loc[child]
    # the folder above the parent names 10M: it is ignored, the parent's run name decides
    assert row["parent_run_id"] == P_NAME and row["parent_in_store"] and np.isnan(row["parent_tokens_estimate"])


def test_comparable_runs_form_the_sweep(lineage_store: RunRelationshipManager) -> None:
    epochs_variant = "250902-000004_test_finetune_DD-dolma1_7-150M_main_100M_toks_--learning_rate=5e-06_x2"
    sweep = lineage_store.get_comparable_runs(P_NAME)
    assert sweep == [  # by learning rate; the rerun with equal hyperparameters and other bases are left out
        epochs_variant,
        "250902-000001_test_finetune_DD-dolma1_7-150M_main_100M_toks_--learning_rate=1e-05",
        "250902-000002_test_finetune_DD-dolma1_7-150M_main_100M_toks_--learning_rate=5e-05",
    ]
    rerun = "250902-000003_test_finetune_DD-dolma1_7-150M_main_100M_toks_--learning_rate=5e-06"
    assert lineage_store.get_comparable_runs(rerun) == sweep
    assert P_NAME in lineage_store.get_comparable_runs(epochs_variant)
    assert lineage_store.get_comparable_runs(DPO_NAME.format(lr="1e-07")) == [DPO_NAME.format(lr="2e-07")]
    # a DPO run from another (absent) parent is on the same base but not in the same sweep
    assert lineage_store.get_comparable_runs(DPO_NAME.format(lr="3e-07")) == []


def test_lineage_chains_hold_every_linked_run_with_its_ancestors(lineage_store: RunRelationshipManager) -> None:
    chains = lineage_store.lineage_chains()
    links = lineage_store.links
    linked = set(links.loc[links["link_status"] == "linked", "run_id"])
    assert set(chains["lineage"]) == linked and set(chains["run_id"]) <= linked
    dpo_chain = chains[chains["lineage"] == DPO_NAME.format(lr="2e-07")]
    assert dpo_chain[["run_id", "depth"]].values.tolist() == [[P_NAME, 0], [DPO_NAME.format(lr="2e-07"), 1]]
    orphan = chains[chains["lineage"] == DPO_NAME.format(lr="3e-07")]
    assert orphan["run_id"].tolist() == [DPO_NAME.format(lr="3e-07")] and orphan["depth"].tolist() == [0]
    sizes = chains.groupby("lineage").size()
    assert sizes.max() == 2 and (sizes == 2).sum() == 2


def test_unlinked_parent_unlinks_its_children(lineage_store: RunRelationshipManager) -> None:
    links = lineage_store.links.set_index("run_id")
    child = links.loc[DPO_NAME.format(lr="4e-07")]
    assert child["link_status"] == "unlinked"
    assert child["link_reason"].startswith(
        "parent chain root '250902-000007_test_finetune_DD-nonsense-150M_main_100M_toks' is unlinked"
    )
    assert "base: parent chain gives ?/?/seed 0/step ?" not in child["conflicts"]
    report = lineage_store.report
    assert report["runs"].sum() == len(links) and set(report["link_status"]) == {"linked", "unlinked"}


def test_lineage_errors_name_the_run(lineage_store: RunRelationshipManager) -> None:
    with pytest.raises(LinkError, match=r"run_id 'no-such-run' is not among the 12 runs"):
        lineage_store.get_run_lineage("no-such-run")
    with pytest.raises(LinkError, match=r"no-such-run"):
        lineage_store.get_comparable_runs("no-such-run")
    unlinked = "250902-000007_test_finetune_DD-nonsense-150M_main_100M_toks"
    with pytest.raises(LinkError, match=r"is unlinked \(unknown recipe code 'nonsense'.*pick a linked run"):
        lineage_store.get_comparable_runs(unlinked)
    assert lineage_store.get_run_lineage(unlinked)["base"]["data"] is None


def test_dpo_whose_own_name_disagrees_with_its_parent_records_the_conflict() -> None:
    child = dpo_run("1e-07") | {"run_id": "child", "run_name": DPO_NAME.format(lr="1e-07").replace("150M", "60M")}
    links = links_of(sft_run(P_NAME, 5e-06), child)
    row = links.loc["child"]
    assert row["params"] == "150M" and row["link_status"] == "linked"
    assert row["conflicts"] == (
        "base: parent chain gives 150M/Dolma1.7/seed 0/step 38157, the run's own sources 60M/Dolma1.7/seed 0/step 29042"
    )


def test_parent_cycles_do_not_hang_and_are_unlinked() -> None:
    a = "250901-000000_test_finetune_DD-c4-4M_main_1Mtx1_a"
    b = "250901-000000_test_finetune_DD-c4-4M_main_1Mtx1_b"
    rows = [
        run(a, config={"model_name_or_path": OUTPUT_FOLDER.format(folder="f", parent=b)}),
        run(b, config={"model_name_or_path": OUTPUT_FOLDER.format(folder="f", parent=a)}),
    ]
    links = links_of(*rows)
    assert links["link_status"].eq("unlinked").all()
    assert links["link_reason"].str.contains("parent chain loops back onto itself").all()


def test_duplicate_parent_names_pick_the_latest_and_say_so() -> None:
    older = sft_run(P_NAME, 5e-06) | {"run_id": "older", "created_at": pd.Timestamp("2025-08-01T00:00:00Z")}
    newer = sft_run(P_NAME, 5e-06) | {"run_id": "newer", "created_at": pd.Timestamp("2025-08-02T00:00:00Z")}
    links = links_of(older, newer, dpo_run("1e-07"))
    child = links.loc[DPO_NAME.format(lr="1e-07")]
    assert child["parent_run_id"] == "newer"
    assert child["conflicts"] == "parent: 2 runs share the name; the latest is used"


# ---------------------------------------------------------------------------------------------------- properties
ALL_CODES = sorted(RECIPE_CODES)
NUMBERS = st.sampled_from(["5e-07", "1e-06", "2e-05", "0.0001", "3.5e-05", "1e-4"])


@st.composite
def sft_names(draw) -> tuple[str, dict]:
    """Return a generated SFT run name and the fields it must parse back to."""
    code, size = draw(st.sampled_from(ALL_CODES)), draw(st.sampled_from(PARAMS))
    explicit = draw(st.booleans())
    step, seed = draw(st.integers(0, 70_000)), draw(st.integers(0, 4))
    budget = draw(st.sampled_from(["Mtx", "M_toks", "Mt", "Ft"]))
    millions, epochs = draw(st.integers(1, 999)), draw(st.integers(1, 4))
    rate = draw(NUMBERS)
    budget_token = {"Mtx": f"{millions}Mtx{epochs}", "M_toks": f"{millions}M_toks", "Mt": f"{millions}Mt", "Ft": "Ft"}
    budget_token = budget_token[budget]
    if explicit:
        name = f"250901-155734_test_finetune_{budget_token}_DD-{code}-{size}-{step}-{seed}_lr={rate}"
    else:
        name = f"2025_08_21-08_24_43_test_finetune_DD-{code}-{size}_main_{budget_token}_--learning_rate={rate}"
    tokens = {
        "Mtx": millions * 1e6 * epochs,
        "M_toks": millions * 1e6,
        "Mt": millions * 1e6,
        "Ft": FULL_MIX_TOKENS * 2.0,
    }
    tokens = tokens[budget]
    expected = {
        "family": "dd",
        "recipe_code": code,
        "size": size,
        "checkpoint": f"{step}-{seed}" if explicit else "main",
        "budget_tokens": tokens,
        "learning_rate": rate,
    }
    return name, expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(sft_names(), min_size=1, max_size=8))
def test_generated_sft_names_round_trip(cases: list[tuple[str, dict]]) -> None:
    fields = parse_run_names(pd.Series([name for name, _ in cases]))
    expected = pd.DataFrame([fields for _, fields in cases])
    pd.testing.assert_frame_equal(fields[expected.columns], expected, check_dtype=False, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    code=st.sampled_from([RECIPES.loc[data, "slug"] for data in RECIPES.index]),
    size=st.sampled_from(PARAMS),
    parent_millions=st.integers(1, 5000),
    sft_rate=NUMBERS,
    dpo_rate=NUMBERS,
)
def test_generated_dpo_names_round_trip(code: str, size: str, parent_millions: int, sft_rate: str, dpo_rate: str):
    name = f"2025_08_27-07_52_26_test_dpo_tune_cache_dd__{code}-{size}__main__{parent_millions}Mt_lr={sft_rate}"
    fields = parse_run_names(pd.Series([f"{name}_default_--learning_rate={dpo_rate}"])).iloc[0]
    assert (fields["family"], fields["recipe_code"], fields["size"]) == ("dpo", code, size)
    assert fields["parent_budget_tokens"] == parent_millions * 1e6
    assert fields["parent_learning_rate"] == float(sft_rate) and fields["learning_rate"] == dpo_rate
    assert np.isnan(fields["budget_tokens"])


@pytest.mark.parametrize("data", list(RECIPES.index))
def test_every_recipe_spelling_resolves_in_names_and_paths(data: str) -> None:
    spellings = [code for code, name in RECIPE_CODES.items() if name == data]
    slug = RECIPES.loc[data, "slug"]
    assert {slug, RECIPES.loc[data, "internal_id"]} <= set(spellings)
    rows = [
        run(f"250901-000000_test_finetune_DD-{code}-90M_main_1Mtx1_--learning_rate=1e-05", run_id=f"name-{i}")
        for i, code in enumerate(spellings)
    ]
    rows.append(
        run(
            "250901-000000_test_finetune_Ft_DD-d17-90M-1250-0",  # the path's slug wins over the name's code
            config={"model_name_or_path": f"allenai/DataDecide-{slug}-90M"},
            run_id="path",
        )
    )
    links = links_of(*rows)
    assert links["data"].eq(data).all() and links["link_status"].eq("linked").all()
    assert links["params"].eq("90M").all()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(PARAMS), st.floats(0.99, 1.01), st.booleans()),
        min_size=1,
        max_size=20,
    )
)
def test_model_size_maps_to_the_nearest_size(sizes: list[tuple[str, float, bool]]) -> None:
    values = [SIZES.loc[label, "wandb_model_size"] * jitter for label, jitter, _ in sizes]
    raw = pd.Series([str(int(value)) if as_text else value for value, (*_, as_text) in zip(values, sizes, strict=True)])
    assert nearest_size(raw).tolist() == [label for label, *_ in sizes]


def test_model_size_examples_from_the_format_notes() -> None:
    got = nearest_size(pd.Series([3.7e6, 151.9e6, "530100000", 681.3e6, 1176.8e6, 1.0, "abc", None]))
    assert got.tolist()[:5] == ["4M", "150M", "530M", "750M", "1B"]
    assert got.iloc[5:].isna().all()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(sft_names(), min_size=2, max_size=8, unique_by=lambda case: case[0]), st.randoms())
def test_links_do_not_depend_on_row_order(cases: list[tuple[str, dict]], random) -> None:
    rows = [run(name, config={"per_device_train_batch_size": i + 1}) for i, (name, _) in enumerate(cases)]
    shuffled = random.sample(rows, len(rows))
    together = links_of(*rows)
    pd.testing.assert_frame_equal(links_of(*shuffled).loc[together.index], together)
    assert together["learning_rate"].tolist() == [float(fields["learning_rate"]) for _, fields in cases]
    assert together["per_device_train_batch_size"].tolist() == list(range(1, len(rows) + 1))


def test_links_of_a_store_equal_links_of_each_run_alone() -> None:
    families = [FAMILIES[i][0] for i in (0, 4, 7, 8)]  # legacy, explicit checkpoint, DPO, no block
    rows = [run(name) for name in families] + [sft_run(P_NAME, 5e-06), dpo_run("3e-07", parent="gone")]
    together = links_of(*rows)
    alone = pd.concat([links_of(row) for row in rows])
    pd.testing.assert_frame_equal(together, alone, check_dtype=False)


# ---------------------------------------------------------------------------------------------------- parsers
def test_cli_args_keep_index_and_handle_flags() -> None:
    args = pd.Series(
        [["--use_flash_attn", "--seed", "8", "--add_bos"], None, ["--seed=3", "--seed", "--x"]], index=[10, 20, 30]
    )
    got = parse_cli_args(args, ("seed", "use_flash_attn", "add_bos"))
    assert got.index.tolist() == [10, 20, 30]
    assert got.loc[10, "seed"] == "8"
    assert got.loc[10, ["use_flash_attn", "add_bos"]].isna().all()  # flags without a value
    assert got.loc[30, "seed"] == "3"  # a `--seed` without a value sets nothing
    assert got.loc[20].isna().all()


def test_cli_args_match_whole_option_names_in_both_spellings() -> None:
    args = pd.Series(
        [
            ["--learning-rate", "1e-05", "--seed_offset", "3", "--learning_rate_scale=2", "--seed=4"],
            ["--learning_rate=2e-05", "--learning-rate", "3e-05", "--seedling", "9"],
        ]
    )
    got = parse_cli_args(args, ("learning_rate", "seed"))
    assert got.to_numpy().tolist() == [["1e-05", "4"], ["3e-05", np.nan]]


def test_model_path_kinds() -> None:
    paths = pd.Series(
        [
            HF_CACHE.format(slug="dclm-baseline-qc-7p-fw2", size="750M"),
            "allenai/DataDecide-c4-1B",
            "allenai/OLMo-1B",
            OUTPUT_FOLDER.format(folder="f", parent="parent_run"),
            "",
            None,
        ]
    )
    got = parse_model_paths(paths)
    assert got["kind"].tolist() == ["hf_cache", "hf_repo", "hf_repo", "output_dir", "missing", "missing"]
    assert got["slug"].tolist()[:2] == ["dclm-baseline-qc-7p-fw2", "c4"] and got["slug"].iloc[2:].isna().all()
    assert got["size"].tolist()[:2] == ["750M", "1B"]
    assert got.loc[3, "last_component"] == "parent_run"


@pytest.mark.parametrize("module", [naming, relationships])
def test_docstring_examples_run(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted >= 3 and result.failed == 0
