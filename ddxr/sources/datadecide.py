"""Reader of DataDecide pretraining evaluations: one tidy table, one row per (params, data, seed, step).

Three inputs give the same table (docs/sources.md §2-§3):

- the raw Hugging Face exports ``<data_dir>/datadecide/downstream_eval.parquet`` (one row per checkpoint and task,
  metrics as the text of a Python dict) and ``ppl_eval.parquet`` (one row per checkpoint, 11 perplexities);
- datadec's processed ``<data_dir>/datadecide/full_eval.parquet`` (or ``mean_eval.parquet``, averaged over seeds),
  preferred when present;
- any object with a ``full_eval`` DataFrame attribute, such as a ``datadec.DataDecide`` (duck typed).

The output names follow docs/dataset.md §1: a task's primary score is the column named after the task, its other
metrics are ``<task>_<metric>``, perplexities ``<set>_valppl``. ``tokens`` and ``compute`` are taken from the input
where it has them, else computed (docs/sources.md §3.4): tokens = step × batch × 2048, compute = the input's own FLOPs
per token of that size × tokens (:func:`flops_per_token`), so a model's compute follows one formula at every
checkpoint, including checkpoints with perplexities but no downstream rows; ``lr_at_step`` likewise, with datadec's
schedule formula (:func:`scheduled_lr`), so raw and processed inputs agree.
"""

from __future__ import annotations

import ast
import hashlib
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ddxr.errors import SourceError
from ddxr.vocabulary import (
    DATA,
    METRIC_SUFFIXES,
    METRICS,
    MMLU_TASKS,
    PARAMS,
    PPL_SETS,
    RAW_TASKS,
    SEED_NAMES,
    SEQUENCE_LENGTH,
    SIZES,
    TASKS_WITHOUT_UNCOND,
    UNCOND_METRICS,
    metric_variable,
    ppl_variable,
)

__all__ = [
    "DROPPED_METRIC_KEYS",
    "FULL_EVAL_TASK_METRICS",
    "METRIC_COLUMNS",
    "PretrainingEvals",
    "PretrainingSource",
    "MAX_CELL_CHARS",
    "MAX_CELL_KEYS",
    "STRICT_DICT",
    "datadec_schedule",
    "flops_per_token",
    "parse_metrics",
    "read_datadecide",
    "scheduled_lr",
]

#: Keys of the raw ``metrics`` dicts that are not metrics (datadec drops them too).
DROPPED_METRIC_KEYS = (
    "predicted_index_raw",
    "predicted_index_per_token",
    "predicted_index_per_char",
    "predicted_index_per_byte",
    "predicted_index_uncond",
    "logits_per_byte_corr",
)

#: Tasks of the output, alphabetical as in full_eval (``mmlu_average`` among the ``mmlu_*``).
TASKS = tuple(sorted((*RAW_TASKS, "mmlu_average")))

#: (task, metric) pairs in full_eval order: metric-major, tasks alphabetical, no uncond metrics for boolq/winogrande.
FULL_EVAL_TASK_METRICS = tuple(
    (task, metric)
    for metric in METRICS
    for task in TASKS
    if not (metric in UNCOND_METRICS and task in TASKS_WITHOUT_UNCOND)
)

#: Metric columns of every table this module returns, in order: 11 perplexities, then the 1,866 task metrics.
METRIC_COLUMNS = (
    *(ppl_variable(ppl_set) for ppl_set in PPL_SETS),
    *(metric_variable(task, metric) for task, metric in FULL_EVAL_TASK_METRICS),
)

DOWNSTREAM_FILE = "downstream_eval.parquet"
PPL_FILE = "ppl_eval.parquet"
FULL_EVAL_FILE = "full_eval.parquet"
MEAN_EVAL_FILE = "mean_eval.parquet"

_RAW_PPL_COLUMN = re.compile(r"eval/(?P<set>.+)-validation/Perplexity")
_FULL_EVAL_PPL_COLUMN = re.compile(r"(?P<set>.+)-valppl")

# datadec's full_eval columns that are not ddxr variables: schedule, dataset features (hand estimates), model
# details. ``total_tokens`` there is the planned total, never emitted (docs/sources.md §8.9).
_FULL_EVAL_EXTRAS = frozenset(
    (
        "total_steps warmup_steps lr_max batch_size cumulative_lr total_tokens_billions pct_code pct_common_crawl "
        "pct_social_media mean_doc_length_tokens duplicate_rate_pct quality_filter_strength is_mixed_dataset "
        "num_sources_mixed educational_content_score default_seed length_str lr_warmup_start d_model n_heads n_layers "
        "mlp_ratio weight_tying alibi rope flash_attention attention_dropout attention_layer_norm include_bias "
        "layer_norm_type layer_norm_with_affine layer_norm_eps bias_for_layer_norm attention_layer_norm_with_affine "
        "activation_type residual_dropout embedding_dropout max_sequence_length vocab_size embedding_size "
        "eos_token_id pad_token_id init_device init_fn init_std init_cutoff_factor params_numeric true_model_size "
        "total_tokens warmup_tokens lr_final total_seqs warmup_perc lr_decay_tokens lr_decay_steps "
        "__index_level_0__"
    ).split()
)
# Raw columns read but not emitted.
_RAW_IGNORED = frozenset(("chinchilla", "__index_level_0__", "tokens", "compute"))

_CHUNK_ROWS = 20_000  # dict-strings parsed per batch: keeps temporaries small enough for the allocator to reuse
#: Longest metrics cell parsed, in characters, and most ``:`` (keys) it may hold. Real cells hold 34 keys in about
#: 1 KB; parsing costs memory in cells × distinct keys, so an absurd cell (20k keys) is skipped before parsing.
MAX_CELL_CHARS = 64 * 1024
MAX_CELL_KEYS = 1_000
#: Unknown metric keys listed one by one in the skips; the rest are counted together.
_UNKNOWN_KEYS_LISTED = 50
_PARSE_THREADS = 4  # workers parsing metrics batches at once (at most one per core)
_Skip = tuple[str, Any, str, str]  # a skipped row, cell or column: source, row, column, reason
_STEP_BITS = 32  # checkpoint key = (((params * 32 + data) * 8 + seed) << 32) | step; sorts like the output


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainingEvals:
    """DataDecide evaluations as one tidy table.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (params, data, seed, step), sorted by params (numeric order), data (the order of
        :data:`ddxr.vocabulary.DATA`), seed and step, with a RangeIndex. Columns: ``params``, ``data`` (str),
        ``seed``, ``step`` (int64; no ``seed`` when read from ``mean_eval``), ``tokens``, ``compute``,
        ``lr_at_step`` (float64), then :data:`METRIC_COLUMNS` (float64, NaN = not measured), then any task metric
        outside that list that holds values.
    skipped : pandas.DataFrame
        What was left out, one row per skipped row, cell or column: ``source``, ``row`` (0-based row number in the
        source, or a label such as ``"all"``), ``column`` and ``reason``.
    source : str
        What was read.
    """

    table: pd.DataFrame
    skipped: pd.DataFrame
    source: str


