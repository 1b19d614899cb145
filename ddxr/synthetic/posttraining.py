"""Deterministic generator of W&B-shaped post-training runs: supervised finetuning (SFT) and DPO.

The runs look like the real ``ml-moe/ft-scaling`` export (docs/sources.md §4.2, §5-§8): launcher run names in every
family of §6.3, configs with hyperparameters and launcher keys, summaries with the end-of-run OLMES evals, W&B launch
metadata and attributes, and a training history logged every ``logging_steps`` (SFT) or every step (DPO). Finetuned
scores continue the pretraining curves of :mod:`ddxr.synthetic.curves`: the score at the base checkpoint's compute
plus a learning-rate-dependent post-training gain. With ``messy=True`` every data-quality trap of §8 appears at least
once, and the returned truth says which run carries which trap and what a correct reader must conclude.

Everything is drawn from one seeded generator and dated from :data:`START`, so the same arguments give identical
frames. History rows are built with numpy for all runs of a family at once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Sequence
from functools import partial
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from ddxr.errors import InvalidArgumentError
from ddxr.synthetic.curves import TASK_RANGE, checkpoint_steps, compute_at, perplexity, primary_score, tokens_at
from ddxr.vocabulary import (
    DPO_TOKENS_PER_PAIR,
    METRICS,
    OLMES_9_AVERAGE,
    OLMES_TASKS,
    PPL_SETS,
    RECIPE_CODES,
    RECIPES,
    SIZES,
    TASKS_WITHOUT_UNCOND,
    UNCOND_METRICS,
)

__all__ = [
    "DPO_TOKENS_PER_PAIR",
    "HISTORY_COLUMNS",
    "MESS_KINDS",
    "README_SWEEP",
    "START",
    "TRUTH_COLUMNS",
    "generate_posttraining",
    "repaired_total_tokens",
]

#: Non-padding tokens per Tulu-3 SFT sequence (665,127,434 tokens in 934,407 sequences).
SFT_TOKENS_PER_SEQUENCE = 713
#: Sequences the launcher trains on per million budget tokens (``1Mtx1`` → ``max_train_samples`` 1,400).
SEQUENCES_PER_MILLION_TOKENS = 1_400
#: Sequences in one epoch of the full Tulu-3 SFT mixture (``Ft`` runs train two epochs).
TULU_SFT_SEQUENCES = 934_407
#: Preference pairs in one epoch of the Tulu-3 preference mixture.
TULU_PREFERENCE_PAIRS = 269_478
#: SFT peak learning rates drawn for sweeps.
SFT_LEARNING_RATES = (5e-7, 1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 3e-5, 5e-5, 1e-4, 3e-4)
#: The sweep the README example selects: 150M on Dolma1.7 ``main``, always generated when both are requested.
README_SWEEP = ("150M", "Dolma1.7", (1e-5, 3e-5, 1e-4, 3e-4))
#: DPO peak learning rates.
DPO_LEARNING_RATES = (1e-7, 2e-7, 5e-7, 1e-6, 2e-6)
#: ``created_at`` of the first generated run; every date derives from it (never from the clock).
START = pd.Timestamp("2025-08-19 05:36:01")
#: The data-quality traps of ``messy=True``, one run each, named in the truth's ``mess`` column.
MESS_KINDS = (
    "crashed",
    "missing_model_path",
    "unlinkable",
    "malformed_eval_json",
    "duplicate_steps",
    "no_history",
    "running",
    "reduce_loss_sum",
    "tokens_restart",
    "lr_only_in_args",
    "numbers_as_strings",
    "dpo_parent_missing",
)
#: Columns of the truth frame, in order.
TRUTH_COLUMNS = (
    "run_id",
    "run_type",
    "params",
    "data",
    "seed",
    "base_step",
    "parent_run_id",
    "learning_rate",
    "state",
    "expected_link_status",
    "mess",
    "n_history_rows",
    "base_tokens",
    "final_total_tokens",
    "expected_last_cumulative_tokens",
    "tokens_estimated",
    *OLMES_TASKS,
    OLMES_9_AVERAGE,
)

_TIMELINE_SECONDS = 84 * 86_400  # the real store spans 2025-08-19 … 2025-11-10
_LAUNCH_OFFSET = pd.Timedelta(hours=7)  # run names carry the launcher's local (Pacific) time, created_at is UTC
_NEW_NAME_STYLE = pd.Timestamp("2025-09-01")  # launcher switched from YYYY_MM_DD-HH_MM_SS to YYMMDD-HHMMSS
_ROOT = "/gscratch/lab/ftuser/open-instruct-fts"
_MODELS = f"{_ROOT}/models"
_HUB = "/gscratch/lab/ftuser/.cache/huggingface/hub"
_SFT_PROGRAM = f"{_ROOT}/open_instruct/finetune.py"
_DPO_PROGRAM = f"{_ROOT}/open_instruct/dpo_tune_cache.py"
_UPDATE_PROGRAM = f"{_ROOT}/ml/scripts/update_wandb.py"
_SFT_MIX = ["allenai/tulu-3-sft-mixture", "1.0"]
_DPO_MIX = ["allenai/llama-3.1-tulu-3-8b-preference-mixture", "1.0"]
_UNKNOWN_RECIPE = "olmo_mix_v2"  # spelled like a recipe code, but no recipe has it: the run cannot link
_BROKEN_TASK = "hellaswag"  # the task whose eval JSON the malformed-eval run carries truncated
_SUM_LOSS_SCALE = 1_400.0  # the earliest reduce_loss=sum run logged ≈4,000 where mean runs log ≈2.9

_FAMILIES = ("budget", "toks", "ft", "explicit", "matched")
_FAMILY_WEIGHTS = (0.35, 0.1, 0.15, 0.3, 0.1)
_BUDGETS_M = (10, 30, 100, 200, 500, 1000)
_BUDGET_WEIGHTS = (0.1, 0.2, 0.35, 0.15, 0.12, 0.08)
_DPO_BATCHES = ((2, 32, 2), (2, 16, 4), (2, 32, 4))  # per_device_train_batch_size, gradient_accumulation, gpus
_DPO_PAIRS = (12_800, 25_600, 64_000, TULU_PREFERENCE_PAIRS)

# OLMES task metadata: dataset_path, dataset_name, fewshot_source, split, native_id_field, instances (§5.4)
_OLMES_META = {
    "arc_challenge": ("ai2_arc", "ARC-Challenge", "OLMES:ARC-Challenge", "test", "id", 1172),
    "arc_easy": ("ai2_arc", "ARC-Easy", "OLMES:ARC-Easy", "test", "id", 2376),
    "boolq": ("super_glue", "boolq", "OLMES:BoolQ", "validation", "idx", 3270),
    "csqa": ("commonsense_qa", None, "OLMES:commonsense_qa", "validation", "id", 1221),
    "hellaswag": ("hellaswag", None, "OLMES:hellaswag", "validation", "ind", 10042),
    "openbookqa": ("openbookqa", "main", "OLMES:openbookqa", "test", "id", 500),
    "piqa": ("piqa", None, "OLMES:piqa", "validation", "index", 1838),
    "socialiqa": ("social_i_qa", None, "OLMES:social_i_qa", "validation", "index", 1954),
    "winogrande": ("winogrande", "winogrande_xl", "OLMES:winogrande", "validation", None, 1267),
}
_TASKS = tuple(OLMES_TASKS)
_SIZE_TABLE = SIZES.to_dict("index")  # plain dicts: per-run lookups without pandas indexing
_INSTANCES = np.array([meta[5] for meta in _OLMES_META.values()], dtype=np.int64)
_AGGREGATE = "core_9mcqa:rc::olmes:full"
_NO_UNCOND_FLAT = frozenset((*UNCOND_METRICS, "predicted_index_uncond"))  # flat keys boolq/winogrande lack
# every per-task metric the generator computes: the dict metrics, then the flat-only ones (§5.4, §5.5)
_DICT_METRICS = (
    "acc_per_byte",
    "acc_per_char",
    "acc_per_token",
    "acc_raw",
    "acc_uncond",
    "bits_per_byte_corr",
    "logits_per_char_corr",
    "logits_per_token_corr",
    "sum_logits_corr",
)
_FLAT_METRICS = tuple(
    sorted(
        {m for m in METRICS if m != "primary_metric"}
        | {"correct_logit", "correct_logit_per_token", "correct_logit_per_char"}
        | {f"predicted_index_{kind}" for kind in ("raw", "per_token", "per_char", "per_byte", "uncond")}
    )
)
_ALL_METRICS = tuple(dict.fromkeys(_DICT_METRICS + _FLAT_METRICS))
_AGGREGATE_METRICS = tuple(
    m
    for m in _FLAT_METRICS
    if not (m.startswith(("uncond", "total_prob")) or m in ("acc_uncond", "predicted_index_uncond"))
)

_SFT_HISTORY_KEYS = (
    "train_loss",
    "learning_rate",
    "total_tokens",
    "total_tokens_including_padding",
    "per_device_tps",
    "per_device_tps_including_padding",
)
_DPO_HISTORY_KEYS = (
    "train_loss",
    "learning_rate",
    "epoch",
    "training_step",
    "logps/chosen",
    "logps/rejected",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/average",
    "rewards/margin",
    "rewards/accuracy",
)
#: A row of the internal run plan, from ``DataFrame.itertuples`` (a namedtuple of the plan's columns).
_PlanRow = Any

HISTORY_COLUMNS = ("run_id", "step", "timestamp", "runtime", *dict.fromkeys(_SFT_HISTORY_KEYS + _DPO_HISTORY_KEYS))


def generate_posttraining(
    n_runs: int = 60,
    *,
    params: Sequence[str] = ("4M", "20M", "150M", "530M"),
    data: Sequence[str] = ("Dolma1.7", "DCLM-Baseline", "C4"),
    steps_per_run: int | None = None,
    random_seed: int = 0,
    messy: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Generate W&B post-training runs, their history and the ground truth a correct reader must recover.

    Parameters
    ----------
    n_runs : int
        Number of runs (SFT and DPO together). About one in seven is a DPO run chained to an SFT parent.
    params, data : sequence of str
        DataDecide sizes and recipes the runs start from (display names of ``ddxr.vocabulary``).
    steps_per_run : int, optional
        Logged history rows of every budget SFT run and every DPO run (budgets and preference pairs are chosen to
        match); full-mixture (``Ft``) runs always log 146 rows, crashed and running runs fewer. Default: rows follow
        from realistic budgets (1-109 SFT rows, 100-2,106 DPO rows).
    random_seed : int
        Seed of the one random generator everything is drawn from.
    messy : bool
        Add one run per trap of :data:`MESS_KINDS` (crashed and running runs, a run without history, malformed eval
        JSON, duplicate steps, a token-counter restart, ...). ``False`` gives only clean, finished runs.

    Returns
    -------
    runs : pandas.DataFrame
        One row per run: ``run_id, run_name, state, project, entity, created_at`` (naive UTC timestamps) and the
        dict-valued ``config, summary, wandb_metadata, system_metrics, system_attrs, sweep_info``.
    history : pandas.DataFrame
        One row per logged step: ``run_id, step, timestamp`` (epoch seconds), ``runtime`` and one column per metric
        key (NaN where the key was not logged on that row).
    truth : pandas.DataFrame
        One row per run, columns :data:`TRUTH_COLUMNS`. ``params, data, seed, base_step`` are the expected base
        (missing for the unlinkable run); ``parent_run_id`` is the DPO parent's run_id when it is in the store, else
        None; ``n_history_rows`` counts distinct steps; ``final_total_tokens`` is the post-training token count at the
        last point after repairing counter restarts (the §8.10 rule), the name budget for the run without history,
        and ``training_step × batch × gpus × DPO_TOKENS_PER_PAIR`` for DPO; ``expected_last_cumulative_tokens`` adds
        ``base_tokens`` (and for DPO the parent's final tokens, or its ``<N>Mt`` budget when the parent is missing);
        task columns hold the summary's primary scores (NaN without evals or when that task's eval JSON is broken)
        and ``olmes_9_average`` the ``core_9mcqa`` aggregate's primary score.

    Raises
    ------
    InvalidArgumentError
        If a size or recipe is unknown, ``n_runs`` is too small for the requested runs, or ``steps_per_run`` < 4.

    Examples
    --------
    >>> runs, history, truth = generate_posttraining(20, random_seed=1)
    >>> len(runs) == len(truth) == 20
    True
    >>> sorted(truth.run_type.unique())
    ['dpo', 'supervised_ft']
    """
    params, data = _check_arguments(n_runs, params, data, steps_per_run, messy)
    rng = np.random.default_rng(random_seed)
    sft = _sft_plan(rng, n_runs, params, data, steps_per_run, messy)
    sft = _schedule_sft(rng, sft, n_runs)
    sft_history = _sft_history(rng, sft)
    sft["end_time"] = sft["created_at"] + pd.to_timedelta(_last_runtime(sft_history, sft), unit="s")
    dpo = _dpo_plan(rng, sft, n_runs - len(sft), params, data, steps_per_run, messy)
    dpo = _schedule_dpo(dpo, sft, n_runs)
    plan = pd.concat([sft, dpo], ignore_index=True)
    plan["run_name"] = _run_names(plan)
    plan["output_dir"] = _output_dirs(plan)
    _link_parents(plan)
    history = pd.concat([sft_history, _dpo_history(rng, plan)], ignore_index=True)
    history = _finish_history(history, plan)
    scores = _scores(rng, plan)
    runs = _runs_frame(rng, plan, history, scores)
    truth = _truth(plan, history, scores)
    history["run_id"] = plan["run_name"].to_numpy()[history["run_id"].to_numpy()]
    return runs, history, truth


