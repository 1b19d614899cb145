"""Deterministic generator of realistic DataDecide tables: the raw Hugging Face exports and datadec's full_eval.

The raw tables have the exact shape of ``allenai/DataDecide-eval-results`` and ``allenai/DataDecide-ppl-results``
(docs/sources.md §2): string seed names, ``metrics`` as the text of a Python dict with 34 keys, NaN where real data
has it (no uncond metrics for boolq/winogrande, no perplexity at step 0), ``None`` for metrics a size lacks, and a
perplexity-only checkpoint after the final step of 4M. Scores follow :mod:`ddxr.synthetic.curves`; the only
randomness is seed noise drawn once per ``random_seed`` over the whole DataDecide grid, so any subset of sizes,
recipes or tasks holds the same values as the full tables.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ddxr.sources.datadecide import (
    DOWNSTREAM_FILE,
    FULL_EVAL_FILE,
    FULL_EVAL_TASK_METRICS,
    PPL_FILE,
    datadec_schedule,
    parse_metrics,
    scheduled_lr,
)
from ddxr.synthetic.curves import TASK_RANGE, checkpoint_steps, compute_at, perplexity, primary_score, tokens_at
from ddxr.vocabulary import (
    DATA,
    INTERNAL_SEEDS,
    METRICS,
    MMLU_TASKS,
    PARAMS,
    PPL_SETS,
    PRIMARY_METRIC,
    RAW_TASKS,
    SEED_NAMES,
    SEQUENCE_LENGTH,
    SIZES,
    TASKS_WITHOUT_UNCOND,
    UNCOND_METRICS,
)

__all__ = ["RAW_METRIC_KEYS", "generate_pretraining", "to_full_eval", "write_datadecide"]

#: The 34 keys of a raw ``metrics`` dict, in the order the generated texts list them.
RAW_METRIC_KEYS = (
    "predicted_index_raw",
    "predicted_index_per_token",
    "predicted_index_per_char",
    "predicted_index_per_byte",
    "predicted_index_uncond",
    "correct_choice",
    *METRICS[1:10],
    "logits_per_byte_corr",
    *METRICS[10:],
)

#: Metrics that only the small sizes (batch 32: 4M-16M) report; larger sizes hold ``None`` (docs/sources.md §3.2).
OPTIONAL_METRICS = ("acc_per_byte", "no_answer", "sum_logits_corr", "logits_per_token_corr", "logits_per_char_corr")

SEED_NOISE = 0.005  # sd of the primary-score noise between seeds and checkpoints
PPL_NOISE = 0.01  # sd of the log-perplexity noise
PPL_ONLY_STEP_AFTER_FINAL = 10  # 4M has a perplexity-only row 10 steps after its final checkpoint (5,735)
ROW_GROUP_ROWS = 100_000  # parquet row groups of ≈140 MB of dict texts, so readers can stream them
_SEED_LABELS = tuple(sorted(SEED_NAMES, key=SEED_NAMES.get))  # raw seed names, by ddxr seed
_KEYS = ["params", "data", "seed", "step"]
_LAYOUTS = ("raw", "full_eval")

# Accuracies relative to the primary score: acc = p + offset × (p − chance); the primary metric itself is exact.
_ACC_OFFSETS = {
    "acc_raw": -0.10,
    "acc_per_token": -0.04,
    "acc_per_char": 0.0,
    "acc_per_byte": -0.02,
    "acc_uncond": 0.03,
}
_PREDICTED_INDEX_SHIFT = {"raw": 0.30, "per_token": 0.25, "per_char": 0.20, "per_byte": 0.20, "uncond": 0.35}


def generate_pretraining(
    params: Sequence[str] = PARAMS,
    data: Sequence[str] = DATA,
    *,
    random_seed: int = 0,
    tasks: Sequence[str] = RAW_TASKS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate the raw DataDecide exports for some sizes, recipes and tasks.

    Every size has the seeds ``default``, ``small aux 2`` and ``small aux 3``; 1B also ``large aux 2`` and
    ``large aux 3``. Checkpoints are :func:`ddxr.synthetic.curves.checkpoint_steps`; 4M also gets a
    perplexity-only row 10 steps after its final checkpoint, as the real data has.

    Parameters
    ----------
    params, data : sequence of str
        Size labels and recipe display names (default: all 14 and all 25).
    random_seed : int, default 0
        Seed of :func:`numpy.random.default_rng` for the seed noise.
    tasks : sequence of str
        Raw task names (default: the 66 of :data:`ddxr.vocabulary.RAW_TASKS`).

    Returns
    -------
    downstream_eval : pandas.DataFrame
        One row per (params, data, seed, step, task): columns ``params, data, task, step, seed, tokens, compute,
        chinchilla, metrics`` as in ``allenai/DataDecide-eval-results``.
    ppl_eval : pandas.DataFrame
        One row per (params, data, seed, step): ``params, data, seed, step``, the 11
        ``eval/<set>-validation/Perplexity`` columns and ``__index_level_0__``, as in
        ``allenai/DataDecide-ppl-results``.

    Examples
    --------
    >>> downstream, ppl = generate_pretraining(["4M"], ["Dolma1.7"], tasks=["hellaswag"])
    >>> downstream.shape, ppl.shape
    ((18, 9), (21, 16))
    """
    downstream, ppl = _generate_tables(params, data, random_seed, tasks)
    return downstream.to_pandas(), ppl.to_pandas()


