"""EvaluationManager: one evaluation schema for DataDecide pretraining columns and OLMES post-training evaluations.

Pretraining checkpoints carry their evaluations as columns already named the ddxr way (``arc_challenge``,
``arc_challenge_acc_raw``, ``mmlu_average``, ``pile_valppl``); post-training runs carry them in their W&B summary as
``oe_eval_metrics/<task>`` JSON dicts and flat ``oe_eval_metrics/<task>/<metric>`` numbers (docs/sources.md §5.4,
§5.5). This module maps both onto the same variable names, so that a task-named variable holds the task's primary
score in both phases, and chooses which variables a build keeps (docs/dataset.md §2: ``"core"``, ``"all"`` or a list).

Naming rules
------------
- ``<task>``: the task's primary score (pretraining ``primary_metric``, post-training ``primary_score``).
- ``<task>_<metric>``: any other metric of a DataDecide task (9 OLMES tasks, 57 MMLU subjects, ``mmlu_average``).
- ``olmes_9_average``: the mean primary score of the nine OLMES tasks; NaN when any of the nine is missing, because a
  mean over fewer tasks is not comparable. Post-training takes the ``core_9mcqa:rc::olmes:full`` aggregate's
  ``primary_score`` (the same macro mean, computed by OLMES) and cross-checks it against the nine.
- ``olmes_9_average_<metric>``: the aggregate's other entries (``acc_raw_macro``, ``primary_score_micro`` …),
  post-training only.
- Tasks outside the DataDecide vocabulary (generative evals such as ``ifeval`` or ``minerva_math_algebra``) are
  post-training only and get ``<task>_<metric>`` names only (their primary score under ``<task>_<primary metric>``),
  with anything other than letters, digits and ``_`` in the task or metric replaced by ``_``.
- ``num_instances`` and ``task_config`` describe an evaluation, not a model, and are not variables.

``higher_is_better`` is False for perplexities, losses, ``bits_per_byte_corr`` and ``no_answer``; True for accuracies,
probabilities, margins (the correct answer's lead over the best wrong one) and log-likelihoods of the correct answer
(``*_logits_*``, ``correct_logit*``: less negative is better) and for unknown post-training metrics; False also for
``correct_choice`` and ``predicted_index_*``, which are answer indices rather than scores, and for ``lr_at_step``.
"""

from __future__ import annotations

import difflib
import json
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import reduce

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from ddxr.errors import BuildError, InvalidArgumentError, SourceError
from ddxr.sources._collector import collector_paused
from ddxr.vocabulary import (
    METRICS,
    MMLU_TASKS,
    OLMES_9_AVERAGE,
    OLMES_TASKS,
    PPL_SETS,
    PRIMARY_METRIC,
    TASKS_WITHOUT_UNCOND,
    UNCOND_METRICS,
    ppl_variable,
)

#: Named metric sets a build can select (besides an explicit list of variable names).
METRIC_SETS = ("core", "all")
#: Values of the ``phase`` column of :meth:`EvaluationManager.get_evaluations`.
PHASES = ("pretraining", "posttraining")
#: Key columns of the pretraining table.
PRETRAINING_KEYS = ("params", "data", "seed", "step")
#: Columns of the post-training entries (``WandBStore.read_run_entries``).
ENTRY_COLUMNS = ("run_id", "key", "value")
#: Columns of the post-training issues frame.
ISSUE_COLUMNS = ("run_id", "task", "reason", "skipped")
#: Summary key prefix of the OLMES evaluations.
EVAL_PREFIX = "oe_eval_metrics/"
#: OLMES aggregate over the nine multiple-choice tasks, mapped to ``olmes_9_average``.
AGGREGATE_TASK = "core_9mcqa:rc::olmes:full"
#: Variables read from W&B history by the progression manager, listed here so selection and attrs cover them.
HISTORY_VARIABLES = ("train_loss", "lr_at_step")

#: Metric families of the ten OLMES tasks kept by the ``"core"`` set.
CORE_METRICS = (
    "acc_raw",
    "acc_per_token",
    "acc_per_char",
    "acc_per_byte",
    "acc_uncond",
    "correct_prob",
    "correct_prob_per_token",
    "correct_prob_per_char",
)
#: Metrics only the post-training flat keys report (docs/sources.md §5.5).
POSTTRAINING_METRICS = (
    "correct_logit",
    "correct_logit_per_token",
    "correct_logit_per_char",
    "predicted_index_raw",
    "predicted_index_per_token",
    "predicted_index_per_char",
    "predicted_index_per_byte",
    "predicted_index_uncond",
)

_TASK_LABELS = {
    "arc_challenge": "ARC-Challenge",
    "arc_easy": "ARC-Easy",
    "boolq": "BoolQ",
    "csqa": "CommonsenseQA",
    "hellaswag": "HellaSwag",
    "openbookqa": "OpenBookQA",
    "piqa": "PIQA",
    "socialiqa": "Social IQa",
    "winogrande": "WinoGrande",
    "mmlu_average": "MMLU average (57 subjects)",
    "olmes_9": "OLMES 9-task aggregate",
    **{task: "MMLU " + task.removeprefix("mmlu_").replace("_", " ") for task in MMLU_TASKS},
}
_TEN_TASKS = (*OLMES_TASKS, "mmlu_average")
# task order of every listing: the nine OLMES tasks, then MMLU
_TASK_ORDER = (*_TEN_TASKS, *MMLU_TASKS)
_UNCOND_ONLY = (*UNCOND_METRICS, "predicted_index_uncond")
_LOWER_IS_BETTER = ("bits_per_byte", "no_answer", "loss", "ppl", "perplexity", "error")
_NOT_A_SCORE = ("correct_choice", "predicted_index")
_ISCLOSE = {"rtol": 1e-6, "atol": 1e-9}  # JSON carries 10 significant digits; this only flags real disagreements


def _task_metrics(task: str) -> list[str]:
    """Metric names (not the primary score) a DataDecide task has, in full_eval order."""
    metrics = [*METRICS[:-1], *(POSTTRAINING_METRICS if task in OLMES_TASKS else ())]
    return [m for m in metrics if not (task in TASKS_WITHOUT_UNCOND and m in _UNCOND_ONLY)]