class PretrainingSource:
    """DataDecide evaluations from a data folder, a parquet file or a ``datadec.DataDecide``-like object.

    Parameters
    ----------
    source : str, os.PathLike or object
        A data folder holding ``datadecide/`` (or that folder itself) with ``full_eval.parquet`` or the raw exports
        ``downstream_eval.parquet`` + ``ppl_eval.parquet`` (full_eval wins when both exist); a ``.parquet`` file in
        full_eval layout; or an object with a ``full_eval`` DataFrame attribute (``mean_eval`` when ``mean``).
    mean : bool, default False
        Read datadec's seed-averaged ``mean_eval`` instead: the table then has no ``seed`` column.

    Raises
    ------
    SourceError
        If no readable input is found (the message lists the files looked for).

    Examples
    --------
    >>> from ddxr.sources.datadecide import PretrainingSource
    >>> evals = PretrainingSource("tests/data/real_samples/pretrain_metrics_sample.parquet").read()
    >>> evals.table[["params", "data", "seed", "step", "tokens"]].iloc[[5]]
      params      data  seed  step       tokens
    5     4M  Dolma1.7     0  5725  375193600.0
    """

    def __init__(self, source: str | os.PathLike | object, *, mean: bool = False) -> None:
        self.mean = mean
        self._object: object | None = None
        self._files: dict[str, Path] = {}
        if isinstance(source, str | os.PathLike):
            self._files = _locate_files(Path(source), mean)
        else:
            attribute = "mean_eval" if mean else "full_eval"
            if not isinstance(getattr(source, attribute, None), pd.DataFrame):
                raise SourceError(
                    f"expected a path or an object with a `{attribute}` DataFrame attribute (a datadec.DataDecide), "
                    f"found {type(source).__name__}; pass a data folder or such an object"
                )
            self._object = source

    @property
    def description(self) -> str:
        """Human-readable description of the input."""
        if self._object is not None:
            kind = type(self._object)
            return f"{kind.__module__}.{kind.__qualname__}.{'mean_eval' if self.mean else 'full_eval'}"
        if "full_eval" in self._files:
            return str(self._files["full_eval"])
        return f"raw DataDecide exports {self._files['downstream']} + {self._files['ppl']}"

    def file_stats(self) -> dict[str, dict]:
        """Return what changes when the input changes, for cache fingerprints.

        Size (bytes) and modification time of every file read, keyed by absolute path (the same files named from
        another folder are the same input); for an object, which has no files, a digest of the table it holds.
        """
        if self._object is not None:
            frame = getattr(self._object, "mean_eval" if self.mean else "full_eval")
            rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
            digest = hashlib.sha256(rows.tobytes() + "\x1f".join(map(str, frame.columns)).encode()).hexdigest()
            return {self.description: {"rows": len(frame), "content": digest}}
        stats = {}
        for path in self._files.values():
            status = path.stat()
            stats[str(path.resolve())] = {"size": status.st_size, "mtime": status.st_mtime}
        return stats

    def read(self) -> PretrainingEvals:
        """Read the input into one tidy table.

        Returns
        -------
        PretrainingEvals

        Raises
        ------
        SourceError
            On missing columns, unknown recipes or sizes, non-integral steps, duplicate checkpoints (or
            checkpoint-task rows) with different values, or when no input holds a checkpoint. Isolated bad cells,
            and a raw export holding no rows (its metrics are then absent), are skipped and listed in
            :attr:`PretrainingEvals.skipped` instead.
        """
        if self._object is not None:
            frame = getattr(self._object, "mean_eval" if self.mean else "full_eval").reset_index(drop=True)
            wide = _read_full_eval(frame, self.description, self.mean)
        elif "full_eval" in self._files:
            wide = _read_full_eval_file(self._files["full_eval"], self.mean)
        else:
            wide = _read_raw(self._files["downstream"], self._files["ppl"])
        if not len(wide.keys):
            raise SourceError(
                f"{self.description}: no DataDecide checkpoint to read (the input holds no rows, or none with all of "
                f"{', '.join(_KEYS)}); re-download allenai/DataDecide-eval-results and DataDecide-ppl-results or "
                "regenerate the file with datadec"
            )
        return PretrainingEvals(table=wide.to_table(), skipped=_skip_frame(wide.skipped), source=self.description)


def read_datadecide(source: str | os.PathLike | object, *, mean: bool = False) -> PretrainingEvals:
    """Read DataDecide evaluations: ``PretrainingSource(source, mean=mean).read()``.

    See Also
    --------
    PretrainingSource
    """
    return PretrainingSource(source, mean=mean).read()


