"""EvaluationManager: one schema for pretraining columns and OLMES post-training evals (real samples + generated)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddxr.errors import BuildError, InvalidArgumentError, SourceError
from ddxr.managers.evaluations import (
    CORE_VARIABLES,
    ISSUE_COLUMNS,
    METRIC_SETS,
    EvaluationManager,
    _decode_dicts,
    _plain_numbers,
)
from ddxr.vocabulary import (
    METRIC_SUFFIXES,
    MMLU_TASKS,
    OLMES_TASKS,
    PPL_SETS,
    metric_variable,
    ppl_variable,
)

RUN_IDS = {
    1: "2025_08_18-22_30_05_allenai--DataDecide-dolma1_7-4M_main_default",
    2: "2025_08_21-08_24_43_test_finetune_DD-dolma1_7-4M_main_1Mtx1_--learning_rate=5e-07",
    3: "2025_08_27-07_52_26_test_dpo_tune_cache_dd__dolma1_7-4M__main__100Mt_lr=5e-06_default_--learning_rate=2e-07",
    4: "2025_08_30-16_54_48_test_finetune_DD-dolma1_7-4M_Ft_--learning_rate=5e-05",
    5: "250901-155734_test_finetune_DD-dclm-baseline-150M_Ft_learning_rate=5e-05",
    6: "250912-172812_match_150M_c4_finetune_100Mtx1_DD-d17-530M-6250-2",
}
#: core_9mcqa:rc::olmes:full primary_score of the evaluated real runs (README of the real samples).
CORE_9MCQA = {2: 0.367625448, 4: 0.3679495241, 5: 0.4590868612, 6: 0.4399439627}
AGGREGATE = "oe_eval_metrics/core_9mcqa:rc::olmes:full"
NINE = list(OLMES_TASKS)


# ---------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def summaries(real_samples: Path) -> dict[str, dict]:
    """Return decoded W&B summary of every real run."""
    runs = pd.read_parquet(real_samples / "wandb_runs_sample.parquet")
    return dict(zip(runs["run_id"], runs["summary"].map(json.loads), strict=True))


@pytest.fixture(scope="module")
def entries(summaries: dict[str, dict]) -> pd.DataFrame:
    """All summary keys of the six runs in ``read_run_entries`` form (run_id, key, JSON text)."""
    rows = [(run, key, json.dumps(value)) for run, summary in summaries.items() for key, value in summary.items()]
    return pd.DataFrame(rows, columns=["run_id", "key", "value"])


@pytest.fixture(scope="module")
def run6(entries: pd.DataFrame) -> pd.DataFrame:
    """Return the oe_eval entries of the matched 530M run only."""
    return entries[(entries["run_id"] == RUN_IDS[6]) & entries["key"].str.startswith("oe_eval_metrics/")]


@pytest.fixture(scope="module")
def clean6(run6: pd.DataFrame) -> pd.DataFrame:
    """Core evaluations of the matched run, from its untouched entries."""
    return EvaluationManager().posttraining_evaluations(run6)[0]


@pytest.fixture(scope="module")
def pretraining_table(real_samples: Path) -> pd.DataFrame:
    """Return the real full_eval rows renamed to ddxr names, as ``read_datadecide(...).table`` gives them."""
    return pd.read_parquet(real_samples / "pretrain_metrics_sample.parquet").rename(columns=_ddxr_name)


def _ddxr_name(column: str) -> str:
    for ppl_set in PPL_SETS:
        if column == f"{ppl_set}-valppl":
            return ppl_variable(ppl_set)
    metric = next((m for m in METRIC_SUFFIXES if column.endswith("_" + m)), None)
    return metric_variable(column[: -len(metric) - 1], metric) if metric else column


def _replace(frame: pd.DataFrame, key: str, value: str) -> pd.DataFrame:
    """Return a copy of ``frame`` with the JSON text of ``key`` replaced."""
    return frame.assign(value=frame["value"].mask(frame["key"] == key, value))


def _edit_dict(frame: pd.DataFrame, key: str, **changes: object) -> pd.DataFrame:
    (text,) = frame.loc[frame["key"] == key, "value"]
    return _replace(frame, key, json.dumps({**json.loads(text), **changes}))


def _entry(run_id: str, key: str, value: object) -> tuple[str, str, str]:
    return (run_id, f"oe_eval_metrics/{key}", json.dumps(value))


# ---------------------------------------------------------------------- post-training: real runs
@pytest.mark.parametrize("run", sorted(CORE_9MCQA))
def test_olmes_9_average_is_the_aggregate_and_the_mean_of_the_nine(entries: pd.DataFrame, run: int) -> None:
    evaluations, issues = EvaluationManager().posttraining_evaluations(entries)
    row = evaluations.loc[RUN_IDS[run]]
    assert row["olmes_9_average"] == pytest.approx(CORE_9MCQA[run], abs=1e-12)
    assert row["olmes_9_average"] == pytest.approx(row[NINE].mean(), abs=1e-9)
    assert issues.empty


def test_matched_run_arc_challenge_values(entries: pd.DataFrame) -> None:
    evaluations, _ = EvaluationManager().posttraining_evaluations(entries)
    assert evaluations.loc[RUN_IDS[6], "arc_challenge"] == 0.2721843003
    assert evaluations.loc[RUN_IDS[6], "arc_challenge_acc_raw"] == 0.2167235495
    assert evaluations.loc[RUN_IDS[6], "arc_challenge_acc_uncond"] == 0.2721843003


@pytest.mark.parametrize("metrics", METRIC_SETS)
def test_every_task_variable_is_its_primary_metric(
    entries: pd.DataFrame, summaries: dict[str, dict], metrics: str
) -> None:
    evaluations, _ = EvaluationManager(metrics).posttraining_evaluations(entries)
    for task, primary in OLMES_TASKS.items():
        named = evaluations[f"{task}_{primary}"]
        np.testing.assert_array_equal(evaluations[task], named)
        reported = [summaries[run][f"oe_eval_metrics/{task}"]["task_config"]["primary_metric"] for run in named.index]
        assert set(reported) == {primary}


def test_runs_without_evaluations_have_no_row_and_non_eval_keys_are_ignored(entries: pd.DataFrame) -> None:
    evaluations, _ = EvaluationManager("all").posttraining_evaluations(entries)
    assert sorted(evaluations.index) == sorted(RUN_IDS[run] for run in CORE_9MCQA)
    assert evaluations.index.name == "run_id"
    assert "train_loss" not in evaluations.columns and "total_tokens" not in evaluations.columns
    assert (evaluations.dtypes == "float64").all()


def test_dict_and_flat_metrics_are_combined(entries: pd.DataFrame, summaries: dict[str, dict]) -> None:
    evaluations, _ = EvaluationManager("all").posttraining_evaluations(entries)
    summary = summaries[RUN_IDS[6]]
    # correct_prob only exists as a flat key; no_answer lives in the dict's extra_metrics and as a flat key
    assert (
        evaluations.loc[RUN_IDS[6], "arc_challenge_correct_prob"]
        == summary["oe_eval_metrics/arc_challenge/correct_prob"]
    )
    assert evaluations.loc[RUN_IDS[6], "arc_challenge_no_answer"] == 0
    assert evaluations.loc[RUN_IDS[6], "hellaswag_correct_logit"] == summary["oe_eval_metrics/hellaswag/correct_logit"]
    assert "boolq_acc_uncond" not in evaluations.columns
    assert "num_instances" not in " ".join(evaluations.columns)
    macro = summary[AGGREGATE]["acc_raw_macro"]
    assert evaluations.loc[RUN_IDS[6], "olmes_9_average_acc_raw_macro"] == macro


def test_dicts_alone_give_the_same_scores(entries: pd.DataFrame) -> None:
    manager = EvaluationManager()
    full, _ = manager.posttraining_evaluations(entries)
    dicts = entries[entries["key"].str.count("/") == 1]
    alone, issues = manager.posttraining_evaluations(dicts)
    assert issues.empty
    # correct_prob* comes from flat keys only
    shared = [name for name in alone.columns if alone[name].notna().any()]
    assert {*NINE, "olmes_9_average", "arc_challenge_acc_raw"} <= set(shared)
    pd.testing.assert_frame_equal(alone[shared], full[shared])


def test_flat_keys_alone_give_primary_scores_from_the_olmes_primary_metric(entries: pd.DataFrame) -> None:
    flat = entries[entries["key"].str.count("/") == 2]
    evaluations, issues = EvaluationManager().posttraining_evaluations(flat)
    for run, expected in CORE_9MCQA.items():
        row = evaluations.loc[RUN_IDS[run]]
        assert row["arc_challenge"] == row["arc_challenge_acc_uncond"]
        assert row["olmes_9_average"] == pytest.approx(expected, abs=1e-9)  # mean of the nine: aggregate dict gone
    assert len(issues) == 9 * len(CORE_9MCQA) and not issues["skipped"].any()
    assert issues["reason"].str.contains("is absent; took the primary score from").all()


def test_values_already_decoded_and_any_index_are_accepted(entries: pd.DataFrame) -> None:
    decoded = entries.assign(value=entries["value"].map(json.loads)).set_axis([0] * len(entries))
    manager = EvaluationManager("all")
    pd.testing.assert_frame_equal(
        manager.posttraining_evaluations(decoded)[0], manager.posttraining_evaluations(entries)[0]
    )


# ---------------------------------------------------------------------- post-training: messy entries
BROKEN = "oe_eval_metrics/arc_challenge"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('{"primary_score": 0.27, "acc_raw":', "unparseable JSON"),
        ("0.5", "found a float"),
        ('"a string"', "found a str"),
        ("null", "found a NoneType"),
        ('{"acc_raw": 0.2}', "found none or NaN"),
        ('{"primary_score": NaN, "acc_raw": 0.2}', "found none or NaN"),
        ('{"primary_score": "high"}', "found 'high'"),
    ],
)
def test_an_unusable_task_dict_skips_that_task_only(
    run6: pd.DataFrame, clean6: pd.DataFrame, text: str, found: str
) -> None:
    evaluations, issues = EvaluationManager().posttraining_evaluations(_replace(run6, BROKEN, text))
    row = evaluations.reindex(columns=clean6.columns).loc[RUN_IDS[6]]
    assert np.isnan(row["arc_challenge"]) and np.isnan(row["arc_challenge_acc_raw"])  # flat keys skipped too
    others = [name for name in clean6.columns if not name.startswith("arc_challenge")]
    pd.testing.assert_series_equal(row[others], clean6.loc[RUN_IDS[6], others])
    skipped = issues[issues["skipped"]]
    assert skipped[["run_id", "task"]].values.tolist() == [[RUN_IDS[6], "arc_challenge"]]
    (reason,) = skipped["reason"]
    assert reason.startswith(BROKEN + ": expected ") and found in reason and "skipped this task for this run" in reason
    assert list(issues.columns) == list(ISSUE_COLUMNS)


@pytest.mark.parametrize("text", ['"abc"', "{oops", "[1, 2]", '{"a": 1}'])
def test_a_flat_value_that_is_not_a_number_is_left_out_and_counted(run6: pd.DataFrame, text: str) -> None:
    key = "oe_eval_metrics/piqa/correct_prob"
    evaluations, issues = EvaluationManager().posttraining_evaluations(_replace(run6, key, text))
    assert "piqa_correct_prob" not in evaluations.columns  # the only run lost it
    assert evaluations.loc[RUN_IDS[6], "piqa_correct_prob_per_char"] > 0  # the rest of the task is kept
    (reason,) = issues.loc[issues["skipped"], "reason"]
    assert reason.startswith(key + ": expected a number, found ") and reason.endswith("left this value out")


@pytest.mark.parametrize("text", ["NaN", '"NaN"', "null"])
def test_nan_values_are_missing_measurements_not_issues(run6: pd.DataFrame, text: str) -> None:
    evaluations, issues = EvaluationManager().posttraining_evaluations(
        _replace(run6, "oe_eval_metrics/piqa/correct_prob", text)
    )
    assert "piqa_correct_prob" not in evaluations.columns and "piqa_correct_prob_per_char" in evaluations.columns
    assert issues.empty


def test_numbers_written_as_strings_are_read(run6: pd.DataFrame) -> None:
    evaluations, issues = EvaluationManager().posttraining_evaluations(
        _replace(run6, "oe_eval_metrics/piqa/correct_prob", '"0.625"')
    )
    assert evaluations.loc[RUN_IDS[6], "piqa_correct_prob"] == 0.625
    assert issues.empty


def test_primary_score_disagreeing_with_its_primary_metric_is_kept_and_recorded(run6: pd.DataFrame) -> None:
    evaluations, issues = EvaluationManager().posttraining_evaluations(_edit_dict(run6, BROKEN, primary_score=0.3))
    assert evaluations.loc[RUN_IDS[6], "arc_challenge"] == 0.3
    assert evaluations.loc[RUN_IDS[6], "arc_challenge_acc_uncond"] == 0.2721843003
    assert issues["reason"].tolist() == [
        f"{BROKEN}: primary_score 0.3 but task_config.primary_metric acc_uncond = 0.2721843003; kept primary_score",
        # the aggregate was computed from the unaltered score
        f"{AGGREGATE}: primary_score 0.4399439627 but the mean of the nine task primary scores is 0.443034596; "
        "kept the aggregate",
    ]
    assert not issues["skipped"].any()


def test_an_unexpected_primary_metric_is_recorded(run6: pd.DataFrame) -> None:
    (text,) = run6.loc[run6["key"] == BROKEN, "value"]
    config = {**json.loads(text)["task_config"], "primary_metric": "acc_raw"}
    evaluations, issues = EvaluationManager().posttraining_evaluations(_edit_dict(run6, BROKEN, task_config=config))
    assert evaluations.loc[RUN_IDS[6], "arc_challenge"] == 0.2721843003
    reasons = " | ".join(issues["reason"])
    assert "primary_score 0.2721843003 but task_config.primary_metric acc_raw = 0.2167235495" in reasons
    assert "task_config.primary_metric is 'acc_raw' where OLMES and DataDecide use 'acc_uncond'" in reasons
    assert len(issues) == 2 and not issues["skipped"].any()


def test_a_missing_aggregate_falls_back_to_the_mean_of_the_nine(run6: pd.DataFrame) -> None:
    evaluations, issues = EvaluationManager().posttraining_evaluations(run6[~run6["key"].str.startswith(AGGREGATE)])
    assert evaluations.loc[RUN_IDS[6], "olmes_9_average"] == pytest.approx(CORE_9MCQA[6], abs=1e-9)
    assert issues.empty


def test_an_aggregate_disagreeing_with_the_nine_is_kept_and_recorded(run6: pd.DataFrame) -> None:
    evaluations, issues = EvaluationManager().posttraining_evaluations(_edit_dict(run6, AGGREGATE, primary_score=0.5))
    assert evaluations.loc[RUN_IDS[6], "olmes_9_average"] == 0.5
    (reason,) = issues["reason"]
    expected = "primary_score 0.5 but the mean of the nine task primary scores is 0.4399439627; kept the aggregate"
    assert reason == f"{AGGREGATE}: {expected}"


def test_a_missing_task_leaves_the_fallback_average_missing(run6: pd.DataFrame) -> None:
    entries = run6[~run6["key"].str.startswith(("oe_eval_metrics/boolq", AGGREGATE))]
    evaluations, _ = EvaluationManager().posttraining_evaluations(entries)
    assert np.isnan(evaluations.loc[RUN_IDS[6], "olmes_9_average"])


def test_dict_and_flat_disagreeing_keep_the_dict(run6: pd.DataFrame) -> None:
    evaluations, issues = EvaluationManager().posttraining_evaluations(
        _replace(run6, "oe_eval_metrics/arc_challenge/acc_raw", "0.9")
    )
    assert evaluations.loc[RUN_IDS[6], "arc_challenge_acc_raw"] == 0.2167235495
    (reason,) = issues["reason"]
    assert reason == (
        "oe_eval_metrics/arc_challenge has acc_raw = 0.2167235495 but oe_eval_metrics/arc_challenge/acc_raw = 0.9; "
        "kept the dict value"
    )


def test_a_repeated_key_keeps_the_last_value(run6: pd.DataFrame) -> None:
    repeat = pd.DataFrame([(RUN_IDS[6], "oe_eval_metrics/piqa/correct_prob", "0.75")], columns=run6.columns)
    evaluations, issues = EvaluationManager().posttraining_evaluations(pd.concat([run6, repeat]))
    assert evaluations.loc[RUN_IDS[6], "piqa_correct_prob"] == 0.75
    assert issues[["task", "skipped"]].values.tolist() == [["piqa", False]]
    assert issues["reason"].iloc[0] == "oe_eval_metrics/piqa/correct_prob: repeated for this run; kept the last value"


def test_no_entries_give_an_empty_frame(entries: pd.DataFrame) -> None:
    evaluations, issues = EvaluationManager().posttraining_evaluations(entries.iloc[:0])
    assert evaluations.empty and issues.empty
    assert list(issues.columns) == list(ISSUE_COLUMNS)


def test_entries_without_their_columns_raise(entries: pd.DataFrame) -> None:
    with pytest.raises(SourceError, match=r"post-training evaluation entries lacks columns \['value'\]"):
        EvaluationManager().posttraining_evaluations(entries.drop(columns="value"))


_GARBAGE = st.one_of(
    st.sampled_from(["{oops", "[1, 2]", '"text"', "null", "{}", '{"acc_raw": 0.5}', "0.5", "NaN"]),
    st.text(max_size=20).filter(lambda text: "primary_score" not in text),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_task_dicts_are_skipped_and_counted_never_a_crash(
    run6: pd.DataFrame, clean6: pd.DataFrame, data: st.DataObject
) -> None:
    tasks = data.draw(st.lists(st.sampled_from(NINE), min_size=1, max_size=9, unique=True))
    garbage = data.draw(st.lists(_GARBAGE, min_size=len(tasks), max_size=len(tasks)))
    corrupted = run6
    for task, text in zip(tasks, garbage, strict=True):
        corrupted = _replace(corrupted, f"oe_eval_metrics/{task}", text)
    evaluations, issues = EvaluationManager().posttraining_evaluations(corrupted)
    row = evaluations.reindex(columns=clean6.columns).loc[RUN_IDS[6]]
    assert row[tasks].isna().all()
    kept = [task for task in NINE if task not in tasks]
    pd.testing.assert_series_equal(row[kept], clean6.loc[RUN_IDS[6], kept])
    assert sorted(issues.loc[issues["skipped"], "task"]) == sorted(tasks)
    assert row["olmes_9_average"] == CORE_9MCQA[6]  # the aggregate dict is untouched


# ---------------------------------------------------------------------- post-training: generative evals
@pytest.fixture
def generative() -> pd.DataFrame:
    run = "run-with-generative-evals"
    rows = [
        _entry(
            run,
            "ifeval",
            {
                "primary_score": 0.3,
                "prompt_level_loose_acc": 0.3,
                "inst_level_strict_acc": 0.4,
                "task_config": {"primary_metric": "prompt_level_loose_acc"},
            },
        ),
        _entry(
            run,
            "minerva_math_algebra::tulu",
            {"primary_score": 0.1, "exact_match": 0.1, "task_config": {"primary_metric": "exact_match"}},
        ),
        _entry(run, "minerva_math_algebra::tulu/exact_match_flex", 0.12),
        _entry(run, "gsm8k", {"primary_score": 0.2, "task_config": {"primary_metric": "pass_at_1"}}),
        _entry(
            run, "piqa", {"primary_score": 0.6, "acc_per_char": 0.6, "task_config": {"primary_metric": "acc_per_char"}}
        ),
    ]
    return pd.DataFrame(rows, columns=["run_id", "key", "value"])


def test_generative_evals_are_task_metric_variables_under_all_only(generative: pd.DataFrame) -> None:
    core, _ = EvaluationManager().posttraining_evaluations(generative)
    assert list(core.columns) == ["piqa", "olmes_9_average", "piqa_acc_per_char"]
    manager = EvaluationManager("all")
    evaluations, issues = manager.posttraining_evaluations(generative)
    row = evaluations.iloc[0]
    assert row["ifeval_prompt_level_loose_acc"] == 0.3 and row["ifeval_inst_level_strict_acc"] == 0.4
    assert row["minerva_math_algebra_tulu_exact_match"] == 0.1
    assert row["minerva_math_algebra_tulu_exact_match_flex"] == 0.12
    assert row["gsm8k_pass_at_1"] == 0.2  # the primary score under the primary metric's name
    assert not {"ifeval", "gsm8k", "minerva_math_algebra_tulu"} & set(evaluations.columns)
    (reason,) = issues["reason"]
    assert (
        reason == "oe_eval_metrics/gsm8k: task_config.primary_metric names 'pass_at_1', which this evaluation "
        "does not report; kept primary_score unchecked"
    )
    attrs = manager.variable_attrs("minerva_math_algebra_tulu_exact_match")
    assert attrs["task"] == "minerva_math_algebra::tulu" and attrs["metric"] == "exact_match"
    assert attrs["source"] == "OLMES" and attrs["higher_is_better"] is True


def test_generative_variables_can_be_listed_once_read(generative: pd.DataFrame) -> None:
    manager = EvaluationManager(["ifeval_prompt_level_loose_acc", "piqa", "mmlu_average"])
    evaluations, _ = manager.posttraining_evaluations(generative)
    assert list(evaluations.columns) == ["piqa", "mmlu_average", "ifeval_prompt_level_loose_acc"]
    assert np.isnan(evaluations.iloc[0]["mmlu_average"])  # never measured after pretraining
    with pytest.raises(BuildError, match=r"'ifeval_prompt_level_loose_acx' \(close matches: 'ifeval_prompt_level_lo"):
        EvaluationManager(["ifeval_prompt_level_loose_acx"]).posttraining_evaluations(generative)


# ---------------------------------------------------------------------- pretraining
def test_pretraining_core_columns_from_the_real_sample(pretraining_table: pd.DataFrame, real_samples: Path) -> None:
    raw = pd.read_parquet(real_samples / "pretrain_metrics_sample.parquet")
    frame = EvaluationManager().pretraining_evaluations(pretraining_table)
    assert list(frame.columns[:4]) == ["params", "data", "seed", "step"]
    assert len(frame) == len(raw)
    np.testing.assert_array_equal(frame["hellaswag"], raw["hellaswag_primary_metric"])
    np.testing.assert_array_equal(frame["pile_valppl"], raw["pile-valppl"])
    np.testing.assert_array_equal(frame["dolma_common_crawl_valppl"], raw["dolma_common-crawl-valppl"])
    nine = raw[[f"{task}_primary_metric" for task in NINE]].mean(axis=1, skipna=False)
    np.testing.assert_allclose(frame["olmes_9_average"], nine, rtol=1e-12)
    ppl_only = (frame["params"] == "4M") & (frame["step"] == 5735)
    assert frame.loc[ppl_only, "olmes_9_average"].isna().all()  # step 5735 has perplexities only
    assert set(frame.columns[4:]) == CORE_VARIABLES - {"train_loss", "lr_at_step"}
    assert not {"tokens", "compute", "lr_at_step", "arc_challenge_margin"} & set(frame.columns)


def test_pretraining_all_keeps_every_metric(pretraining_table: pd.DataFrame) -> None:
    frame = EvaluationManager("all").pretraining_evaluations(pretraining_table)
    assert {"arc_challenge_margin", "mmlu_anatomy_norm_correct_prob", "mmlu_average_acc_raw"} <= set(frame.columns)
    # 1,866 task metrics (one per task is its primary score), 11 perplexities, olmes_9_average
    assert frame.shape[1] == 4 + 1866 + 11 + 1


def test_pretraining_explicit_list_gives_exactly_those_columns(pretraining_table: pd.DataFrame) -> None:
    names = ["pile_valppl", "olmes_9_average", "arc_challenge_correct_logit", "train_loss", "ifeval_exact_match"]
    frame = EvaluationManager(names).pretraining_evaluations(pretraining_table)
    # post-training-only names get no pretraining column (or an all-NaN one if they are ddxr's); history is not ours
    assert list(frame.columns) == [
        "params",
        "data",
        "seed",
        "step",
        "olmes_9_average",
        "arc_challenge_correct_logit",
        "pile_valppl",
    ]
    assert frame["arc_challenge_correct_logit"].isna().all() and frame["olmes_9_average"].notna().any()


_SCORES = st.one_of(st.none(), st.floats(0, 1, allow_nan=False))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.tuples(*[_SCORES] * len(NINE)), min_size=0, max_size=12),
    absent=st.sets(st.sampled_from(NINE), max_size=2),
)
def test_pretraining_olmes_9_average_is_the_mean_of_the_nine(rows: list[tuple], absent: set[str]) -> None:
    scores = pd.DataFrame(rows, columns=NINE, dtype="float64")
    keys = pd.DataFrame({"params": "4M", "data": "C4", "seed": 0, "step": np.arange(len(rows)) * 1250})
    table = pd.concat([keys, scores.drop(columns=list(absent))], axis=1)
    frame = EvaluationManager().pretraining_evaluations(table)

    def oracle(row: tuple) -> float:
        present = [score for task, score in zip(NINE, row, strict=True) if task not in absent and score is not None]
        return math.fsum(present) / 9 if len(present) == 9 else math.nan

    np.testing.assert_allclose(frame["olmes_9_average"], [oracle(row) for row in rows], rtol=1e-12)
    pd.testing.assert_frame_equal(frame[list(keys.columns)], keys)
    assert absent.isdisjoint(frame.columns)


def test_pretraining_table_in_raw_datadec_names_raises(real_samples: Path) -> None:
    raw = pd.read_parquet(real_samples / "pretrain_metrics_sample.parquet")
    with pytest.raises(SourceError, match=r"datadec's raw column names \(e\.g\. .*'.*-valppl'.*read it with"):
        EvaluationManager().pretraining_evaluations(raw)


def test_pretraining_table_without_keys_or_with_text_metrics_raises(pretraining_table: pd.DataFrame) -> None:
    with pytest.raises(SourceError, match=r"pretraining table lacks columns \['seed'\].*read it with"):
        EvaluationManager().pretraining_evaluations(pretraining_table.drop(columns="seed"))
    text = pretraining_table.assign(hellaswag=pretraining_table["hellaswag"].astype(str))
    with pytest.raises(SourceError, match=r"columns \['hellaswag'\] are not numeric"):
        EvaluationManager().pretraining_evaluations(text)


# ---------------------------------------------------------------------- both phases
def test_get_evaluations_stacks_both_phases(pretraining_table: pd.DataFrame, entries: pd.DataFrame) -> None:
    stacked = EvaluationManager().get_evaluations(pretraining_table, entries)
    assert list(stacked.columns[:6]) == ["phase", "params", "data", "seed", "step", "run_id"]
    assert stacked["phase"].value_counts().to_dict() == {"pretraining": 34, "posttraining": 4}
    post = stacked[stacked["phase"] == "posttraining"]
    pre = stacked[stacked["phase"] == "pretraining"]
    assert post["params"].isna().all() and pre["run_id"].isna().all() and post["run_id"].notna().all()
    assert post["mmlu_average"].isna().all() and pre["mmlu_average"].notna().any()
    assert post.set_index("run_id").loc[RUN_IDS[6], "arc_challenge"] == 0.2721843003
    assert str(stacked["seed"].dtype) == "Int64" and "train_loss" not in stacked.columns
    assert stacked.attrs["issues"] == []


@pytest.mark.parametrize("eval_type", ["pretraining", "posttraining"])
def test_get_evaluations_one_phase(pretraining_table: pd.DataFrame, entries: pd.DataFrame, eval_type: str) -> None:
    stacked = EvaluationManager().get_evaluations(pretraining_table, entries, eval_type=eval_type)
    assert set(stacked["phase"]) == {eval_type}


def test_get_evaluations_errors(pretraining_table: pd.DataFrame) -> None:
    with pytest.raises(InvalidArgumentError, match=r"eval_type='both' is unknown; expected one of \['all'"):
        EvaluationManager().get_evaluations(pretraining_table, None, eval_type="both")
    with pytest.raises(InvalidArgumentError, match=r"asks for \['posttraining'\] evaluations but none were given"):
        EvaluationManager().get_evaluations(pretraining_table, None, eval_type="posttraining")
    with pytest.raises(BuildError, match=r"'arc_challange' \(close matches: 'arc_challenge'"):
        EvaluationManager(["arc_challange"]).get_evaluations(pretraining_table, None)


# ---------------------------------------------------------------------- selection
def _every_variable(entries: pd.DataFrame) -> tuple[EvaluationManager, list[str]]:
    manager = EvaluationManager("all")
    post, _ = manager.posttraining_evaluations(entries)
    static = EvaluationManager("all").variables(
        [*MMLU_TASKS, *(f"{t}_{m}" for t in (*NINE, "mmlu_average", *MMLU_TASKS) for m in METRIC_SUFFIXES)]
        + [ppl_variable(s) for s in PPL_SETS]
        + ["mmlu_average", "olmes_9_average", "train_loss", "lr_at_step"]
    )
    return manager, manager.variables([*static, *post.columns, "tokens", "run_id"])


def test_core_set_size_and_content(entries: pd.DataFrame) -> None:
    _, everything = _every_variable(entries)
    core = EvaluationManager().variables(everything)
    # 66 task primaries + mmlu_average + olmes_9_average + 11 perplexities + 2 history + 10 tasks x 8 metrics
    # (boolq and winogrande have no acc_uncond)
    assert len(core) == 66 + 2 + 11 + 2 + 10 * 8 - 2
    assert {"mmlu_average_acc_per_byte", "winogrande_correct_prob_per_char", "train_loss"} <= set(core)
    assert not {"arc_challenge_margin", "mmlu_anatomy_acc_raw", "olmes_9_average_acc_raw_macro"} & set(core)


def test_all_set_keeps_everything_found_and_nothing_else(entries: pd.DataFrame) -> None:
    manager, everything = _every_variable(entries)
    assert {"arc_challenge_correct_logit", "arc_challenge_predicted_index_raw", "olmes_9_average_total_prob"} <= set(
        everything
    )
    assert not {"tokens", "run_id"} & set(everything)
    assert manager.variables(["tokens", "arc_challenge"]) == ["arc_challenge"]


def test_variables_are_in_the_documented_order(entries: pd.DataFrame) -> None:
    _, everything = _every_variable(entries)
    assert everything[:66] == [*NINE, *MMLU_TASKS]
    assert everything[66:68] == ["mmlu_average", "olmes_9_average"]
    assert everything[68] == "arc_challenge_correct_choice"
    ppl = [ppl_variable(s) for s in PPL_SETS]
    assert everything[-13:] == [*ppl, "train_loss", "lr_at_step"]
    found = everything.index("olmes_9_average_acc_raw_macro")
    assert everything.index("mmlu_world_religions_norm_correct_prob_per_char") < found < everything.index(ppl[0])


def test_an_explicit_list_is_returned_whole_in_order() -> None:
    manager = EvaluationManager(["pile_valppl", "train_loss", "arc_challenge_acc_raw", "hellaswag", "pile_valppl"])
    assert manager.variables([]) == ["hellaswag", "arc_challenge_acc_raw", "pile_valppl", "train_loss"]


@pytest.mark.parametrize(
    ("metrics", "error", "message"),
    [
        (
            "cor",
            InvalidArgumentError,
            r"metrics='cor' is not a metric set; expected one of \['core', 'all'\] or a list of variable names",
        ),
        (
            "arc_challenge",
            InvalidArgumentError,
            r"metrics='arc_challenge' is not a metric set; .* or metrics=\['arc_challenge'\]",
        ),
        ([], InvalidArgumentError, r"expected a non-empty list of variable names"),
        (
            ["boolq_acc_uncond"],
            BuildError,
            r"variables that do not exist: 'boolq_acc_uncond' \(close matches: .*_acc_uncond'",
        ),
        (["pile_valpplx_valppl"], BuildError, r"'pile_valpplx_valppl' \(close matches: 'pile_valppl'"),
    ],
)
def test_invalid_metric_selections_raise_at_once(metrics: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        EvaluationManager(metrics)


def test_unknown_names_are_reported_with_close_matches_once_data_is_seen(entries: pd.DataFrame) -> None:
    manager = EvaluationManager(["arc_challange", "hellaswag"])
    with pytest.raises(BuildError, match=r"'arc_challange' \(close matches: 'arc_challenge', ") as error:
        manager.posttraining_evaluations(entries)
    message = str(error.value)
    assert "post-training-only variables found in the evaluations read" in message
    assert "build with metrics='all'" in message and "hellaswag" not in message


# ---------------------------------------------------------------------- attributes
def test_every_variable_has_its_attrs(entries: pd.DataFrame) -> None:
    manager, everything = _every_variable(entries)
    for name in everything:
        attrs = manager.variable_attrs(name)
        assert {"long_name", "task", "metric", "higher_is_better", "source"} <= attrs.keys(), name
        assert isinstance(attrs["higher_is_better"], bool), name
        assert all(isinstance(value, str) and value for key, value in attrs.items() if key != "higher_is_better")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "arc_challenge",
            {
                "long_name": "ARC-Challenge primary score (acc_uncond)",
                "task": "arc_challenge",
                "metric": "primary_score",
                "primary_metric": "acc_uncond",
                "higher_is_better": True,
                "source": "DataDecide + OLMES",
            },
        ),
        ("hellaswag_acc_per_char", {"long_name": "HellaSwag acc_per_char", "metric": "acc_per_char"}),
        ("mmlu_anatomy", {"long_name": "MMLU anatomy primary score (acc_raw)", "source": "DataDecide"}),
        ("mmlu_average", {"primary_metric": "acc_raw", "source": "DataDecide", "higher_is_better": True}),
        ("olmes_9_average", {"higher_is_better": True, "source": "DataDecide + OLMES"}),
        ("pile_valppl", {"task": "pile", "metric": "perplexity", "higher_is_better": False}),
        ("dolma_common_crawl_valppl", {"long_name": "dolma_common-crawl validation perplexity"}),
        ("train_loss", {"higher_is_better": False, "source": "W&B history"}),
        ("lr_at_step", {"higher_is_better": False, "source": "DataDecide + W&B history"}),
        ("arc_challenge_bits_per_byte_corr", {"higher_is_better": False}),
        ("arc_challenge_no_answer", {"higher_is_better": False}),
        ("arc_challenge_correct_choice", {"higher_is_better": False}),
        ("arc_challenge_acc_raw", {"higher_is_better": True}),
        ("arc_challenge_correct_prob_per_char", {"higher_is_better": True}),
        ("arc_challenge_margin", {"higher_is_better": True}),
        ("arc_challenge_logits_per_char_corr", {"higher_is_better": True}),
        ("arc_challenge_correct_logit", {"higher_is_better": True, "source": "OLMES"}),
        ("arc_challenge_predicted_index_raw", {"higher_is_better": False, "source": "OLMES"}),
    ],
)
def test_variable_attrs(name: str, expected: dict) -> None:
    attrs = EvaluationManager().variable_attrs(name)
    assert {key: attrs[key] for key in expected} == expected


def test_attrs_of_aggregate_metrics_and_unknown_names(entries: pd.DataFrame) -> None:
    manager = EvaluationManager("all")
    with pytest.raises(BuildError, match="no attributes for variable 'olmes_9_average_acc_raw_macro'"):
        manager.variable_attrs("olmes_9_average_acc_raw_macro")
    manager.posttraining_evaluations(entries)
    attrs = manager.variable_attrs("olmes_9_average_bits_per_byte_corr_micro")
    assert attrs["long_name"] == "OLMES 9-task aggregate bits_per_byte_corr_micro"
    assert attrs["higher_is_better"] is False and attrs["source"] == "OLMES"


# ---------------------------------------------------------------------- entries as stores hand them out
_EACH_ENTRY = {
    # jsonb_each_text gives JSON text for objects, bare text for strings and numbers
    "postgresql": "SELECT r.run_id, e.key, e.value FROM runs r, jsonb_each_text(r.summary) e",
    # json_each gives SQL numbers for numbers and JSON text for objects
    "sqlite": "SELECT r.run_id, e.key, e.value FROM runs r, json_each(r.summary) e",
}


def test_entries_read_from_a_real_store_give_the_same_evaluations(
    store_url: str, summaries: dict[str, dict], entries: pd.DataFrame
) -> None:
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the project ships psycopg2
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    json_type = "JSONB" if engine.dialect.name == "postgresql" else "TEXT"
    rows = [{"run_id": run, "summary": json.dumps(summary)} for run, summary in summaries.items()]
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f"CREATE TABLE runs (run_id TEXT PRIMARY KEY, summary {json_type})"))
            connection.execute(sa.text(f"INSERT INTO runs VALUES (:run_id, CAST(:summary AS {json_type}))"), rows)
            read = pd.read_sql(sa.text(_EACH_ENTRY[engine.dialect.name]), connection)
    finally:
        engine.dispose()
    manager = EvaluationManager("all")
    from_store, issues = manager.posttraining_evaluations(read)
    pd.testing.assert_frame_equal(from_store.sort_index(), manager.posttraining_evaluations(entries)[0].sort_index())
    assert issues.empty


@pytest.mark.parametrize("dtype", ["str", object])
def test_number_texts_read_as_pandas_reads_them(dtype) -> None:
    texts = ["0.2721843003", "-0", "1E5", "1e999", "-1e999", "12345678901234567890123", "4.9e-324", "7", " 1.5"]
    texts += ["NaN", "+1", "1.", '"0.5"', '{"a": 1}', "[1]", "null", "true", "", None]
    values = pd.Series(texts, dtype=dtype)
    expected = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    np.testing.assert_array_equal(_plain_numbers(values), expected)


_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70), st.none(), st.just(0.1)
)
_METRIC_DICTS = st.dictionaries(st.sampled_from(["primary_score", "acc_raw", "acc_per_char", "sum-logits"]), _NUMBERS)
_CONFIGS = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"primary_metric": st.sampled_from(["acc_raw", "acc_per_char", None, 5])}),
    st.just("a text"),
)
_TASK_DICTS = st.tuples(
    _METRIC_DICTS,
    st.one_of(st.none(), st.dictionaries(st.sampled_from(["no_answer", "acc_raw"]), _NUMBERS)),
    _CONFIGS,
    st.sampled_from([None, 1.5, "text", True, [1.0]]),  # a value in a key of its own, sometimes not a number
)


def _dict_entries(draws: list) -> pd.DataFrame:
    rows = []
    for position, (metrics, extra, config, odd) in enumerate(draws):
        task = ["arc_easy", "piqa", "ifeval", "core_9mcqa:rc::olmes:full"][position % 4]
        value = dict(metrics)
        if extra is not None:
            value["extra_metrics"] = extra
        if config is not None:
            value["task_config"] = config
        if odd is not None:
            value["odd"] = odd
        rows.append((f"run{position // 4}", f"oe_eval_metrics/{task}", json.dumps(value)))
        rows.append((f"run{position // 4}", f"oe_eval_metrics/{task}/acc_raw", "0.25"))
    return pd.DataFrame(rows, columns=["run_id", "key", "value"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TASK_DICTS, min_size=1, max_size=9))
def test_dicts_read_together_by_arrow_equal_dicts_decoded_one_by_one(draws: list) -> None:
    entries = _dict_entries(draws)
    together, one_by_one = EvaluationManager("all"), EvaluationManager("all")
    fast = together.posttraining_evaluations(entries.astype({"value": "str"}))
    slow = one_by_one.posttraining_evaluations(entries.astype({"value": object}))  # never goes to Arrow
    pd.testing.assert_frame_equal(fast[0], slow[0])
    pd.testing.assert_frame_equal(fast[1], slow[1])
    assert together._found == one_by_one._found


def _coded_values(texts: list[str]) -> pd.DataFrame:
    values = pd.Series(texts, dtype="str")
    return pd.DataFrame({"number": _plain_numbers(values), "value": values})


def test_plain_dicts_are_read_by_arrow_and_others_one_by_one() -> None:
    plain = {"primary_score": 0.5, "extra_metrics": {"no_answer": 0}, "task_config": {"primary_metric": "acc_raw"}}
    rows = _coded_values([json.dumps(plain), "0.5", '"text"'])
    kinds, _, parsed = _decode_dicts(rows)
    assert kinds.tolist() == [dict, float, str] and parsed is not None
    assert list(parsed[0].columns) == ["primary_score", "no_answer"] and parsed[1].tolist() == ["acc_raw"]
    for odd in ({**plain, "primary_score": "0.5"}, {**plain, "extra_metrics": {"no_answer": "no"}}):
        assert (
            _decode_dicts(_coded_values([json.dumps(plain), json.dumps(odd)]))[2] is None
        )  # one text that is not plain: every dict is decoded one by one