#: (task, metric) of every variable ddxr knows without reading data, in the documented order: primary scores,
#: averages, task metrics (task-major), perplexities, history. ``metric`` "primary_score" marks a primary score.
_STATIC: dict[str, tuple[str, str]] = {
    **{task: (task, "primary_score") for task in (*OLMES_TASKS, *MMLU_TASKS)},
    "mmlu_average": ("mmlu_average", "primary_score"),
    OLMES_9_AVERAGE: (OLMES_9_AVERAGE, "primary_score"),
    **{f"{task}_{metric}": (task, metric) for task in _TASK_ORDER for metric in _task_metrics(task)},
    **{ppl_variable(ppl_set): (ppl_set, "perplexity") for ppl_set in PPL_SETS},
    "train_loss": ("training", "train_loss"),
    "lr_at_step": ("training", "lr_at_step"),
}
_RANK = {name: rank for rank, name in enumerate(_STATIC)}
# post-training-only names found in data sort after the task metrics, before the perplexities
_FOUND_RANK = _RANK[ppl_variable(PPL_SETS[0])] - 0.5

#: The ``"core"`` metric set (docs/dataset.md §2).
CORE_VARIABLES = frozenset(
    [
        *(*OLMES_TASKS, *MMLU_TASKS, "mmlu_average", OLMES_9_AVERAGE),
        *(ppl_variable(ppl_set) for ppl_set in PPL_SETS),
        *HISTORY_VARIABLES,
        *(f"{task}_{metric}" for task in _TEN_TASKS for metric in CORE_METRICS if f"{task}_{metric}" in _STATIC),
    ]
)


