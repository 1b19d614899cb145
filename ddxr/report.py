"""The runs table and the build report of a build (docs/build_report.md), from the managers' tables.

A full build and an incremental refresh (:mod:`ddxr.refresh`) both make them here, so both report alike.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from ddxr.managers.progression import REPORT_RUN_IDS, ProgressionReport, TrainingProgressionManager
from ddxr.sources.datadecide import PretrainingEvals

#: Columns of the runs table carried into the runs Dataset besides the links.
RUN_FACTS = (
    "n_history_rows",
    "history_rows_skipped",
    "duplicate_steps",
    "tokens_repaired",
    "loss_summed",
    "tokens_estimated",
    "last_step",
)


def runs_table(links: pd.DataFrame, training: TrainingProgressionManager | None) -> pd.DataFrame:
    """One row per run of ``links``: links, hyperparameters, state and what ``training`` did with it.

    Without ``training`` (no run of ``links`` laid out), the facts are missing and nothing is skipped.
    """
    links = links.drop(columns=["config", "summary"], errors="ignore")
    facts = pd.DataFrame(columns=list(RUN_FACTS)) if training is None else training.run_facts
    table = links.merge(facts.reindex(columns=list(RUN_FACTS)), left_on="run_id", right_index=True, how="left")
    skipped = pd.Series({} if training is None else training.report.skipped_runs, dtype="str")
    table["skip_reason"] = np.where(table["run_id"].isin(skipped.index), table["run_id"].map(skipped), "")
    table["in_curves"] = (table["link_status"] == "linked") & (table["skip_reason"] == "")
    return table


def pretraining_report(pretraining: PretrainingEvals) -> dict:
    """Return the build report's ``pretraining`` section: rows read and cells skipped, by reason."""
    return {
        "rows": len(pretraining.table),
        "skipped_cells": len(pretraining.skipped),
        "skipped_by_reason": _counts(pretraining.skipped.get("reason")),
    }


def build_report(
    pretraining: dict,
    links: pd.DataFrame,
    eval_issues: pd.DataFrame,
    coercions: Counter,
    orphans: dict[str, int],
    report: ProgressionReport,
) -> dict:
    """Return what a build read, linked, repaired, estimated and skipped, with reasons (JSON-able)."""
    eval_skips = eval_issues[eval_issues["skipped"]]
    unlinked = links.loc[links["link_status"] != "linked", "link_reason"]
    return {
        "pretraining": pretraining,
        "runs_read": len(links),
        "runs_by_type": _counts(links["run_type"]),
        "runs_by_state": _counts(links["state"]),
        "runs_linked": int((links["link_status"] == "linked").sum()),
        "runs_unlinked": len(unlinked),
        "runs_unlinked_run_ids": _run_ids(links.loc[unlinked.index, "run_id"]),
        "unlinked_by_reason": _counts(unlinked),
        "runs_with_conflicting_sources": int((links["conflicts"] != "").sum()),
        "runs_with_conflicting_sources_run_ids": _run_ids(links.loc[links["conflicts"] != "", "run_id"]),
        "learning_rate_sources": _counts(links["learning_rate_source"]),
        "runs_learning_rate_unknown": int(links["learning_rate"].isna().sum()),
        "runs_learning_rate_unknown_run_ids": _run_ids(links.loc[links["learning_rate"].isna(), "run_id"]),
        "evaluations_skipped": len(eval_skips),
        "evaluations_skipped_run_ids": _run_ids(eval_skips["run_id"]),
        "evaluations_skipped_by_reason": _counts(eval_skips["reason"]),
        "evaluation_discrepancies_resolved": int((~eval_issues["skipped"]).sum()),
        "history_values_not_numeric": dict(coercions),
        "history_rows_without_a_run": sum(orphans.values()),
        "history_run_ids_without_a_run": sorted(orphans)[:20],
        "progression": report.as_dict(),
        "runs_skipped": len(report.skipped_runs),
        "runs_skipped_run_ids": _run_ids(pd.Series(list(report.skipped_runs), dtype=object)),
        "skipped_by_reason": _counts(pd.Series(report.skipped_runs, dtype=object)),
    }


def _run_ids(run_ids: pd.Series) -> list[str]:
    """Return the first ``REPORT_RUN_IDS`` distinct run ids, sorted: what the build report lists after a count."""
    return sorted(pd.unique(run_ids.astype(str)))[:REPORT_RUN_IDS]


def _counts(values: pd.Series | None) -> dict[str, int]:
    if values is None or len(values) == 0:
        return {}
    # most common first, ties by key: the same report whatever the order the rows came in (a refresh merges them)
    counts = sorted(Counter(values.astype(str)).items(), key=lambda item: (-item[1], item[0]))
    return {key: int(count) for key, count in counts}