# ---------------------------------------------------------------------------------------------------- planning


def _check_arguments(
    n_runs: int, params: Sequence[str], data: Sequence[str], steps_per_run: int | None, messy: bool
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    params, data = tuple(params), tuple(data)
    unknown = [p for p in params if p not in SIZES.index] + [d for d in data if d not in RECIPES.index]
    if unknown or not params or not data:
        raise InvalidArgumentError(
            f"generate_posttraining: expected known DataDecide sizes and recipes, found {unknown or 'an empty list'}"
            f" — choose from ddxr.vocabulary.PARAMS and ddxr.vocabulary.DATA"
        )
    if steps_per_run is not None and steps_per_run < 4:
        raise InvalidArgumentError(
            f"generate_posttraining: steps_per_run must be >= 4 (found {steps_per_run}) — pass 4 or more"
        )
    needed = _minimum_runs(params, data, messy)
    if n_runs < needed:
        raise InvalidArgumentError(
            f"generate_posttraining: n_runs={n_runs} is too small: messy={messy} with sizes {list(params)} and"
            f" recipes {list(data)} needs at least {needed} runs — pass n_runs>={needed}"
            + (" or messy=False" if messy else "")
        )
    return params, data


def _minimum_runs(params: tuple[str, ...], data: tuple[str, ...], messy: bool) -> int:
    """Fewest runs that hold the README sweep (or one clean parent), the DPO runs and the SFT traps."""
    sweep = len(README_SWEEP[2]) if _has_readme_sweep(params, data) else 0
    fixed = sweep + (len(MESS_KINDS) - 1 if messy else 0)
    n = fixed + 1
    while n - _n_dpo(n, messy) - fixed < (0 if sweep else 1):
        n += 1
    return n


def _has_readme_sweep(params: tuple[str, ...], data: tuple[str, ...]) -> bool:
    return README_SWEEP[0] in params and README_SWEEP[1] in data


def _n_dpo(n_runs: int, messy: bool) -> int:
    return max(1, n_runs // 7) + (1 if messy else 0)


def _sft_plan(
    rng: np.random.Generator,
    n_runs: int,
    params: tuple[str, ...],
    data: tuple[str, ...],
    steps_per_run: int | None,
    messy: bool,
) -> pd.DataFrame:
    """One row per SFT run: launch group, base checkpoint, budget, hyperparameters, state and trap."""
    parts = []
    if _has_readme_sweep(params, data):
        parts.append(_readme_sweep())
    if messy:
        parts.append(_messy_sft(rng, params, data))
    n_clean = n_runs - _n_dpo(n_runs, messy) - sum(len(part) for part in parts)
    parts.append(_clean_sft(rng, n_clean, params, data, force_parent=not _has_readme_sweep(params, data)))
    plan = pd.concat(parts, ignore_index=True)
    plan["group"] = pd.factorize(plan["group_key"])[0]  # one launch (shared name timestamp) per group
    plan["group_size"] = plan.groupby("group")["group"].transform("size")
    return _sft_schedule_columns(rng, plan, steps_per_run)


def _clean_sft(
    rng: np.random.Generator, n: int, params: tuple[str, ...], data: tuple[str, ...], *, force_parent: bool
) -> pd.DataFrame:
    """``n`` clean SFT runs in launch groups of 1-5 learning rates sharing base, budget and launch timestamp."""
    group = np.repeat(np.arange(n), rng.integers(1, 6, size=n))[:n]
    n_groups = int(group[-1]) + 1 if n else 0
    member = np.arange(n) - np.searchsorted(group, group)
    family = rng.choice(_FAMILIES, n_groups, p=_FAMILY_WEIGHTS)
    if force_parent and n_groups:
        family[0] = "budget"  # DPO runs need at least one main-checkpoint budget parent
    g_params = rng.choice(params, n_groups)
    intermediate = np.isin(family, ("explicit", "matched"))
    step, seed = _bases(rng, g_params, intermediate)
    budget = rng.choice(_BUDGETS_M, n_groups, p=_BUDGET_WEIGHTS)
    budget[(family == "ft") | ((family == "explicit") & (rng.random(n_groups) < 0.2))] = 0  # 0 = full mix (Ft)
    epochs = np.where(budget == 0, 2, np.where(rng.random(n_groups) < 0.2, 2, 1))
    lr_rank = np.argsort(rng.random((n_groups, len(SFT_LEARNING_RATES))), axis=1)
    g_data = rng.choice(data, n_groups)
    frame = pd.DataFrame(
        {
            "family": family,
            "params": g_params,
            "data": g_data,
            "seed": seed,
            "base_step": step,
            "token": _recipe_tokens(rng, g_data),
            "budget_m": budget,
            "epochs": epochs,
            "logging_steps": np.where((budget > 0) & (budget <= 100) & (rng.random(n_groups) < 0.25), 10, 100),
            "exp": rng.choice(("test_finetune", "finetune", "sweep_finetune"), n_groups),
            "cmp_size": _comparison_sizes(rng, g_params, params),
            "cmp_metric": rng.choice(("c4", ""), n_groups),
            "hub_path": rng.random(n_groups) < 0.7,
            "folder_size": np.where(rng.random(n_groups) < 0.25, params[0], g_params),
            "reduce_loss": rng.choice(("mean", "sum"), n_groups),
            "group_key": [f"clean-{g}" for g in range(n_groups)],
        }
    ).iloc[group]
    frame = frame.reset_index(drop=True)
    frame["learning_rate"] = np.asarray(SFT_LEARNING_RATES)[lr_rank[group, member]]
    return frame.assign(state="finished", mess="", name_dashes=True)


def _readme_sweep() -> pd.DataFrame:
    size, recipe, rates = README_SWEEP
    row = _sft_row(size, recipe, group_key="readme-sweep", budget_m=100, exp="lr_sweep", reduce_loss="mean")
    return pd.DataFrame([row] * len(rates)).assign(learning_rate=rates)


def _sft_row(params: str, data: str, **overrides: object) -> dict[str, object]:
    """Return a clean main-checkpoint budget SFT run on (params, data); keywords override any column."""
    row: dict[str, object] = {
        "family": "budget",
        "params": params,
        "data": data,
        "seed": 0,
        "base_step": int(SIZES.loc[params, "final_step"]),
        "token": RECIPES.loc[data, "slug"],
        "budget_m": 100,
        "epochs": 1,
        "logging_steps": 100,
        "exp": "test_finetune",
        "cmp_size": params,
        "cmp_metric": "",
        "hub_path": True,
        "folder_size": params,
        "reduce_loss": "mean",
        "group_key": "",
        "learning_rate": 5e-5,
        "state": "finished",
        "mess": "",
        "name_dashes": True,
    }
    row.update(overrides)
    return row


def _messy_sft(rng: np.random.Generator, params: tuple[str, ...], data: tuple[str, ...]) -> pd.DataFrame:
    """One SFT run per SFT trap of :data:`MESS_KINDS`, each its own launch."""

    def size(preferred: str = "") -> str:
        return _pick(rng, params, preferred)

    def recipe(preferred: str = "") -> str:
        return _pick(rng, data, preferred)

    mid_size = size()
    mid_step, _ = _bases(rng, np.array([mid_size]), np.array([True]))
    match_size = size("530M")
    match_step = 6250 if match_size == "530M" else int(_bases(rng, np.array([match_size]), np.array([True]))[0][0])
    rows = {
        "crashed": dict(family="legacy", params=size("4M"), data=recipe("Dolma1.7"), budget_m=0, epochs=2),
        "missing_model_path": dict(
            family="explicit",
            params=mid_size,
            data=recipe(),
            base_step=int(mid_step[0]),
            seed=int(rng.integers(0, 3)),
            budget_m=30,
            exp="ckpt_finetune",
        ),
        "unlinkable": dict(params=size(), data=recipe(), token=_UNKNOWN_RECIPE, budget_m=30),
        "malformed_eval_json": dict(family="toks", params=size(), data=recipe()),
        "duplicate_steps": dict(params=size(), data=recipe(), budget_m=30, logging_steps=10),
        "no_history": dict(params=size("4M"), data=recipe("Dolma1.7"), budget_m=1, learning_rate=5e-7),
        "running": dict(params=size(), data=recipe(), budget_m=300),
        "reduce_loss_sum": dict(
            family="loss_test",
            params=size("4M"),
            data=recipe(),
            budget_m=10,
            logging_steps=10,
            reduce_loss="sum",
            exp="loss_test",
        ),
        "tokens_restart": dict(family="ft", params=size("4M"), data=recipe("Dolma1.7"), budget_m=0, epochs=2),
        "lr_only_in_args": dict(
            family="ft", params=size("150M"), data=recipe("DCLM-Baseline"), budget_m=0, epochs=2, name_dashes=False
        ),
        "numbers_as_strings": dict(
            family="matched",
            params=match_size,
            data=recipe("Dolma1.7"),
            base_step=match_step,
            seed=2,
            cmp_size=size("150M"),
            cmp_metric="c4",
            learning_rate=5e-6,
        ),
    }
    built = []
    for kind, row in rows.items():
        row.setdefault("base_step", int(SIZES.loc[row["params"], "final_step"]))
        row.setdefault("learning_rate", float(rng.choice(SFT_LEARNING_RATES[2:9])))
        state = kind if kind in ("crashed", "running") else "finished"
        built.append(_sft_row(**row, mess=kind, state=state, group_key=f"mess-{kind}"))
    frame = pd.DataFrame(built)
    codes = _recipe_tokens(rng, frame["data"].to_numpy())
    return frame.assign(token=np.where(frame["token"] == _UNKNOWN_RECIPE, _UNKNOWN_RECIPE, codes))


def _pick(rng: np.random.Generator, choices: tuple[str, ...], preferred: str) -> str:
    """``preferred`` when it is among ``choices``, else a random choice (a trap needs some size and recipe)."""
    return preferred if preferred in choices else choices[int(rng.integers(len(choices)))]


def _bases(rng: np.random.Generator, params: np.ndarray, intermediate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return base step and seed: the final step and seed 0, or an interior checkpoint and seed 0-2 (0-4 for 1B)."""
    steps = SIZES["final_step"].reindex(params).to_numpy().astype(np.int64)
    u = rng.random(len(params))
    for label in np.unique(params[intermediate]):  # one pass per size, not per run
        grid = checkpoint_steps(label)[1:-1]
        rows = intermediate & (params == label)
        steps[rows] = grid[(u[rows] * len(grid)).astype(np.int64)]
    seeds = np.floor(rng.random(len(params)) * np.where(params == "1B", 5, 3)).astype(np.int64)
    return steps, np.where(intermediate, seeds, 0)


def _recipe_tokens(rng: np.random.Generator, data: np.ndarray) -> np.ndarray:
    """How a run name spells each recipe: a short code of §6.2 when one exists (40 %), else the HF slug."""
    tokens = RECIPES["slug"].reindex(data).to_numpy().astype(object)
    use_code = rng.random(len(data)) < 0.4
    u = rng.random(len(data))
    for recipe in np.unique(data):  # one pass per recipe, not per run
        codes = np.array(_name_codes(recipe), dtype=object)
        rows = use_code & (data == recipe)
        if len(codes):
            tokens[rows] = codes[(u[rows] * len(codes)).astype(np.int64)]
    return tokens


def _name_codes(data: str) -> tuple[str, ...]:
    """Run-name spellings of a recipe besides its slug and internal id (docs/sources.md §6.2)."""
    slug, internal = RECIPES.loc[data, "slug"], RECIPES.loc[data, "internal_id"]
    return tuple(code for code, name in RECIPE_CODES.items() if name == data and code not in (slug, internal))


def _comparison_sizes(rng: np.random.Generator, run_params: np.ndarray, params: tuple[str, ...]) -> np.ndarray:
    """Return the smaller Dolma1.7 model a matched run was matched to (the run's own size when none is smaller)."""
    order = {p: i for i, p in enumerate(SIZES.index)}
    ranked = sorted(params, key=order.__getitem__)
    position = np.array([ranked.index(p) for p in run_params])
    return np.array(ranked)[np.floor(rng.random(len(run_params)) * np.maximum(position, 1)).astype(np.int64)]


def _sft_schedule_columns(rng: np.random.Generator, plan: pd.DataFrame, steps_per_run: int | None) -> pd.DataFrame:
    """Batch layout, optimizer steps and logged rows of every SFT run."""
    n = len(plan)
    layout = np.where(rng.random(n) < 0.8, 0, 1)
    plan["per_device_train_batch_size"] = np.array([4, 2])[layout]
    plan["gradient_accumulation_steps"] = np.array([16, 32])[layout]
    plan["gpu_count"] = 2
    plan.loc[plan["mess"] == "crashed", ["per_device_train_batch_size", "gradient_accumulation_steps"]] = (2, 32)
    batch = _effective_batch(plan)
    budget = plan["budget_m"].to_numpy()
    epochs = plan["epochs"].to_numpy()
    logging = plan["logging_steps"].to_numpy()
    if steps_per_run is not None:  # choose budgets that log exactly steps_per_run rows
        sized = (budget > 0) & (plan["mess"] != "no_history").to_numpy()
        wanted = np.ceil(steps_per_run * logging * batch / (SEQUENCES_PER_MILLION_TOKENS * epochs)).astype(np.int64)
        budget = np.where(sized, wanted, budget)
        plan["budget_m"] = budget
    sequences = np.where(budget > 0, budget * SEQUENCES_PER_MILLION_TOKENS, TULU_SFT_SEQUENCES) * epochs
    plan["finetune_sequences"] = sequences
    plan["n_steps"] = -(-sequences // batch)
    rows = plan["n_steps"].to_numpy() // logging
    if steps_per_run is not None:
        rows = np.where(budget > 0, np.minimum(rows, steps_per_run), rows)
    unfinished = (plan["state"] != "finished").to_numpy()
    rows = np.where(unfinished, np.maximum(2, (rows * rng.uniform(0.35, 0.7, n)).astype(np.int64)), rows)
    plan["n_rows"] = np.where(plan["mess"] == "no_history", 0, rows)
    plan["run_type"] = "supervised_ft"
    plan["finetune_seed"] = rng.choice((8, 42), n, p=(0.8, 0.2))
    plan["warmup_ratio"] = 0.03
    return plan


def _effective_batch(plan: pd.DataFrame) -> np.ndarray:
    return (plan["per_device_train_batch_size"] * plan["gradient_accumulation_steps"] * plan["gpu_count"]).to_numpy()


def _schedule_sft(rng: np.random.Generator, sft: pd.DataFrame, n_runs: int) -> pd.DataFrame:
    """Order the launches (the legacy crashed run first, then shuffled) and give every run its ``created_at``."""
    n_groups = int(sft["group"].max()) + 1
    rank = rng.permutation(n_groups)
    legacy = sft.loc[sft["family"] == "legacy", "group"]
    if len(legacy):  # legacy names predate the DD- names: launched first
        rank = np.where(rank < rank[legacy.iloc[0]], rank + 1, rank)
        rank[legacy.iloc[0]] = 0
    sft = sft.assign(order=rank[sft["group"]]).sort_values(["order", "group"], kind="stable")
    sft = sft.drop(columns="order").reset_index(drop=True)
    # launches share the SFT part of the timeline; a launch's runs (an array job) start minutes apart
    group_gap = max(60, _TIMELINE_SECONDS // n_runs) * len(sft) // n_groups
    group = sft["group"].to_numpy()
    start = rank[group] * group_gap + rng.integers(0, max(1, group_gap // 4), n_groups)[group]
    member = sft.groupby("group").cumcount().to_numpy()
    sft["created_at"] = START + pd.to_timedelta(start + member * 300 + rng.integers(0, 60, len(sft)), unit="s")
    sft["launched_at"] = START + pd.to_timedelta(start - min(group_gap // 3, 600), unit="s") - _LAUNCH_OFFSET
    return sft


def _dpo_plan(
    rng: np.random.Generator,
    sft: pd.DataFrame,
    n: int,
    params: tuple[str, ...],
    data: tuple[str, ...],
    steps_per_run: int | None,
    messy: bool,
) -> pd.DataFrame:
    """DPO runs chained to clean main-checkpoint budget SFT parents (plus, if messy, one whose parent is missing)."""
    eligible = sft.index[(sft["mess"] == "") & sft["family"].isin(("budget", "toks")) & (sft["n_rows"] > 0)]
    n_chained = n - (1 if messy else 0)
    parent = rng.choice(eligible.to_numpy(), n_chained)
    inherited = ["params", "data", "seed", "base_step", "budget_m", "epochs"]
    plan = sft.loc[parent, inherited].reset_index(drop=True)
    plan["parent"] = parent
    plan["parent_lr"] = sft.loc[parent, "learning_rate"].to_numpy()
    plan["mess"] = ""
    if messy:
        size, recipe = params[int(rng.integers(len(params)))], data[int(rng.integers(len(data)))]
        orphan = {"params": size, "data": recipe, "seed": 0, "base_step": int(SIZES.loc[size, "final_step"])}
        orphan |= {"budget_m": 100, "epochs": 1, "parent": -1, "parent_lr": 5e-6, "mess": "dpo_parent_missing"}
        plan = pd.concat([plan, pd.DataFrame([orphan])], ignore_index=True)
    layout = rng.integers(0, len(_DPO_BATCHES), len(plan))
    batches = np.array(_DPO_BATCHES)[layout]
    plan["per_device_train_batch_size"], plan["gradient_accumulation_steps"], plan["gpu_count"] = batches.T
    batch = _effective_batch(plan)
    pairs = np.array(_DPO_PAIRS)[rng.choice(len(_DPO_PAIRS), len(plan), p=(0.25, 0.25, 0.2, 0.3))]
    if steps_per_run is not None:
        pairs = np.full(len(plan), steps_per_run) * batch
    plan["pairs"] = pairs
    plan["n_steps"] = -(-pairs // batch)
    plan["n_rows"] = plan["n_steps"]
    plan["learning_rate"] = rng.choice(DPO_LEARNING_RATES, len(plan))
    plan["finetune_seed"] = 8
    return plan.assign(
        run_type="dpo",
        family="dpo",
        state="finished",
        logging_steps=1,
        warmup_ratio=0.1,
        reduce_loss="mean",
        exp=rng.choice(("test_dpo_tune_cache", "dpo_tune_cache"), len(plan)),
        token=RECIPES["slug"].reindex(plan["data"]).to_numpy(),
        hub_path=False,
        name_dashes=True,
    )


def _schedule_dpo(dpo: pd.DataFrame, sft: pd.DataFrame, n_runs: int) -> pd.DataFrame:
    """DPO runs fill the timeline after the SFT runs, each at least an hour after its parent ended."""
    gap = max(60, _TIMELINE_SECONDS // n_runs)
    slot = START + pd.to_timedelta((len(sft) + np.arange(len(dpo))) * gap, unit="s")
    parent = dpo["parent"].to_numpy()
    ready = sft["end_time"].reindex(parent).to_numpy() + np.timedelta64(3600, "s")
    created = np.where(parent >= 0, np.maximum(slot.to_numpy(), ready), slot.to_numpy())
    # strictly increasing, so no two DPO names share a launch second
    created = np.maximum.accumulate(created) + pd.to_timedelta(np.arange(len(dpo)), unit="s").to_numpy()
    dpo["created_at"] = pd.DatetimeIndex(created).ceil("s")  # W&B records whole seconds
    dpo["launched_at"] = dpo["created_at"] - _LAUNCH_OFFSET - pd.Timedelta(seconds=300)
    return dpo


# ---------------------------------------------------------------------------------------------------- names


def _fmt_lr(value: float) -> str:
    """Return a learning rate as the launcher prints it: ``5e-07``, ``1e-05``, ``0.0001``."""
    return f"{value:g}"


def _launch_stamps(launched: pd.Series) -> np.ndarray:
    old = launched.dt.strftime("%Y_%m_%d-%H_%M_%S")
    new = launched.dt.strftime("%y%m%d-%H%M%S")
    return np.where(launched < _NEW_NAME_STYLE, old, new)


def _budget_token(budget_m: int, epochs: int) -> str:
    return "Ft" if budget_m == 0 else f"{budget_m}Mtx{epochs}"


def _run_names(plan: pd.DataFrame) -> list[str]:
    """Every run's name in its §6.3 family."""
    stamps = _launch_stamps(plan["launched_at"])
    return [_run_name(row, stamp) for row, stamp in zip(plan.itertuples(index=False), stamps, strict=True)]


def _run_name(row: _PlanRow, stamp: str) -> str:
    block = f"DD-{row.token}-{row.params}"
    lr = _fmt_lr(row.learning_rate)
    budget = _budget_token(row.budget_m, row.epochs)
    if row.family == "budget":
        return f"{stamp}_{row.exp}_{block}_main_{budget}_--learning_rate={lr}"
    if row.family == "toks":
        return f"{stamp}_{row.exp}_{block}_main_{row.budget_m}M_toks_--learning_rate={lr}"
    if row.family == "ft":
        return f"{stamp}_{row.exp}_{block}_Ft_{'--' if row.name_dashes else ''}learning_rate={lr}"
    if row.family == "explicit":
        return f"{stamp}_{row.exp}_{budget}_{block}-{row.base_step}-{row.seed}_lr={lr}"
    if row.family == "matched":
        metric = f"_{row.cmp_metric}" if row.cmp_metric else ""
        suffix = f"_lr={lr}" if row.group_size > 1 else ""  # a matched sweep tells its runs apart by LR
        return f"{stamp}_match_{row.cmp_size}{metric}_finetune_{budget}_{block}-{row.base_step}-{row.seed}{suffix}"
    if row.family == "legacy":
        return f"{stamp}_allenai--DataDecide-{RECIPES.loc[row.data, 'slug']}-{row.params}_main_default"
    if row.family == "loss_test":
        samples = row.budget_m * SEQUENCES_PER_MILLION_TOKENS
        return f"{stamp}_{row.exp}_{block}_main_default_--max_train_samples={samples}_--reduce_loss={row.reduce_loss}"
    parent_lr = _fmt_lr(row.parent_lr)
    tokens = row.budget_m * row.epochs
    return (
        f"{stamp}_{row.exp}_dd__{row.token}-{row.params}__main__{tokens}Mt_lr={parent_lr}_default_--learning_rate={lr}"
    )


def _output_dirs(plan: pd.DataFrame) -> list[str]:
    """Each run's ``output_dir``: its launch folder, then its run name (the last component DPO children point at)."""
    dirs = []
    for row in plan.itertuples(index=False):
        prefix = row.run_name.split("_DD-")[0].split("_dd__")[0]
        if row.family in ("budget", "toks", "loss_test"):
            folder = f"{prefix}_DD-{row.token}-{row.folder_size}_main" + ("/model" if row.family != "loss_test" else "")
        elif row.family == "ft":
            folder = f"{prefix}_DD-{row.token}-{row.params}"
        elif row.family == "legacy":
            folder = row.run_name.removesuffix("_default")
        elif row.family == "dpo":
            folder = row.run_name.split("_default_--")[0]
        else:  # explicit, matched: the launch folder is the name before its budget block
            folder = prefix.rsplit("_", 1)[0]
        dirs.append(f"{_MODELS}/{folder}/{row.run_name}")
    return dirs


def _link_parents(plan: pd.DataFrame) -> None:
    """Fill ``parent_run_id`` and the DPO's model path: the parent's output folder, or a folder not in the store."""
    parent = plan["parent"].fillna(-1).astype(np.int64).to_numpy()
    is_dpo = (plan["run_type"] == "dpo").to_numpy()
    names = plan["run_name"].to_numpy()
    dirs = plan["output_dir"].to_numpy()
    chained = is_dpo & (parent >= 0)
    plan["parent_run_id"] = pd.Series(names[np.maximum(parent, 0)], dtype=object).where(chained, None)
    parent_dirs = pd.Series(dirs[np.maximum(parent, 0)]).where(is_dpo & (parent >= 0), "")
    orphans = is_dpo & (parent < 0)
    parent_dirs[orphans] = [_missing_parent_dir(row) for row in plan[orphans].itertuples(index=False)]
    slash = np.where(np.arange(len(plan)) % 2 == 0, "/", "")  # some launchers pass the folder with a trailing '/'
    plan["parent_dir"] = np.where(is_dpo, parent_dirs.to_numpy() + slash, "")


def _missing_parent_dir(row: _PlanRow) -> str:
    """Output folder of an SFT parent that was never exported: launched a day before the first exported run."""
    stamp = (START - _LAUNCH_OFFSET - pd.Timedelta(days=1)).strftime("%Y_%m_%d-%H_%M_%S")
    launch = f"{stamp}_test_finetune_DD-{RECIPES.loc[row.data, 'slug']}-{row.params}_main"
    return f"{_MODELS}/{launch}/model/{launch}_{row.budget_m}M_toks_--learning_rate={_fmt_lr(row.parent_lr)}"


# ---------------------------------------------------------------------------------------------------- history


def _per_row(plan: pd.DataFrame, run: np.ndarray, column: str) -> np.ndarray:
    """Return a plan column repeated onto history rows (``run`` = each row's position in ``plan``)."""
    return plan[column].to_numpy()[run]


def _row_numbers(counts: np.ndarray) -> np.ndarray:
    """1-based row number within its run, for runs laid end to end with ``counts`` rows each."""
    starts = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) - np.repeat(starts, counts) + 1


def _group_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every run."""
    total = np.cumsum(values)
    before = np.concatenate([[0.0], total])[np.cumsum(counts) - counts]
    return total - np.repeat(before, counts)


def _scheduled_lr(step: np.ndarray, peak: np.ndarray, n_steps: np.ndarray, warmup_ratio: np.ndarray) -> np.ndarray:
    """Linear warmup over ``int(warmup_ratio × n_steps)`` steps, then linear decay to 0 (scheduler ``linear``)."""
    warmup = np.maximum(1, (warmup_ratio * n_steps).astype(np.int64))
    rising = peak * step / warmup
    falling = peak * np.maximum(0, n_steps - step) / np.maximum(1, n_steps - warmup)
    return np.where(step < warmup, rising, falling)


def _true_params(plan: pd.DataFrame) -> np.ndarray:
    """Parameter count of each run's size, per run (looked up once per run, then repeated onto its rows)."""
    return SIZES["true_params"].reindex(plan["params"]).to_numpy()


def _tokens_per_second(params: np.ndarray) -> np.ndarray:
    """Per-device training throughput: ≈2,360 tokens/s for 530M on an L40S, faster for smaller models."""
    return 2360.0 * (530e6 / SIZES["true_params"].reindex(params).to_numpy()) ** 0.35


def _sft_history(rng: np.random.Generator, sft: pd.DataFrame) -> pd.DataFrame:
    """All SFT history rows at once: scheduled LR, decaying loss, cumulative token counter, time."""
    counts = sft["n_rows"].to_numpy()
    run = np.repeat(np.arange(len(sft)), counts)
    at = partial(_per_row, sft, run)
    k = _row_numbers(counts)
    step = k * at("logging_steps")
    n_steps = at("n_steps")
    batch = _effective_batch(sft)[run]
    size = len(run)
    increments = at("logging_steps") * batch * SFT_TOKENS_PER_SEQUENCE * (1 + 0.01 * rng.standard_normal(size))
    tokens = np.round(_group_cumsum(increments, counts))
    lr = at("learning_rate")
    floor = 2.95 - 0.77 * np.log10(_true_params(sft)[run] / 3.7e6)
    floor = floor + 0.12 * np.log10(lr / 5e-5) ** 2  # too small or too large a learning rate ends higher
    loss = floor + 0.5 * np.exp(-5.0 * step / n_steps) + 0.015 * rng.standard_normal(size)
    loss = loss * np.where(at("mess") == "reduce_loss_sum", _SUM_LOSS_SCALE, 1.0)
    tps = _tokens_per_second(sft["params"].to_numpy()) * rng.uniform(0.85, 1.15, len(sft))
    seconds = increments / (tps[run] * at("gpu_count")) * (1 + 0.02 * rng.standard_normal(size))
    startup = rng.uniform(600.0, 3600.0, len(sft))
    runtime = startup[run] + _group_cumsum(seconds, counts)
    padding = rng.uniform(2.02, 2.1, len(sft))[run]
    restart = _restart_offsets(rng, sft, tokens, counts, k)
    runtime = runtime + np.where(restart > 0, 1800.0, 0.0)  # the resumed job also restarts its clock late
    return pd.DataFrame(
        {
            "run_id": run,  # plan position until names exist
            "step": step,
            "timestamp": _epoch(sft["created_at"])[run] + runtime,
            "runtime": runtime,
            "train_loss": loss,
            "learning_rate": _scheduled_lr(step, lr, n_steps, at("warmup_ratio")),
            "total_tokens": tokens - restart,
            "total_tokens_including_padding": np.round((tokens - restart) * padding),
            "per_device_tps": tps[run] * (1 + 0.01 * rng.standard_normal(size)),
            "per_device_tps_including_padding": tps[run] * padding,
        }
    )


def _restart_offsets(
    rng: np.random.Generator, sft: pd.DataFrame, tokens: np.ndarray, counts: np.ndarray, k: np.ndarray
) -> np.ndarray:
    """How much the token counter lost on resume: from a random row on, the count since an earlier checkpoint."""
    restarts = (sft["mess"] == "tokens_restart").to_numpy()
    first_row = np.where(restarts, rng.integers(counts // 3, np.maximum(counts // 3 + 1, counts - 1)), 0)
    starts = np.cumsum(counts) - counts
    lost = np.where(restarts, tokens[np.minimum(starts + first_row // 2, max(len(tokens) - 1, 0))], 0.0)
    run = np.repeat(np.arange(len(sft)), counts)
    return np.where(restarts[run] & (k > first_row[run]), lost[run], 0.0)


def _dpo_history(rng: np.random.Generator, plan: pd.DataFrame) -> pd.DataFrame:
    """All DPO history rows at once: every step, preference metrics, no token counter."""
    dpo = plan[plan["run_type"] == "dpo"]
    counts = dpo["n_rows"].to_numpy()
    run = np.repeat(np.arange(len(dpo)), counts)
    at = partial(_per_row, dpo, run)
    step = _row_numbers(counts)
    size = len(run)
    progress = 1.0 - np.exp(-3.0 * step / at("n_steps"))
    strength = np.log10(at("learning_rate") / 1e-8) / 3.0  # larger DPO learning rates move the policy further
    chosen = -1.42 + 0.05 * rng.standard_normal(size)
    margin = 0.004 * strength * progress + 0.002 * rng.standard_normal(size)
    rewards_chosen = -0.002 + 0.002 * rng.standard_normal(size)
    loss = np.where(step == 1, math.log(2.0), math.log(2.0) - 0.08 * strength * progress)
    accuracy = rng.binomial(64, np.clip(0.45 + 0.1 * strength * progress, 0.0, 1.0)) / 64.0
    seconds = 6.1 * (_true_params(dpo)[run] / 3.7e6) ** 0.3
    runtime = rng.uniform(3000.0, 3700.0, len(dpo))[run] + step * seconds
    batch = _effective_batch(dpo)[run]
    return pd.DataFrame(
        {
            "run_id": np.flatnonzero((plan["run_type"] == "dpo").to_numpy())[run],
            "step": step,
            "timestamp": _epoch(dpo["created_at"])[run] + runtime,
            "runtime": runtime,
            "train_loss": loss + np.where(step == 1, 0.0, 0.01 * rng.standard_normal(size)),
            "learning_rate": _scheduled_lr(step, at("learning_rate"), at("n_steps"), at("warmup_ratio")),
            "epoch": step * batch / at("pairs"),
            "training_step": step.astype(np.float64),
            "logps/chosen": chosen,
            "logps/rejected": chosen - margin * 50,
            "rewards/chosen": rewards_chosen,
            "rewards/rejected": rewards_chosen - margin,
            "rewards/average": rewards_chosen - margin / 2,
            "rewards/margin": margin,
            "rewards/accuracy": accuracy,
        }
    )


def _epoch(times: pd.Series) -> np.ndarray:
    return (times - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy()


def _last_runtime(history: pd.DataFrame, plan: pd.DataFrame) -> np.ndarray:
    """Runtime at each run's last history row (90 s for a run without history)."""
    last = history.groupby("run_id")["runtime"].max()
    return last.reindex(np.arange(len(plan))).fillna(90.0).to_numpy()


def _finish_history(history: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """Log one step twice in the duplicate-steps run and round like the W&B export (runs still by position)."""
    duplicated = np.flatnonzero((plan["mess"] == "duplicate_steps").to_numpy())
    rows = history.index[history["run_id"].isin(duplicated)].to_numpy()
    if len(rows):
        twice = rows[len(rows) // 2]
        order = np.sort(np.append(np.arange(len(history)), twice), kind="stable")
        history = history.iloc[order].reset_index(drop=True)
        again = np.flatnonzero(np.diff(order, prepend=-1) == 0)
        history.loc[again, ["timestamp", "runtime"]] += 0.4  # logged again a moment later, same values
    columns = [c for c in HISTORY_COLUMNS if c not in history.columns]
    history = history.assign(**dict.fromkeys(columns, np.nan))[list(HISTORY_COLUMNS)]
    metrics = list(HISTORY_COLUMNS[4:])
    history[metrics] = history[metrics].round(10)
    history["timestamp"] = history["timestamp"].round(4)
    history["runtime"] = history["runtime"].round(9)
    history["step"] = history["step"].astype(np.int64)
    return history


# ---------------------------------------------------------------------------------------------------- evaluations


def _scores(rng: np.random.Generator, plan: pd.DataFrame) -> np.ndarray:
    """Primary score of each run × OLMES task, quantized to whole instances; NaN for runs without evals.

    SFT: the pretraining curve at the base checkpoint's compute plus a gain peaking at lr ≈ 3e-5; DPO: its parent's
    score plus a small gain. Scores of DPO runs whose parent is missing are never reported (no evals).
    """
    params = plan["params"].to_numpy()
    compute = compute_at(params, tokens_at(params, plan["base_step"].to_numpy()))
    chance, ceiling = (np.array([TASK_RANGE[t][i] for t in _TASKS]) for i in (0, 1))
    base = np.column_stack([primary_score(t, compute, plan["data"].to_numpy()) for t in _TASKS])
    sft_gain = 0.15 * np.exp(-(np.log10(plan["learning_rate"].to_numpy() / 3e-5) ** 2) / (2 * 0.5**2))
    dpo_gain = 0.04 * np.exp(-(np.log10(plan["learning_rate"].to_numpy() / 5e-7) ** 2) / 2)
    sft_scores = base + sft_gain[:, None] * (ceiling - base)
    parent = plan["parent"].fillna(-1).astype(np.int64).to_numpy()
    is_dpo = (plan["run_type"] == "dpo").to_numpy()
    parent_scores = np.where((is_dpo & (parent >= 0))[:, None], sft_scores[np.maximum(parent, 0)], sft_scores)
    expected = np.where(is_dpo[:, None], parent_scores + dpo_gain[:, None] * (ceiling - parent_scores), sft_scores)
    noisy = np.clip(expected + 0.004 * rng.standard_normal(expected.shape), chance * 0.9, 0.99)
    quantized = np.round(np.round(noisy * _INSTANCES) / _INSTANCES, 10)
    return np.where(_has_evals(plan)[:, None], quantized, np.nan)


def _has_evals(plan: pd.DataFrame) -> np.ndarray:
    return ((plan["state"] == "finished") & (plan["mess"] != "dpo_parent_missing")).to_numpy()


def _metric_values(rng: np.random.Generator, scores: np.ndarray) -> np.ndarray:
    """Every per-task metric of :data:`_ALL_METRICS` (runs × tasks × metrics), consistent with the primary score."""
    p = np.nan_to_num(scores, nan=0.3)
    shape = p.shape

    def noise(scale: float) -> np.ndarray:
        return scale * rng.standard_normal(shape)

    def quantize(values: np.ndarray) -> np.ndarray:  # accuracies are whole instances out of num_instances
        return np.round(np.clip(values, 0.0, 1.0) * _INSTANCES) / _INSTANCES

    acc_raw = quantize(p - 0.03 + noise(0.02))
    acc_char = quantize(p + noise(0.02))
    sum_logits = -(30.0 * (1.25 - p)) + noise(2.0)
    per_char = -(1.6 - p) + noise(0.05)
    correct_prob = np.exp(sum_logits / 3.0)
    values = {
        "acc_raw": acc_raw,
        "acc_per_token": acc_raw,
        "acc_per_char": acc_char,
        "acc_per_byte": acc_char,
        "acc_uncond": quantize(p + 0.01 + noise(0.02)),
        "sum_logits_corr": sum_logits,
        "logits_per_token_corr": sum_logits,
        "logits_per_char_corr": per_char,
        "bits_per_byte_corr": -per_char / math.log(2.0),
        "correct_logit": sum_logits,
        "correct_logit_per_token": sum_logits,
        "correct_logit_per_char": per_char,
        "correct_choice": 1.5 + noise(0.05),
        "correct_prob": correct_prob,
        "correct_prob_per_token": correct_prob,
        "correct_prob_per_char": np.exp(per_char),
        "margin": noise(1e-4),
        "margin_per_token": noise(1e-4),
        "margin_per_char": p - 0.33 + noise(0.02),
        "no_answer": np.zeros(shape),
        "norm_correct_prob": 0.8 * p + noise(0.01),
        "norm_correct_prob_per_token": 0.8 * p + noise(0.01),
        "norm_correct_prob_per_char": 0.9 * p + noise(0.01),
        "total_prob": 2.0 * correct_prob,
        "total_prob_per_token": 2.0 * correct_prob,
        "total_prob_per_char": 4.0 * np.exp(per_char),
        "uncond_correct_prob": 2e-2 * correct_prob,
        "uncond_correct_prob_per_token": 2e-2 * correct_prob,
        "uncond_correct_prob_per_char": 0.3 + noise(0.02),
        "uncond_total_prob": 0.1 * correct_prob,
        **{f"predicted_index_{k}": rng.uniform(1.1, 1.7, shape) for k in ("raw", "per_token", "per_char", "per_byte")},
        "predicted_index_uncond": rng.uniform(1.1, 1.7, shape),
    }
    stacked = np.stack([values[m] for m in _ALL_METRICS], axis=-1)
    for task_index, task in enumerate(_TASKS):  # the primary metric equals primary_score exactly (§5.4)
        stacked[:, task_index, _ALL_METRICS.index(OLMES_TASKS[task])] = scores[:, task_index]
    return np.round(stacked, 10)


def _task_configs() -> dict[str, dict[str, object]]:
    """Return the OLMES ``task_config`` of each task and of the ``core_9mcqa`` aggregate (shared, never mutated)."""
    configs = {}
    for task, (path, name, source, split, native_id, _) in _OLMES_META.items():
        configs[task] = _task_config(task, path, name, source, split, native_id, OLMES_TASKS[task])
        configs[task]["metadata"] = {"alias": f"{task}:rc::olmes:full", "regimes": ["OLMES-v0.1"]}
    configs[_AGGREGATE] = _task_config(_AGGREGATE, "ai2_arc", "ARC-Easy", "OLMES:ARC-Easy", "test", "id", "macro")
    configs[_AGGREGATE].update(
        task_core="arc_easy",
        metadata={"alias": _AGGREGATE, "description": "Aggregate metric", "num_tasks": len(_TASKS)},
    )
    return configs


def _task_config(
    task: str, path: str, name: str | None, source: str, split: str, native_id: str | None, primary: str
) -> dict[str, object]:
    uncond = None if task in TASKS_WITHOUT_UNCOND else 1_000_000
    return {
        "compute_gold_bpb": False,
        "context_kwargs": None,
        "custom_kwargs": None,
        "dataset_name": name,
        "dataset_path": path,
        "external_eval": None,
        "fewshot_seed": 1234,
        "fewshot_source": source,
        "generation_kwargs": None,
        "limit": None,
        "metadata": {},
        "metric_kwargs": None
        if task == "winogrande"
        else {"extra_metric_names": ["no_answer"], "uncond_docid_offset": uncond},
        "model_max_length": None,
        "native_id_field": native_id,
        "num_shots": 5,
        "primary_metric": primary,
        "random_subsample_seed": 1234,
        "revision": None,
        "skip_model_judges": None,
        "split": split,
        "task_core": task,
        "task_name": task,
        "use_chat_format": None,
        "version": 0,
    }


_TASK_CONFIGS = _task_configs()


def _task_keys(task: str) -> tuple[tuple[str, ...], itemgetter, tuple[str, ...], itemgetter]:
    """Summary key names of one task and getters picking their values from a row of :func:`_metric_values`."""
    kept = [m for m in _ALL_METRICS if task not in TASKS_WITHOUT_UNCOND or m not in _NO_UNCOND_FLAT]
    in_dict = [m for m in _DICT_METRICS if m in kept]
    flat = [m for m in _FLAT_METRICS if m in kept]
    return tuple(in_dict), _getter(in_dict), tuple(f"oe_eval_metrics/{task}/{m}" for m in flat), _getter(flat)


def _getter(names: list[str]) -> itemgetter:
    return itemgetter(*[_ALL_METRICS.index(m) for m in names])


_TASK_KEYS = {task: _task_keys(task) for task in _TASKS}
_AGGREGATE_NAMES = tuple(f"{m}_{kind}" for kind in ("macro", "micro") for m in _AGGREGATE_METRICS)
_AGGREGATE_KEYS = tuple(f"oe_eval_metrics/{_AGGREGATE}/{name}" for name in _AGGREGATE_NAMES) + tuple(
    f"oe_eval_metrics/{_AGGREGATE}/total_prob{suffix}" for suffix in ("", "_per_char", "_per_token")
)
_AGGREGATE_IN_DICT = [i for i, name in enumerate(_AGGREGATE_NAMES) if name.rsplit("_", 1)[0] in _DICT_METRICS]


def _aggregates(scores: np.ndarray, metrics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``core_9mcqa`` aggregate of every run: macro (unweighted) and micro (instance-weighted) task means.

    Returns the flat values in :data:`_AGGREGATE_KEYS` order and the micro-averaged primary score.
    """
    weights = _INSTANCES / _INSTANCES.sum()
    columns = [_ALL_METRICS.index(m) for m in _AGGREGATE_METRICS]
    totals = [_ALL_METRICS.index(f"total_prob{suffix}") for suffix in ("", "_per_char", "_per_token")]
    macro = metrics[:, :, columns].mean(axis=1)
    micro = np.einsum("t,rtm->rm", weights, metrics[:, :, columns])
    flat = np.concatenate([macro, micro, metrics[:, :, totals].mean(axis=1)], axis=1)
    return np.round(flat, 10), np.round(scores @ weights, 10)


def _eval_summary(
    scores: list[float], average: float, micro: float, metrics: list[list[float]], aggregate: list[float], broken: str
) -> dict[str, object]:
    """Return the 368 ``oe_eval_metrics`` summary keys of one run (§5.4, §5.5); the ``broken`` task's JSON truncated."""
    summary: dict[str, object] = {}
    for task_index, task in enumerate(_TASKS):
        dict_names, dict_values, flat_keys, flat_values = _TASK_KEYS[task]
        values = metrics[task_index]
        entry = dict(zip(dict_names, dict_values(values), strict=True))
        entry |= {"num_instances": int(_INSTANCES[task_index]), "primary_score": scores[task_index]}
        if task != "winogrande":
            entry["extra_metrics"] = {"no_answer": 0}
        entry["task_config"] = _TASK_CONFIGS[task]
        if task == broken:  # an upload cut off mid-way: the dict is a string of broken JSON, no flat keys
            summary[f"oe_eval_metrics/{task}"] = json.dumps(dict(sorted(entry.items())))[:90]
            continue
        summary[f"oe_eval_metrics/{task}"] = dict(sorted(entry.items()))
        summary.update(zip(flat_keys, flat_values(values), strict=True))
    summary.update(zip(_AGGREGATE_KEYS, aggregate, strict=True))
    entry = {_AGGREGATE_NAMES[i]: aggregate[i] for i in _AGGREGATE_IN_DICT}
    entry |= {
        "num_instances": int(_INSTANCES.sum()),
        "primary_score": average,
        "primary_score_macro": average,
        "primary_score_micro": micro,
        "task_config": _TASK_CONFIGS[_AGGREGATE],
    }
    summary[f"oe_eval_metrics/{_AGGREGATE}"] = dict(sorted(entry.items()))
    return summary


# ---------------------------------------------------------------------------------------------------- run records


def _runs_frame(
    rng: np.random.Generator, plan: pd.DataFrame, history: pd.DataFrame, scores: np.ndarray
) -> pd.DataFrame:
    """Return the store_runs frame: one dict per JSON column per run (a loop per run is fine: dicts, not rows)."""
    metrics = _metric_values(rng, scores)
    aggregates, micro = _aggregates(scores, metrics)
    averages = np.round(scores.mean(axis=1), 10)
    positions = np.arange(len(plan))
    logged = history.groupby("run_id").agg(lines=("step", "size"), last=("step", "idxmax")).reindex(positions)
    last_rows = history.reindex(logged["last"].fillna(-1).astype(np.int64)).to_dict("records")
    line_counts = logged["lines"].fillna(0).astype(np.int64).tolist()
    has_evals = _has_evals(plan)
    plan = _record_columns(rng, plan, _last_runtime(history, plan))
    pretrain_evals = _pretrain_eval_table(plan)
    records = []
    for i, row in enumerate(plan.itertuples(index=False)):
        lines, last = line_counts[i], last_rows[i]
        config = _config(row, pretrain_evals)
        trained = _train_summary(row, last, lines)
        summary = dict(trained)
        if has_evals[i]:
            broken = _BROKEN_TASK if row.mess == "malformed_eval_json" else ""
            averaged = (float(averages[i]), float(micro[i]))
            summary |= _eval_summary(scores[i].tolist(), *averaged, metrics[i].tolist(), aggregates[i].tolist(), broken)
        system_metrics = _system_metrics(rng, row)
        records.append(
            {
                "run_id": row.run_name,
                "run_name": row.run_name,
                "state": row.state,
                "project": "ft-scaling",
                "entity": "ml-moe",
                "created_at": row.created_at,
                "config": config,
                "summary": dict(sorted(summary.items())),
                "wandb_metadata": _metadata(row, config),
                "system_metrics": system_metrics,
                "system_attrs": _system_attrs(row, config, trained, system_metrics, lines, last),
                "sweep_info": {"sweep_id": None, "sweep_url": None},
            }
        )
    return pd.DataFrame.from_records(records)


def _record_columns(rng: np.random.Generator, plan: pd.DataFrame, runtime: np.ndarray) -> pd.DataFrame:
    """Per-run values the record builders need, computed for all runs at once (dates as text, lookups)."""
    iso = "%Y-%m-%dT%H:%M:%SZ"
    alive = np.where(plan["state"] == "running", 120.0, 0.0)  # a running run's heartbeat is newer than its last row
    heartbeat = plan["created_at"] + pd.to_timedelta(runtime + alive, unit="s")
    months = plan["launched_at"].dt.strftime("%Y%m")
    commits = {month: hashlib.sha1(month.encode()).hexdigest() for month in months.unique()}
    return plan.assign(
        slug=RECIPES["slug"].reindex(plan["data"]).to_numpy(),
        created_iso=plan["created_at"].dt.strftime(iso),
        heartbeat_iso=heartbeat.dt.strftime(iso),
        started_iso=(plan["created_at"] - pd.Timedelta(seconds=1)).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        updated_iso=(plan["created_at"] + pd.Timedelta(days=25)).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        commit=months.map(commits),
        host=rng.integers(3000, 3200, len(plan)),
        new_launcher=(plan["launched_at"] >= _NEW_NAME_STYLE).to_numpy(),
    )


def _model_path(row: _PlanRow) -> str:
    """Return ``model_name_or_path``: the DPO parent's folder, an HF cache path or repo id, or a local path."""
    if row.run_type == "dpo":
        return row.parent_dir
    if row.mess == "unlinkable":
        return f"/gscratch/lab/ftuser/checkpoints/{_UNKNOWN_RECIPE}-{row.params}/step{row.base_step}-unsharded-hf"
    repo = f"allenai/DataDecide-{row.slug}-{row.params}"
    if not row.hub_path:
        return repo
    snapshot = hashlib.sha1(repo.encode()).hexdigest()
    return f"{_HUB}/models--{repo.replace('/', '--')}/snapshots/{snapshot}"


def _tags(row: _PlanRow) -> str:
    if row.run_type == "dpo":
        return "dpo_tune_cache"
    if row.family == "legacy":
        return "finetune"
    return "finetune,dclm-dolma" if row.slug.startswith("dclm") else "finetune"


def _config(row: _PlanRow, pretrain_evals: dict[tuple[str, str], dict[str, float]]) -> dict[str, object]:
    """Return the run config (§5.1): identity, hyperparameters, model/data, launcher and DPO keys, pretraining evals."""
    is_dpo = row.run_type == "dpo"
    size = _SIZE_TABLE[row.params]
    model_size = int(round(size["wandb_model_size"]))
    final_step = int(size["final_step"])
    pretrain_tokens = final_step * int(size["tokens_per_step"])
    path = _model_path(row)
    if is_dpo:
        samples = None if row.pairs == TULU_PREFERENCE_PAIRS else int(row.pairs)
    else:
        samples = int(row.budget_m * SEQUENCES_PER_MILLION_TOKENS) if row.budget_m > 0 else None
    config: dict[str, object] = {
        "exp_name": row.run_name,
        "run_name": row.run_name,
        "wandb_entity": "ml-moe",
        "wandb_project_name": "ft-scaling",
        "wandb_tags": _tags(row),
        "output_dir": row.output_dir,
        "timeout": 1800,
        "report_to": ["wandb"],
        "with_tracking": True,
        "learning_rate": row.learning_rate,
        "num_train_epochs": 1 if is_dpo else int(row.epochs),
        "seed": int(row.finetune_seed),
        "lr_scheduler_type": "linear",
        "warmup_ratio": row.warmup_ratio,
        "weight_decay": 0,
        "per_device_train_batch_size": int(row.per_device_train_batch_size),
        "gradient_accumulation_steps": int(row.gradient_accumulation_steps),
        "max_seq_length": 2048 if is_dpo else 4096,
        "max_train_samples": samples,
        "reduce_loss": row.reduce_loss,
        "logging_steps": int(row.logging_steps),
        "checkpointing_steps": "1000" if row.budget_m else "epoch",
        "clip_grad_norm": -1,
        "gradient_checkpointing": True,
        "use_flash_attn": True,
        "use_lora": False,
        "model_name_or_path": path,
        "model_revision": "main",
        "tokenizer_name_or_path": path,
        "tokenizer_revision": "main",
        "chat_template_name": "tulu",
        "dataset_mixer_list": _DPO_MIX if is_dpo else _SFT_MIX,
        "add_bos": True,
        "push_to_hub": False,
        "hf_entity": None,
        "model_type": "hf_olmo",
        "precision": "amp_bf16",
        "rope": True,
        "activation_type": "swiglu",
        "vocab_size": 50280,
        "embedding_size": 50304,
        "model_size": model_size,
        "pretrain_steps": final_step,  # the FULL run's final step, never the base checkpoint
        "pretrain_tokens": pretrain_tokens,
        "pretrain_sequences": final_step * int(size["batch_size"]),
        "pretrain_compute": 6 * model_size * pretrain_tokens,
    }
    if is_dpo:
        config |= {
            "dpo_beta": 5,
            "dpo_loss_type": "dpo_norm",
            "dpo_label_smoothing": 0,
            "dpo_gamma_beta_ratio": 0.3,
            "dpo_use_paged_optimizer": False,
            "concatenated_forward": True,
        }
    else:
        sequences = int(row.finetune_sequences)
        config |= {
            "finetune_sequences": sequences,
            "finetune_unique_sequences": sequences // int(row.epochs),
            "total_compute_est": float(config["pretrain_compute"] + 6 * model_size * 2048 * sequences),
        }
    if row.new_launcher and not is_dpo:  # newer launchers also pass a --wandb_config string
        config["model_pretrain_steps"] = final_step
        config["model_pretrain_compute"] = int(config["pretrain_compute"])
        config["wandb_config"] = (
            f"model_size={model_size},model_pretrain_steps={final_step},"
            f"model_pretrain_compute={config['pretrain_compute']},"
            f"finetune_unique_sequences={config['finetune_unique_sequences']},"
            f"finetune_sequences={config['finetune_sequences']}"
        )
    if row.mess != "unlinkable":
        config |= pretrain_evals[row.params, row.data]
    return _config_mess(row, config)


def _config_mess(row: _PlanRow, config: dict[str, object]) -> dict[str, object]:
    if row.mess == "missing_model_path":
        config.pop("model_name_or_path")
        config["tokenizer_name_or_path"] = "allenai/gpt-neox-olmo-dolma-v1_5"
    elif row.mess == "unlinkable":  # a checkpoint the launcher did not know: no size or pretraining keys
        for key in [k for k in config if k.startswith(("model_size", "pretrain", "model_pretrain", "wandb_config"))]:
            config.pop(key)
    elif row.mess == "lr_only_in_args":  # the 150M sample run: these keys only survive in wandb_metadata.args
        for key in (
            "learning_rate",
            "model_name_or_path",
            "seed",
            "num_train_epochs",
            "wandb_tags",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
        ):
            config.pop(key, None)
        config["pretrain_steps"] = int(SIZES["final_step"].max())  # another size's final step (§8.5)
    elif row.mess == "numbers_as_strings":
        for key in ("model_size", "finetune_sequences", "finetune_unique_sequences", "model_pretrain_steps"):
            if key in config:
                config[key] = str(config[key])
        config["model_pretrain_compute"] = str(int(config["pretrain_compute"]))
    return config


def _pretrain_eval_table(plan: pd.DataFrame) -> dict[tuple[str, str], dict[str, float]]:
    """Return a subset of the launcher's ``pretrain_eval_*`` keys per (params, data).

    Values of the FINAL pretraining checkpoint (§5.6), never of the base. Callers merge the dicts into new ones and
    never mutate them.
    """
    pairs = plan[["params", "data"]].drop_duplicates()
    params, data = pairs["params"].to_numpy(), pairs["data"].to_numpy()
    compute = compute_at(params, tokens_at(params, SIZES["final_step"].reindex(params).to_numpy()))
    columns = {f"pretrain_eval_{t}_primary_metric": primary_score(t, compute, data) for t in _TASKS}
    columns["pretrain_eval_mmlu_primary_metric"] = primary_score("mmlu_anatomy", compute, data)
    columns["pretrain_eval_olmes_10_macro_avg_primary_metric"] = np.mean(list(columns.values()), axis=0)
    columns |= {f"pretrain_eval/{s}-validation/Perplexity": perplexity(s, compute, data) for s in PPL_SETS}
    records = pd.DataFrame(columns).round(10).to_dict("records")
    return dict(zip(zip(params, data, strict=True), records, strict=True))


def _train_summary(row: _PlanRow, last: dict[str, float], lines: int) -> dict[str, object]:
    """Summary keys of a run that trained: the last logged values (so the last LR, not the hyperparameter)."""
    if lines == 0:
        return {"_wandb": {"runtime": 90}}
    keys = _DPO_HISTORY_KEYS if row.run_type == "dpo" else _SFT_HISTORY_KEYS
    summary: dict[str, object] = {
        "_runtime": float(last["runtime"]),
        "_step": int(last["step"]),
        "_timestamp": float(last["timestamp"]),
        "_wandb": {"runtime": int(last["runtime"])},
    }
    for key in keys:
        value = float(last[key])
        summary[key] = (
            int(value) if key in ("total_tokens", "total_tokens_including_padding", "training_step") else value
        )
    return summary


def _args(row: _PlanRow, config: dict[str, object]) -> list[str]:
    """Return the launcher's command line: every hyperparameter, even the ones the config lost."""
    is_dpo = row.run_type == "dpo"
    args = ["--exp_name", row.run_name, "--run_name", row.run_name, "--output_dir", row.output_dir.rsplit("/", 1)[0]]
    args += ["--wandb_tags", _tags(row)]
    if "wandb_config" in config:
        args += ["--wandb_config", str(config["wandb_config"])]
    args += ["--model_revision", "main", "--add_bos", "--gradient_checkpointing", "--seed", str(row.finetune_seed)]
    args += ["--with_tracking", "true", "--report_to", "wandb", "--logging_steps", str(row.logging_steps)]
    args += ["--wandb_entity", "ml-moe", "--wandb_project_name", "ft-scaling", "--use_flash_attn"]
    args += ["--max_seq_length", "2048" if is_dpo else "4096"]
    args += ["--per_device_train_batch_size", str(row.per_device_train_batch_size)]
    args += ["--gradient_accumulation_steps", str(row.gradient_accumulation_steps)]
    args += ["--learning_rate", _fmt_lr(row.learning_rate), "--lr_scheduler_type", "linear"]
    args += ["--warmup_ratio", str(row.warmup_ratio), "--weight_decay", "0.0"]
    args += ["--num_train_epochs", "1" if is_dpo else str(row.epochs)]
    args += ["--dataset_mixer_list", *(_DPO_MIX if is_dpo else _SFT_MIX)]
    if is_dpo:
        args += ["--dpo_loss_type", "dpo_norm", "--dpo_beta", "5"]
    else:
        args += ["--reduce_loss", row.reduce_loss]
    if config.get("max_train_samples") is not None:
        args += ["--max_train_samples", str(config["max_train_samples"])]
    if row.mess != "missing_model_path":
        args += ["--model_name_or_path", _model_path(row)]
    return args


def _metadata(row: _PlanRow, config: dict[str, object]) -> dict[str, object]:
    """``wandb_metadata``: the trainer's launch record, or a later update script's for the run without history."""
    common = {
        "os": "Linux-4.18.0-513.18.1.el8_9.x86_64-x86_64-with-glibc2.28",
        "python": "3.11.13",
        "startedAt": row.started_iso,
    }
    if row.mess == "no_history":  # evals were uploaded weeks later by a script: its metadata, not the trainer's
        return common | {
            "startedAt": row.updated_iso,
            "args": ["--model-sweep-names", row.run_name.split("-")[0] + "*"],
            "program": _UPDATE_PROGRAM,
            "root": "/gscratch/lab/ftuser",
            "host": f"g{row.host}",
            "username": "ftuser",
            "executable": "/gscratch/lab/ftuser/miniforge3/envs/fts/bin/python",
        }
    program = _DPO_PROGRAM if row.run_type == "dpo" else _SFT_PROGRAM
    gpus = int(row.gpu_count)
    return common | {
        "args": _args(row, config),
        "program": program,
        "codePath": program.removeprefix(_ROOT + "/"),
        "git": {"remote": "https://github.com/example/open-instruct-fts.git", "commit": row.commit},
        "root": row.output_dir,
        "host": f"g{row.host}",
        "username": "ftuser",
        "executable": "/gscratch/lab/ftuser/miniforge3/envs/fts/bin/python3.11",
        "cpu_count": 128,
        "cpu_count_logical": 128,
        "gpu": "[" + ", ".join(["NVIDIA L40S"] * gpus) + "]",
        "gpu_count": gpus,
        "gpu_nvidia": [{"name": "NVIDIA L40S", "memoryTotal": "48305799168", "architecture": "Ada"}] * gpus,
        "slurm": {"cluster_name": "klone", "gpus_on_node": str(gpus), "job_partition": "ckpt-g2"},
        "cudaVersion": "13.0",
    }


def _system_metrics(rng: np.random.Generator, row: _PlanRow) -> dict[str, float]:
    """Return a few hardware aggregates per GPU, as ``system_metrics`` holds them."""
    metrics: dict[str, float] = {"system.cpu": round(float(rng.uniform(0.5, 2.0)), 10)}
    for gpu in range(int(row.gpu_count)):
        metrics[f"system.gpu.{gpu}.gpu"] = int(rng.integers(80, 101))
        metrics[f"system.gpu.{gpu}.temp"] = int(rng.integers(45, 80))
        metrics[f"system.gpu.{gpu}.powerWatts"] = round(float(rng.uniform(90.0, 300.0)), 3)
    metrics["system.memory_percent"] = round(float(rng.uniform(5.0, 20.0)), 10)
    return metrics


def _system_attrs(
    row: _PlanRow,
    config: dict[str, object],
    summary: dict[str, object],
    system_metrics: dict[str, float],
    lines: int,
    last: dict[str, float],
) -> dict[str, object]:
    """Return the 22 W&B run attributes; the config/summary copies are abridged (nothing reads them twice)."""
    tags = sorted(set(_tags(row).split(",")) | ({"hidden"} if row.state == "crashed" else set()))
    keys = ("_runtime", "_step", "_timestamp", *(_DPO_HISTORY_KEYS if row.run_type == "dpo" else _SFT_HISTORY_KEYS))
    history_keys = {k: {"typeCounts": [{"type": "number", "count": lines}]} for k in keys} if lines else {}
    run_key = f"Run:v1:{row.run_name}:ft-scaling:ml-moe"
    return {
        "projectId": "42374156",
        "id": base64.b64encode(run_key.encode()).decode(),
        "tags": tags,
        "name": row.run_name,
        "displayName": row.run_name,
        "sweepName": None,
        "state": row.state,
        # W&B's own copy of the config, taken before any summary: the configured peak learning rate survives here
        "config": {k: config[k] for k in ("exp_name", "run_name", "learning_rate", "num_train_epochs") if k in config},
        "group": None,
        "jobType": None,
        "commit": row.commit,
        "readOnly": True,
        "createdAt": row.created_iso,
        "heartbeatAt": row.heartbeat_iso,
        "description": row.run_name,
        "notes": None,
        "systemMetrics": system_metrics,
        "summaryMetrics": summary,
        "historyLineCount": lines,
        "user": {"name": "Finetune User", "username": "ftuser"},
        "historyKeys": {"keys": history_keys, "lastStep": int(last["step"]) if lines else -1, "sets": []},
        "rawconfig": {"_wandb": {"code_path": "code/" + (_DPO_PROGRAM if row.run_type == "dpo" else _SFT_PROGRAM)}},
    }


# ---------------------------------------------------------------------------------------------------- truth


def repaired_total_tokens(total_tokens: np.ndarray) -> np.ndarray:
    """Repair token-counter restarts (docs/sources.md §8.10).

    Shift each segment after a drop so that its first row equals the previous row plus the median positive
    increment (the rule the progression manager applies).

    Parameters
    ----------
    total_tokens : numpy.ndarray
        One run's ``total_tokens`` in step order.

    Returns
    -------
    numpy.ndarray
        The repaired, non-decreasing counter.

    Examples
    --------
    >>> repaired_total_tokens(np.array([10.0, 20.0, 30.0, 5.0, 15.0])).tolist()
    [10.0, 20.0, 30.0, 40.0, 50.0]
    """
    steps = np.diff(total_tokens)
    drops = steps < 0
    if not drops.any():
        return total_tokens.astype(np.float64)
    median = np.median(steps[steps > 0]) if (steps > 0).any() else 0.0
    correction = np.where(drops, total_tokens[:-1] + median - total_tokens[1:], 0.0)
    return total_tokens + np.concatenate([[0.0], np.cumsum(correction)])


def _truth(plan: pd.DataFrame, history: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """One row per run: the base, parent, tokens and final scores a correct reader must recover."""
    linked = (plan["mess"] != "unlinkable").to_numpy()
    is_dpo = (plan["run_type"] == "dpo").to_numpy()
    base_tokens = tokens_at(plan["params"].to_numpy(), plan["base_step"].to_numpy())
    rows = history.groupby("run_id")["step"].nunique().reindex(np.arange(len(plan))).fillna(0)
    final = _final_tokens(plan, history)
    parent = plan["parent"].fillna(-1).astype(np.int64).to_numpy()
    parent_tokens = np.where(parent >= 0, final[np.maximum(parent, 0)], plan["budget_m"].to_numpy() * 1e6)
    frame = pd.DataFrame(
        {
            "run_id": plan["run_name"].to_numpy(),
            "run_type": plan["run_type"].to_numpy(),
            "params": pd.Series(plan["params"].to_numpy(), dtype="str").where(linked),
            "data": pd.Series(plan["data"].to_numpy(), dtype="str").where(linked),
            "seed": pd.array(np.where(linked, plan["seed"], 0), dtype="Int64"),
            "base_step": pd.array(np.where(linked, plan["base_step"], 0), dtype="Int64"),
            "parent_run_id": pd.Series(plan["parent_run_id"].to_numpy(), dtype=object),
            "learning_rate": plan["learning_rate"].to_numpy(dtype=np.float64),
            "state": plan["state"].to_numpy(),
            "expected_link_status": np.where(linked, "linked", "unlinked"),
            "mess": plan["mess"].to_numpy(),
            "n_history_rows": rows.to_numpy().astype(np.int64),
            "base_tokens": np.where(linked, base_tokens, np.nan),
            "final_total_tokens": final,
            "expected_last_cumulative_tokens": np.where(
                linked, base_tokens + final + np.where(is_dpo, parent_tokens, 0.0), np.nan
            ),
            "tokens_estimated": is_dpo | (plan["mess"] == "no_history").to_numpy(),
        }
    )
    frame.loc[~linked, ["seed", "base_step"]] = pd.NA
    readable = scores.copy()  # the truncated task's score cannot be read back
    readable[(plan["mess"] == "malformed_eval_json").to_numpy(), _TASKS.index(_BROKEN_TASK)] = np.nan
    tasks = pd.DataFrame(readable, columns=list(_TASKS))
    tasks[OLMES_9_AVERAGE] = np.round(scores.mean(axis=1), 10)
    return pd.concat([frame, tasks], axis=1)[list(TRUTH_COLUMNS)]


def _final_tokens(plan: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
    """Post-training tokens at each run's last point (SFT: repaired counter; DPO: §7 rule (a); no history: budget)."""
    positions = np.arange(len(plan))
    sft = history.dropna(subset=["total_tokens"]).drop_duplicates(["run_id", "step"])
    last = sft.groupby("run_id")["total_tokens"].last().reindex(positions).to_numpy(copy=True)
    for position in np.flatnonzero((plan["mess"] == "tokens_restart").to_numpy()):  # the one restarted run
        last[position] = repaired_total_tokens(sft.loc[sft["run_id"] == position, "total_tokens"].to_numpy())[-1]
    steps = history.groupby("run_id")["training_step"].max().reindex(positions).to_numpy()
    dpo_tokens = steps * _effective_batch(plan) * DPO_TOKENS_PER_PAIR
    budget = plan["budget_m"].to_numpy() * plan["epochs"].to_numpy() * 1e6
    is_dpo = (plan["run_type"] == "dpo").to_numpy()
    no_history = (plan["mess"] == "no_history").to_numpy()
    return np.where(is_dpo, dpo_tokens, np.where(no_history, budget, last)).astype(np.float64)
