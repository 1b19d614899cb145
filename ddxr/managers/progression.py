"""TrainingProgressionManager: pretraining and post-training curves on one token axis.

Pretraining curves are the sparse DataDecide checkpoints; post-training curves are the dense W&B history. This module
cleans the history (duplicate steps, ``total_tokens`` restarts, summed losses), estimates tokens where a run logs none
(DPO, runs without history) and lays every lineage out as points: the base's checkpoints up to the base step, then
each run of the chain offset by the tokens the model had already seen (docs/sources.md §7, §8).

Everything works on whole tables (group, merge, cumulative sums); nothing loops over runs or rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from ddxr.errors import InvalidArgumentError, LinkError
from ddxr.managers.relationships import RunRelationshipManager
from ddxr.schema import pretraining_lineage_id
from ddxr.sources.datadecide import flops_per_token
from ddxr.vocabulary import (
    DPO_TOKENS_PER_PAIR,
    PRETRAINING_LEARNING_RATE,
    SIZES,
    UNKNOWN_LEARNING_RATE,
)

#: History keys read from the store: loss, scheduled LR, the SFT token counter and the DPO step counter.
HISTORY_KEYS = ("train_loss", "learning_rate", "total_tokens", "training_step")
#: A run whose median logged loss exceeds this summed its loss over tokens (``reduce_loss=sum``, §8.3).
SUMMED_LOSS_THRESHOLD = 100.0

PretrainingSeeds = Literal["base", "mean"]

#: Columns of the point table every lineage is laid out in.
POINT_COLUMNS = [
    "lineage",
    "run_id",
    "run_type",
    "params",
    "data",
    "seed",
    "step",
    "learning_rate",
    "pretraining_phase",
    "cumulative_tokens",
    "cumulative_compute",
    "tokens_estimated",
    "train_loss",
    "lr_at_step",
    "pretraining_row",
    "eval_run",
]


def _size_column(params: pd.Series, column: str) -> np.ndarray:
    return params.map(SIZES[column].astype("float64")).to_numpy(np.float64)


#: How many run ids the build report lists after each count (the runs table has them all, one row per run).
REPORT_RUN_IDS = 20


@dataclass
class ProgressionReport:
    """Counts of what the progression repaired, estimated or skipped, with reasons."""

    duplicate_history_rows: int = 0
    runs_with_duplicate_steps: int = 0
    runs_tokens_repaired: int = 0
    runs_loss_summed: int = 0
    runs_tokens_estimated: int = 0
    runs_without_history: int = 0
    #: ``{run_id: {reason: rows}}``: history rows left out of a run whose other rows were kept.
    history_rows_skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    base_checkpoints_missing: int = 0
    lineages_learning_rate_unknown: int = 0
    skipped_runs: dict[str, str] = field(default_factory=dict)
    #: ``{count field: run ids}`` behind each count (lineage ids for the lineage counts), sorted.
    run_ids: dict[str, list[str]] = field(default_factory=dict)

    def name(self, count: str, ids: pd.Index | pd.Series | np.ndarray) -> None:
        """Record the runs behind ``count`` (a field name): the field becomes their number."""
        names = sorted(str(run_id) for run_id in ids)
        setattr(self, count, len(names))
        self.run_ids[count] = names

    def as_dict(self) -> dict:
        """Return the report as plain JSON-able data; every count of runs is followed by ``<count>_run_ids``.

        ``<count>_run_ids`` lists the first :data:`REPORT_RUN_IDS` ids, sorted; the count is the total.
        """
        counts = {
            "duplicate_history_rows": self.duplicate_history_rows,
            "runs_with_duplicate_steps": self.runs_with_duplicate_steps,
            "runs_tokens_repaired": self.runs_tokens_repaired,
            "runs_loss_summed": self.runs_loss_summed,
            "runs_tokens_estimated": self.runs_tokens_estimated,
            "runs_without_history": self.runs_without_history,
            "history_rows_skipped": sum(sum(reasons.values()) for reasons in self.history_rows_skipped.values()),
            "history_rows_skipped_by_run": dict(sorted(self.history_rows_skipped.items())),
            "base_checkpoints_missing": self.base_checkpoints_missing,
            "lineages_learning_rate_unknown": self.lineages_learning_rate_unknown,
            "skipped_runs": dict(sorted(self.skipped_runs.items())),
        }
        report = {}
        for key, value in counts.items():
            report[key] = value
            if key in self.run_ids:
                report[f"{key}_run_ids"] = self.run_ids[key][:REPORT_RUN_IDS]
        return report


def typical_gpu_count(links: pd.DataFrame) -> float:
    """Return the most common GPU count of the linked runs of ``links`` (1 when no run says)."""
    gpus = links.loc[links["link_status"] == "linked", "gpu_count"].mode()
    return float(gpus.iloc[0]) if len(gpus) else 1.0


def repair_token_restarts(tokens: pd.Series, run_id: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Repair ``total_tokens`` counters that restart on resume (docs/sources.md §8.10).

    After a drop, the segment is shifted so that its first row equals the previous row plus the run's median
    positive increment; the shifts accumulate over several restarts through a grouped cumulative sum.

    Parameters
    ----------
    tokens : pandas.Series
        The logged counter, rows of each run in step order.
    run_id : pandas.Series
        The run of each row.

    Returns
    -------
    repaired : pandas.Series
        The counter with every restart shifted away. Missing and non-finite values come back NaN and leave the
        other rows as if they were absent: a row is compared with the last finite value before it.
    restarted : pandas.Series
        Per run: whether its counter restarted at least once.

    Examples
    --------
    >>> tokens = pd.Series([10.0, 20.0, 30.0, 5.0, 15.0])
    >>> repair_token_restarts(tokens, pd.Series(["a"] * 5))[0].tolist()
    [10.0, 20.0, 30.0, 40.0, 50.0]
    >>> repair_token_restarts(pd.Series([10.0, 20.0, float("inf"), 5.0]), pd.Series(["a"] * 4))[0].tolist()
    [10.0, 20.0, nan, 30.0]
    """
    tokens = tokens.astype("float64")
    tokens = tokens.where(np.isfinite(tokens))  # one inf would otherwise shift every later row of its run to inf
    previous = tokens.groupby(run_id, observed=True).ffill().groupby(run_id, observed=True).shift()
    increment = tokens - previous
    median_increment = increment.where(increment > 0).groupby(run_id, observed=True).transform("median").fillna(0.0)
    restart = increment < 0
    shift = (previous + median_increment - tokens).where(restart, 0.0)
    repaired = tokens + shift.groupby(run_id, observed=True).cumsum()
    return repaired, restart.groupby(run_id, observed=True).any()


