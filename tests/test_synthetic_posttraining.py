"""The W&B post-training generator: realistic runs whose ground truth a correct reader must recover."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ddxr.synthetic.__main__ as cli
from ddxr.errors import DdxrError, InvalidArgumentError
from ddxr.sources.wandb_store import WandBStore
from ddxr.synthetic import SyntheticTruth, generate
from ddxr.synthetic.curves import TASK_RANGE, compute_at, primary_score, tokens_at
from ddxr.synthetic.posttraining import (
    DPO_TOKENS_PER_PAIR,
    HISTORY_COLUMNS,
    MESS_KINDS,
    TRUTH_COLUMNS,
    generate_posttraining,
    repaired_total_tokens,
)
from ddxr.vocabulary import OLMES_TASKS, PARAMS, RECIPE_CODES, RECIPES, SEED_NAMES, SIZES

SMALL = {"params": ("4M", "150M"), "data": ("Dolma1.7", "C4")}
SIZE_LIST = "|".join(PARAMS)
# docs/sources.md §6.3 and §6.1, written out independently of the generator
DD_BLOCK = re.compile(rf"DD-(?P<recipe>.+?)-(?P<size>{SIZE_LIST})(-(?P<step>\d+)-(?P<n>\d+))?(?=_|$)")
DPO_BLOCK = re.compile(
    rf"_dd__(?P<slug>.+?)-(?P<size>{SIZE_LIST})__(?P<ckpt>main)__(?P<tokens>\d+)Mt_lr=(?P<sft_lr>[^_]+)"
    r"_default_--learning_rate=(?P<lr>[^_]+)$"
)
LEGACY = re.compile(rf"_allenai--DataDecide-(?P<slug>.+?)-(?P<size>{SIZE_LIST})_(?P<ckpt>main)_default$")
MODEL_PATH = re.compile(rf"DataDecide-(?P<slug>.+)-(?P<size>{SIZE_LIST})(/|$)")
STAMP = re.compile(r"^(?:(?P<old>\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2})|(?P<new>\d{6}-\d{6}))_")
NAME_LR = re.compile(r"(?:learning_rate=|_lr=)(?P<lr>[0-9.e-]+)$")


@pytest.fixture(scope="module")
def messy() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return generate_posttraining(60, random_seed=5)


@pytest.fixture(scope="module")
def clean() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return generate_posttraining(30, random_seed=6, messy=False)


def dump(runs: pd.DataFrame) -> str:
    return json.dumps(runs.to_dict("records"), default=str)


def by_run(runs: pd.DataFrame, column: str) -> dict[str, dict]:
    return dict(zip(runs["run_id"], runs[column], strict=True))


def decode_name(name: str) -> dict[str, object] | None:
    """(params, data, seed, base_step) from a run name alone, or None when the recipe spelling is unknown."""
    dpo = DPO_BLOCK.search(name)
    legacy = LEGACY.search(name)
    block = dpo or legacy
    if block is None:
        block = DD_BLOCK.search(name)
        assert block is not None, f"no DD block in {name}"
        recipe = block["recipe"]
    else:
        recipe = block["slug"]
    if recipe not in RECIPE_CODES:
        return None
    size = block["size"]
    explicit = block.groupdict().get("step")
    step = int(explicit) if explicit else int(SIZES.loc[size, "final_step"])
    seed = int(block["n"]) if explicit else 0
    return {"params": size, "data": RECIPE_CODES[recipe], "seed": seed, "base_step": step}


def last_component(path: str) -> str:
    return [part for part in path.split("/") if part][-1]


def arg_value(args: list[str], flag: str) -> str | None:
    """Return the last value given for ``flag`` (argparse semantics), or None."""
    values = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == flag]
    return values[-1] if values else None


def the(truth: pd.DataFrame, mess: str) -> pd.Series:
    rows = truth[truth["mess"] == mess]
    assert len(rows) == 1, f"expected one {mess} run, found {len(rows)}"
    return rows.iloc[0]


# ---------------------------------------------------------------------------------------------------- shapes


def test_frames_have_the_store_and_truth_columns(messy):
    runs, history, truth = messy
    assert list(runs.columns[:6]) == ["run_id", "run_name", "state", "project", "entity", "created_at"]
    assert set(runs.columns[6:]) == {
        "config",
        "summary",
        "wandb_metadata",
        "system_metrics",
        "system_attrs",
        "sweep_info",
    }
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert list(truth.columns) == list(TRUTH_COLUMNS)
    assert runs["run_id"].is_unique and runs["run_id"].equals(runs["run_name"])
    assert truth["run_id"].tolist() == runs["run_id"].tolist()
    assert set(history["run_id"]) <= set(runs["run_id"])
    for column in runs.columns[6:]:  # JSON-native values only: no NaN, no numpy scalars
        for value in runs[column]:
            json.dumps(value, allow_nan=False)


def test_same_seed_gives_identical_output_and_another_seed_does_not():
    first = generate_posttraining(20, random_seed=3, **SMALL)
    second = generate_posttraining(20, random_seed=3, **SMALL)
    other = generate_posttraining(20, random_seed=4, **SMALL)
    assert dump(first[0]) == dump(second[0])
    pd.testing.assert_frame_equal(first[1], second[1])
    pd.testing.assert_frame_equal(first[2], second[2])
    assert dump(first[0]) != dump(other[0])


def test_timestamps_derive_from_a_fixed_start_and_increase(messy):
    runs, history, _ = messy
    assert runs["created_at"].min() >= pd.Timestamp("2025-08-19")
    assert runs["created_at"].max() < pd.Timestamp("2025-12-01")
    ordered = history.groupby("run_id", sort=False)["timestamp"].apply(lambda t: bool(np.all(np.diff(t) >= 0)))
    assert ordered.all()
    for name, created in zip(runs["run_id"], runs["created_at"], strict=True):  # launcher local time: old/new style
        stamp = STAMP.match(name)
        assert stamp, name
        launched = pd.to_datetime(
            stamp["old"] or stamp["new"], format="%Y_%m_%d-%H_%M_%S" if stamp["old"] else "%y%m%d-%H%M%S"
        )
        assert (launched < pd.Timestamp("2025-09-01")) == bool(stamp["old"])
        assert created - pd.Timedelta(hours=8) < launched < created


# ---------------------------------------------------------------------------------------------------- names and links


def check_names_decode_to_truth(runs: pd.DataFrame, truth: pd.DataFrame) -> None:
    config = by_run(runs, "config")
    for row in truth.itertuples(index=False):
        decoded = decode_name(row.run_id)
        if row.expected_link_status == "unlinked":
            assert decoded is None
            assert "model_size" not in config[row.run_id]
            assert not MODEL_PATH.search(config[row.run_id].get("model_name_or_path", ""))
            continue
        assert decoded == {"params": row.params, "data": row.data, "seed": row.seed, "base_step": row.base_step}
        lr = (DPO_BLOCK.search(row.run_id) or NAME_LR.search(row.run_id) or {"lr": None})["lr"]
        assert lr is None or float(lr) == row.learning_rate, row.run_id


def check_model_paths(runs: pd.DataFrame, truth: pd.DataFrame) -> None:
    config = by_run(runs, "config")
    for row in truth.itertuples(index=False):
        path = config[row.run_id].get("model_name_or_path")
        if row.run_type == "dpo":  # the parent's output folder: its last component is the parent's run_name
            parent = last_component(path)
            if row.parent_run_id is None:
                assert parent not in config and DD_BLOCK.search(parent)  # a parent that was never exported
            else:
                assert parent == row.parent_run_id and config[parent]["output_dir"] == path.rstrip("/")
        elif path is not None and row.expected_link_status == "linked":
            found = MODEL_PATH.search(path)
            assert RECIPES.loc[row.data, "slug"] == found["slug"] and found["size"] == row.params


def test_names_parse_with_the_documented_regexes_and_decode_to_the_truth(messy, clean):
    for runs, _, truth in (messy, clean):
        check_names_decode_to_truth(runs, truth)


def test_names_use_short_codes_slugs_every_family_and_printed_learning_rates(messy):
    names = messy[0]["run_id"]
    recipes = {m["recipe"] for m in map(DD_BLOCK.search, names) if m}
    assert recipes & {"d17", "dclm"} and recipes & {"dolma1_7", "dclm-baseline", "c4"}
    families = [r"_main_\d+Mtx\d_", r"_main_\d+M_toks_", r"_Ft_", r"_Ft_DD-", r"-\d+-\d_lr=", r"_match_\d+M"]
    families += [r"_main_default_--max_train_samples=", r"_dd__", r"_allenai--DataDecide-"]
    for family in families:
        assert names.str.contains(family).any(), family
    assert names.str.contains("learning_rate=0.0001").any()  # 1e-4 as the launcher prints it


def test_dpo_model_paths_end_in_the_parent_run_name(messy, clean):
    for runs, _, truth in (messy, clean):
        check_model_paths(runs, truth)
        dpo = truth[truth["run_type"] == "dpo"]
        assert len(dpo) >= 2
        parents = truth.set_index("run_id").loc[dpo["parent_run_id"].dropna()]
        assert (parents["run_type"] == "supervised_ft").all() and (parents["state"] == "finished").all()
        # a DPO inherits its parent's base
        inherited = parents[["params", "data", "seed", "base_step"]].to_numpy()
        assert (
            dpo.dropna(subset=["parent_run_id"])[["params", "data", "seed", "base_step"]].to_numpy() == inherited
        ).all()
        metadata = by_run(runs, "wandb_metadata")
        config = by_run(runs, "config")
        for run_id in dpo["run_id"]:
            assert metadata[run_id]["program"].endswith("dpo_tune_cache.py")
            assert config[run_id]["dpo_loss_type"] == "dpo_norm" and config[run_id]["logging_steps"] == 1


def test_the_readme_sweep_is_always_there(messy, clean):
    for _, _, truth in (messy, clean):
        sweep = truth[
            (truth["run_type"] == "supervised_ft")
            & (truth["params"] == "150M")
            & (truth["data"] == "Dolma1.7")
            & (truth["base_step"] == 38157)
            & (truth["state"] == "finished")
        ]
        assert {1e-5, 3e-5, 1e-4, 3e-4} <= set(sweep["learning_rate"])


# ---------------------------------------------------------------------------------------------------- the traps


def test_every_trap_appears_once_and_clean_runs_have_none(messy, clean):
    assert sorted(messy[2]["mess"].loc[lambda m: m != ""]) == sorted(MESS_KINDS)
    truth = clean[2]
    assert (truth["mess"] == "").all() and (truth["state"] == "finished").all()
    assert (truth["expected_link_status"] == "linked").all() and truth["parent_run_id"].notna().eq(
        truth["run_type"] == "dpo"
    ).all()


def test_crashed_and_running_runs_are_truncated_and_have_no_evals(messy):
    runs, history, truth = messy
    summary = by_run(runs, "summary")
    for state in ("crashed", "running"):
        row = the(truth, state)
        assert row.state == state and math.isnan(row.olmes_9_average)
        assert not any(key.startswith("oe_eval_metrics") for key in summary[row.run_id])
        assert summary[row.run_id]["_step"] == history.loc[history["run_id"] == row.run_id, "step"].max()
    assert "hidden" in by_run(runs, "system_attrs")[the(truth, "crashed").run_id]["tags"]


def test_missing_model_path_run_links_from_its_name(messy):
    runs, _, truth = messy
    row = the(truth, "missing_model_path")
    assert "model_name_or_path" not in by_run(runs, "config")[row.run_id]
    assert arg_value(by_run(runs, "wandb_metadata")[row.run_id]["args"], "--model_name_or_path") is None
    assert row.expected_link_status == "linked" and decode_name(row.run_id)["base_step"] == row.base_step


def test_unlinkable_run_has_an_unknown_recipe_and_no_size(messy):
    runs, _, truth = messy
    row = the(truth, "unlinkable")
    assert row.expected_link_status == "unlinked" and pd.isna(row.params) and pd.isna(row.data)
    assert pd.isna(row.seed) and pd.isna(row.base_step) and math.isnan(row.expected_last_cumulative_tokens)
    assert DD_BLOCK.search(row.run_id)["recipe"] not in RECIPE_CODES
    config = by_run(runs, "config")[row.run_id]
    assert not any(key.startswith(("model_size", "pretrain", "wandb_config")) for key in config)


def test_malformed_eval_json_is_a_broken_string_and_its_score_unknown(messy):
    runs, _, truth = messy
    row = the(truth, "malformed_eval_json")
    summary = by_run(runs, "summary")[row.run_id]
    broken = [task for task in OLMES_TASKS if isinstance(summary[f"oe_eval_metrics/{task}"], str)]
    assert len(broken) == 1
    with pytest.raises(json.JSONDecodeError):
        json.loads(summary[f"oe_eval_metrics/{broken[0]}"])
    assert not any(key.startswith(f"oe_eval_metrics/{broken[0]}/") for key in summary)
    assert math.isnan(getattr(row, broken[0]))
    aggregate = summary["oe_eval_metrics/core_9mcqa:rc::olmes:full"]["primary_score"]
    assert row.olmes_9_average == aggregate  # the aggregate itself is intact


def test_duplicate_steps_are_counted_once(messy):
    _, history, truth = messy
    row = the(truth, "duplicate_steps")
    steps = history.loc[history["run_id"] == row.run_id, "step"]
    assert steps.duplicated().sum() == 1 and steps.nunique() == row.n_history_rows
    others = history[history["run_id"] != row.run_id]
    assert not others.duplicated(["run_id", "step"]).any()


def test_run_with_evals_but_no_history(messy):
    runs, history, truth = messy
    row = the(truth, "no_history")
    assert row.n_history_rows == 0 and not (history["run_id"] == row.run_id).any()
    assert by_run(runs, "system_attrs")[row.run_id]["historyLineCount"] == 0
    assert by_run(runs, "config")[row.run_id]["max_train_samples"] == 1400 and "_1Mtx1_" in row.run_id
    assert by_run(runs, "wandb_metadata")[row.run_id]["program"].endswith("update_wandb.py")
    assert row.tokens_estimated and row.final_total_tokens == 1e6 and not math.isnan(row.olmes_9_average)
    assert set(k for k in by_run(runs, "summary")[row.run_id] if not k.startswith("oe_eval")) == {"_wandb"}


def test_summed_loss_run_logs_thousands(messy):
    runs, history, truth = messy
    median = history.dropna(subset=["total_tokens"]).groupby("run_id")["train_loss"].median()
    summed = the(truth, "reduce_loss_sum").run_id
    assert median[summed] > 1000 and (median.drop(summed) < 10).all()
    assert by_run(runs, "config")[summed]["reduce_loss"] == "sum"


def test_token_counter_restart_is_repaired_in_the_truth(messy):
    runs, history, truth = messy
    row = the(truth, "tokens_restart")
    counter = history.loc[history["run_id"] == row.run_id, "total_tokens"].to_numpy()
    assert (np.diff(counter) < 0).sum() == 1
    assert row.final_total_tokens == repaired_total_tokens(counter)[-1]
    assert by_run(runs, "summary")[row.run_id]["total_tokens"] == counter[-1] < row.final_total_tokens
    assert row.final_total_tokens == pytest.approx(1.33e9, rel=0.01)  # two epochs of the full Tulu-3 mix


def test_learning_rate_only_in_args(messy):
    runs, _, truth = messy
    row = the(truth, "lr_only_in_args")
    config = by_run(runs, "config")[row.run_id]
    assert "learning_rate" not in config and "model_name_or_path" not in config
    assert float(arg_value(by_run(runs, "wandb_metadata")[row.run_id]["args"], "--learning_rate")) == row.learning_rate
    assert config["pretrain_steps"] != row.base_step  # the launcher's value is another size's final step


def test_numbers_as_strings(messy):
    runs, _, truth = messy
    row = the(truth, "numbers_as_strings")
    config = by_run(runs, "config")[row.run_id]
    assert config["model_size"] == "530100000" and isinstance(config["finetune_sequences"], str)
    assert row.params == "530M" and row.base_step == 6250 and row.seed == 2
    assert config["pretrain_steps"] == 57786  # the full run's final step, never the base


def test_orphan_dpo_estimates_its_parent_tokens_from_the_name(messy):
    _, _, truth = messy
    row = the(truth, "dpo_parent_missing")
    assert row.parent_run_id is None and row.tokens_estimated and math.isnan(row.olmes_9_average)
    budget = int(DPO_BLOCK.search(row.run_id)["tokens"]) * 1e6
    assert row.expected_last_cumulative_tokens == row.base_tokens + budget + row.final_total_tokens


# ---------------------------------------------------------------------------------------------------- history


def test_sft_history_logs_every_logging_steps_with_a_scheduled_learning_rate(messy):
    runs, history, truth = messy
    config, summary = by_run(runs, "config"), by_run(runs, "summary")
    sft = history[history["run_id"].isin(truth.loc[truth["run_type"] == "supervised_ft", "run_id"])]
    assert sft["total_tokens"].notna().all() and sft["training_step"].isna().all() and sft["epoch"].isna().all()
    logged = truth.loc[(truth["n_history_rows"] > 0) & (truth["run_type"] == "supervised_ft"), "run_id"]
    assert set(sft["run_id"]) == set(logged)
    for run_id, rows in sft.drop_duplicates(["run_id", "step"]).groupby("run_id"):
        logging = config[run_id].get("logging_steps", 100)
        assert rows["step"].tolist() == [logging * (i + 1) for i in range(len(rows))]
        learning_rate = config[run_id].get("learning_rate", truth.set_index("run_id").loc[run_id, "learning_rate"])
        assert rows["learning_rate"].max() <= learning_rate
        assert summary[run_id]["learning_rate"] == rows["learning_rate"].iloc[-1] != learning_rate
        assert np.all(np.diff(rows["total_tokens"]) > 0) or "restart" in the_mess(truth, run_id)
    lognames = {logging for c in config.values() if "logging_steps" in c for logging in [c["logging_steps"]]}
    assert {1, 10, 100} <= lognames


def the_mess(truth: pd.DataFrame, run_id: str) -> str:
    return truth.set_index("run_id").loc[run_id, "mess"]


def test_dpo_history_logs_every_step_without_a_token_counter(messy):
    runs, history, truth = messy
    dpo = history[history["run_id"].isin(truth.loc[truth["run_type"] == "dpo", "run_id"])]
    assert dpo["total_tokens"].isna().all() and dpo["per_device_tps"].isna().all()
    assert dpo[["epoch", "logps/chosen", "rewards/accuracy"]].notna().all().all()
    for _, rows in dpo.groupby("run_id"):
        assert rows["step"].tolist() == list(range(1, len(rows) + 1))
        assert (rows["training_step"] == rows["step"]).all()
        assert rows["train_loss"].iloc[0] == pytest.approx(math.log(2))
        assert rows["learning_rate"].iloc[-1] < rows["learning_rate"].max()


def test_history_line_counts_match_the_history(messy):
    runs, history, _ = messy
    counts = history.groupby("run_id").size()
    for run_id, attrs in by_run(runs, "system_attrs").items():
        assert attrs["historyLineCount"] == counts.get(run_id, 0)


def test_steps_per_run_fixes_the_logged_rows():
    runs, _, truth = generate_posttraining(20, steps_per_run=12, random_seed=2, **SMALL)
    config = by_run(runs, "config")
    full_mix = {run_id for run_id, c in config.items() if int(c.get("finetune_sequences", 0)) == 1_868_814}
    trained = truth[(truth["state"] == "finished") & (truth["mess"] != "no_history") & ~truth["run_id"].isin(full_mix)]
    assert len(trained) > 10 and (trained["n_history_rows"] == 12).all()


# ---------------------------------------------------------------------------------------------------- truth values


def check_tokens(runs: pd.DataFrame, history: pd.DataFrame, truth: pd.DataFrame) -> None:
    config, metadata = by_run(runs, "config"), by_run(runs, "wandb_metadata")
    indexed = truth.set_index("run_id")
    last = history.dropna(subset=["total_tokens"]).groupby("run_id")["total_tokens"].last()
    steps = history.groupby("run_id")["training_step"].max()
    for row in truth[truth["expected_link_status"] == "linked"].itertuples(index=False):
        assert row.base_tokens == row.base_step * SIZES.loc[row.params, "tokens_per_step"]
        if row.run_type == "dpo":
            c = config[row.run_id]
            batch = (
                c["per_device_train_batch_size"] * c["gradient_accumulation_steps"] * metadata[row.run_id]["gpu_count"]
            )
            assert row.final_total_tokens == steps[row.run_id] * batch * DPO_TOKENS_PER_PAIR and row.tokens_estimated
            if row.parent_run_id is not None:
                parent = indexed.loc[row.parent_run_id, "final_total_tokens"]
                assert row.expected_last_cumulative_tokens == row.base_tokens + parent + row.final_total_tokens
        elif row.n_history_rows:
            assert not row.tokens_estimated
            if row.mess != "tokens_restart":
                assert row.final_total_tokens == last[row.run_id]
            assert row.expected_last_cumulative_tokens == row.base_tokens + row.final_total_tokens


def test_truth_tokens_agree_with_the_history(messy, clean):
    for frames in (messy, clean):
        check_tokens(*frames)


def test_truth_scores_are_the_summary_primary_scores(messy):
    runs, _, truth = messy
    summary = by_run(runs, "summary")
    evaluated = truth[truth["olmes_9_average"].notna()]
    assert len(evaluated) > 30
    for row in evaluated.itertuples(index=False):
        values = summary[row.run_id]
        aggregate = values["oe_eval_metrics/core_9mcqa:rc::olmes:full"]
        assert row.olmes_9_average == aggregate["primary_score"] == aggregate["primary_score_macro"]
        readable = [task for task in OLMES_TASKS if isinstance(values[f"oe_eval_metrics/{task}"], dict)]
        for task in readable:
            entry = values[f"oe_eval_metrics/{task}"]
            assert getattr(row, task) == entry["primary_score"] == entry[entry["task_config"]["primary_metric"]]
            assert entry["num_instances"] * entry["primary_score"] == pytest.approx(
                round(entry["num_instances"] * entry["primary_score"])
            )
        if len(readable) == 9:
            assert row.olmes_9_average == pytest.approx(np.mean([getattr(row, t) for t in OLMES_TASKS]), abs=1e-9)
        assert sum(k.startswith("oe_eval_metrics/") for k in values) == (368 if len(readable) == 9 else 333)


def test_finetuned_scores_continue_the_pretraining_curve(messy):
    _, _, truth = messy
    sft = truth[(truth["run_type"] == "supervised_ft") & truth["olmes_9_average"].notna() & truth["params"].notna()]
    compute = compute_at(
        sft["params"].to_numpy(), tokens_at(sft["params"].to_numpy(), sft["base_step"].to_numpy(float))
    )
    for task in OLMES_TASKS:
        curve = primary_score(task, compute, sft["data"].to_numpy())
        ceiling = TASK_RANGE[task][1]
        scores = sft[task].to_numpy()
        known = ~np.isnan(scores)
        assert np.all(scores[known] > curve[known] - 0.02)
        assert np.all(scores[known] < curve[known] + 0.15 * (ceiling - curve[known]) + 0.02)
    sweep = sft[(sft["params"] == "150M") & (sft["data"] == "Dolma1.7") & (sft["base_step"] == 38157)]
    by_lr = sweep.groupby("learning_rate")["olmes_9_average"].mean()
    assert by_lr[3e-5] > by_lr[3e-4] and by_lr[3e-5] > by_lr[1e-5] - 0.005


def test_repaired_total_tokens_shifts_each_segment_after_a_drop():
    counter = np.array([100.0, 200.0, 310.0, 50.0, 150.0, 20.0, 120.0])
    repaired = repaired_total_tokens(counter)
    assert repaired.tolist() == [100.0, 200.0, 310.0, 410.0, 510.0, 610.0, 710.0]
    assert repaired_total_tokens(np.array([1.0, 2.0])).tolist() == [1.0, 2.0]


@settings(max_examples=8, deadline=None)
@given(
    random_seed=st.integers(0, 2**16),
    n_runs=st.integers(20, 45),
    params=st.lists(st.sampled_from(PARAMS), min_size=1, max_size=4, unique=True),
    data=st.lists(
        st.sampled_from(("Dolma1.7", "DCLM-Baseline", "C4", "Falcon", "FineWeb-Pro")),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    messy_runs=st.booleans(),
)
def test_any_arguments_give_consistent_runs(random_seed, n_runs, params, data, messy_runs):
    runs, history, truth = generate_posttraining(
        n_runs, params=params, data=data, random_seed=random_seed, messy=messy_runs
    )
    assert len(runs) == len(truth) == n_runs and runs["run_id"].is_unique
    assert set(truth["params"].dropna()) <= set(params) and set(truth["data"].dropna()) <= set(data)
    check_names_decode_to_truth(runs, truth)
    check_model_paths(runs, truth)
    check_tokens(runs, history, truth)
    assert (truth["mess"] != "").sum() == (len(MESS_KINDS) if messy_runs else 0)


# ---------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"params": ("5M",)}, r"expected known DataDecide sizes and recipes, found \['5M'\]"),
        ({"data": ("Dolma2",)}, r"found \['Dolma2'\] — choose from ddxr.vocabulary"),
        ({"n_runs": 10}, r"n_runs=10 is too small: .* needs at least 18 runs — pass n_runs>=18 or messy=False"),
        ({"steps_per_run": 2}, r"steps_per_run must be >= 4 \(found 2\)"),
    ],
)
def test_bad_arguments_raise_ddxr_errors(arguments, message):
    with pytest.raises(InvalidArgumentError, match=message):
        generate_posttraining(**{"n_runs": 60, **SMALL, **arguments})


# ---------------------------------------------------------------------------------------------------- stores


def test_runs_and_history_round_trip_through_a_real_store(store_url):
    runs, history, truth = generate_posttraining(20, random_seed=9, **SMALL)
    with WandBStore(store_url) as store:
        store.create_tables()
        assert store.store_runs(runs) == len(runs) and store.store_history(history) == len(history)
        read = store.read_runs().set_index("run_id").loc[runs["run_id"]]
        keys = ["train_loss", "total_tokens", "training_step", "rewards/accuracy"]
        back = store.read_history(None, keys)
    assert read["state"].tolist() == runs["state"].tolist()
    for column in ("config", "summary", "wandb_metadata", "system_attrs"):
        assert read[column].tolist() == runs[column].tolist(), column
    assert read["tags"].tolist() == [attrs["tags"] for attrs in runs["system_attrs"]]
    assert read["history_line_count"].tolist() == [attrs["historyLineCount"] for attrs in runs["system_attrs"]]
    expected = history.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)
    back = back.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        back[["run_id", "step", *keys]], expected[["run_id", "step", *keys]], check_dtype=False
    )
    assert set(truth["run_id"]) == set(read.index)


def test_generate_writes_both_sources_and_refuses_a_non_empty_store(tmp_path, store_url):
    truth = generate(tmp_path, store_url=store_url, n_runs=20, random_seed=1, **SMALL)
    assert isinstance(truth, SyntheticTruth) and truth.store_url == store_url
    assert truth.pretraining_dir == tmp_path.resolve() / "datadecide"
    pd.testing.assert_frame_equal(truth.runs, generate_posttraining(20, random_seed=1, **SMALL)[2])
    keys = ["params", "data", "seed", "step"]
    downstream = pd.read_parquet(truth.pretraining_dir / "downstream_eval.parquet", columns=keys)
    present = set(zip(*(downstream[k].map(SEED_NAMES) if k == "seed" else downstream[k] for k in keys), strict=True))
    bases = truth.runs.dropna(subset=["params"])
    assert set(zip(*(bases[k] for k in ["params", "data", "seed", "base_step"]), strict=True)) <= present
    with WandBStore(store_url) as store:
        assert store.stats()["wandb_runs"]["rows"] == 20
    written = (truth.pretraining_dir / "downstream_eval.parquet").stat().st_mtime_ns
    with pytest.raises(DdxrError, match=r"is not empty: expected no runs and no history, found 20 runs"):
        generate(tmp_path, store_url=store_url, n_runs=20, **SMALL)
    assert (truth.pretraining_dir / "downstream_eval.parquet").stat().st_mtime_ns == written
    assert "store" not in repr(truth) and "runs=20" in repr(truth)


def test_refusal_never_shows_the_password(tmp_path, pg_url):
    secret_url = pg_url.replace("postgres@", "postgres:s3cret-pw@")
    generate(tmp_path / "first", store_url=secret_url, n_runs=18, **SMALL)
    with pytest.raises(DdxrError) as raised:
        generate(tmp_path / "second", store_url=secret_url, n_runs=18, **SMALL)
    assert "s3cret-pw" not in str(raised.value) and "***" in str(raised.value)


def test_default_store_is_sqlite_in_the_output_folder(tmp_path):
    truth = generate(tmp_path / "out", n_runs=18, messy=True, **SMALL)
    assert truth.store_url == f"sqlite:///{tmp_path.resolve() / 'out' / 'wandb.db'}"
    assert (tmp_path / "out" / "wandb.db").is_file()


def test_command_line_prints_a_summary_and_reports_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEMO_PARAMS", SMALL["params"])
    monkeypatch.setattr(cli, "DEMO_DATA", SMALL["data"])
    assert cli.main([str(tmp_path), "--runs", "20", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "pretraining (2 sizes x 2 recipes)" in out and "downstream_eval.parquet" in out
    assert "runs: 20, history rows:" in out and f"messy runs: {len(MESS_KINDS)}" in out
    assert re.search(r"supervised_ft\s+1\s+\d+\s+1", out)  # one crashed, one running
    assert cli.main([str(tmp_path), "--runs", "20"]) == 1
    assert "error: the W&B store at sqlite:///" in capsys.readouterr().err
    assert Path(tmp_path / "wandb.db").is_file()