class EvaluationManager:
    """One evaluation schema for pretraining checkpoints and post-training runs.

    Parameters
    ----------
    metrics : {"core", "all"} or sequence of str, default "core"
        Variables to keep. ``"core"``: every task's primary score, ``mmlu_average``, ``olmes_9_average``, the 11
        perplexities, ``train_loss``, ``lr_at_step`` and the ``acc_*`` / ``correct_prob*`` families of the nine
        OLMES tasks and ``mmlu_average``. ``"all"``: every variable found. A list: exactly those variables (NaN where
        a phase did not measure them). Names of post-training-only tasks that ddxr does not know in advance are
        checked once post-training evaluations are read.

    Raises
    ------
    BuildError
        If ``metrics`` is neither a metric set nor a list of names, or names a variable that cannot exist.

    Examples
    --------
    >>> manager = EvaluationManager(["pile_valppl", "arc_challenge"])
    >>> manager.variables(["arc_challenge", "pile_valppl", "hellaswag"])
    ['arc_challenge', 'pile_valppl']
    >>> manager.variable_attrs("arc_challenge")["long_name"]
    'ARC-Challenge primary score (acc_uncond)'
    """

    def __init__(self, metrics: str | Sequence[str] = "core") -> None:
        self.metrics = _validate_metrics(metrics)
        # (task, metric) of post-training-only variables met in data, for selection and attrs
        self._found: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------------ selection and attributes
    def variables(self, available: Iterable[str]) -> list[str]:
        """Return selected variable names in the documented order.

        The order is: primary scores (OLMES tasks, then MMLU subjects), averages (``mmlu_average``,
        ``olmes_9_average``), task metrics (task by task, metrics in full_eval order), post-training-only variables
        (alphabetically), perplexities, then ``train_loss`` and ``lr_at_step``.

        Parameters
        ----------
        available : iterable of str
            Columns or variables present; names that are not evaluation variables (``tokens``, ``run_id`` …) are
            ignored. Only consulted for the ``"core"`` and ``"all"`` sets: a list is returned whole.

        Returns
        -------
        list of str

        Raises
        ------
        BuildError
            If an explicit list names a variable that is neither in ddxr's vocabulary nor found in the
            post-training evaluations read so far.
        """
        if isinstance(self.metrics, tuple):
            self._check_known(self.metrics)
            names = set(self.metrics)
        else:
            candidates = CORE_VARIABLES if self.metrics == "core" else _STATIC.keys() | self._found.keys()
            names = set(available) & candidates
        return sorted(names, key=_order_key)

    def variable_attrs(self, name: str) -> dict[str, str | bool]:
        """CF-style attributes of a variable: ``long_name``, ``task``, ``metric``, ``higher_is_better``, ``source``.

        Primary scores also carry ``primary_metric``; derived averages carry ``formula``.

        Parameters
        ----------
        name : str
            A variable of ddxr's vocabulary or one found in the post-training evaluations read by this manager.

        Returns
        -------
        dict

        Raises
        ------
        BuildError
            If the name is unknown.
        """
        if name in _SPECIAL_ATTRS:
            return dict(_SPECIAL_ATTRS[name])
        if name in _STATIC:
            return _metric_attrs(*_STATIC[name], source=_source(*_STATIC[name]))
        if name not in self._found:
            raise BuildError(
                f"no attributes for variable {name!r}: it is neither in ddxr's vocabulary nor among the "
                f"{len(self._found)} post-training variables this manager has read; read the evaluations first"
            )
        return _metric_attrs(*self._found[name], source="OLMES")

    def _evaluation_variables(self, available: Iterable[str]) -> list[str]:
        """:meth:`variables` without the history variables, which the progression manager provides."""
        return [name for name in self.variables(available) if name not in HISTORY_VARIABLES]

    def _check_known(self, names: Iterable[str]) -> None:
        unknown = [name for name in names if name not in _STATIC and name not in self._found]
        if unknown:
            also = f" or one of the {len(self._found)} post-training-only variables found in the evaluations read"
            raise _unknown_names_error(unknown, [*_STATIC, *self._found], also)

    # ------------------------------------------------------------------ pretraining
    def pretraining_evaluations(self, table: pd.DataFrame) -> pd.DataFrame:
        """Standardize the DataDecide pretraining evaluations.

        Parameters
        ----------
        table : pandas.DataFrame
            ``read_datadecide(...).table``: keys ``params, data, seed, step`` and metric columns in ddxr names
            (``<task>``, ``<task>_<metric>``, ``mmlu_average[_<metric>]``, ``<set>_valppl``). Other columns
            (``tokens``, ``compute``, ``lr_at_step`` …) are not evaluations and are left out.

        Returns
        -------
        pandas.DataFrame
            The four keys, then the selected metric columns in :meth:`variables` order, ``olmes_9_average`` among
            them (NaN on rows missing any of the nine OLMES primary scores). One row per input row, same order.

        Raises
        ------
        SourceError
            If key columns are missing, a metric column is not numeric, or the columns use datadec's raw names.
        """
        _require_columns(table, PRETRAINING_KEYS, "the pretraining table", "read it with ddxr.sources.datadecide")
        found = [name for name in table.columns if name in _STATIC and name not in HISTORY_VARIABLES]
        _reject_raw_names(table)
        if isinstance(self.metrics, tuple):
            # names outside the vocabulary are post-training-only candidates: no pretraining column for them
            columns = sorted(
                (name for name in self.metrics if name in _STATIC and name not in HISTORY_VARIABLES), key=_order_key
            )
        else:
            columns = self._evaluation_variables([*found, OLMES_9_AVERAGE])
        measured = [name for name in columns if name in table.columns and name != OLMES_9_AVERAGE]
        _require_numeric(table, list(dict.fromkeys([*measured, *(name for name in OLMES_TASKS if name in table)])))
        metrics = table[measured].astype("float64").reindex(columns=columns)
        if OLMES_9_AVERAGE in columns:
            metrics[OLMES_9_AVERAGE] = _mean_of_nine(table)
        return pd.concat([table[list(PRETRAINING_KEYS)], metrics], axis=1)

    # ------------------------------------------------------------------ post-training
    def posttraining_evaluations(self, entries: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Standardize the OLMES evaluations of post-training runs.

        Parameters
        ----------
        entries : pandas.DataFrame
            ``WandBStore.read_run_entries("summary", "oe_eval_metrics/")``: columns ``run_id``, ``key``, ``value``
            with one row per summary key and its value as JSON text (already decoded values are accepted too).
            Keys outside ``oe_eval_metrics/`` are ignored.

        Returns
        -------
        evaluations : pandas.DataFrame
            Indexed by ``run_id``, one row per run with at least one usable value; the selected variables as
            float64 columns in :meth:`variables` order. ``mmlu_average`` and the MMLU subjects are never measured
            after pretraining.
        issues : pandas.DataFrame
            Columns ``run_id``, ``task``, ``reason``, ``skipped``. ``skipped`` True: a value left out — a whole
            task of a run when its ``oe_eval_metrics/<task>`` dict is unparseable, not a dict or has no numeric
            ``primary_score``; one value when a flat ``oe_eval_metrics/<task>/<metric>`` is not a number.
            ``skipped`` False: a discrepancy resolved by a documented choice (``primary_score`` disagreeing with the
            metric ``task_config.primary_metric`` names → primary_score kept; dict and flat key disagreeing → dict
            kept; the aggregate disagreeing with the mean of the nine → aggregate kept; a repeated key → last kept;
            no dict → primary score taken from the task's OLMES primary metric).

        Raises
        ------
        SourceError
            If ``entries`` lacks one of its three columns.
        BuildError
            If an explicit metric list names a variable found neither in ddxr's vocabulary nor in ``entries``.
        """
        _require_columns(entries, ENTRY_COLUMNS, "the post-training evaluation entries", "read them with WandBStore")
        keyed = entries.loc[entries["key"].astype(str).str.startswith(EVAL_PREFIX), list(ENTRY_COLUMNS)]
        coded, keys, vocabulary = _code_entries(keyed.reset_index(drop=True))
        coded, repeated = _deduplicate(coded, keys, vocabulary)
        is_dict = keys["metric"].isna().to_numpy()[coded["key"]]
        dict_rows = coded.loc[is_dict].assign(key=keys["key"].to_numpy()[coded.loc[is_dict, "key"]])
        with collector_paused():  # the decoded dicts are freed before it resumes
            dict_values, dict_tasks, dict_issues = _explode_dicts(dict_rows, vocabulary)
        vocabulary = _with_metrics(vocabulary, keys, dict_values, dict_tasks)
        dict_values = dict_values.assign(metric=vocabulary.metric_codes(dict_values["metric"]))
        # a task whose dict is unusable is skipped whole for that run, its flat keys included
        broken = dict_rows[~np.isin(vocabulary.pairs(dict_rows), vocabulary.pairs(dict_tasks))]
        flat_rows = coded.loc[~is_dict]
        key_metric = vocabulary.metric_codes(keys["metric"])
        flat_rows = flat_rows.assign(metric=key_metric[flat_rows["key"]])
        flat_values, flat_issues = _flat_values(flat_rows, pd.Index(keys["key"]), vocabulary)
        flat_values = flat_values[~np.isin(vocabulary.pairs(flat_values), vocabulary.pairs(broken))]
        values, merge_issues = _merge_sources(dict_values, flat_values, dict_tasks, vocabulary)
        values, variables, primary_issues = _check_primary(values, dict_tasks, vocabulary)
        self._found.update(_found_variables(values, variables, vocabulary))
        evaluations, aggregate_issues = _widen(values, variables, vocabulary)
        evaluations = evaluations.reindex(columns=self._evaluation_variables([*evaluations.columns, OLMES_9_AVERAGE]))
        issues = pd.concat(
            [repeated, dict_issues, flat_issues, merge_issues, primary_issues, aggregate_issues], ignore_index=True
        )
        return evaluations, issues.sort_values(["run_id", "task"], kind="stable", ignore_index=True)

    # ------------------------------------------------------------------ both phases
    def get_evaluations(
        self, pretraining: pd.DataFrame | None, entries: pd.DataFrame | None, eval_type: str = "all"
    ) -> pd.DataFrame:
        """Both phases' evaluations in one long table (the seed's unified interface).

        Parameters
        ----------
        pretraining : pandas.DataFrame or None
            The pretraining table (see :meth:`pretraining_evaluations`).
        entries : pandas.DataFrame or None
            The post-training entries (see :meth:`posttraining_evaluations`).
        eval_type : {"all", "pretraining", "posttraining"}, default "all"
            Which phases to include.

        Returns
        -------
        pandas.DataFrame
            Columns ``phase``, ``params``, ``data``, ``seed``, ``step`` (pretraining keys, missing on post-training
            rows), ``run_id`` (missing on pretraining rows), then the selected variables in :meth:`variables` order.
            ``attrs["issues"]`` holds the post-training issues as records (see :meth:`posttraining_evaluations`).

        Raises
        ------
        InvalidArgumentError
            If ``eval_type`` is unknown or the phases it asks for were not given.
        """
        wanted = PHASES if eval_type == "all" else (eval_type,)
        if not set(wanted) <= set(PHASES):
            raise InvalidArgumentError(f"eval_type={eval_type!r} is unknown; expected one of {['all', *PHASES]}")
        frames, issues = [], []
        if "pretraining" in wanted and pretraining is not None:
            frames.append(self.pretraining_evaluations(pretraining).assign(phase="pretraining"))
        if "posttraining" in wanted and entries is not None:
            evaluations, found_issues = self.posttraining_evaluations(entries)
            frames.append(evaluations.reset_index().assign(phase="posttraining"))
            issues = found_issues.to_dict("records")
        if not frames:
            raise InvalidArgumentError(
                f"eval_type={eval_type!r} asks for {list(wanted)} evaluations but none were given; "
                "pass the pretraining table and/or the post-training entries"
            )
        stacked = pd.concat(frames, ignore_index=True)
        names = self._evaluation_variables(stacked.columns)
        keys = ["phase", *PRETRAINING_KEYS, "run_id"]
        stacked = stacked.reindex(columns=[*keys, *names])
        stacked[["seed", "step"]] = stacked[["seed", "step"]].astype("Int64")
        stacked.attrs["issues"] = issues
        return stacked


# ---------------------------------------------------------------------- selection helpers
def _validate_metrics(metrics: str | Sequence[str]) -> str | tuple[str, ...]:
    if isinstance(metrics, str):
        if metrics in METRIC_SETS:
            return metrics
        hint = f"metrics=[{metrics!r}] for one variable" if metrics in _STATIC else "a list of variable names"
        raise InvalidArgumentError(
            f"metrics={metrics!r} is not a metric set; expected one of {list(METRIC_SETS)} or {hint}"
        )
    names = tuple(dict.fromkeys(metrics))
    if not names or not all(isinstance(name, str) for name in names):
        raise InvalidArgumentError(f"metrics={metrics!r}: expected a non-empty list of variable names (str)")
    # a name ending like a vocabulary variable but not in it can never be found: catch it before any reading
    impossible = [name for name in names if name not in _STATIC and _claims_vocabulary(name)]
    if impossible:
        raise _unknown_names_error(impossible, list(_STATIC), "")
    return names


def _claims_vocabulary(name: str) -> bool:
    """Whether a name has the form of a DataDecide variable (known task + known metric, or a perplexity)."""
    if name.endswith("_valppl"):
        return True
    task = next((task for task in _TASK_ORDER if name.startswith(task + "_")), None)
    return task is not None and name.removeprefix(task + "_") in (*METRICS, *POSTTRAINING_METRICS)


def _unknown_names_error(unknown: list[str], candidates: list[str], also: str) -> BuildError:
    hints = "; ".join(
        f"{name!r} (close matches: {', '.join(map(repr, difflib.get_close_matches(name, candidates, n=3))) or 'none'})"
        for name in unknown
    )
    return BuildError(
        f"metrics names variables that do not exist: {hints}. Expected a variable of ddxr's vocabulary (e.g. "
        f"'arc_challenge', 'arc_challenge_acc_raw', 'mmlu_average', 'olmes_9_average', 'pile_valppl'){also}; fix "
        "the names, or build with metrics='all' and pick from the variables it returns"
    )


def _order_key(name: str) -> tuple[float, str]:
    return (_RANK.get(name, _FOUND_RANK), name)


# ---------------------------------------------------------------------- attributes
_SPECIAL_ATTRS: dict[str, dict[str, str | bool]] = {
    OLMES_9_AVERAGE: {
        "long_name": "mean primary score of the 9 OLMES tasks",
        "task": "olmes_9",
        "metric": "primary_score",
        "higher_is_better": True,
        "source": "DataDecide + OLMES",
        "formula": "mean of arc_challenge, arc_easy, boolq, csqa, hellaswag, openbookqa, piqa, socialiqa, "
        "winogrande (NaN if any is missing); post-training: oe_eval core_9mcqa:rc::olmes:full primary_score",
    },
    "mmlu_average": {
        "long_name": "MMLU average (57 subjects) primary score (acc_raw)",
        "task": "mmlu_average",
        "metric": "primary_score",
        "primary_metric": "acc_raw",
        "higher_is_better": True,
        "source": "DataDecide",
        "formula": "unweighted mean of the 57 mmlu_<subject> primary scores",
    },
    "train_loss": {
        "long_name": "training loss",
        "task": "training",
        "metric": "train_loss",
        "higher_is_better": False,
        "source": "W&B history",
    },
    "lr_at_step": {
        "long_name": "scheduled learning rate at the point",
        "task": "training",
        "metric": "lr_at_step",
        "higher_is_better": False,
        "source": "DataDecide + W&B history",
    },
}


def _metric_attrs(task: str, metric: str, source: str) -> dict[str, str | bool]:
    label = _TASK_LABELS.get(task, task)
    attrs: dict[str, str | bool] = {
        "long_name": f"{label} {metric}",
        "task": task,
        "metric": metric,
        "higher_is_better": _higher_is_better(metric),
        "source": source,
    }
    if metric == "perplexity":
        attrs["long_name"] = f"{task} validation perplexity"
    elif metric == "primary_score" and task in PRIMARY_METRIC:
        primary = PRIMARY_METRIC[task]
        attrs.update(long_name=f"{label} primary score ({primary})", primary_metric=primary)
    return attrs


def _source(task: str, metric: str) -> str:
    """Where a vocabulary variable is measured: OLMES tasks in both phases, MMLU and perplexities in pretraining."""
    if metric in POSTTRAINING_METRICS:
        return "OLMES"
    return "DataDecide + OLMES" if task in OLMES_TASKS else "DataDecide"


def _higher_is_better(metric: str) -> bool:
    return not any(part in metric for part in (*_LOWER_IS_BETTER, *_NOT_A_SCORE))


# ---------------------------------------------------------------------- checks on inputs
def _require_columns(frame: pd.DataFrame, columns: Sequence[str], source: str, action: str) -> None:
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise SourceError(
            f"{source} lacks columns {missing}: expected {list(columns)}, found {list(frame.columns)[:12]}; {action}"
        )


def _reject_raw_names(table: pd.DataFrame) -> None:
    twins = {f"{task}_primary_metric": task for task in PRIMARY_METRIC}
    twins.update({f"{ppl_set}-valppl": ppl_variable(ppl_set) for ppl_set in PPL_SETS})
    raw = [name for name in table.columns if name in twins and twins[name] not in table.columns]
    if raw:
        raise SourceError(
            f"the pretraining table uses datadec's raw column names (e.g. {raw[:3]}) without their ddxr names; "
            "expected '<task>' for primary scores and '<set>_valppl' for perplexities: read it with "
            "ddxr.sources.datadecide or rename with ddxr.vocabulary.metric_variable / ppl_variable"
        )


def _require_numeric(table: pd.DataFrame, columns: list[str]) -> None:
    bad = [name for name in columns if not pd.api.types.is_numeric_dtype(table[name])]
    if bad:
        raise SourceError(
            f"pretraining metric columns {bad[:5]} are not numeric (dtypes {[str(table[n].dtype) for n in bad[:5]]}); "
            "expected float scores: check how the table was read"
        )


def _mean_of_nine(frame: pd.DataFrame) -> np.ndarray:
    """Mean of the nine OLMES primary scores per row; NaN where any is missing (mean over fewer is not comparable)."""
    return frame.reindex(columns=list(OLMES_TASKS)).to_numpy(dtype="float64").mean(axis=1)


# ---------------------------------------------------------------------- post-training parsing
# The entries are coded once: run ids, task names and metric names become positions in sorted vocabularies, so that
# the joins and checks below compare integers, and a code sorts like its name. Names come back only for the rows
# that make an issue message, the few distinct (task, metric) pairs that name variables, and the final table.

#: A JSON number as JSONB and SQLite write it: such texts are cast in Arrow, which reads them as pandas does.
_JSON_NUMBER = r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?$"
_PRIMARY_SCORE = "primary_score"


class _Unparseable:
    """Marks a value whose JSON text could not be parsed."""


_UNPARSEABLE = _Unparseable()


@dataclass(frozen=True)
class _Vocabulary:
    """Sorted names behind the codes of post-training tables: ``runs[run]``, ``tasks[task]``, ``metrics[metric]``."""

    runs: pd.Index
    tasks: pd.Index
    metrics: pd.Index = field(default_factory=lambda: pd.Index([], dtype=object))

    def pairs(self, frame: pd.DataFrame) -> np.ndarray:
        """One integer per (run, task) pair of a coded frame."""
        return frame["run"].to_numpy(np.int64) * len(self.tasks) + frame["task"].to_numpy(np.int64)

    def issues(self, frame: pd.DataFrame, reason: pd.Series | str, skipped: bool) -> pd.DataFrame:
        """Issue rows for the (run, task) codes of ``frame``; ``reason`` aligned with ``frame``."""
        return pd.DataFrame(
            {
                "run_id": pd.Series(self.runs[frame["run"]], index=frame.index, dtype=object).astype(str),
                "task": pd.Series(self.tasks[frame["task"]], index=frame.index, dtype=object).astype(str),
                "reason": reason,
                "skipped": skipped,
            },
            columns=list(ISSUE_COLUMNS),
        ).reset_index(drop=True)

    def cells(self, frame: pd.DataFrame) -> np.ndarray:
        """One integer per (run, task, metric) of a coded frame, ordered as the triplets are."""
        return self.pairs(frame) * len(self.metrics) + frame["metric"].to_numpy(np.int64)

    def uncoded(self, cells: pd.Series) -> pd.DataFrame:
        """Return the ``run``, ``task`` and ``metric`` codes of :meth:`cells`."""
        pair, metric = np.divmod(cells.to_numpy(np.int64), len(self.metrics))
        run, task = np.divmod(pair, len(self.tasks))
        return pd.DataFrame({"run": run, "task": task, "metric": metric}, index=cells.index)

    def metric_codes(self, names: pd.Series | pd.Index) -> np.ndarray:
        """Codes of metric names (-1 for a name outside the vocabulary)."""
        return self.metrics.get_indexer(pd.Index(names, dtype=object))


def _loads(value: object) -> object:
    if not isinstance(value, str):
        return value  # already decoded by the driver, or NULL
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's parser goes
        return _UNPARSEABLE


def _text(*parts: pd.Series | np.ndarray | str) -> pd.Series:
    """Concatenate columns (as text) and literals element-wise: one message per row, built vectorized."""
    return reduce(operator.add, [part.astype(str) if isinstance(part, pd.Series) else part for part in parts])


def _snippet(values: pd.Series) -> pd.Series:
    return "'" + values.astype(str).str.slice(0, 40) + "'"


def _format(values: pd.Series) -> pd.Series:
    return values.map("{:.10g}".format).astype(str)


def _named(codes: pd.Series, names: pd.Index) -> pd.Series:
    """Return the names of codes, aligned with them (for messages)."""
    return pd.Series(names[codes.to_numpy(np.int64)], index=codes.index, dtype=object)


def _split_key(keys: pd.Series) -> pd.DataFrame:
    """``oe_eval_metrics/<task>[/<metric>]`` → columns 0 (task) and 1 (metric, missing for the per-task dicts)."""
    return keys.str.slice(len(EVAL_PREFIX)).str.split("/", n=1, expand=True).reindex(columns=[0, 1])


def _code_entries(entries: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, _Vocabulary]:
    """Code the entries.

    Returns
    -------
    coded : pandas.DataFrame
        One row per entry: ``run``, ``key``, ``task`` (codes), ``number`` (the value where ``pd.to_numeric`` reads
        a number, else NaN) and ``value`` (as given).
    keys : pandas.DataFrame
        Indexed by key code: ``key``, ``task`` and ``metric`` (missing for the per-task dicts) names.
    vocabulary : _Vocabulary
        Run ids and task names (no metrics yet: the dicts hold more).
    """
    run, runs = pd.factorize(entries["run_id"].astype(str), sort=True, use_na_sentinel=False)
    key, distinct = pd.factorize(entries["key"].astype(str), sort=True, use_na_sentinel=False)
    keys = _split_key(pd.Series(distinct, dtype=object)).set_axis(["task", "metric"], axis=1)
    keys.insert(0, "key", pd.Series(distinct, dtype=object))
    task_of_key, tasks = pd.factorize(keys["task"].astype(str), sort=True, use_na_sentinel=False)
    coded = pd.DataFrame(
        {
            "run": run,
            "key": key,
            "task": task_of_key[key],
            "number": _plain_numbers(entries["value"]),
            "value": entries["value"].array,
        }
    )
    return coded, keys, _Vocabulary(pd.Index(runs, dtype=object), pd.Index(tasks, dtype=object))


def _plain_numbers(values: pd.Series) -> np.ndarray:
    """Values as float64 where ``pd.to_numeric`` reads a number, else NaN.

    Most values are JSON number texts: one Arrow cast reads them, and only the rest (dicts, broken text, values
    already decoded) goes through ``pd.to_numeric``.
    """
    numbers = np.full(len(values), np.nan)
    rest = np.ones(len(values), dtype=bool)
    if isinstance(values.dtype, pd.StringDtype):
        texts = pa.array(values.array, type=pa.large_string(), from_pandas=True)
        plain = pc.match_substring_regex(texts, _JSON_NUMBER).fill_null(False)
        numbers[plain.to_numpy(zero_copy_only=False)] = pc.cast(texts.filter(plain), pa.float64()).to_numpy()
        # JSON objects, arrays and strings are no numbers to pd.to_numeric either (and long to scan)
        composite = pc.is_in(pc.utf8_slice_codeunits(texts, 0, 1), pa.array(["{", "[", '"']))
        rest = ~pc.or_(plain, composite).fill_null(False).to_numpy(zero_copy_only=False)
    numbers[rest] = pd.to_numeric(values[rest], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return numbers


def _deduplicate(coded: pd.DataFrame, keys: pd.DataFrame, vocabulary: _Vocabulary) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the last of repeated (run_id, key) entries and record the repetition."""
    repeated = coded.duplicated(["run", "key"], keep="last")
    dropped = coded.loc[repeated].drop_duplicates(["run", "key"])
    reason = _text(_named(dropped["key"], pd.Index(keys["key"])), ": repeated for this run; kept the last value")
    return coded.loc[~repeated], vocabulary.issues(dropped, reason, skipped=False)


def _decoded(rows: pd.DataFrame) -> pd.Series:
    """Values as Python objects: the number where there is one, else the decoded JSON (or :data:`_UNPARSEABLE`)."""
    decoded = pd.Series(rows["number"].to_numpy(), index=rows.index, dtype=object)
    other = rows["number"].isna()
    decoded[other] = rows.loc[other, "value"].map(_loads)
    return decoded


def _numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Values as float64, and a mask of values present but not numbers (``"NaN"`` counts as a number)."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = numbers.isna() & values.notna()
    bad[bad] = ~values[bad].astype(str).str.strip().str.lower().eq("nan")
    return numbers, bad


def _explode_dicts(rows: pd.DataFrame, vocabulary: _Vocabulary) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return the ``oe_eval_metrics/<task>`` dicts as long values.

    Parameters
    ----------
    rows : pandas.DataFrame
        The coded per-task dict entries, with their ``key`` names.
    vocabulary : _Vocabulary
        Run and task names, for the issues.

    Returns
    -------
    values : pandas.DataFrame
        (run, task, metric, value) of every numeric metric of the usable dicts, ``primary_score`` included; the
        metric by its name.
    tasks : pandas.DataFrame
        (run, task, primary_metric, primary_score) of every usable dict.
    issues : pandas.DataFrame
        Skipped tasks (unparseable, not a dict, no numeric primary_score) and skipped values.
    """
    kinds, decoded, parsed = _decode_dicts(rows)
    is_dict = kinds.isin([dict])
    not_dicts = rows.loc[~is_dict]
    found = np.where(
        kinds[~is_dict].isin([_Unparseable]),
        _text("unparseable JSON ", _snippet(not_dicts["value"])),
        _text("a ", kinds[~is_dict].map(operator.attrgetter("__name__"))),
    )
    reason = _text(
        not_dicts["key"],
        ": expected a JSON object of metrics, found ",
        found,
        "; skipped this task for this run (re-export the run's summary to recover it)",
    )
    issues = [vocabulary.issues(not_dicts, reason, skipped=True)]

    dicts = rows.loc[is_dict]
    metrics, primary_metric = parsed if parsed is not None else _json_dicts(decoded[is_dict])
    primary_raw = metrics.get(_PRIMARY_SCORE, pd.Series(np.nan, index=dicts.index, dtype=object))
    primary, bad_primary = _numbers(primary_raw)
    lacking = dicts.loc[primary.isna()]
    reason = _text(
        lacking["key"],
        ": expected a numeric primary_score in the metrics dict, found ",
        np.where(bad_primary[primary.isna()], _snippet(primary_raw[primary.isna()]), "none or NaN"),
        "; skipped this task for this run",
    )
    issues.append(vocabulary.issues(lacking, reason, skipped=True))

    usable = dicts.loc[primary.notna()]
    tasks = usable[["run", "task"]].assign(
        primary_metric=primary_metric[primary.notna()].astype(object), primary_score=primary[primary.notna()]
    )
    long = (
        metrics.loc[primary.notna()]
        .rename_axis("_entry")
        .reset_index()
        .melt(id_vars="_entry", var_name="metric", value_name="raw")
    )
    long = long[long["raw"].notna()].join(usable[["run", "task", "key"]], on="_entry")
    values, value_issues = _numeric_values(long, _text(long["key"], "[", long["metric"], "]"), long["raw"], vocabulary)
    return values, tasks, pd.concat([*issues, value_issues], ignore_index=True)


# task_config describes the evaluation and num_instances its size: neither is a measurement of the model
_NOT_METRICS = ("task_config", "num_instances")


def _json_dicts(decoded: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """Return the metrics of decoded dicts as columns (nested dicts lifted) and their task_config's primary_metric."""
    table = _flatten(pd.DataFrame(decoded.tolist(), index=decoded.index))
    config = table.get("task_config", pd.Series(np.nan, index=decoded.index, dtype=object))
    is_dict = config.map(type).isin([dict])
    primary_metric = pd.Series(np.nan, index=decoded.index, dtype=object)  # a config that is no dict names none
    primary_metric[is_dict] = config[is_dict].map(operator.methodcaller("get", "primary_metric"))
    return table.drop(columns=list(_NOT_METRICS), errors="ignore"), primary_metric


def _decode_dicts(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series, tuple[pd.DataFrame, pd.Series] | None]:
    """Return the type of every row's value, the values decoded one by one, and the dicts as Arrow parsed them.

    Texts opening a JSON object go to Arrow together (:func:`_arrow_dicts`), the other values (numbers, strings,
    broken text) are decoded one by one. When Arrow declines, or another value decodes to a dict after all, every
    value is decoded one by one and the third item is None.
    """
    values = rows["value"]
    objects = np.zeros(len(rows), dtype=bool)
    if isinstance(values.dtype, pd.StringDtype):  # text as read from a store
        objects = values.str.startswith("{").fillna(False).to_numpy(bool)
    parsed = _arrow_dicts(values[objects]) if objects.any() else None
    if parsed is not None:
        decoded = _decoded(rows.loc[~objects])
        kinds = pd.Series(dict, index=rows.index, dtype=object)
        kinds[~objects] = decoded.map(type)
        if not kinds[~objects].isin([dict]).any():
            return kinds, decoded, parsed
    decoded = _decoded(rows)
    return decoded.map(type), decoded, None


def _arrow_dicts(texts: pd.Series) -> tuple[pd.DataFrame, pd.Series] | None:
    """Parse JSON object texts with Arrow's JSON reader when they are plain: what :func:`_json_dicts` gives, faster.

    Plain means every text is one JSON object on one line that Arrow reads without complaint (no repeated key, no
    key holding a number in one dict and text in another), whose metrics are numbers or dicts of numbers, and whose
    ``task_config.primary_metric``, if any, is text. Anything else returns None: the caller decodes the texts one
    by one, and reports what it finds.
    """
    if pc.any(pc.match_substring(pa.array(texts.array, type=pa.large_string()), "\n")).as_py():
        return None
    lines = "\n".join(texts.tolist()).encode()
    try:
        options = pa_json.ReadOptions(use_threads=False, block_size=len(lines) + 1)
        table = pa_json.read_json(pa.BufferReader(lines), read_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    columns: dict[str, pa.ChunkedArray] = {}
    primary_metric = pd.Series(np.nan, index=texts.index, dtype=object)
    for position, key in enumerate(table.schema):  # a loop over the dicts' keys, not over rows
        column = table.column(position)
        if key.name == "task_config":
            named = _struct_children(column, key.type).get("primary_metric")
            if named is None or not (pa.types.is_string(named.type) or pa.types.is_null(named.type)):
                return None
            primary_metric = pd.Series(named.to_pandas().to_numpy(object), index=texts.index).fillna(np.nan)
        elif key.name in _NOT_METRICS:
            continue
        elif _is_number_type(key.type):
            columns[key.name] = column
        elif pa.types.is_struct(key.type) and all(_is_number_type(child.type) for child in key.type):
            prefix = "" if key.name == "extra_metrics" else f"{key.name}_"
            lifted = {prefix + name: child for name, child in _struct_children(column, key.type).items()}
            if columns.keys() & lifted.keys():  # a lifted name repeating a key: the decoder keeps both
                return None
            columns |= lifted
        else:
            return None
    if table.num_rows != len(texts):
        return None
    metrics = pd.DataFrame({name: column.to_pandas() for name, column in columns.items()})
    return metrics.set_axis(texts.index), primary_metric


def _struct_children(column: pa.ChunkedArray, kind: pa.DataType) -> dict[str, pa.ChunkedArray]:
    """Children of a struct column by name (empty when the column is no struct)."""
    if not pa.types.is_struct(kind):
        return {}
    return {kind.field(index).name: pc.struct_field(column, [index]) for index in range(kind.num_fields)}


def _is_number_type(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)


def _flatten(table: pd.DataFrame) -> pd.DataFrame:
    """Lift the entries of nested dicts (``extra_metrics``) to columns; ``task_config`` stays whole.

    Loops over the few columns of the dicts, never over runs.
    """
    nested = [
        name
        for name in table.columns
        if name not in _NOT_METRICS and table[name].dtype == object and table[name].map(type).isin([dict]).any()
    ]
    lifted = []
    for name in nested:
        column = table[name]
        inner = column[column.map(type).isin([dict])]
        prefix = "" if name == "extra_metrics" else f"{name}_"
        lifted.append(pd.DataFrame(inner.tolist(), index=inner.index).add_prefix(prefix))
    return pd.concat([table.drop(columns=nested), *lifted], axis=1)


def _numeric_values(
    rows: pd.DataFrame, where: pd.Series, raw: pd.Series, vocabulary: _Vocabulary
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(run, task, metric, value) of the numeric ``raw`` values, and a skip issue for each non-number."""
    numbers, bad = _numbers(raw)
    reason = _text(where[bad], ": expected a number, found ", _snippet(raw[bad]), "; left this value out")
    values = rows.assign(value=numbers).loc[~bad & numbers.notna(), ["run", "task", "metric", "value"]]
    return values, vocabulary.issues(rows.loc[bad], reason, skipped=True)


def _flat_values(rows: pd.DataFrame, keys: pd.Index, vocabulary: _Vocabulary) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the flat ``oe_eval_metrics/<task>/<metric>`` numbers, and issues for values that are not numbers.

    Numbers are taken as read; only the other values (text, booleans, broken JSON) are decoded and checked.
    """
    numbers = rows["number"].notna()
    others = rows.loc[~numbers]
    decoded = _decoded(others)
    raw = decoded.where(~decoded.map(type).isin([_Unparseable]), others["value"])
    checked, issues = _numeric_values(others, _named(others["key"], keys), raw, vocabulary)
    values = rows.loc[numbers, ["run", "task", "metric", "number"]].rename(columns={"number": "value"})
    return pd.concat([values, checked]).sort_index(), issues


def _with_metrics(
    vocabulary: _Vocabulary, keys: pd.DataFrame, dict_values: pd.DataFrame, tasks: pd.DataFrame
) -> _Vocabulary:
    """Return the vocabulary with every metric name: flat keys', the dicts', and the primary metrics they name."""
    names = pd.concat(
        [
            keys["metric"].dropna(),
            dict_values["metric"],
            tasks["primary_metric"].dropna().astype(str),
            pd.Series([_PRIMARY_SCORE]),
        ]
    )
    return replace(vocabulary, metrics=pd.Index(np.sort(names.astype(object).unique()), dtype=object))


def _merge_sources(
    dict_values: pd.DataFrame, flat_values: pd.DataFrame, tasks: pd.DataFrame, vocabulary: _Vocabulary
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One value per (run, task, metric): the dict's, else the flat key's; disagreements recorded.

    A DataDecide task without a usable dict gets its primary score from the flat key of its OLMES primary metric.
    """
    keys = ["run", "task", "metric"]
    sides = [frame[["value"]].assign(cell=vocabulary.cells(frame)) for frame in (dict_values, flat_values)]
    merged = sides[0].merge(sides[1], on="cell", how="outer", suffixes=("_dict", "_flat"))  # sorted by cell
    merged = pd.concat([vocabulary.uncoded(merged["cell"]), merged[["value_dict", "value_flat"]]], axis=1)
    both = merged["value_dict"].notna() & merged["value_flat"].notna()
    wrong = merged.loc[both & ~np.isclose(merged["value_dict"], merged["value_flat"], **_ISCLOSE)]
    dict_key = _text(EVAL_PREFIX, _named(wrong["task"], vocabulary.tasks))
    metric = _named(wrong["metric"], vocabulary.metrics)
    reason = _text(
        *(dict_key, " has ", metric, " = ", _format(wrong["value_dict"])),
        *(" but ", dict_key, "/", metric, " = ", _format(wrong["value_flat"])),
        "; kept the dict value",
    )
    issues = [vocabulary.issues(wrong, reason, skipped=False)]

    values = merged.assign(value=merged["value_dict"].fillna(merged["value_flat"]))[[*keys, "value"]]
    primary_metric = vocabulary.metric_codes(vocabulary.tasks.map(PRIMARY_METRIC))
    has_primary = values["metric"].to_numpy() == primary_metric[values["task"].to_numpy()]
    without_dict = ~np.isin(vocabulary.pairs(values), vocabulary.pairs(tasks)) & has_primary
    stand_ins = values.loc[without_dict]
    dict_key = _text(EVAL_PREFIX, _named(stand_ins["task"], vocabulary.tasks))
    reason = _text(
        *(dict_key, " (the metrics dict) is absent; took the primary score from "),
        *(dict_key, "/", _named(stand_ins["metric"], vocabulary.metrics), ", the task's OLMES primary metric"),
    )
    issues.append(vocabulary.issues(stand_ins, reason, skipped=False))
    primary_score = vocabulary.metrics.get_loc(_PRIMARY_SCORE)
    values = pd.concat([values, stand_ins.assign(metric=primary_score)], ignore_index=True)
    return values, pd.concat(issues, ignore_index=True)


def _check_primary(
    values: pd.DataFrame, tasks: pd.DataFrame, vocabulary: _Vocabulary
) -> tuple[pd.DataFrame, pd.Index, pd.DataFrame]:
    """Compare each primary_score with the metric its task_config names, then name the values' variables.

    ``primary_score`` is kept whatever the comparison says: it is what OLMES reports as the task's score.
    """
    tasks = tasks[vocabulary.tasks[tasks["task"]] != AGGREGATE_TASK]  # "macro": checked against the nine instead
    # only a text names a metric (a number in task_config.primary_metric matches none)
    named_text = tasks["primary_metric"].map(lambda name: name if isinstance(name, str) else None)
    named = tasks.assign(metric=vocabulary.metric_codes(named_text)).merge(
        values.rename(columns={"value": "named_value"}), on=["run", "task", "metric"], how="left"
    )
    key = _text(EVAL_PREFIX, _named(named["task"], vocabulary.tasks))
    metric = named["primary_metric"].astype(str)
    expected = _named(named["task"], vocabulary.tasks).map(PRIMARY_METRIC)
    unnamed = named["primary_metric"].isna()
    differ = named["named_value"].notna() & ~np.isclose(named["primary_score"], named["named_value"], **_ISCLOSE)
    absent = named["named_value"].isna() & ~unnamed
    unexpected = expected.notna() & ~unnamed & (metric != expected)
    messages = {
        "differ": _text(
            key,
            *(": primary_score ", _format(named["primary_score"])),
            *(" but task_config.primary_metric ", metric, " = ", _format(named["named_value"])),
            "; kept primary_score",
        ),
        "unnamed": _text(key, ": task_config.primary_metric is missing; kept primary_score unchecked"),
        "absent": _text(
            key,
            *(": task_config.primary_metric names '", metric),
            "', which this evaluation does not report; kept primary_score unchecked",
        ),
        "unexpected": _text(
            key,
            *(": task_config.primary_metric is '", metric, "' where OLMES and DataDecide use '", expected),
            "'; kept primary_score as the task's score",
        ),
    }
    masks = {"differ": differ, "unnamed": unnamed, "absent": absent, "unexpected": unexpected}
    issues = [vocabulary.issues(named.loc[mask], messages[name][mask], skipped=False) for name, mask in masks.items()]
    named_values, variables = _name_variables(values, tasks, vocabulary)
    return named_values, variables, pd.concat(issues, ignore_index=True)


def _sanitize(names: pd.Series) -> pd.Series:
    return names.str.replace(r"[^0-9A-Za-z_]+", "_", regex=True).str.strip("_")


def _name_variables(
    values: pd.DataFrame, tasks: pd.DataFrame, vocabulary: _Vocabulary
) -> tuple[pd.DataFrame, pd.Index]:
    """Add the ddxr variable of every value (a code into the returned names).

    Another task's primary score goes under its primary metric's name.
    """
    task_names = pd.Series(vocabulary.tasks, dtype=object)
    known = task_names.isin(PRIMARY_METRIC.keys()).to_numpy()[values["task"]]
    aggregate = (task_names == AGGREGATE_TASK).to_numpy()[values["task"]]
    primary = values["metric"].to_numpy() == vocabulary.metrics.get_loc(_PRIMARY_SCORE)
    other_primary = primary & ~known & ~aggregate
    renamed = values[other_primary].merge(tasks, on=["run", "task"], how="left")["primary_metric"]
    metric = values["metric"].to_numpy(copy=True)
    metric[other_primary] = vocabulary.metric_codes(renamed.fillna(_PRIMARY_SCORE).astype(str))
    # a variable is named by its (task, metric) pair alone: each distinct pair is named once
    pair, distinct = pd.factorize(values["task"].to_numpy() * len(vocabulary.metrics) + metric)
    task = pd.Series(vocabulary.tasks[distinct // len(vocabulary.metrics)], dtype=object)
    pair_metric = pd.Series(vocabulary.metrics[distinct % len(vocabulary.metrics)], dtype=object)
    pair_known, pair_aggregate = task.isin(PRIMARY_METRIC.keys()), task == AGGREGATE_TASK
    pair_primary = pair_metric == _PRIMARY_SCORE
    clean_metric = _sanitize(pair_metric)
    name = np.select(
        [pair_known & pair_primary, pair_known, pair_aggregate & pair_primary, pair_aggregate],
        [task, task + "_" + pair_metric, OLMES_9_AVERAGE, OLMES_9_AVERAGE + "_" + clean_metric],
        default=_sanitize(task) + "_" + clean_metric,
    )
    variable, variables = pd.factorize(name[pair], sort=True)
    named = values.assign(metric=metric, variable=variable)
    # another task's primary score and the metric it names land on one variable: the primary score wins
    named = pd.concat([named[other_primary], named[~other_primary]]).drop_duplicates(["run", "variable"])
    return named, pd.Index(variables, dtype=object)


def _found_variables(values: pd.DataFrame, variables: pd.Index, vocabulary: _Vocabulary) -> dict[str, tuple[str, str]]:
    """(task, metric) of the post-training variables outside ddxr's vocabulary."""
    found = values.drop_duplicates("variable")
    names = variables[found["variable"]]
    new = ~names.isin(_STATIC.keys())
    task = pd.Series(vocabulary.tasks[found["task"][new]], dtype=object)
    task = task.mask(task == AGGREGATE_TASK, "olmes_9")
    metric = vocabulary.metrics[found["metric"][new]]
    return dict(zip(names[new], zip(task, metric, strict=True), strict=True))


def _widen(values: pd.DataFrame, variables: pd.Index, vocabulary: _Vocabulary) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per run; ``olmes_9_average`` from the aggregate, else the mean of the nine, cross-checked."""
    wide = values.set_index(["run", "variable"])["value"].unstack("variable")
    runs = wide.index.to_numpy()
    wide = wide.set_axis(pd.Index(variables[wide.columns], dtype=object), axis=1)
    wide = wide.set_axis(pd.Index(vocabulary.runs[runs], dtype=str, name="run_id"), axis=0).astype("float64")
    nine = pd.Series(_mean_of_nine(wide), index=wide.index)
    aggregate = wide.get(OLMES_9_AVERAGE, pd.Series(np.nan, index=wide.index))
    differ = aggregate.notna() & nine.notna() & ~np.isclose(aggregate, nine, rtol=0, atol=1e-6)
    reason = _text(
        f"{EVAL_PREFIX}{AGGREGATE_TASK}: primary_score ",
        _format(aggregate[differ]).to_numpy(),
        " but the mean of the nine task primary scores is ",
        _format(nine[differ]).to_numpy(),
        "; kept the aggregate",
    )
    flagged = pd.DataFrame({"run": runs[differ.to_numpy()], "task": vocabulary.tasks.get_indexer([AGGREGATE_TASK])[0]})
    wide[OLMES_9_AVERAGE] = aggregate.fillna(nine)
    return wide, vocabulary.issues(flagged, reason, skipped=False)