def to_full_eval(downstream_eval: pd.DataFrame, ppl_eval: pd.DataFrame) -> pd.DataFrame:
    """Build datadec's ``full_eval`` from the raw exports, as datadec does (docs/sources.md §3.1-§3.2).

    The metric dicts are expanded and ``mmlu_average`` added as the mean over MMLU subtask rows, then pivoted to
    ``<task>_<metric>`` columns, metric-major; perplexities are renamed ``<set>-valppl``; the two are merged outer on
    (params, data, seed, step). ``tokens``/``compute`` follow the step (§3.4), the schedule and model-detail columns
    datadec's formulas (:func:`ddxr.sources.datadecide.datadec_schedule`). ``step`` is float64, as in datadec.

    Parameters
    ----------
    downstream_eval, ppl_eval : pandas.DataFrame
        Raw exports, e.g. from :func:`generate_pretraining`.

    Returns
    -------
    pandas.DataFrame
        Key and schedule columns, 11 perplexities, 1,866 ``<task>_<metric>`` columns, then model details.
    """
    values, _ = parse_metrics(downstream_eval["metrics"])
    long = pd.concat(
        [downstream_eval[["params", "data", "seed", "step", "task"]], values.reindex(columns=list(METRICS))], axis=1
    )
    mmlu = long[long["task"].isin(MMLU_TASKS)].drop(columns="task").groupby(_KEYS, sort=False).mean().reset_index()
    long = pd.concat([long, mmlu.assign(task="mmlu_average")], ignore_index=True)
    wide = long.set_index([*_KEYS, "task"]).unstack("task")
    wide.columns = [f"{task}_{metric}" for metric, task in wide.columns]
    wide = wide.reindex(columns=[f"{task}_{metric}" for task, metric in FULL_EVAL_TASK_METRICS]).reset_index()
    ppl = ppl_eval.drop(columns="__index_level_0__", errors="ignore").rename(
        columns={f"eval/{ppl_set}-validation/Perplexity": f"{ppl_set}-valppl" for ppl_set in PPL_SETS}
    )
    merged = ppl.merge(wide, on=_KEYS, how="outer")
    merged["seed"] = merged["seed"].map(SEED_NAMES).astype(np.int64)
    return pd.concat([_full_eval_schedule(merged), merged.drop(columns=_KEYS)], axis=1).pipe(_with_model_details)


def write_datadecide(
    data_dir: str | Path,
    *,
    params: Sequence[str] = PARAMS,
    data: Sequence[str] = DATA,
    random_seed: int = 0,
    layouts: Sequence[str] = ("raw",),
) -> Path:
    """Write generated DataDecide files to ``<data_dir>/datadecide/``.

    Sizes are generated one at a time, so the full scale (1,669,800 downstream rows on the checkpoint grid of
    :func:`ddxr.synthetic.curves.checkpoint_steps`; the real export has 1,410,750) stays within a few GB of memory.
    Each file is written to a temporary name and renamed when complete.

    Parameters
    ----------
    data_dir : str or Path
        Data folder; ``datadecide/`` is created inside it.
    params, data, random_seed
        As in :func:`generate_pretraining`.
    layouts : sequence of {"raw", "full_eval"}
        ``"raw"`` writes ``downstream_eval.parquet`` and ``ppl_eval.parquet``; ``"full_eval"`` writes
        ``full_eval.parquet`` (see :func:`to_full_eval`).

    Returns
    -------
    Path
        The ``datadecide`` folder.
    """
    unknown = sorted(set(layouts) - set(_LAYOUTS))
    if unknown:
        raise ValueError(f"unknown layout(s) {unknown}; expected some of {list(_LAYOUTS)}")
    folder = Path(data_dir) / "datadecide"
    folder.mkdir(parents=True, exist_ok=True)
    names = ([DOWNSTREAM_FILE, PPL_FILE] if "raw" in layouts else []) + (
        [FULL_EVAL_FILE] if "full_eval" in layouts else []
    )
    writers: dict[str, pq.ParquetWriter] = {}
    try:
        for label in params:
            downstream, ppl = _generate_tables([label], data, random_seed, RAW_TASKS)
            tables = {DOWNSTREAM_FILE: downstream, PPL_FILE: ppl}
            if "full_eval" in layouts:
                full_eval = to_full_eval(downstream.to_pandas(), ppl.to_pandas())
                tables[FULL_EVAL_FILE] = pa.Table.from_pandas(full_eval, preserve_index=False)
            for name in names:
                if name not in writers:
                    writers[name] = pq.ParquetWriter(folder / f".{name}.partial", tables[name].schema)
                writers[name].write_table(tables[name], row_group_size=ROW_GROUP_ROWS)
    finally:
        for writer in writers.values():
            writer.close()
    for name in names:
        os.replace(folder / f".{name}.partial", folder / name)
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------