def datadec_schedule(params: Sequence[str] = PARAMS) -> pd.DataFrame:
    """Return datadec's training-schedule formulas per size (docs/sources.md §3.4), indexed by ``params``.

    datadec derives the schedule from a parameter count that is the true count below 150M and the round label from
    150M up; its ``lr_at_step`` is a linear warmup from 0 followed by a cosine decay to 1% of the peak at
    ``total_steps``. These are formulas, not logged values.

    Returns
    -------
    pandas.DataFrame
        Columns ``true_model_size`` (int64, datadec's count), ``batch_size``, ``total_tokens`` (planned),
        ``warmup_tokens``, ``total_steps``, ``warmup_steps``, ``lr_decay_steps`` (int64), ``lr_max``, ``lr_final``
        (float64).
    """
    sizes = SIZES.loc[list(params)]
    model_size = np.where(sizes["params_numeric"] >= 150e6, sizes["params_numeric"], sizes["true_params"])
    batch = sizes["batch_size"].to_numpy()
    tokens_per_step = batch * SEQUENCE_LENGTH
    total_tokens = 100 * model_size.astype(np.int64)  # "5xC": 5 × Chinchilla's 20 tokens per parameter
    warmup_tokens = np.round(model_size * SEQUENCE_LENGTH / batch).astype(np.int64)
    total_steps = -(-total_tokens // tokens_per_step)  # ceiling division, exact in integers
    warmup_steps = -(-warmup_tokens // tokens_per_step)
    lr_max = 0.0047 * (model_size / 108e6) ** (-1.0 / 3.0)
    return pd.DataFrame(
        {
            "true_model_size": model_size.astype(np.int64),
            "batch_size": batch.astype(np.int64),
            "total_tokens": total_tokens,
            "warmup_tokens": warmup_tokens,
            "total_steps": total_steps,
            "warmup_steps": warmup_steps,
            "lr_decay_steps": total_steps - warmup_steps,
            "lr_max": lr_max,
            "lr_final": 0.01 * lr_max,
        },
        index=sizes.index,
    )


def scheduled_lr(params: np.ndarray | Sequence[str] | str, step: np.ndarray | Sequence[int] | int) -> np.ndarray:
    """Return datadec's scheduled learning rate at pretraining steps (the ``lr_at_step`` column of full_eval).

    Parameters
    ----------
    params : array-like of str
        Size labels, broadcast against ``step``.
    step : array-like of int
        Pretraining steps.

    Returns
    -------
    numpy.ndarray
        float64: ``lr_max × step / warmup_steps`` during warmup, then a cosine from ``lr_max`` down to ``lr_final``
        at ``total_steps``, ``lr_final`` after.

    Examples
    --------
    >>> float(scheduled_lr("4M", 5725)) == float(datadec_schedule(["4M"])["lr_final"].iloc[0])
    True
    """
    params, step = np.broadcast_arrays(np.asarray(params), np.asarray(step, dtype=np.float64))
    schedule = datadec_schedule(PARAMS).reindex(params.ravel())
    warmup, total = schedule["warmup_steps"].to_numpy(), schedule["total_steps"].to_numpy()
    peak, final = schedule["lr_max"].to_numpy(), schedule["lr_final"].to_numpy()
    step = step.ravel()
    progress = np.clip((step - warmup) / (total - warmup), 0.0, 1.0)
    decayed = final + (peak - final) * 0.5 * (1.0 + np.cos(np.pi * progress))
    return np.where(step < warmup, peak * step / warmup, decayed).reshape(params.shape)


def parse_metrics(
    texts: Iterable[str | None] | pd.Series | pa.Array | pa.ChunkedArray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse DataDecide ``metrics`` cells, texts of Python dicts such as ``"{'acc_raw': 0.23, 'margin': nan}"``.

    A vectorized fast path accepts the strict grammar ``{'key': value, ...}`` (keys identifiers, values numbers,
    ``nan``, ``inf``, ``None``, ``True``, ``False``) and validates every cell it accepts; other cells go through a
    safe literal parser (:func:`ast.literal_eval` extended with ``nan``/``inf``), never ``eval``.

    Parameters
    ----------
    texts : iterable of str or None, pandas.Series or pyarrow array
        One dict text per row.

    Returns
    -------
    values : pandas.DataFrame
        One row per text (RangeIndex, positions of ``texts``), one float64 column per key found: known metric keys
        in :data:`ddxr.vocabulary.METRICS` order then :data:`DROPPED_METRIC_KEYS`, then other keys alphabetically.
        ``True``/``False`` → 1.0/0.0, ``None`` → NaN, absent key → NaN. A repeated key keeps its last value.
    problems : pandas.DataFrame
        Columns ``row`` and ``reason``: cells that are not dicts (their row is all NaN) and values that are not
        numbers (left NaN).

    Examples
    --------
    >>> values, problems = parse_metrics(["{'acc_raw': 0.25, 'margin': None, 'no_answer': True}"])
    >>> values.iloc[0].to_dict()
    {'acc_raw': 0.25, 'no_answer': 1.0, 'margin': nan}
    """
    array = _as_string_array(texts)
    batches = [_parse_dicts(array.slice(start, _CHUNK_ROWS), start) for start in range(0, len(array), _CHUNK_ROWS)]
    keys = sorted({key for batch in batches for key in batch.keys}, key=_key_rank)
    column = {key: position for position, key in enumerate(keys)}
    values = np.full((len(array), len(keys)), np.nan)
    for batch in batches:
        codes = np.array([column[key] for key in batch.keys], dtype=np.int64)
        values[batch.rows, codes[batch.codes]] = batch.values
    problems = [problem for batch in batches for problem in batch.problems]
    return (
        pd.DataFrame(values, columns=pd.Index(keys, dtype=object)),
        pd.DataFrame(problems, columns=["row", "reason"]).astype({"row": np.int64}),
    )


# ---------------------------------------------------------------------------------------------------------------
# Locating the input
# ---------------------------------------------------------------------------------------------------------------


def _locate_files(path: Path, mean: bool) -> dict[str, Path]:
    """Return the files to read for a path: a parquet file, a datadecide folder, or a data folder holding one."""
    if path.is_file():
        return {"full_eval": path}
    folder = path / "datadecide" if (path / "datadecide").is_dir() else path
    processed = folder / (MEAN_EVAL_FILE if mean else FULL_EVAL_FILE)
    if processed.is_file():
        return {"full_eval": processed}
    raw = {"downstream": folder / DOWNSTREAM_FILE, "ppl": folder / PPL_FILE}
    if mean:
        looked_for = f"{processed} (raw exports hold every seed; read them with mean=False and average over seeds)"
    elif all(file.is_file() for file in raw.values()):
        return raw
    else:
        looked_for = f"{processed}, or both {raw['downstream']} and {raw['ppl']}"
    raise SourceError(
        f"no DataDecide evaluations at {path}: looked for {looked_for}; download allenai/DataDecide-eval-results and "
        f"allenai/DataDecide-ppl-results into {folder}, or point to datadec's data folder"
    )


@contextmanager
def _parquet_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, pa.ArrowException) as error:
        raise SourceError(f"{path}: unreadable parquet file ({error}); re-download or regenerate it") from error


def _parquet_names(path: Path) -> list[str]:
    with _parquet_errors(path):
        return pq.read_schema(path).names


def _parquet_frame(path: Path, columns: Sequence[str], **options: Any) -> pd.DataFrame:
    """Read columns of a parquet file (``options`` go to :class:`pyarrow.parquet.ParquetFile`).

    ``ParquetFile.read`` skips the dataset layer of ``read_table``, which costs seconds on 1,900 columns, and the
    memory-mapped file is decoded in place rather than copied into buffers first; each column becomes its own
    pandas block, its Arrow buffers released as it is converted, so no second copy of the whole table is held.
    """
    with _parquet_errors(path), pq.ParquetFile(path, memory_map=True, **options) as file:
        return file.read(columns=list(columns)).to_pandas(split_blocks=True, self_destruct=True)


def _parquet_batches(path: Path, column: str) -> Iterator[pa.RecordBatch]:
    with _parquet_errors(path):
        yield from pq.ParquetFile(path).iter_batches(batch_size=_CHUNK_ROWS, columns=[column])


# ---------------------------------------------------------------------------------------------------------------
# The intermediate wide form shared by all inputs
# ---------------------------------------------------------------------------------------------------------------

_CANONICAL_TASK_METRICS = frozenset(FULL_EVAL_TASK_METRICS)
#: Metric columns while reading: :data:`METRIC_COLUMNS`, then the task metrics outside them (the uncond metrics of
#: boolq and winogrande), which the output keeps only when they hold values.
_COLUMNS = (
    *METRIC_COLUMNS,
    *(
        metric_variable(task, metric)
        for task in TASKS
        for metric in METRICS
        if (task, metric) not in _CANONICAL_TASK_METRICS
    ),
)
_COLUMN = {name: position for position, name in enumerate(_COLUMNS)}
#: Position in :data:`_COLUMNS` of every (task, metric): one row per task of :data:`TASKS`, one column per metric.
_TASK_METRIC_COLUMN = np.array([[_COLUMN[metric_variable(task, metric)] for metric in METRICS] for task in TASKS])
_SCHEDULE = ("tokens", "compute", "lr_at_step")
_KEYS = ("params", "data", "seed", "step")


@dataclass
class _Wide:
    """Checkpoints read from one input, before the formulas fill what the input lacks."""

    keys: np.ndarray  # int64 checkpoint keys, sorted, unique
    has_seed: bool
    schedule: np.ndarray  # float64 (checkpoints, 3): tokens, compute, lr_at_step; NaN where the input has none
    metrics: np.ndarray  # float64 (checkpoints, len(_COLUMNS))
    skipped: list[_Skip]

    def to_table(self) -> pd.DataFrame:
        params_code, data_code, seed, step = _decode_keys(self.keys)
        params = np.asarray(PARAMS)[params_code]
        tokens = _filled(self.schedule[:, 0], step * SIZES["tokens_per_step"].to_numpy(np.float64)[params_code])
        per_token = flops_per_token(params, tokens, self.schedule[:, 1]).to_numpy(np.float64)
        compute = per_token[params_code] * tokens
        keys = {
            "params": pd.array(params, dtype="str"),
            "data": pd.array(np.asarray(DATA)[data_code], dtype="str"),
            "seed": seed,
            "step": step,
            "tokens": tokens,
            "compute": _filled(self.schedule[:, 1], compute),
            "lr_at_step": _filled(self.schedule[:, 2], scheduled_lr(params, step)),
        }
        if not self.has_seed:
            del keys["seed"]
        canonical = len(METRIC_COLUMNS)
        extra = [canonical + index for index in np.flatnonzero(~np.isnan(self.metrics[:, canonical:]).all(axis=0))]
        metrics = self.metrics[:, :canonical]
        if extra:
            metrics = np.concatenate([metrics, self.metrics[:, extra]], axis=1)
        names = pd.Index([*METRIC_COLUMNS, *(_COLUMNS[index] for index in extra)], dtype=object)
        return pd.concat([pd.DataFrame(keys), pd.DataFrame(metrics, columns=names, copy=False)], axis=1)


def flops_per_token(
    params: np.ndarray | pd.Series | Sequence[str], tokens: np.ndarray | pd.Series, compute: np.ndarray | pd.Series
) -> pd.Series:
    """Training FLOPs per token of each size, as the source's own ``compute`` column has them.

    DataDecide's ``compute`` is 6 × N × tokens for one N per size. The published tables use the true non-embedding
    parameter count (docs/sources.md §3.3: 3,744,832 for 4M); a source that used the nominal count of the size label
    (4M → 4e6) is followed too. Per size, the median of compute / tokens over the rows that have both is matched to
    6 × true N and 6 × nominal N (relative tolerance 1e-9) and the matching constant is returned exactly, so
    ``flops_per_token × tokens`` reproduces the source's values bit for bit; a ratio matching neither is returned as
    observed. Sizes without any ``compute`` in the source get 6 × true N.

    Parameters
    ----------
    params : array-like of str
        Size label of each row.
    tokens, compute : array-like of float
        Tokens and compute of each row; NaN compute = not given by the source.

    Returns
    -------
    pandas.Series
        FLOPs per token (float64), indexed by every size label of :data:`ddxr.vocabulary.PARAMS` in numeric order.

    Examples
    --------
    >>> flops_per_token(["4M", "4M"], [1e6, 2e6], [2.4e13, np.nan])["4M"]
    np.float64(24000000.0)
    >>> float(flops_per_token([], [], [])["4M"]) == 6.0 * 3_744_832
    True
    """
    params = np.asarray(params, dtype=object)
    tokens = np.asarray(tokens, dtype=np.float64)
    compute = np.asarray(compute, dtype=np.float64)
    usable = np.isfinite(compute) & np.isfinite(tokens) & (tokens > 0)
    observed = pd.Series(compute[usable] / tokens[usable]).groupby(params[usable]).median().reindex(SIZES.index)
    true_n = 6.0 * SIZES["true_params"].astype(np.float64)
    nominal_n = 6.0 * SIZES["params_numeric"].astype(np.float64)
    matches = {
        name: np.isclose(observed, constant, rtol=1e-9, atol=0.0)
        for name, constant in (("true", true_n), ("nominal", nominal_n))
    }
    per_token = observed.where(~matches["nominal"], nominal_n).where(~matches["true"] & observed.notna(), true_n)
    return per_token.rename("flops_per_token")


def _filled(values: np.ndarray, formula: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), formula, values)


def _encode_keys(params: np.ndarray, data: np.ndarray, seed: np.ndarray, step: np.ndarray) -> np.ndarray:
    return (((params * 32 + data) * 8 + seed) << _STEP_BITS) | step


def _decode_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    step = keys & ((1 << _STEP_BITS) - 1)
    run = keys >> _STEP_BITS
    return run // 256, (run // 8) % 32, run % 8, step


def _describe_key(key: int) -> str:
    params, data, seed, step = (int(part[0]) for part in _decode_keys(np.asarray([key])))
    return f"{PARAMS[params]}/{DATA[data]}/seed {seed}/step {step}"


def _shown(value: object) -> str:
    """Return a cell value as a user wrote it: ``12.5``, ``'abc'`` (no numpy scalar reprs)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _empty_file(source: str, what: str) -> _Skip:
    return (source, "all", "", f"file holds no rows: its {what} are absent from the dataset")


def _skip_frame(skipped: list[_Skip]) -> pd.DataFrame:
    return pd.DataFrame(skipped, columns=["source", "row", "column", "reason"]).astype({"row": object})


def _mmlu_average(metrics: np.ndarray, present: np.ndarray) -> dict[int, np.ndarray]:
    """Return the unweighted mean over the 57 MMLU subtasks (NaNs skipped, as datadec does).

    One per metric position in :data:`ddxr.vocabulary.METRICS`, for the metrics whose subtask columns are all
    ``present``.
    """
    subtasks = _TASK_METRIC_COLUMN[[TASKS.index(task) for task in MMLU_TASKS]]
    means = {}
    for metric in np.flatnonzero(present[subtasks].all(axis=0)):
        block = metrics[:, subtasks[:, metric]]
        count = (~np.isnan(block)).sum(axis=1)
        total = np.nansum(block, axis=1)
        means[int(metric)] = np.divide(total, count, out=np.full(len(block), np.nan), where=count > 0)
    return means


_MMLU_AVERAGE_COLUMN = _TASK_METRIC_COLUMN[TASKS.index("mmlu_average")]


# ---------------------------------------------------------------------------------------------------------------
# Key columns
# ---------------------------------------------------------------------------------------------------------------


def _require(columns: Iterable[str], required: Sequence[str], source: str, layout: str, hint: str = "") -> None:
    missing = [name for name in required if name not in set(columns)]
    if missing:
        raise SourceError(
            f"{source}: missing column(s) {', '.join(map(repr, missing))}; expected the {layout} layout with "
            f"{', '.join(required)} (docs/sources.md) — {hint or 'check that this is the right file'}"
        )


def _positions(values: pd.Series, labels: Sequence[str | None]) -> np.ndarray:
    """Position of every value in ``labels``, -1 for missing or other values."""
    index = pd.Index(labels, dtype=object)
    if isinstance(values.dtype, pd.CategoricalDtype):  # parquet dictionary columns: look up the few categories only
        mapping = np.append(index.get_indexer(values.cat.categories.astype(object)), -1)
        return mapping[values.cat.codes.to_numpy()].astype(np.int64)
    return index.get_indexer(values.astype(object)).astype(np.int64)


def _label_codes(values: pd.Series, labels: Sequence[str], source: str, what: str) -> np.ndarray:
    """Positions of string labels in ``labels``; -1 where missing. Unknown labels raise, naming the first row."""
    codes = _positions(values, labels)
    unknown = (codes < 0) & values.notna().to_numpy()
    if unknown.any():
        found = pd.unique(values[unknown].astype(str))
        row = int(np.flatnonzero(unknown)[0])
        raise SourceError(
            f"{source}, row {row}, column {values.name!r}: unknown {what} {', '.join(map(repr, found[:5]))}"
            f"{' …' if len(found) > 5 else ''} ({int(unknown.sum())} rows); expected one of the {len(labels)} "
            f"DataDecide {what}s ({', '.join(map(repr, labels[:4]))}, …; see ddxr.vocabulary) — fix or drop those rows"
        )
    return codes


def _integers(values: pd.Series, source: str, low: int, high: int) -> np.ndarray:
    """Numbers → int64, missing → -1; non-numbers, non-integral or out-of-range values raise, naming the first row."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    present = ~np.isnan(numbers)
    bad = (values.notna().to_numpy() & ~present) | (present & ((numbers != np.round(numbers)) | (numbers < low)))
    bad |= present & (numbers > high)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SourceError(
            f"{source}, row {row}, column {values.name!r}: expected an integer between {low} and {high}, found "
            f"{_shown(values.iloc[row])} — fix the value or drop the row"
        )
    return np.where(present, numbers, -1).astype(np.int64)


def _checkpoint_keys(
    frame: pd.DataFrame, source: str, *, seed_names: bool, has_seed: bool
) -> tuple[np.ndarray, np.ndarray, list[_Skip]]:
    """Checkpoint key of every row, a mask of rows with all four keys, and one skip per row missing a key."""
    parts = {
        "params": _label_codes(frame["params"], PARAMS, source, "size label"),
        "data": _label_codes(frame["data"], DATA, source, "recipe"),
        "seed": np.zeros(len(frame), dtype=np.int64),
        "step": _integers(frame["step"], source, 0, (1 << _STEP_BITS) - 1),
    }
    if has_seed and seed_names:
        names = _label_codes(frame["seed"], tuple(SEED_NAMES), source, "seed name")
        parts["seed"] = np.where(names >= 0, np.asarray(list(SEED_NAMES.values()))[names], -1)
    elif has_seed:
        parts["seed"] = _integers(frame["seed"], source, 0, max(SEED_NAMES.values()))
    missing = np.column_stack([codes < 0 for codes in parts.values()])
    first_missing = np.argmax(missing, axis=1)  # name one missing key per row
    skipped = [
        (source, int(row), list(parts)[first_missing[row]], f"missing {list(parts)[first_missing[row]]}: row skipped")
        for row in np.flatnonzero(missing.any(axis=1))
    ]
    return _encode_keys(*parts.values()), ~missing.any(axis=1), skipped


def _deduplicate(
    keys: np.ndarray,
    values: np.ndarray,
    rows: np.ndarray,
    source: str,
    key_columns: Sequence[str],
    describe: Callable[[int], str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[_Skip]]:
    """Sorted unique keys and their values; identical repeats are listed as skips, differing repeats raise.

    ``rows`` are the source row numbers of ``keys`` and ``describe(i)`` names the key of ``keys[i]``, for messages.
    Of repeated keys, the one of the first source row is kept; only the repeats are compared with it, and skips and
    errors name source rows in file order, whatever the order of ``keys``.
    """
    if np.all(keys[1:] > keys[:-1]):
        return keys, values, []
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    if len(unique) == len(keys):
        return unique, values[first], []
    first = _first_in_file_order(inverse, rows)  # np.unique's is the first in ``keys`` order
    repeats = np.setdiff1d(np.arange(len(keys)), first)
    repeats = repeats[np.argsort(rows[repeats], kind="stable")]
    kept = values[first[inverse[repeats]]]
    differs = ~((kept == values[repeats]) | (np.isnan(kept) & np.isnan(values[repeats]))).all(axis=1)
    what = "checkpoint and task" if "task" in key_columns else "checkpoint"
    if differs.any():
        row = int(repeats[np.flatnonzero(differs)[0]])
        named = describe(row) if describe else _describe_key(keys[row])
        raise SourceError(
            f"{source}, rows {int(rows[first[inverse[row]]])} and {int(rows[row])}: two rows for the same {what} "
            f"({named}) with different values; expected one row per {', '.join(key_columns)} — remove one of them "
            f"(or the stale export) and read again"
        )
    skipped = [
        (
            source,
            int(rows[row]),
            ", ".join(key_columns),
            f"duplicate of row {int(rows[first[inverse[row]]])} with identical values",
        )
        for row in repeats
    ]
    return unique, values[first], skipped


def _first_in_file_order(inverse: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Position, for every distinct key, of its occurrence with the smallest source row."""
    order = np.lexsort((rows, inverse))  # by key, then by source row
    starts = np.flatnonzero(np.diff(inverse[order], prepend=-1))
    return order[starts]


def _float_matrix(
    frame: pd.DataFrame, names: Sequence[str | None], source: str, rows: np.ndarray
) -> tuple[np.ndarray, list[_Skip]]:
    """Return the ``rows`` of columns as one float64 matrix, NaN for a ``None`` name.

    The matrix is in Fortran order, so that each column is filled (and gathered in the order of ``rows``) by one
    contiguous copy. Cells that are not numbers, in any row, become NaN and are listed as skips.
    """
    matrix = np.empty((len(rows), len(names)), order="F")
    skipped = []
    for position, name in enumerate(names):  # a loop over columns, not rows
        if name is None:
            matrix[:, position] = np.nan
            continue
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column.dtype):
            numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            numbers, column_skips = _text_numbers(column, source)
            skipped.extend(column_skips)
        np.take(numbers, rows, out=matrix[:, position], mode="clip")  # "raise" would buffer out; rows are valid
    return matrix, skipped


def _text_numbers(values: pd.Series, source: str) -> tuple[np.ndarray, list[_Skip]]:
    """Return a column that is not numeric as float64: cells that are not numbers become NaN, listed as skips."""
    name = values.name
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    skipped = [
        (source, int(row), name, f"{_shown(values.iloc[row])} is not a number: left NaN")
        for row in np.flatnonzero(np.isnan(numbers) & values.notna().to_numpy())
    ]
    # text beyond float64 ("1e999") reads as inf: NaN and counted, as in metrics cells; "inf" stays inf
    spelled = values.astype("str").str.fullmatch(r"\s*[+-]?inf(inity)?\s*", case=False)
    spelled_inf = spelled.fillna(False).to_numpy(bool)
    for row in np.flatnonzero(np.isinf(numbers) & ~spelled_inf):
        skipped.append((source, int(row), name, "value too large for a float: left NaN"))
        numbers[row] = np.nan
    return numbers, skipped


# ---------------------------------------------------------------------------------------------------------------
# Raw Hugging Face exports
# ---------------------------------------------------------------------------------------------------------------


def _read_raw(downstream_path: Path, ppl_path: Path) -> _Wide:
    """Outer merge of the two exports: perplexity-only and downstream-only checkpoints exist."""
    ppl_keys, ppl_values, ppl_columns, ppl_skips = _read_ppl(ppl_path)
    rows = _read_downstream_keys(downstream_path)
    usable = rows["usable"]
    keys = np.union1d(rows["keys"][usable], ppl_keys)
    metrics = np.full((len(keys), len(_COLUMNS)), np.nan)
    metrics[np.searchsorted(keys, ppl_keys)[:, None], ppl_columns] = ppl_values
    checkpoint = np.where(usable, np.searchsorted(keys, rows["keys"]), -1)
    metric_skips = _fill_metrics(metrics, keys, checkpoint, rows["task"], downstream_path)
    for metric, mean in _mmlu_average(metrics, np.ones(len(_COLUMNS), bool)).items():
        metrics[:, _MMLU_AVERAGE_COLUMN[metric]] = mean
    schedule = np.full((len(keys), len(_SCHEDULE)), np.nan)
    for position, name in enumerate(_SCHEDULE):
        if name in rows:
            schedule[checkpoint[usable], position] = rows[name][usable]
    return _Wide(keys, True, schedule, metrics, [*rows["skipped"], *metric_skips, *ppl_skips])


def _read_ppl(path: Path) -> tuple[np.ndarray, np.ndarray, list[int], list[_Skip]]:
    """Perplexity export: unique checkpoint keys, their values, the values' columns in :data:`_COLUMNS`, skips."""
    source = str(path)
    names = _parquet_names(path)
    _require(names, _KEYS, source, "allenai/DataDecide-ppl-results")
    sets, skipped = {}, []
    for name in names:
        match = _RAW_PPL_COLUMN.fullmatch(name)
        if match and match["set"] in PPL_SETS:
            sets[name] = _COLUMN[ppl_variable(match["set"])]
        elif name not in (*_KEYS, *_RAW_IGNORED):
            skipped.append((source, "all", name, "not a DataDecide perplexity column: ignored"))
    frame = _parquet_frame(path, [*_KEYS, *sets])
    if frame.empty:
        skipped.append(_empty_file(source, "perplexities"))
    keys, complete, key_skips = _checkpoint_keys(frame, source, seed_names=True, has_seed=True)
    rows = np.flatnonzero(complete)
    values, cell_skips = _float_matrix(frame, list(sets), source, rows)
    keys, values, duplicates = _deduplicate(keys[rows], values, rows, source, _KEYS)
    return keys, values, list(sets.values()), [*skipped, *key_skips, *cell_skips, *duplicates]


def _read_downstream_keys(path: Path) -> dict[str, Any]:
    """Every column of the eval export but ``metrics``: checkpoint keys, task positions, tokens, compute, skips.

    ``usable`` is False for rows skipped (missing key, unknown task).
    """
    source = str(path)
    names = _parquet_names(path)
    required = ("params", "data", "task", "step", "seed", "metrics")
    _require(names, required, source, "allenai/DataDecide-eval-results")
    optional = [name for name in ("tokens", "compute") if name in names]
    columns = [name for name in required if name != "metrics"] + optional
    frame = _parquet_frame(path, columns, read_dictionary=["params", "data", "task", "seed"])
    keys, complete, key_skips = _checkpoint_keys(frame, source, seed_names=True, has_seed=True)
    task = _task_codes(frame["task"])
    unknown_task = [
        (source, int(row), "task", f"unknown task {frame['task'].iloc[row]!r}: row skipped (see vocabulary.RAW_TASKS)")
        for row in np.flatnonzero(complete & (task < 0))
    ]
    ignored = [
        (source, "all", name, "not a DataDecide eval-results column: ignored")
        for name in names
        if name not in (*required, *_RAW_IGNORED)
    ]
    rows = {
        "keys": keys,
        "task": task,
        "usable": complete & (task >= 0),
        "skipped": [
            *ignored,
            *key_skips,
            *unknown_task,
            *([_empty_file(source, "downstream metrics")] if frame.empty else []),
        ],
    }
    rows |= {name: frame[name].to_numpy(dtype=np.float64, na_value=np.nan) for name in optional}
    return rows


def _task_codes(tasks: pd.Series) -> np.ndarray:
    """Return positions in :data:`TASKS` of raw task names.

    -1 for unknown or missing tasks, and for ``mmlu_average`` (derived, never a raw row).
    """
    return _positions(tasks, [task if task != "mmlu_average" else None for task in TASKS])


def _fill_metrics(
    metrics: np.ndarray, keys: np.ndarray, checkpoint: np.ndarray, task: np.ndarray, path: Path
) -> list[_Skip]:
    """Stream the ``metrics`` dicts batch by batch into ``metrics[checkpoint, column of (task, key)]``.

    ``keys`` are the checkpoint keys of the rows of ``metrics``; ``checkpoint`` and ``task`` give every source
    row's position in them and in :data:`TASKS` (-1: row skipped).

    Rows repeating a (checkpoint, task) are checked against each other after the stream.
    """
    source = str(path)
    usable = checkpoint >= 0
    cell = np.where(usable, checkpoint * len(TASKS) + task, -1)
    counts = np.bincount(cell[usable], minlength=len(metrics) * len(TASKS))
    repeated = usable & (counts[np.maximum(cell, 0)] > 1)
    repeated_rows = np.flatnonzero(repeated)
    repeated_values = np.full((len(repeated_rows), len(METRICS)), np.nan)
    metric_index = {metric: position for position, metric in enumerate(METRICS)}
    flat = metrics.reshape(-1)  # a view: one 1-D scatter per batch
    skipped: list[_Skip] = []
    unknown: dict[str, int] = {}
    for parsed in _parsed_batches(path):
        skipped.extend((source, row, "metrics", reason) for row, reason in parsed.problems)
        per_key = np.bincount(parsed.codes, minlength=len(parsed.keys))
        for code, key in enumerate(parsed.keys):  # a loop over distinct keys (34 in real files), not rows
            if key not in metric_index and key not in DROPPED_METRIC_KEYS:
                unknown[key] = unknown.get(key, 0) + int(per_key[code])
        codes = np.array([metric_index.get(key, -1) for key in parsed.keys], dtype=np.int64)[parsed.codes]
        keep = (codes >= 0) & usable[parsed.rows]
        rows, codes, values = parsed.rows[keep], codes[keep], parsed.values[keep]
        flat[checkpoint[rows] * metrics.shape[1] + _TASK_METRIC_COLUMN[task[rows], codes]] = values
        in_repeat = repeated[rows]
        repeated_values[np.searchsorted(repeated_rows, rows[in_repeat]), codes[in_repeat]] = values[in_repeat]
    reason = "unknown metric key {!r}: ignored (known keys: ddxr.vocabulary.METRICS)"
    listed = sorted(unknown.items())[:_UNKNOWN_KEYS_LISTED]
    skipped.extend((source, f"{count} rows", "metrics", reason.format(key)) for key, count in listed)
    if len(unknown) > len(listed):
        rest = sum(unknown.values()) - sum(count for _, count in listed)
        skipped.append(
            (source, f"{rest} values", "metrics", f"{len(unknown) - len(listed)} more unknown metric keys: ignored")
        )
    if len(repeated_rows):

        def describe(position: int) -> str:
            checkpoint_key, task_position = divmod(int(cell[repeated_rows[position]]), len(TASKS))
            return f"task {TASKS[task_position]!r} at {_describe_key(keys[checkpoint_key])}"

        duplicates = _deduplicate(
            cell[repeated_rows], repeated_values, repeated_rows, source, [*_KEYS, "task"], describe
        )
        skipped.extend(duplicates[2])
    return skipped


def _parsed_batches(path: Path) -> Iterator[_ParsedDicts]:
    """Return the ``metrics`` column parsed batch by batch, in file order.

    Batches are parsed on worker threads (Arrow and NumPy release the GIL), at most one per worker ahead of the
    consumer, so memory stays bounded by a few batches.
    """
    workers = min(_PARSE_THREADS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[_ParsedDicts]] = deque()
        start = 0
        for batch in _parquet_batches(path, "metrics"):
            pending.append(pool.submit(_parse_dicts, batch.column(0), start))
            start += batch.num_rows
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# ---------------------------------------------------------------------------------------------------------------
# datadec full_eval / mean_eval
# ---------------------------------------------------------------------------------------------------------------


def _read_full_eval_file(path: Path, mean: bool) -> _Wide:
    names = _parquet_names(path)
    wanted = [name for name in names if name in _KEYS or _full_eval_variable(name)]
    frame = _parquet_frame(path, wanted)
    return _read_full_eval(frame, str(path), mean, ignored=[name for name in names if name not in wanted])


def _full_eval_variable(name: str) -> str | None:
    """Return the ddxr name of a full_eval column, or None when the column is not one ddxr emits."""
    if name in _SCHEDULE:
        return name
    ppl = _FULL_EVAL_PPL_COLUMN.fullmatch(name)
    if ppl:
        return ppl_variable(ppl["set"]) if ppl["set"] in PPL_SETS else None
    metric = next((suffix for suffix in METRIC_SUFFIXES if name.endswith("_" + suffix)), None)
    if metric is None or name[: -len(metric) - 1] not in TASKS:
        return None
    return metric_variable(name[: -len(metric) - 1], metric)


def _read_full_eval(frame: pd.DataFrame, source: str, mean: bool, ignored: Sequence[str] = ()) -> _Wide:
    """Read a full_eval (or mean_eval) frame; ``ignored`` names columns already left out of ``frame``."""
    keys = tuple(name for name in _KEYS if name != "seed" or not mean)
    layout = "datadec mean_eval" if mean else "datadec full_eval"
    _require(frame.columns, keys, source, layout, "" if mean else "pass mean=True for datadec's mean_eval")
    if mean and "seed" in frame.columns:
        raise SourceError(
            f"{source}: found a 'seed' column, but mean=True expects datadec's seed-averaged mean_eval; pass "
            f"mean=False to read per-seed full_eval"
        )
    variables = {name: _full_eval_variable(name) for name in frame.columns if name not in keys}
    skipped: list[_Skip] = [
        (source, "all", name, "not a DataDecide metric column: ignored")
        for name in [*ignored, *(name for name, variable in variables.items() if variable is None)]
        if name not in _FULL_EVAL_EXTRAS
    ]
    column_of = {variable: name for name, variable in variables.items() if variable is not None}
    names = [column_of.get(variable) for variable in (*_SCHEDULE, *_COLUMNS)]
    row_keys, complete, key_skips = _checkpoint_keys(frame, source, seed_names=False, has_seed=not mean)
    rows = np.flatnonzero(complete)
    rows = rows[np.argsort(row_keys[rows], kind="stable")]  # checkpoint order, gathered as the matrix is filled
    values, cell_skips = _float_matrix(frame, names, source, rows)
    unique, values, duplicates = _deduplicate(row_keys[rows], values, rows, source, keys)
    schedule, metrics = values[:, : len(_SCHEDULE)], values[:, len(_SCHEDULE) :]
    present = np.asarray([name is not None for name in names[len(_SCHEDULE) :]])
    for metric, expected in _mmlu_average(metrics, present).items():
        _check_mmlu_average(metrics, unique, int(_MMLU_AVERAGE_COLUMN[metric]), expected, present, source)
    return _Wide(unique, not mean, schedule, metrics, [*skipped, *key_skips, *cell_skips, *duplicates])


def _check_mmlu_average(
    metrics: np.ndarray, keys: np.ndarray, column: int, expected: np.ndarray, present: np.ndarray, source: str
) -> None:
    """Fill an absent ``mmlu_average*`` column with the subtask mean; raise when a present one disagrees."""
    if not present[column]:
        metrics[:, column] = expected
        return
    wrong = ~np.isclose(metrics[:, column], expected, rtol=1e-9, atol=1e-12, equal_nan=True)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise SourceError(
            f"{source}, checkpoint {_describe_key(keys[row])}, column {_COLUMNS[column]!r}: found "
            f"{metrics[row, column]!r}, but the unweighted mean of the 57 MMLU subtasks is {expected[row]!r}; "
            f"rebuild the file with datadec or read the raw exports instead"
        )


# ---------------------------------------------------------------------------------------------------------------
# Parsing the metrics dict-strings
# ---------------------------------------------------------------------------------------------------------------

_KEY = r"'[A-Za-z_][A-Za-z0-9_]*'"
# Python's number literals as repr writes them: integers without leading zeros, floats with a point or an exponent.
_NUMBER = r"(?:0+|[1-9][0-9]*|[0-9]+\.[0-9]*(?:e[-+]?[0-9]+)?|[0-9]+e[-+]?[0-9]+|inf|nan)"
_VALUE = rf"(?:-?{_NUMBER}|None|True|False)"
#: The strict grammar of the fast path: Python's repr of a dict of identifier keys and plain numbers.
STRICT_DICT = rf"^\{{(?:{_KEY}: {_VALUE}(?:, {_KEY}: {_VALUE})*)?\}}$"
_QUOTE, _NONE, _TRUE, _FALSE, _INF, _MINUS = (ord(character) for character in "'NTFi-")
_TOO_LARGE = "value of {!r} is too large for a float: left NaN"


@dataclass
class _ParsedDicts:
    """Parsed cells as (row, key, value) triplets: ``keys[codes[i]]`` of row ``rows[i]`` is ``values[i]``."""

    rows: np.ndarray
    keys: list[str]
    codes: np.ndarray
    values: np.ndarray
    problems: list[tuple[int, str]]


def _key_rank(key: str) -> tuple[int, int | str]:
    known = (*METRICS, *DROPPED_METRIC_KEYS)
    return (0, known.index(key)) if key in known else (1, key)


def _as_string_array(texts: Iterable[str | None] | pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    elif not isinstance(texts, pa.Array):
        texts = pa.array(list(texts) if not isinstance(texts, pd.Series) else texts, type=pa.large_string())
    return texts.cast(pa.large_string())


def _parse_dicts(texts: pa.Array, first_row: int) -> _ParsedDicts:
    """Parse one batch: the vectorized strict path, then the literal parser for the cells it rejects.

    Cells beyond :data:`MAX_CELL_CHARS` or :data:`MAX_CELL_KEYS` are skipped unparsed, with a problem each.
    """
    texts = texts.cast(pa.large_string())
    lengths = pc.utf8_length(texts).fill_null(0).to_numpy(zero_copy_only=False)
    colons = pc.count_substring(texts, ":").fill_null(0).to_numpy(zero_copy_only=False)
    absurd = (lengths > MAX_CELL_CHARS) | (colons > MAX_CELL_KEYS)
    if absurd.any():
        parsed = _parse_dicts(texts.filter(pa.array(~absurd)), 0)
        kept = np.flatnonzero(~absurd)
        parsed.rows = kept[parsed.rows] + first_row
        parsed.problems = [(int(kept[row]) + first_row, reason) for row, reason in parsed.problems]
        reason = (
            f"metrics cell beyond {MAX_CELL_CHARS} characters or {MAX_CELL_KEYS} keys (real cells hold 34 keys): "
            "row skipped unparsed"
        )
        parsed.problems += [(int(row) + first_row, reason) for row in np.flatnonzero(absurd)]
        return parsed
    strict = pc.match_substring_regex(texts, STRICT_DICT).fill_null(False).to_numpy(zero_copy_only=False)
    accepted = np.flatnonzero(strict)
    if len(accepted) == len(texts):
        fast = _parse_strict(texts)
    else:
        fast = _parse_strict(texts.filter(pa.array(strict)))
        fast.rows = accepted[fast.rows]
        fast.problems = [(int(accepted[row]), reason) for row, reason in fast.problems]
    repeated_key = _rows_with_repeated_keys(fast, len(texts))
    fallback_rows = np.union1d(np.flatnonzero(~strict), repeated_key)
    if len(repeated_key):
        keep = ~np.isin(fast.rows, repeated_key)
        fast.rows, fast.codes, fast.values = fast.rows[keep], fast.codes[keep], fast.values[keep]
        resolved = set(repeated_key.tolist())
        fast.problems = [problem for problem in fast.problems if problem[0] not in resolved]
    slow = _parse_literals(texts.take(pa.array(fallback_rows, type=pa.int64())).to_pylist(), fallback_rows)
    return _merge(fast, slow, first_row)


def _parse_strict(texts: pa.Array) -> _ParsedDicts:
    """Tokenize cells known to match :data:`STRICT_DICT`: quotes delimit keys, so byte positions give the tokens."""
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
    if data_buffer is None or offsets[-1] == offsets[0]:
        return _ParsedDicts(np.empty(0, np.int64), [], np.empty(0, np.int64), np.empty(0), [])
    data = np.frombuffer(data_buffer, dtype=np.uint8)
    quotes = np.flatnonzero(data[offsets[0] : offsets[-1]] == _QUOTE) + offsets[0]
    if not len(quotes):  # only empty dicts
        return _ParsedDicts(np.empty(0, np.int64), [], np.empty(0, np.int64), np.empty(0), [])
    key_start, key_end = quotes[0::2] + 1, quotes[1::2]
    per_row = np.diff(np.searchsorted(key_start, offsets))
    rows = np.repeat(np.arange(len(texts)), per_row)
    value_start = key_end + 3  # past "': "
    value_end = np.empty_like(key_start)
    value_end[:-1] = key_start[1:] - 3  # before ", '" of the next key in the row ...
    last = np.cumsum(per_row)[per_row > 0] - 1
    value_end[last] = offsets[1:][per_row > 0] - 1  # ... or before the closing brace
    bounds = np.empty(4 * len(key_start), dtype=np.int64)
    bounds[0::4], bounds[1::4], bounds[2::4], bounds[3::4] = key_start, key_end, value_start, value_end
    # One string array over the original bytes whose elements alternate key, separator, value, separator.
    tokens = pa.LargeStringArray.from_buffers(len(bounds) - 1, pa.py_buffer(bounds), data_buffer)
    keys = pc.take(tokens, pa.array(np.arange(0, len(bounds), 4))).dictionary_encode()
    first_byte = data[value_start]
    numeric = (first_byte != _NONE) & (first_byte != _TRUE) & (first_byte != _FALSE)
    values = np.where(first_byte == _TRUE, 1.0, np.where(first_byte == _FALSE, 0.0, np.nan))
    numbers = pc.take(tokens, pa.array(2 + 4 * np.flatnonzero(numeric)))
    values[numeric] = pc.cast(numbers, pa.float64()).to_numpy(zero_copy_only=False)
    # a literal beyond float64 (1e999) casts to inf: NaN and counted, as the literal parser does; `inf` stays inf
    spelled_inf = (first_byte == _INF) | (
        (first_byte == _MINUS) & (data[np.minimum(value_start + 1, len(data) - 1)] == _INF)
    )
    overflow = np.flatnonzero(np.isinf(values) & ~spelled_inf)
    values[overflow] = np.nan
    names, codes = keys.dictionary.to_pylist(), keys.indices.to_numpy()
    problems = [(int(rows[entry]), _TOO_LARGE.format(names[codes[entry]])) for entry in overflow]
    return _ParsedDicts(rows, names, codes, values, problems)


def _rows_with_repeated_keys(parsed: _ParsedDicts, n_rows: int) -> np.ndarray:
    """Rows naming a key twice: the literal parser resolves them (last value wins, as in Python)."""
    if not len(parsed.rows):
        return np.empty(0, np.int64)
    # sorted (row, key) pairs: memory follows the triplets, never rows × distinct keys
    pairs = np.sort(parsed.rows.astype(np.int64) * len(parsed.keys) + parsed.codes)
    return np.unique(pairs[1:][pairs[1:] == pairs[:-1]] // len(parsed.keys))


def _parse_literals(texts: Sequence[str | None], rows: np.ndarray) -> _ParsedDicts:
    """Parse cell by cell with a safe literal parser (the slow path), for the few cells outside the strict grammar."""
    keys: dict[str, int] = {}
    found_rows, found_codes, found_values, problems = [], [], [], []
    for row, text in zip(rows.tolist(), texts, strict=True):
        try:
            values, bad = _literal_metrics(text)
        except ValueError as error:
            problems.append((row, f"unparseable metrics cell ({error}): row skipped"))
            continue
        problems.extend((row, reason) for reason in bad)
        for key, value in values.items():
            found_rows.append(row)
            found_codes.append(keys.setdefault(key, len(keys)))
            found_values.append(value)
    return _ParsedDicts(
        np.array(found_rows, np.int64),
        list(keys),
        np.array(found_codes, np.int64),
        np.array(found_values, np.float64),
        problems,
    )


class _NamedFloats(ast.NodeTransformer):
    """Turn the names ``nan`` and ``inf`` into constants, and float literals beyond float64 into huge integers.

    ``nan`` and ``inf`` are how Python prints those floats. A literal such as ``1e999``, which Python reads as inf,
    becomes an integer too large for a float, so it is refused like ``10**400``: ``inf`` must be spelled.
    """

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in ("nan", "inf"):
            return ast.copy_location(ast.Constant(float(node.id)), node)
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, float) and math.isinf(node.value):
            return ast.copy_location(ast.Constant(_OVERFLOWED), node)
        return node


_OVERFLOWED = 2**1024  # the smallest integer float() refuses


def _literal_metrics(text: str | None) -> tuple[dict[str, float], list[str]]:
    """Parse one dict text safely; returns its numeric values and the reasons for any value left out."""
    if text is None:
        raise ValueError("empty cell")
    try:
        tree = _NamedFloats().visit(ast.parse(text.strip(), mode="eval"))
        parsed = ast.literal_eval(tree.body)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as error:
        raise ValueError(f"{text[:60]!r} is not a Python dict literal") from error
    if not isinstance(parsed, dict):
        raise ValueError(f"{text[:60]!r} is a {type(parsed).__name__}, not a dict")
    values, problems = {}, []
    for key, value in parsed.items():
        if not isinstance(key, str):
            problems.append(f"key {key!r} is not a string: left out")
        elif value is None:
            values[key] = math.nan
        elif isinstance(value, bool | int | float):
            try:
                values[key] = float(value)
            except OverflowError:
                problems.append(_TOO_LARGE.format(key))
        else:
            problems.append(f"value of {key!r} is {repr(value)[:60]}, not a number: left NaN")
    return values, problems


def _merge(fast: _ParsedDicts, slow: _ParsedDicts, first_row: int) -> _ParsedDicts:
    """Both paths' triplets, with row numbers counted from the start of the source."""
    if not len(slow.rows) and not slow.problems:  # the usual case: every cell took the fast path
        fast.rows += first_row
        fast.problems = [(row + first_row, reason) for row, reason in fast.problems]
        return fast
    keys = list(dict.fromkeys([*fast.keys, *slow.keys]))
    position = {key: index for index, key in enumerate(keys)}
    remap = [np.array([position[key] for key in part.keys] or [0], dtype=np.int64) for part in (fast, slow)]
    return _ParsedDicts(
        rows=np.concatenate([fast.rows, slow.rows]) + first_row,
        keys=keys,
        codes=np.concatenate([remap[0][fast.codes], remap[1][slow.codes]]),
        values=np.concatenate([fast.values, slow.values]),
        problems=[(row + first_row, reason) for row, reason in (*fast.problems, *slow.problems)],
    )