class TrainingProgressionManager:
    """Temporal training sequences of both phases, aligned on cumulative tokens.

    Parameters
    ----------
    pretraining : pandas.DataFrame
        The DataDecide table of :func:`ddxr.sources.datadecide.read_datadecide` (one row per params, data, seed,
        step with ``tokens``, ``compute`` and optionally ``lr_at_step``).
    history : pandas.DataFrame
        Post-training history of the linked runs with :data:`HISTORY_KEYS` (``WandBStore.read_history``).
    relationships : RunRelationshipManager
        Links of every post-training run to its base and parent.
    evaluated_runs : collection of str, optional
        Runs that have end-of-run evaluations; a run without history gets one estimated point only if it has them.
    pretraining_seeds : {"base", "mean"}, default "base"
        Pretraining prefix of a post-training lineage: the checkpoints of its own seed, or the mean over seeds.
    dpo_tokens_per_pair : float, default 779
        Tokens per preference pair used to estimate DPO tokens (docs/sources.md §7, rule a).
    runs : collection of str, optional
        Lay out only these linked runs (all by default; an incremental refresh passes the runs of the lineages it
        rebuilds, ancestors included). Store-wide facts (the usual GPU count) still come from every linked run.
    """

    def __init__(
        self,
        pretraining: pd.DataFrame,
        history: pd.DataFrame,
        relationships: RunRelationshipManager,
        *,
        evaluated_runs: frozenset[str] | set[str] = frozenset(),
        pretraining_seeds: PretrainingSeeds = "base",
        dpo_tokens_per_pair: float = DPO_TOKENS_PER_PAIR,
        runs: frozenset[str] | set[str] | None = None,
    ) -> None:
        if pretraining_seeds not in ("base", "mean"):
            raise InvalidArgumentError(f"pretraining_seeds must be 'base' or 'mean', got {pretraining_seeds!r}")
        self.pretraining = pretraining.reset_index(drop=True)
        self.relationships = relationships
        self.pretraining_seeds = pretraining_seeds
        self.dpo_tokens_per_pair = float(dpo_tokens_per_pair)
        self.report = ProgressionReport()
        linked = relationships.links[relationships.links["link_status"] == "linked"]
        #: GPUs of a run that does not say (§8.16)
        self.typical_gpus = typical_gpu_count(relationships.links)
        if runs is not None:
            linked = linked[linked["run_id"].isin(list(runs))]
        self._links = linked.set_index("run_id")
        self._run_dtype = pd.CategoricalDtype(self._links.index)
        self._history, self.run_facts = self._clean_history(history, set(evaluated_runs))
        # the lineages and their base checkpoints complete the report now, whether the points are laid out or not
        self._bases, self._chains = self._lineage_bases()
        self._prefix = self._prefix_rows(self._bases) if len(self._bases) else None

    # ------------------------------------------------------------------ post-training history
    def _clean_history(self, history: pd.DataFrame, evaluated_runs: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        links = self._links
        facts = pd.DataFrame(index=links.index)
        # run ids as a categorical over the linked runs: maps, groupbys and merges then work on integer codes
        history = history.assign(run_id=history["run_id"].astype(self._run_dtype))
        rows, tokens = self._kept_rows(history, facts)
        # the one copy of the history: the rows kept, in run and step order; the logged rate is the schedule at that
        # step (the hyperparameter lives in the links)
        history = (
            history.take(rows)
            .assign(total_tokens=tokens)
            .rename(columns={"learning_rate": "lr_at_step"})
            .reset_index(drop=True)
        )
        run_type = history["run_id"].map(links["run_type"])
        history = history.assign(run_tokens=self._repaired_tokens(history, facts))
        history = self._drop_summed_losses(history, facts)
        history, estimated = self._estimate_missing_tokens(history, run_type)
        facts["n_history_rows"] = history.groupby("run_id").size().reindex(facts.index, fill_value=0)
        facts["tokens_estimated"] = estimated.reindex(facts.index, fill_value=False)

        single_points = self._points_without_history(facts, evaluated_runs)
        history = pd.concat([history, single_points], ignore_index=True)
        facts["tokens_estimated"] |= facts.index.isin(single_points["run_id"])
        facts["last_step"] = history.groupby("run_id")["step"].max().reindex(facts.index)
        facts["final_run_tokens"] = history.groupby("run_id")["run_tokens"].max().reindex(facts.index)
        self.report.name("runs_tokens_estimated", facts.index[facts["tokens_estimated"]])
        return history, facts

    def _kept_rows(self, history: pd.DataFrame, facts: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Return the positions of the rows of linked runs the curves keep, in run and step order, and their tokens.

        A (run, step) logged twice keeps its last row; rows without a usable counter are skipped
        (:meth:`_rows_without_counter`). Both are counted per run. Positions only: the table is not copied here.
        """
        codes, step = history["run_id"].cat.codes.to_numpy(), history["step"].to_numpy(np.int64)
        rows = np.lexsort((step, codes))  # stable: rows of one run and step stay in the order they were logged
        rows = rows[codes[rows] >= 0]
        duplicated = np.zeros(len(rows), dtype=bool)  # the last row of a (run, step) is kept
        duplicated[:-1] = (codes[rows[1:]] == codes[rows[:-1]]) & (step[rows[1:]] == step[rows[:-1]])
        per_run = np.bincount(codes[rows[duplicated]], minlength=len(self._run_dtype.categories))
        facts["duplicate_steps"] = pd.Series(per_run, index=self._run_dtype.categories).reindex(facts.index)
        self.report.duplicate_history_rows = int(duplicated.sum())
        self.report.name("runs_with_duplicate_steps", facts.index[facts["duplicate_steps"] > 0])
        rows = rows[~duplicated]
        counters = pd.DataFrame(
            {name: history[name].array.take(rows) for name in ("run_id", "total_tokens", "training_step")}, copy=False
        )
        skip, tokens = self._rows_without_counter(counters, facts)
        return rows[~skip], tokens[~skip]

    def _rows_without_counter(self, history: pd.DataFrame, facts: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Mark history rows whose token counters cannot place them on the token axis; return them and the tokens.

        Those are rows whose ``total_tokens`` is non-finite, or missing in a run that logs the counter elsewhere,
        and rows whose DPO counter ``training_step`` is ±inf.

        W&B logs eval-only rows without the counter; a run's other rows keep their measured tokens rather than
        the whole run falling back to an estimate (or vanishing when it has no budget). Runs that log no counter
        at all (DPO) keep every row: their tokens are estimated. Skips are counted per run with their reason.
        """
        tokens = pd.to_numeric(history["total_tokens"], errors="coerce").astype("float64")
        finite = np.isfinite(tokens)
        counted = finite.groupby(history["run_id"], observed=True).transform("any")
        infinite_step = np.isinf(pd.to_numeric(history["training_step"], errors="coerce").astype("float64"))
        skip = (counted & ~finite) | np.isinf(tokens) | infinite_step
        skipped_runs = history["run_id"][skip]
        reason = pd.Series(  # for the skipped rows only: one string per row of millions otherwise
            np.select(
                [np.isinf(tokens[skip]), infinite_step[skip]],
                ["total_tokens is not finite", "training_step is not finite"],
                "total_tokens missing or not a number",
            ),
            index=skipped_runs.index,
        )
        skipped = reason.groupby([skipped_runs, reason], observed=True).size()
        for (run_id, why), count in skipped.items():  # a loop over (run, reason) pairs, not rows
            self.report.history_rows_skipped.setdefault(str(run_id), {})[why] = int(count)
        per_run = skip.groupby(history["run_id"], observed=True).sum()
        facts["history_rows_skipped"] = per_run.reindex(facts.index, fill_value=0).astype("int64")
        return skip.to_numpy(), tokens.to_numpy()

    def _repaired_tokens(self, history: pd.DataFrame, facts: pd.DataFrame) -> pd.Series:
        repaired, restarted = repair_token_restarts(history["total_tokens"], history["run_id"])
        facts["tokens_repaired"] = restarted.reindex(facts.index, fill_value=False)
        self.report.name("runs_tokens_repaired", facts.index[facts["tokens_repaired"]])
        return repaired

    def _drop_summed_losses(self, history: pd.DataFrame, facts: pd.DataFrame) -> pd.DataFrame:
        """Keep losses summed over tokens (``reduce_loss=sum`` runs, median above the threshold) out of train_loss."""
        median_loss = history.groupby("run_id")["train_loss"].median()
        summed = median_loss[median_loss > SUMMED_LOSS_THRESHOLD].index
        facts["loss_summed"] = facts.index.isin(summed)
        self.report.name("runs_loss_summed", facts.index[facts["loss_summed"]])
        return history.assign(train_loss=history["train_loss"].where(~history["run_id"].isin(summed)))

    def _estimate_missing_tokens(self, history: pd.DataFrame, run_type: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
        """Tokens for rows without a counter: DPO by pairs × batch × tokens per pair, SFT by budget × progress."""
        links = self._links
        missing = history["run_tokens"].isna()
        by_run = history["run_id"]
        # (a categorical mapped one-to-one stays categorical: the numbers are cast back)
        batch = by_run.map(self._effective_batch()).astype("float64")
        dpo_steps = history["training_step"].fillna(history["step"]).astype("float64")
        dpo_tokens = dpo_steps * batch.fillna(0.0) * self.dpo_tokens_per_pair
        progress = history["step"] / history.groupby("run_id")["step"].transform("max").clip(lower=1)
        sft_tokens = progress * by_run.map(links["budget_tokens"]).astype("float64")
        estimate = np.where(run_type == "dpo", dpo_tokens, sft_tokens)
        history = history.assign(run_tokens=history["run_tokens"].where(~missing, estimate))
        unresolved = history["run_tokens"].isna().groupby(by_run).any()
        unresolved = unresolved[unresolved].index
        self.report.skipped_runs.update(dict.fromkeys(unresolved, "no token counter and no budget to estimate one"))
        history = history[~by_run.isin(unresolved)]
        return history, missing.groupby(by_run).any()

    def _effective_batch(self) -> pd.Series:
        """Sequences per optimizer step; an unknown GPU count takes the store's most common one (§8.11, §8.16)."""
        links = self._links
        per_step = (links["per_device_train_batch_size"] * links["gradient_accumulation_steps"]).astype("float64")
        gpus = links["gpu_count"].astype("float64").fillna(self.typical_gpus)
        return links["effective_batch"].fillna(per_step * gpus)

    def _points_without_history(self, facts: pd.DataFrame, evaluated_runs: set[str]) -> pd.DataFrame:
        """One estimated end-of-run point for evaluated runs that logged no history (§8.11)."""
        links = self._links
        silent = facts.index[facts["n_history_rows"] == 0]
        self.report.name("runs_without_history", silent)
        candidates = links.loc[silent]
        sequences = pd.to_numeric(candidates["max_train_samples"], errors="coerce")
        step = np.ceil(sequences / self._effective_batch().reindex(silent))
        usable = candidates.index.isin(list(evaluated_runs)) & step.notna() & candidates["budget_tokens"].notna()
        unusable = silent[~usable]
        reasons = np.where(unusable.isin(list(evaluated_runs)), "evaluations but", "no evaluations and")
        self.report.skipped_runs.update(
            zip(unusable, pd.Series(reasons) + " no history; step or tokens cannot be estimated", strict=True)
        )
        return pd.DataFrame(
            {
                "run_id": pd.Categorical(silent[usable], dtype=self._run_dtype),
                "step": step[usable].astype("int64").to_numpy(),
                "train_loss": np.nan,
                "lr_at_step": np.nan,
                "run_tokens": candidates.loc[usable, "budget_tokens"].to_numpy(np.float64),
            }
        )

    # ------------------------------------------------------------------ public curves
    def get_training_curves(self, run_type: str, run_ids: list[str] | None = None) -> pd.DataFrame:
        """Curves of one phase, as the sources give them after cleaning.

        Parameters
        ----------
        run_type : {"pretraining", "supervised_ft", "dpo"}
            ``"pretraining"`` returns DataDecide checkpoints (``run_ids`` are pretraining lineage ids
            ``{params}/{slug}/seed{seed}``); the others return cleaned post-training history with ``run_tokens``.
        run_ids : list of str, optional
            Restrict to these runs.
        """
        if run_type == "pretraining":
            table = self.pretraining
            if run_ids is None:
                return table
            ids = pretraining_lineage_id(table["params"], table["data"], table["seed"])
            return table[ids.isin(run_ids)].reset_index(drop=True)
        if run_type not in ("supervised_ft", "dpo"):
            raise InvalidArgumentError(f"run_type must be 'pretraining', 'supervised_ft' or 'dpo', got {run_type!r}")
        history = self._history[self._history["run_id"].map(self._links["run_type"]) == run_type]
        if run_ids is not None:
            history = history[history["run_id"].isin(run_ids)]
        return history.reset_index(drop=True)

    def get_continuous_progression(self, run_id: str) -> pd.DataFrame:
        """Points of the lineage ending in ``run_id``: its base's checkpoints, then each run of its chain.

        Unlike :meth:`points`, the string columns are plain strings (one lineage holds few points).
        """
        points = self.points()
        lineage = points[points["lineage"] == run_id]
        if lineage.empty:
            raise LinkError(
                f"no lineage ends in run {run_id!r}: it is unknown, unlinked or skipped; "
                "see the build report or RunRelationshipManager.links for the reason"
            )
        strings = [name for name, dtype in lineage.dtypes.items() if isinstance(dtype, pd.CategoricalDtype)]
        return lineage.astype(dict.fromkeys(strings, "str")).reset_index(drop=True)

    # ------------------------------------------------------------------ points
    def points(self) -> pd.DataFrame:
        """Every lineage laid out as points (columns :data:`POINT_COLUMNS`).

        The string columns (``lineage``, ``run_id``, ``run_type``, ``params``, ``data``, ``eval_run``) are categoricals
        whose categories are sorted: millions of points share a few thousand strings. ``pretraining_row`` points into
        the pretraining table (or the seed-mean table), -1 elsewhere; ``eval_run`` names the run whose end-of-run
        evaluations sit on that point ("" elsewhere).
        """
        if not hasattr(self, "_points"):
            self._points = _stacked([self._pretraining_lineages(), *self._posttraining_lineages()])
        return self._points

    def posttraining_points(self) -> pd.DataFrame | None:
        """Return the post-training lineages alone, as in :meth:`points`; None when there are none."""
        parts = self._posttraining_lineages()
        return _stacked(parts) if parts else None

    @property
    def metric_table(self) -> pd.DataFrame:
        """The table ``pretraining_row`` points into: the pretraining table, then (``"mean"``) its seed means.

        Seed-mean rows carry ``seed = -1``.
        """
        if not hasattr(self, "_metric_table"):
            table = self.pretraining
            if self.pretraining_seeds == "mean":
                grouped = table.drop(columns=["seed"]).groupby(["params", "data", "step"], sort=False)
                seed_mean = grouped.mean(numeric_only=True).reset_index().assign(seed=-1)
                table = pd.concat([table, seed_mean[table.columns]], ignore_index=True)
            self._metric_table = table
        return self._metric_table

    def _pretraining_lineages(self) -> pd.DataFrame:
        table = self.pretraining
        lineage = pretraining_lineage_id(table["params"], table["data"], table["seed"])
        return self._pretraining_points(table, lineage, lineage, PRETRAINING_LEARNING_RATE, self.pretraining.index)

    def _pretraining_points(self, rows, lineage, run_id, learning_rate, row_pointer) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "lineage": pd.Categorical(np.asarray(lineage, dtype=object)),
                "run_id": pd.Categorical(np.asarray(run_id, dtype=object)),
                "run_type": pd.Categorical(["pretraining"] * len(rows)),
                "params": pd.Categorical(rows["params"]),
                "data": pd.Categorical(rows["data"]),
                "seed": rows["seed"].to_numpy(np.int64),
                "step": rows["step"].to_numpy(np.int64),
                "learning_rate": learning_rate,
                "pretraining_phase": True,
                "cumulative_tokens": rows["tokens"].to_numpy(np.float64),
                "cumulative_compute": rows["compute"].to_numpy(np.float64),
                "tokens_estimated": False,
                "train_loss": np.nan,
                "lr_at_step": rows["lr_at_step"].to_numpy(np.float64) if "lr_at_step" in rows else np.nan,
                "pretraining_row": np.asarray(row_pointer, dtype=np.int64),
                "eval_run": pd.Categorical([""] * len(rows)),
            },
            copy=False,  # one block per column: the table is stacked column by column (see _stacked)
        )

    def _lineage_bases(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """One row per post-training lineage (its leaf's base checkpoint and learning rate), and the usable chains."""
        chains = self.relationships.lineage_chains()
        chains = chains[chains["run_id"].isin(self.run_facts.index) & ~chains["run_id"].isin(self.skipped_runs)]
        leaves = chains.loc[chains.groupby("lineage")["depth"].idxmax()]
        # a lineage whose own run was skipped has no leaf left: drop it and its ancestors' copies
        leaves = leaves[leaves["lineage"] == leaves["run_id"]]
        bases = self._links.loc[leaves["lineage"], ["params", "data", "seed", "base_step", "learning_rate"]]
        unknown = bases["learning_rate"].isna()
        self.report.name("lineages_learning_rate_unknown", bases.index[unknown])
        bases = bases.assign(
            learning_rate=bases["learning_rate"].where(~unknown, UNKNOWN_LEARNING_RATE),
            seed=bases["seed"].astype("int64"),
            base_step=bases["base_step"].astype("int64"),
            base_tokens=bases["base_step"].astype("float64") * _size_column(bases["params"], "tokens_per_step"),
        )
        return bases.rename_axis("lineage").reset_index(), chains[chains["lineage"].isin(leaves["lineage"])]

    @property
    def skipped_runs(self) -> list[str]:
        """Linked runs left out of the curves; the reasons are in ``report.skipped_runs``."""
        return list(self.report.skipped_runs)

    def _posttraining_lineages(self) -> list[pd.DataFrame]:
        if self._prefix is None:
            return []
        return [self._prefix_points(self._prefix), self._run_points(self._bases, self._chains)]

    def _prefix_rows(self, bases: pd.DataFrame) -> pd.DataFrame:
        """Rows of the metric table each lineage's prefix is made of: its base's checkpoints up to the base step."""
        schedule = [name for name in ("seed", "tokens", "compute", "lr_at_step") if name in self.metric_table]
        table = self.metric_table[["params", "data", "step", *schedule]].rename_axis("pretraining_row").reset_index()
        if self.pretraining_seeds == "mean":
            table = table[table["seed"] == -1].drop(columns="seed")
            prefix = bases.merge(table, on=["params", "data"])
        else:
            prefix = bases.merge(table, on=["params", "data", "seed"])
        prefix = prefix[prefix["step"] <= prefix["base_step"]]
        found = prefix.loc[prefix["step"] == prefix["base_step"], "lineage"]
        self.report.name("base_checkpoints_missing", bases.loc[~bases["lineage"].isin(found), "lineage"])
        return prefix

    def _prefix_points(self, prefix: pd.DataFrame) -> pd.DataFrame:
        seeds = prefix["seed"] if self.pretraining_seeds == "base" else "mean"
        run_id = pretraining_lineage_id(prefix["params"], prefix["data"], seeds)
        return self._pretraining_points(
            prefix, prefix["lineage"], run_id, prefix["learning_rate"].to_numpy(), prefix["pretraining_row"]
        )

    def _run_points(self, bases: pd.DataFrame, chains: pd.DataFrame) -> pd.DataFrame:
        facts = self.run_facts
        offsets = self._token_offsets(bases, chains)
        chains = chains.assign(run_id=chains["run_id"].astype(self._run_dtype))
        # everything constant along a run of a lineage is looked up on the chain table (one row per lineage and run),
        # then spread over the history rows by integer positions: no lookup or string runs per history row
        runs = chains.merge(bases, on="lineage").merge(offsets, on=["lineage", "run_id"])
        runs = runs.assign(
            # the pretraining table's own FLOPs per token, so a lineage's compute stays one line through its base point
            per_token=runs["params"].map(self._flops_per_token).to_numpy(np.float64),
            last_step=runs["run_id"].map(facts["last_step"]).to_numpy(np.float64),
            run_type=runs["run_id"].map(self._links["run_type"]).to_numpy(object),
            estimated=(runs["run_id"].map(facts["tokens_estimated"]).astype(bool) | runs["offset_estimated"]).to_numpy(
                bool
            ),
        )
        history_runs = self._history["run_id"].cat.codes.to_numpy()
        run_rows, rows = _join_rows(
            pd.Categorical(runs["run_id"], dtype=self._run_dtype).codes, history_runs, len(self._run_dtype.categories)
        )
        history = {name: self._history[name].to_numpy(np.float64)[rows] for name in ("run_tokens", "train_loss")}
        step = self._history["step"].to_numpy(np.int64)[rows]
        cumulative = runs["offset"].to_numpy(np.float64)[run_rows] + history["run_tokens"]
        run_id = pd.Categorical.from_codes(history_runs[rows], dtype=self._run_dtype)
        return pd.DataFrame(
            {
                "lineage": _spread(runs["lineage"], run_rows),
                "run_id": run_id,
                "run_type": _spread(runs["run_type"], run_rows),
                "params": _spread(runs["params"], run_rows),
                "data": _spread(runs["data"], run_rows),
                "seed": runs["seed"].to_numpy(np.int64)[run_rows],
                "step": step,
                "learning_rate": runs["learning_rate"].to_numpy(np.float64)[run_rows],
                "pretraining_phase": False,
                "cumulative_tokens": cumulative,
                # pretraining compute is (FLOPs per token) x tokens too: the same factor x cumulative tokens never
                # counts anything twice
                "cumulative_compute": runs["per_token"].to_numpy(np.float64)[run_rows] * cumulative,
                "tokens_estimated": runs["estimated"].to_numpy(bool)[run_rows],
                "train_loss": history["train_loss"],
                "lr_at_step": self._history["lr_at_step"].to_numpy(np.float64)[rows],
                "pretraining_row": -1,
                "eval_run": _evaluated_at(run_id, step == runs["last_step"].to_numpy(np.float64)[run_rows]),
            },
            copy=False,  # one block per column: the table is stacked column by column (see _stacked)
        )

    @property
    def _flops_per_token(self) -> pd.Series:
        table = self.pretraining
        return flops_per_token(table["params"], table["tokens"], table["compute"])

    def _token_offsets(self, bases: pd.DataFrame, chains: pd.DataFrame) -> pd.DataFrame:
        """Tokens seen before each run of a chain: the base's, plus the final tokens of its ancestors.

        A DPO run whose SFT parent is not in the store starts after the parent's budget (``<N>Mt``), estimated.
        """
        links, facts = self._links, self.run_facts
        chained = chains.merge(bases[["lineage", "base_tokens"]], on="lineage").sort_values(["lineage", "depth"])
        final = chained["run_id"].map(facts["final_run_tokens"])
        before = final.groupby(chained["lineage"]).cumsum() - final
        missing_parent = chained["run_id"].map(links["parent_tokens_estimate"]).fillna(0.0)
        estimated_parent = missing_parent > 0
        return pd.DataFrame(
            {
                "lineage": chained["lineage"],
                "run_id": chained["run_id"],
                "offset": chained["base_tokens"] + before + missing_parent,
                "offset_estimated": estimated_parent.groupby(chained["lineage"]).cummax(),
            }
        )


def _join_rows(left: np.ndarray, right: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the row pairs of an inner join on integer keys in ``[0, n_keys)``, in ``DataFrame.merge``'s order.

    Each left row in turn, followed by the right rows of its key in their own order: a repeat and a gather instead of
    hashing millions of keys.
    """
    order = np.argsort(right, kind="stable")
    counts = np.bincount(right, minlength=n_keys)
    first = np.cumsum(counts) - counts  # where each key's rows start in `order`
    per_left = counts[left]
    left_rows = np.repeat(np.arange(len(left)), per_left)
    within = np.arange(len(left_rows)) - np.repeat(np.cumsum(per_left) - per_left, per_left)
    return left_rows, order[np.repeat(first[left], per_left) + within]


def _spread(column: pd.Series, rows: np.ndarray) -> pd.Categorical:
    """Return the values of ``column`` at ``rows`` as a categorical: its few distinct strings, not one per row."""
    values = pd.Categorical(column)
    return pd.Categorical.from_codes(values.codes[rows], dtype=values.dtype)


def _evaluated_at(run_id: pd.Categorical, evaluated: np.ndarray) -> pd.Categorical:
    """``eval_run``: the run's id where its end-of-run evaluations sit, ``""`` elsewhere."""
    blank = len(run_id.categories)
    dtype = pd.CategoricalDtype(run_id.categories.append(pd.Index([""])))
    return pd.Categorical.from_codes(np.where(evaluated, run_id.codes, blank), dtype=dtype)


def _stacked(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate point tables, emptying them; string columns stay categoricals, over the sorted union of their values.

    Sorted categories make the codes order like the strings. Each column of the parts is let go once stacked, so the
    point table is never held twice.
    """
    columns = {}
    for name in POINT_COLUMNS:
        pieces = [part.pop(name) for part in parts]
        if isinstance(pieces[0].dtype, pd.CategoricalDtype):
            # an empty piece has object categories, which union_categoricals refuses to mix with strings
            pieces = [pd.Categorical.from_codes(p.cat.codes, p.cat.categories.astype("str")) for p in pieces]
            columns[name] = union_categoricals(pieces, sort_categories=True)
        else:
            columns[name] = np.concatenate([piece.to_numpy() for piece in pieces])
    return pd.DataFrame(columns, copy=False)