def _check_names(given: Sequence[str], known: Sequence[str], what: str) -> list[int]:
    unknown = [name for name in given if name not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[:5]}; expected some of {list(known)[:6]}… (ddxr.vocabulary)")
    return [known.index(name) for name in given]


def _checkpoints(params: Sequence[str], data: Sequence[str], *, ppl_only: bool) -> pd.DataFrame:
    """One row per (params, data, seed, checkpoint): vocabulary positions, checkpoint position and step."""
    data_codes = np.asarray(_check_names(data, DATA, "recipe(s)"))
    grids = []
    for size, label in zip(_check_names(params, PARAMS, "size label(s)"), params, strict=True):
        steps = checkpoint_steps(label)
        if ppl_only and label == "4M":
            steps = np.append(steps, steps[-1] + PPL_ONLY_STEP_AFTER_FINAL)
        seeds = np.arange(5 if label == "1B" else 3)
        recipe, seed, checkpoint = (part.ravel() for part in np.meshgrid(data_codes, seeds, np.arange(len(steps))))
        grids.append(
            pd.DataFrame({"size": size, "recipe": recipe, "seed": seed, "checkpoint": checkpoint})
            .assign(step=steps[checkpoint])
            .sort_values(["recipe", "seed", "step"])
        )
    return pd.concat(grids, ignore_index=True)


def _noise(random_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return standard normal noise over the grid (size, recipe, seed, checkpoint, task or set), drawn in one go."""
    rng = np.random.default_rng(random_seed)
    checkpoints = max(len(checkpoint_steps(label)) for label in PARAMS) + 1
    grid = (len(PARAMS), len(DATA), len(SEED_NAMES), checkpoints)
    return (
        rng.standard_normal((*grid, len(RAW_TASKS)), dtype=np.float32),
        rng.standard_normal((*grid, len(PPL_SETS)), dtype=np.float32),
    )


def _generate_tables(
    params: Sequence[str], data: Sequence[str], random_seed: int, tasks: Sequence[str]
) -> tuple[pa.Table, pa.Table]:
    task_codes = _check_names(tasks, RAW_TASKS, "task(s)")
    score_noise, ppl_noise = _noise(random_seed)
    downstream = _downstream_table(_checkpoints(params, data, ppl_only=False), task_codes, score_noise)
    return downstream, _ppl_table(_checkpoints(params, data, ppl_only=True), ppl_noise)


def _labelled(codes: np.ndarray | pd.Series, labels: Sequence[str]) -> pa.Array:
    """Return string column from vocabulary positions, built by Arrow rather than from Python objects per row."""
    return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), pa.array(labels)).cast(pa.string())


def _key_columns(checkpoints: pd.DataFrame) -> dict[str, pa.Array]:
    """``params``, ``data``, ``seed`` (as names) and ``step`` of every checkpoint."""
    return {
        "params": _labelled(checkpoints["size"], PARAMS),
        "data": _labelled(checkpoints["recipe"], DATA),
        "seed": _labelled(checkpoints["seed"], _SEED_LABELS),
        "step": pa.array(checkpoints["step"]),
    }


def _tokens_compute(checkpoints: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    params = np.asarray(PARAMS)[checkpoints["size"]]
    tokens = tokens_at(params, checkpoints["step"].to_numpy())
    return tokens, compute_at(params, tokens)


def _grid(checkpoints: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """Index of every checkpoint into the noise grid."""
    return tuple(checkpoints[["size", "recipe", "seed", "checkpoint"]].to_numpy().T)


def _downstream_table(checkpoints: pd.DataFrame, task_codes: list[int], noise: np.ndarray) -> pa.Table:
    data = np.asarray(DATA)[checkpoints["recipe"]]
    tokens, compute = _tokens_compute(checkpoints)
    clean = np.column_stack([primary_score(RAW_TASKS[code], compute, data) for code in task_codes])
    primary = np.clip(clean + SEED_NOISE * noise[_grid(checkpoints)][:, task_codes], 0.0, 1.0)
    chinchilla = tokens / (20.0 * SIZES["params_numeric"].to_numpy()[checkpoints["size"]])
    per_checkpoint = pa.table(
        {**_key_columns(checkpoints), "tokens": tokens, "compute": compute, "chinchilla": chinchilla}
    )
    rows = per_checkpoint.take(np.repeat(np.arange(len(checkpoints)), len(task_codes)))  # checkpoint-major
    task = np.tile(np.asarray(task_codes), len(checkpoints))
    small = (SIZES["batch_size"].to_numpy() == 32)[checkpoints["size"]].repeat(len(task_codes))
    rows = rows.append_column("task", _labelled(task, RAW_TASKS))
    rows = rows.append_column("metrics", _dict_texts(*_metric_values(primary.ravel(), task, small)))
    return rows.select(["params", "data", "task", "step", "seed", "tokens", "compute", "chinchilla", "metrics"])


def _ppl_table(checkpoints: pd.DataFrame, noise: np.ndarray) -> pa.Table:
    data, step = np.asarray(DATA)[checkpoints["recipe"]], checkpoints["step"].to_numpy()
    _, compute = _tokens_compute(checkpoints)
    # No perplexity before training, nor at 150M/C4 step 1250 (as in the real data).
    at_150m_c4 = (np.asarray(PARAMS)[checkpoints["size"]] == "150M") & (data == "C4") & (step == 1250)
    unmeasured = (step == 0) | at_150m_c4
    columns = _key_columns(checkpoints)
    for position, ppl_set in enumerate(PPL_SETS):
        values = perplexity(ppl_set, compute, data) * np.exp(PPL_NOISE * noise[(*_grid(checkpoints), position)])
        columns[f"eval/{ppl_set}-validation/Perplexity"] = pa.array(np.where(unmeasured, np.nan, values))
    columns["__index_level_0__"] = pa.array(np.arange(len(checkpoints)))
    return pa.table(columns)


def _metric_values(
    primary: np.ndarray, task: np.ndarray, small: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return the 34 metric values of every row from its primary score, and where each key holds ``None``."""
    chance, ceiling = (np.asarray([TASK_RANGE[name][bound] for name in RAW_TASKS])[task] for bound in (0, 1))
    above = primary - chance
    progress = np.clip(above / (ceiling - chance), 0.0, 1.0)
    values = {metric: np.clip(primary + offset * above, 0.0, 1.0) for metric, offset in _ACC_OFFSETS.items()}
    for metric in values:  # the primary metric copies its metric exactly (docs/sources.md §2.6)
        is_primary = np.asarray([PRIMARY_METRIC[name] == metric for name in RAW_TASKS])[task]
        values[metric] = np.where(is_primary, primary, values[metric])
    correct_prob = 0.8 * chance + 0.5 * above
    total_prob = 0.5 + 0.4 * progress
    margin = 0.8 * above - 0.05
    correct_choice = 0.3 + (task * 0.37) % 1.7  # the mean index of the right answer: a constant per task
    values |= {
        "correct_choice": correct_choice,
        "no_answer": np.zeros_like(primary),
        "sum_logits_corr": -(20.0 + 30.0 * (1.0 - progress)),
        "logits_per_token_corr": -(1.5 + 2.5 * (1.0 - progress)),
        "logits_per_char_corr": -(0.4 + 0.6 * (1.0 - progress)),
        "logits_per_byte_corr": -1.1 * (0.4 + 0.6 * (1.0 - progress)),
        "bits_per_byte_corr": np.full_like(primary, np.nan),
        "margin": margin,
        "margin_per_token": 0.5 * margin,
        "margin_per_char": 0.2 * margin,
        "primary_metric": primary,
    }
    for kind, shift in _PREDICTED_INDEX_SHIFT.items():
        values[f"predicted_index_{kind}"] = correct_choice + shift * (0.5 - progress)
    for suffix, power in (("", 1.0), ("_per_token", 0.6), ("_per_char", 0.3)):
        values[f"correct_prob{suffix}"] = correct_prob**power
        values[f"total_prob{suffix}"] = total_prob**power
        values[f"norm_correct_prob{suffix}"] = np.minimum(correct_prob**power / total_prob**power, 1.0)
        values[f"uncond_correct_prob{suffix}"] = (0.9 * correct_prob) ** power
    values["uncond_total_prob"] = 0.95 * total_prob
    lacks_uncond = np.asarray([name in TASKS_WITHOUT_UNCOND for name in RAW_TASKS])[task]
    for metric in (*UNCOND_METRICS, "predicted_index_uncond"):
        values[metric] = np.where(lacks_uncond, np.nan, values[metric])
    nones = dict.fromkeys(OPTIONAL_METRICS, ~small) | {"bits_per_byte_corr": np.ones_like(small)}
    return values, nones


def _dict_texts(values: dict[str, np.ndarray], nones: dict[str, np.ndarray]) -> pa.Array:
    """``"{'key': value, ...}"`` for every row, joined column-wise by Arrow rather than row by row in Python."""
    pieces = []
    for key in RAW_METRIC_KEYS:
        text = pc.cast(pa.array(values[key]), pa.string())
        if key in nones:
            text = pc.if_else(pa.array(nones[key]), "None", text)
        pieces.append(pc.binary_join_element_wise(f"'{key}'", text, ": "))
    return pc.binary_join_element_wise("{", pc.binary_join_element_wise(*pieces, ", "), "}", "")


# ---------------------------------------------------------------------------------------------------------------
# full_eval columns
# ---------------------------------------------------------------------------------------------------------------


def _full_eval_schedule(merged: pd.DataFrame) -> pd.DataFrame:
    """Return the 12 key and schedule columns of full_eval (docs/sources.md §3.2)."""
    params, step = merged["params"].to_numpy().astype(str), merged["step"].to_numpy(dtype=np.float64)
    schedule = datadec_schedule(PARAMS).reindex(params)
    tokens = tokens_at(params, step)
    return pd.DataFrame(
        {
            "params": merged["params"],
            "data": merged["data"],
            "seed": merged["seed"],
            "step": step,
            "tokens": tokens,
            "compute": compute_at(params, tokens),
            "total_steps": schedule["total_steps"].to_numpy(),
            "warmup_steps": schedule["warmup_steps"].to_numpy(),
            "lr_max": schedule["lr_max"].to_numpy(),
            "batch_size": schedule["batch_size"].to_numpy(),
            "lr_at_step": scheduled_lr(params, step),
            "cumulative_lr": _cumulative_lr(schedule, step),
        }
    )


def _cumulative_lr(schedule: pd.DataFrame, step: np.ndarray) -> np.ndarray:
    """Integral of the scheduled learning rate from step 0 (it stops growing at ``total_steps``, as datadec's)."""
    warmup, total = schedule["warmup_steps"].to_numpy(), schedule["total_steps"].to_numpy()
    peak, final = schedule["lr_max"].to_numpy(), schedule["lr_final"].to_numpy()
    step = np.minimum(step, total)
    rising = peak * np.minimum(step, warmup) ** 2 / (2 * warmup)
    decaying, decay_steps = np.clip(step - warmup, 0, None), total - warmup
    cosine = decaying + decay_steps / np.pi * np.sin(np.pi * decaying / decay_steps)
    return rising + final * decaying + (peak - final) * 0.5 * cosine


def _with_model_details(full_eval: pd.DataFrame) -> pd.DataFrame:
    """Append datadec's model-detail columns (formulas per size, docs/sources.md §3.2)."""
    schedule = datadec_schedule(PARAMS).reindex(full_eval["params"].to_numpy().astype(str))
    details = pd.DataFrame(
        {
            "default_seed": INTERNAL_SEEDS[0],
            "length_str": "5xC",
            "lr_warmup_start": 0.0,
            "params_numeric": SIZES["params_numeric"].reindex(schedule.index).to_numpy(),
            "true_model_size": schedule["true_model_size"].to_numpy(),
            "total_tokens": schedule["total_tokens"].to_numpy(),
            "warmup_tokens": schedule["warmup_tokens"].to_numpy(),
            "lr_final": schedule["lr_final"].to_numpy(),
            "total_seqs": np.round(schedule["total_tokens"].to_numpy() / SEQUENCE_LENGTH).astype(np.int64),
            "warmup_perc": (schedule["warmup_tokens"] / schedule["total_tokens"]).to_numpy(),
            "lr_decay_tokens": (schedule["total_tokens"] - schedule["warmup_tokens"]).to_numpy(),
            "lr_decay_steps": schedule["lr_decay_steps"].to_numpy(),
        },
        index=full_eval.index,
    )
    return pd.concat([full_eval, details], axis=1)
