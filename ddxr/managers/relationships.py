"""Which pretraining checkpoint, and which parent run, every post-training run started from (docs/sources.md §6).

:class:`RunRelationshipManager` reads the runs table of a W&B store once and computes, with vectorized pandas
(regex extraction, merges, ``np.select``), one row of links per run. Rules:

- **Base checkpoint.** ``(params, data)`` from the model path, the run name's DataDecide block and the W&B
  ``model_size``; ``(step, seed)`` from the name only (``-<step>-<n>``, else the final checkpoint of seed 0).
- **Which source wins when they disagree** (recorded in ``conflicts``, never silently): ``params`` — the model path
  (the checkpoint the trainer actually loaded), then the name's block (it names the size together with the
  checkpoint step, so the two stay consistent), then ``model_size`` (a launcher key that §8.5 found unreliable);
  ``data`` — the model path, then the name.
- **Final step** of ``main``/``Ft`` bases: the last step of seed 0 of ``(params, data)`` with downstream evals in the
  pretraining table when it reaches ``vocabulary.SIZES.final_step``; a table that stops earlier (a truncated
  export) cannot hold the final checkpoint, so the vocabulary's step is used. Any difference is a conflict.
- **Parent.** The run whose ``run_name`` is the last component of an output-folder model path (DPO → SFT). A run
  with a parent in the store inherits the base of its chain's root; otherwise its own name gives the base.
- **Hyperparameters** (§6.7): config (layout B) → ``wandb_metadata.args`` → name. The peak ``learning_rate`` comes
  first from the config copy W&B keeps in the run attributes (``system_attrs.config``, where present), then the
  layout-B config, the launch arguments (last ``--learning_rate`` wins), the name (``--learning_rate=5e-07``,
  ``lr=5e-05``), and only then a layout-A merged ``raw_data`` value, and that only when the run logged no summary
  over it (no ``_step``); ``learning_rate_source`` records which. Launch metadata written by another program (an
  update script) is ignored.

A run that cannot be linked stays in :attr:`RunRelationshipManager.links` with ``link_status`` ``"unlinked"``, the
reason, and no base (``params, data, seed, base_step`` missing); crashed and running runs are linked like finished
ones (their ``state`` is a column).
"""

from __future__ import annotations

import json
from functools import cached_property

import numpy as np
import pandas as pd

from ddxr.errors import LinkError, SourceError
from ddxr.managers.naming import nearest_size, parse_cli_args, parse_model_paths, parse_run_names
from ddxr.vocabulary import OLMES_TASKS, PRIMARY_METRIC, RECIPE_CODES, SIZES

#: Columns of ``WandBStore.read_runs()`` the links are computed from.
REQUIRED_COLUMNS = ("run_id", "run_name", "state", "created_at", "layout", "config", "wandb_metadata", "tags")
#: JSON columns of ``WandBStore.read_runs()`` the links read (``system_attrs`` is optional; never ``summary``).
JSON_COLUMNS = ("config", "wandb_metadata", "system_attrs")

#: Columns of :attr:`RunRelationshipManager.links`, in order.
LINK_COLUMNS = [
    "run_id",
    "run_name",
    "run_type",
    "state",
    "params",
    "data",
    "seed",
    "base_step",
    "seed_token",
    "parent_run_id",
    "parent_in_store",
    "parent_tokens_estimate",
    "learning_rate",
    "learning_rate_source",
    "num_train_epochs",
    "budget_tokens",
    "finetune_seed",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "gpu_count",
    "effective_batch",
    "max_seq_length",
    "max_train_samples",
    "logging_steps",
    "reduce_loss",
    "model_name_or_path",
    "model_path_kind",
    "match_params",
    "match_metric",
    "tags",
    "created_at",
    "link_status",
    "link_reason",
    "conflicts",
]

_BASE = ["params", "data", "seed", "base_step", "seed_token"]
_INTEGER_HYPERPARAMETERS = (
    "finetune_seed",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_seq_length",
    "max_train_samples",
    "logging_steps",
)
# config key → links column, where the two differ
_CONFIG_NAMES = {"seed": "finetune_seed"}
_ARG_KEYS = (
    "learning_rate",
    "num_train_epochs",
    "seed",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_seq_length",
    "max_train_samples",
    "logging_steps",
    "reduce_loss",
    "model_name_or_path",
)
_CONFIG_KEYS = (*_ARG_KEYS, "model_size", "wandb_tags", "_step")
_TRAINER_PROGRAM = r"(?:^|/)(?:finetune|sft\w*|dpo\w*)\.py$"  # metadata of other programs describes no launch
_DPO_PROGRAM = r"(?:^|/)dpo\w*\.py$"
_DOWNSTREAM_COLUMN = rf"^(?:{'|'.join(PRIMARY_METRIC)})(?:_|$)"
_NO_BLOCK = "run name has no DataDecide block (DD-<recipe>-<size>, dd__<slug>-<size>__, allenai--DataDecide-)"
_PARENT_MISSING = "parent not in store; base from name"


class RunRelationshipManager:
    """Links of every post-training run to its pretraining base checkpoint and parent run.

    Parameters
    ----------
    runs : pandas.DataFrame
        The runs table of ``WandBStore.read_runs()``: one row per run with ``run_id, run_name, state, created_at,
        layout`` (``"A"`` or ``"B"``), ``config``, ``wandb_metadata`` (dicts) and ``tags`` (lists of str).
    pretraining : pandas.DataFrame, optional
        DataDecide evaluations (``params, data, seed, step`` and metric columns such as ``hellaswag``), used to find
        the final evaluated step of each base; without it, ``vocabulary.SIZES.final_step``.
    final_steps : pandas.DataFrame, optional
        :func:`last_evaluated_steps` of the pretraining table, when already known (then ``pretraining`` is unused).

    Attributes
    ----------
    links : pandas.DataFrame
        One row per run, linked or not, with the columns of :data:`LINK_COLUMNS`.
    report : pandas.DataFrame
        Run counts by ``link_status`` and ``link_reason`` (``runs``, ``with_conflicts``), for the build report.
    final_steps : pandas.DataFrame
        Last evaluated step of seed 0 per ``(params, data)`` in the pretraining table (``table_step``), next to the
        vocabulary's final step (``vocabulary_step``); empty without a table.

    Raises
    ------
    SourceError
        When ``runs`` lacks a column, repeats a ``run_id`` or holds non-dict configs, or ``pretraining`` has no
        key or downstream evaluation columns.

    Examples
    --------
    >>> runs = pd.DataFrame(
    ...     {
    ...         "run_id": ["r1"],
    ...         "run_name": ["250901-155734_test_finetune_DD-c4-150M_Ft_learning_rate=5e-05"],
    ...         "state": ["finished"],
    ...         "created_at": [pd.Timestamp("2025-09-01", tz="UTC")],
    ...         "layout": ["B"],
    ...         "config": [{}],
    ...         "wandb_metadata": [{}],
    ...         "tags": [["finetune"]],
    ...     }
    ... )
    >>> manager = RunRelationshipManager(runs)
    >>> manager.get_run_lineage("r1")["base"]
    {'params': '150M', 'data': 'C4', 'seed': 0, 'step': 38157}
    >>> float(manager.links.loc[0, "learning_rate"]), float(manager.links.loc[0, "budget_tokens"])
    (5e-05, 1330254868.0)
    """

    def __init__(
        self, runs: pd.DataFrame, pretraining: pd.DataFrame | None = None, final_steps: pd.DataFrame | None = None
    ) -> None:
        frame = _checked_runs(runs)
        self.final_steps = last_evaluated_steps(pretraining) if final_steps is None else final_steps
        own = _own_links(frame, self.final_steps)
        self._chains = _ancestry(own)
        self.links = _inherit(own, self._chains)[LINK_COLUMNS]

    @classmethod
    def from_links(cls, links: pd.DataFrame) -> RunRelationshipManager:
        """Return a manager over links computed before (:attr:`links` of another manager, rows in any subset).

        An incremental refresh merges the links of a previous build with those of the runs it relinks.
        """
        manager = cls.__new__(cls)
        manager.links = links.reset_index(drop=True)
        manager.final_steps = last_evaluated_steps(None)
        manager._chains = _ancestry(manager.links)
        return manager

    @cached_property
    def report(self) -> pd.DataFrame:
        """Run counts by ``link_status`` and ``link_reason`` (``runs``, ``with_conflicts``), for the build report."""
        return _report(self.links)

    @cached_property
    def _by_id(self) -> pd.DataFrame:
        return self.links.set_index("run_id")

    def _row(self, run_id: str) -> pd.Series:
        if run_id not in self._by_id.index:
            raise LinkError(
                f"run_id {run_id!r} is not among the {len(self._by_id)} runs of the W&B store; "
                "check the id (RunRelationshipManager.links lists every run_id)"
            )
        return self._by_id.loc[run_id]

    def get_run_lineage(self, run_id: str) -> dict:
        """Return base checkpoint and chain of runs of one post-training run.

        Parameters
        ----------
        run_id : str
            W&B run id.

        Returns
        -------
        dict
            ``run_id``; ``base``: ``{"params", "data", "seed", "step"}`` (None where unknown); ``chain``: run ids
            from the chain's root (the SFT run) to ``run_id``; ``link_status``; ``link_reason``.

        Raises
        ------
        LinkError
            If ``run_id`` is not in the store.
        """
        row = self._row(run_id)
        base = row[["params", "data", "seed", "base_step"]].set_axis(["params", "data", "seed", "step"])
        chain = self._chains.loc[self._chains["lineage"] == run_id].sort_values("depth")["run_id"]
        return {
            "run_id": run_id,
            "base": {key: (None if pd.isna(value) else _python(value)) for key, value in base.items()},
            "chain": chain.tolist(),
            "link_status": row["link_status"],
            "link_reason": row["link_reason"],
        }

    def get_comparable_runs(self, run_id: str) -> list[str]:
        """Return runs of a hyperparameter sweep around one run.

        Comparable runs are linked, start from the same base ``(params, data, seed, base_step)``, have the same
        ``run_type`` (and, for DPO, the same known parent) and differ from the run in ``learning_rate``,
        ``num_train_epochs`` or ``budget_tokens``; reruns with equal hyperparameters are not a sweep point.

        Returns
        -------
        list of str
            Run ids ordered by learning rate, epochs, budget and run id; the run itself is not included.

        Raises
        ------
        LinkError
            If ``run_id`` is not in the store or is unlinked (it has no base to compare on).
        """
        row = self._row(run_id)
        if row["link_status"] != "linked":
            raise LinkError(
                f"run {run_id!r} is unlinked ({row['link_reason']}), so it has no base to compare runs on; "
                "fix its name or model path, or pick a linked run"
            )
        links = self.links[self.links["link_status"] == "linked"]
        same = _equal(links, row, ["params", "data", "seed", "base_step", "run_type"])
        if row["run_type"] == "dpo":
            same &= links["parent_run_id"].eq(row["parent_run_id"]).fillna(False).to_numpy(bool)
        hyperparameters = ["learning_rate", "num_train_epochs", "budget_tokens"]
        differ = ~_equal(links, row, hyperparameters)
        comparable = links[same & differ].sort_values([*hyperparameters, "run_id"])
        return comparable["run_id"].tolist()

    def lineage_chains(self) -> pd.DataFrame:
        """Every linked post-training run as a lineage named by its run id, with its ancestors.

        Returns
        -------
        pandas.DataFrame
            Long table ``(lineage, run_id, depth)``: an SFT lineage holds the SFT run (depth 0); a DPO lineage its
            SFT parent when the parent is in the store (depth 0) and the DPO run (depth 1).
        """
        linked = self.links.loc[self.links["link_status"] == "linked", "run_id"]
        chains = self._chains[self._chains["lineage"].isin(linked)]
        return chains[["lineage", "run_id", "depth"]].sort_values(["lineage", "depth"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- input checks
def _checked_runs(runs: pd.DataFrame) -> pd.DataFrame:
    missing = [column for column in REQUIRED_COLUMNS if column not in runs.columns]
    if missing:
        raise SourceError(
            f"runs table lacks column(s) {missing}; expected the frame of WandBStore.read_runs() with columns "
            f"{list(REQUIRED_COLUMNS)}"
        )
    repeated = runs["run_id"][runs["run_id"].duplicated()].unique().tolist()
    if repeated:
        raise SourceError(f"runs table repeats run_id {repeated[:5]}; each W&B run must appear once")
    frame = runs.reset_index(drop=True)
    for column in ("config", "wandb_metadata"):
        present = frame[column].dropna()
        not_dict = present.index[~present.map(lambda value: isinstance(value, dict)).astype(bool)].tolist()
        if not_dict:
            raise SourceError(
                f"runs column {column!r} holds a {type(present[not_dict[0]]).__name__} for run "
                f"{frame.loc[not_dict[0], 'run_id']!r}; expected dicts (decode JSON text with json.loads first)"
            )
    return frame


def last_evaluated_steps(pretraining: pd.DataFrame | None) -> pd.DataFrame:
    """Last step of seed 0 with downstream evals per ``(params, data)`` of a DataDecide table.

    Parameters
    ----------
    pretraining : pandas.DataFrame or None
        Columns ``params, data, seed, step`` and task metric columns (``hellaswag``, ``arc_easy_acc_raw`` …).

    Returns
    -------
    pandas.DataFrame
        Columns ``params, data, table_step`` (int64) and ``vocabulary_step`` (``SIZES.final_step``); empty for None.
    """
    columns = ["params", "data", "table_step", "vocabulary_step"]
    if pretraining is None:
        return pd.DataFrame({name: pd.Series(dtype="int64" if "step" in name else "str") for name in columns})
    missing = [key for key in ("params", "data", "seed", "step") if key not in pretraining.columns]
    downstream = pretraining.columns[pretraining.columns.astype(str).str.match(_DOWNSTREAM_COLUMN)]
    if missing or downstream.empty:
        raise SourceError(
            f"pretraining table lacks {missing or 'downstream evaluation columns'}; expected params, data, seed, "
            f"step and task columns such as {next(iter(OLMES_TASKS))!r} (the DataDecide table of PretrainingSource)"
        )
    evaluated = pretraining[downstream].notna().any(axis=1) & (pd.to_numeric(pretraining["seed"]) == 0)
    rows = pretraining.loc[evaluated, ["params", "data", "step"]]
    steps = rows.groupby(["params", "data"], observed=True)["step"].max().astype("int64")
    table = steps.rename("table_step").reset_index()
    table["vocabulary_step"] = table["params"].map(SIZES["final_step"]).astype("Int64")
    return table


# ---------------------------------------------------------------------------------------------------- own links
def _own_links(frame: pd.DataFrame, final_steps: pd.DataFrame) -> pd.DataFrame:
    """Links of every run from its own name, config and launch metadata (before inheriting from parents)."""
    config = _dict_keys(frame["config"], _CONFIG_KEYS)
    metadata = _dict_keys(frame["wandb_metadata"], ("program", "args", "gpu_count"))
    trusted = metadata["program"].astype("str").str.contains(_TRAINER_PROGRAM, na=True)  # no program: a trainer
    args = parse_cli_args(metadata["args"].where(trusted), _ARG_KEYS)
    names = parse_run_names(frame["run_name"])
    own = frame[["run_id", "run_name", "state", "created_at"]].copy()
    own["tags"] = _joined_tags(frame["tags"], config["wandb_tags"])
    own["run_type"] = np.where(_is_dpo(frame, metadata, names), "dpo", "supervised_ft")

    attributes_rate = _attributes_config(frame["system_attrs"], "learning_rate") if "system_attrs" in frame else None
    conflicts = _hyperparameters(
        own, frame["layout"].eq("A"), config, args, names, metadata["gpu_count"].where(trusted), attributes_rate
    )
    model = parse_model_paths(own["model_name_or_path"])
    own["model_path_kind"] = model["kind"]
    own[["match_params", "match_metric"]] = names[["match_params", "match_metric"]]
    fatal, base_conflicts = _own_base(own, names, model, config["model_size"], final_steps)
    parent_notes, parent_conflicts = _parent(own, frame, model, names)
    own["_fatal"] = fatal
    own["_notes"] = _join(
        [
            parent_notes,
            _note(own["learning_rate"].isna(), "learning_rate not found in run attributes, config, args or name"),
        ]
    )
    own["conflicts"] = _join([base_conflicts, conflicts, parent_conflicts])
    return own


def _dict_keys(column: pd.Series, keys: tuple[str, ...]) -> pd.DataFrame:
    """Return selected keys of a column of dicts as a frame (missing dicts and keys → missing)."""
    present = column.dropna()
    values = pd.DataFrame(present.tolist(), index=present.index, columns=list(keys))
    return values.reindex(column.index).astype(object)


def _joined_tags(tags: pd.Series, launch_tags: pd.Series) -> pd.Series:
    """Comma-joined W&B tags; the launch-time ``wandb_tags`` config string when the run has none (§6.7)."""
    joined = tags.str.join(",").fillna("").astype("str")
    return joined.mask(joined.eq(""), launch_tags.astype("str")).fillna("")


def _is_dpo(frame: pd.DataFrame, metadata: pd.DataFrame, names: pd.DataFrame) -> np.ndarray:
    """DPO if the trainer program, a tag or a ``dpo_*`` config key says so, or the name is of the DPO family."""
    program = metadata["program"].astype("str").str.contains(_DPO_PROGRAM, na=False)
    return (
        program
        | _any_starts_with(frame["tags"], "dpo")
        | _any_starts_with(frame["config"], "dpo_")
        | names["family"].eq("dpo")
    ).to_numpy(bool)


def _any_starts_with(column: pd.Series, prefix: str) -> pd.Series:
    """Whether any item (list element or dict key) of each cell starts with ``prefix``."""
    items = column.explode().astype("str")
    return items.str.startswith(prefix, na=False).groupby(level=0).any().reindex(column.index, fill_value=False)


# ---------------------------------------------------------------------------------------------------- hyperparameters
def _hyperparameters(
    own: pd.DataFrame,
    layout_a: pd.Series,
    config: pd.DataFrame,
    args: pd.DataFrame,
    names: pd.DataFrame,
    gpu_count: pd.Series,
    attributes_rate: pd.Series | None = None,
) -> pd.Series:
    """Fill the hyperparameter columns of ``own`` by source precedence; return the notes on disagreeing sources."""
    rates = {
        "system_attrs": attributes_rate if attributes_rate is not None else pd.Series(None, index=own.index),
        "config": config["learning_rate"].where(~layout_a),
        "args": args["learning_rate"],
        "name": names["learning_rate"],
        # layout A: a trained run's summary (it has `_step`) overwrote the configured rate with the last logged one
        "raw_data": config["learning_rate"].where(layout_a & config["_step"].isna()),
    }
    own["learning_rate"], own["learning_rate_source"], rate_notes = _resolve("learning_rate", rates)

    notes = [rate_notes]
    from_name = {
        "num_train_epochs": names["num_train_epochs"].astype(object).fillna(names["epochs"]),
        "max_train_samples": names["max_train_samples"],
        "reduce_loss": names["reduce_loss"],
    }
    for key in _ARG_KEYS[1:]:
        column = _CONFIG_NAMES.get(key, key)
        candidates = {"config": config[key], "args": args[key]}
        if key in from_name:
            candidates["name"] = from_name[key]
        text = key in ("reduce_loss", "model_name_or_path")
        own[column], _, note = _resolve(column, candidates, text=text, integer=column in _INTEGER_HYPERPARAMETERS)
        notes.append(note)
    own["gpu_count"], _, note = _resolve("gpu_count", {"wandb_metadata": gpu_count}, integer=True)
    notes.append(note)
    own["num_train_epochs"] = own["num_train_epochs"].astype("float64")
    own["budget_tokens"] = names["budget_tokens"].astype("float64")
    batch = own["per_device_train_batch_size"] * own["gradient_accumulation_steps"] * own["gpu_count"]
    own["effective_batch"] = batch.astype("float64")
    return _join(notes)


def _attributes_config(system_attrs: pd.Series, key: str) -> pd.Series:
    """``key`` of the config copy in W&B's run attributes (``system_attrs.config``), missing where absent.

    The copy is a dict or its JSON text; W&B's raw form wraps each value as ``{"value": …, "desc": …}``.
    """

    def value(attrs: object) -> object:
        copy = attrs.get("config") if isinstance(attrs, dict) else None
        if isinstance(copy, str):
            try:
                copy = json.loads(copy)
            except json.JSONDecodeError:
                return None
        entry = copy.get(key) if isinstance(copy, dict) else None
        return entry.get("value") if isinstance(entry, dict) else entry

    return system_attrs.map(value).astype(object)


def _resolve(
    field: str, candidates: dict[str, pd.Series], *, text: bool = False, integer: bool = False
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """First available value among ordered sources, its source, and notes on unreadable or disagreeing values.

    Works on one ``(runs, sources)`` numpy matrix, so its cost does not depend on how many fields are resolved.

    Returns
    -------
    (pandas.Series, pandas.Series, pandas.Series)
        The value (str, float64 or Int64), its source (a key of ``candidates`` or ``"missing"``), the notes.
    """
    index = next(iter(candidates.values())).index
    sources = np.array(list(candidates))
    raw = np.column_stack([candidate.to_numpy(object) for candidate in candidates.values()])
    notes = []
    if text:
        values, available = raw, pd.notna(raw)
    else:
        values = pd.to_numeric(raw.ravel(), errors="coerce").astype(np.float64).reshape(raw.shape)
        unreadable = pd.notna(raw) & np.isnan(values)
        if integer:
            unreadable |= ~np.isnan(values) & (np.nan_to_num(values) % 1 != 0)
        values[unreadable] = np.nan
        available = ~np.isnan(values)
        kind = "a whole number" if integer else "a number"
        for column in np.flatnonzero(unreadable.any(axis=0)):
            shown = pd.Series(raw[:, column], index=index)
            notes.append(
                _note(
                    pd.Series(unreadable[:, column], index=index),
                    f"{field}: {sources[column]} value '",
                    shown,
                    f"' is not {kind}",
                )
            )
    first = available.argmax(axis=1)
    found = available.any(axis=1)
    chosen = np.where(found, values[np.arange(len(index)), first], None)
    source = pd.Series(np.where(found, sources[first], "missing"), index=index, dtype="str")
    if text:
        value = pd.Series(chosen, index=index, dtype="str")
    else:
        value = pd.Series(chosen.astype(np.float64), index=index)
        value = value.astype("Int64") if integer else value
    notes.append(_disagreement(field, sources, values, available, index, text=text))
    return value, source, _join(notes)


def _disagreement(
    field: str, sources: np.ndarray, values: np.ndarray, available: np.ndarray, index: pd.Index, *, text: bool
) -> pd.Series:
    """``"<field>: <source> <value>, …"`` where two available sources give different values, else ``""``."""
    disagree = np.zeros(len(index), dtype=bool)
    for one in range(len(sources)):
        for other in range(one + 1, len(sources)):
            both = available[:, one] & available[:, other]
            if text:
                differ = values[:, one] != values[:, other]
            else:
                differ = ~np.isclose(values[:, one], values[:, other], rtol=1e-9, atol=0.0)
            disagree |= both & differ
    if not disagree.any():
        return pd.Series("", index=index, dtype="str")
    listed = [
        _note(pd.Series(available[:, column], index=index), f"{source} ", _formatted(values[:, column], index))
        for column, source in enumerate(sources)
    ]
    return _note(pd.Series(disagree, index=index), f"{field}: ", _join(listed, sep=", "))


def _formatted(values: np.ndarray, index: pd.Index) -> pd.Series:
    """Text of values for notes; whole floats without the ``.0`` (``2`` epochs, not ``2.0``)."""
    series = pd.Series(values, index=index)
    if series.dtype != np.float64:
        return series.astype("str")
    whole = series.notna() & (series % 1 == 0) & (series.abs() < 1e15)
    return series.astype("str").mask(whole, series.where(whole).astype("Int64").astype("str"))


# ---------------------------------------------------------------------------------------------------- base checkpoint
def _own_base(
    own: pd.DataFrame, names: pd.DataFrame, model: pd.DataFrame, model_size: pd.Series, final_steps: pd.DataFrame
) -> tuple[pd.Series, pd.Series]:
    """Fill the base columns (params … seed_token) from the run's own sources; return fatal reasons, conflicts."""
    sizes = nearest_size(model_size)
    params_sources = {"model path": model["size"], "name": names["size"], "model_size": sizes}
    own["params"], _, params_notes = _resolve("params", params_sources, text=True)
    data_sources = {"model path": model["slug"].map(RECIPE_CODES), "name": names["recipe_code"].map(RECIPE_CODES)}
    own["data"], _, data_notes = _resolve("data", data_sources, text=True)
    checkpoint = names["checkpoint"]
    main = checkpoint.eq("main")
    own["seed"] = names["seed_index"].mask(main, 0.0).astype("Int64")
    own["seed_token"] = checkpoint.str.extract(r"^\d+-(?P<n>\d+)$")["n"].mask(main, "main")
    final, final_notes = _final_step(own["params"], own["data"], final_steps)
    own["base_step"] = names["step"].astype("Int64").where(~main, final)

    unknown_name_code = names["recipe_code"].notna() & names["recipe_code"].map(RECIPE_CODES).isna()
    unknown_path_slug = model["slug"].notna() & model["slug"].map(RECIPE_CODES).isna()
    fatal = _join(
        [
            _note(names["family"].isna(), _NO_BLOCK),
            _note(
                own["data"].isna() & unknown_name_code,
                "unknown recipe code '",
                names["recipe_code"],
                "' in run name; add it to vocabulary.RECIPE_CODES",
            ),
            _note(
                checkpoint.notna() & ~main & names["step"].isna(),
                "unrecognised checkpoint '",
                checkpoint,
                "' in run name; expected main or <step>-<seed index>",
            ),
            _note(
                names["seed_index"].gt(4).fillna(False),
                "seed index ",
                own["seed_token"],
                " in run name is outside 0-4 (docs/sources.md §2.4)",
            ),
        ]
    )
    unmatched_size = model_size.notna() & sizes.isna()
    notes = _join(
        [
            params_notes,
            data_notes,
            _note(own["data"].notna() & unknown_name_code, "data: unknown recipe code '", names["recipe_code"], "'"),
            _note(unknown_path_slug, "data: unknown recipe slug '", model["slug"], "' in model path"),
            _note(unmatched_size, "params: model_size ", model_size.astype("str"), " matches no DataDecide size"),
            final_notes.where(main, ""),
        ]
    )
    return fatal, notes


def _final_step(params: pd.Series, data: pd.Series, final_steps: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Return final checkpoint step per run's ``(params, data)``, and notes where table and vocabulary differ."""
    keys = pd.DataFrame({"params": params, "data": data})
    table_step = keys.merge(final_steps, on=["params", "data"], how="left")["table_step"].set_axis(keys.index)
    table_step = table_step.astype("Int64")
    vocabulary_step = params.map(SIZES["final_step"]).astype("Int64")
    # a table ending before the final step is truncated: it cannot hold the final checkpoint
    step = table_step.where((table_step >= vocabulary_step).fillna(False), vocabulary_step)
    differ = table_step.notna() & vocabulary_step.notna() & (table_step != vocabulary_step)
    note = _note(
        differ,
        "base_step: last evaluated step of seed 0 in the pretraining table ",
        table_step.astype("str"),
        ", vocabulary final step ",
        vocabulary_step.astype("str"),
    )
    return step, note


# ---------------------------------------------------------------------------------------------------- parents
def _parent(
    own: pd.DataFrame, frame: pd.DataFrame, model: pd.DataFrame, names: pd.DataFrame
) -> tuple[pd.Series, pd.Series]:
    """Fill the parent columns: the run named by the last component of an output-folder model path (§6.6)."""
    candidate = model["last_component"].where(model["kind"].eq("output_dir"))
    candidate = candidate.where(candidate != own["run_name"])  # a run resuming from its own folder has no parent
    latest = frame.sort_values("created_at", kind="stable", na_position="first")
    latest = latest.drop_duplicates("run_name", keep="last")
    found = candidate.map(latest.set_index("run_name")["run_id"])
    own["parent_run_id"] = found.fillna(candidate).astype("str")
    own["parent_in_store"] = found.notna().to_numpy(bool)
    dpo_without_parent = own["run_type"].eq("dpo") & ~own["parent_in_store"]
    own["parent_tokens_estimate"] = names["parent_budget_tokens"].where(dpo_without_parent).astype("float64")
    namesakes = candidate.map(frame["run_name"].value_counts()).fillna(0)
    notes = _join(
        [
            _note(candidate.notna() & found.isna(), _PARENT_MISSING),
            _note(dpo_without_parent & model["kind"].eq("missing"), "parent unknown (no model path); base from name"),
        ]
    )
    conflicts = _note(
        namesakes > 1, "parent: ", namesakes.astype("int64").astype("str"), " runs share the name; the latest is used"
    )
    return notes, conflicts


def _ancestry(own: pd.DataFrame) -> pd.DataFrame:
    """Chains of parents in the store: ``(lineage, run_id, up, depth)`` with the lineage's own run at ``up`` 0.

    Walks one generation per iteration for all runs at once (chains are 1-2 runs long); a chain that loops back
    onto a run it already holds stops there and its lineage is flagged in ``looped``.
    """
    parent = own.loc[own["parent_in_store"], ["run_id", "parent_run_id"]].set_index("run_id")["parent_run_id"]
    generation = pd.DataFrame({"lineage": own["run_id"], "run_id": own["run_id"], "up": 0})
    generations, looped = [generation], set()
    while not generation.empty:
        ancestors = generation.assign(run_id=generation["run_id"].map(parent), up=generation["up"] + 1).dropna()
        seen = pd.concat(generations).set_index(["lineage", "run_id"]).index
        repeated = pd.MultiIndex.from_frame(ancestors[["lineage", "run_id"]]).isin(seen)
        looped.update(ancestors.loc[repeated, "lineage"])
        generation = ancestors[~repeated]
        generations.append(generation)
    chains = pd.concat(generations, ignore_index=True)
    chains["depth"] = chains.groupby("lineage")["up"].transform("max") - chains["up"]
    chains["looped"] = chains["lineage"].isin(looped)
    return chains.astype({"up": "int64", "depth": "int64"})


def _inherit(own: pd.DataFrame, chains: pd.DataFrame) -> pd.DataFrame:
    """Give every run with a parent in the store the base of its chain's root; decide ``link_status``."""
    roots = chains.loc[chains["depth"].eq(0), ["lineage", "run_id", "looped"]].set_index("lineage")
    root = own["run_id"].map(roots["run_id"])
    has_parent = root.ne(own["run_id"])
    links = own.copy()
    fatal, conflicts = own["_fatal"], own["conflicts"]
    if has_parent.any():
        by_id = own.set_index("run_id")
        inherited = by_id.loc[root[has_parent], _BASE].set_axis(own.index[has_parent])
        parent_text = _base_text(inherited).reindex(own.index)
        own_text = _base_text(own)
        differs = has_parent & own_text.ne(parent_text) & own["_fatal"].eq("")
        base_note = _note(differs, "base: parent chain gives ", parent_text, ", the run's own sources ", own_text)
        conflicts = _join([conflicts, base_note])
        links.loc[has_parent, _BASE] = inherited
        unlinked_root = has_parent & root.map(by_id["_fatal"]).ne("")
        fatal = fatal.mask(has_parent, _note(unlinked_root, "parent chain root '", root, "' is unlinked"))
        looped = own["run_id"].map(roots["looped"])
        fatal = _join([fatal, _note(looped, "parent chain loops back onto itself")])
    links["link_status"] = np.where(fatal.eq(""), "linked", "unlinked")
    # a half-parsed base would look usable to code that forgets to filter on link_status
    links.loc[fatal.ne(""), ["params", "data", "seed", "base_step"]] = None
    links["link_reason"] = _join([fatal, own["_notes"]])
    links["conflicts"] = conflicts
    return links.astype({"seed": "Int64", "base_step": "Int64"})


def _base_text(frame: pd.DataFrame) -> pd.Series:
    parts = [frame[column].astype("str").fillna("?") for column in ("params", "data", "seed", "base_step")]
    return parts[0] + "/" + parts[1] + "/seed " + parts[2] + "/step " + parts[3]


# ---------------------------------------------------------------------------------------------------- report
def _report(links: pd.DataFrame) -> pd.DataFrame:
    flagged = links.assign(with_conflicts=links["conflicts"].ne(""))
    counts = flagged.groupby(["link_status", "link_reason"]).agg(
        runs=("run_id", "size"), with_conflicts=("with_conflicts", "sum")
    )
    return counts.reset_index().sort_values(["link_status", "runs"], ascending=[True, False], ignore_index=True)


# ---------------------------------------------------------------------------------------------------- helpers
def _note(mask: pd.Series, *pieces: str | pd.Series) -> pd.Series:
    """Concatenated ``pieces`` where ``mask`` holds, else ``""`` (missing pieces print as ``?``)."""
    flags = mask.to_numpy(dtype=bool, na_value=False)
    if not flags.any():  # the usual case: skip building strings nobody reads
        return pd.Series("", index=mask.index, dtype="str")
    text = np.full(len(flags), "", dtype=object)
    for piece in pieces:
        text = text + (
            piece.astype("str").to_numpy(dtype=object, na_value="?") if isinstance(piece, pd.Series) else piece
        )
    return pd.Series(np.where(flags, text, ""), index=mask.index, dtype="str")


def _join(parts: list[pd.Series], sep: str = "; ") -> pd.Series:
    """Row-wise join of the non-empty strings of ``parts``."""
    index = parts[0].index
    texts = [part.to_numpy(dtype=object, na_value="") for part in parts]
    texts = [text for text in texts if (text != "").any()]
    if not texts:
        return pd.Series("", index=index, dtype="str")
    joined = texts[0]
    for text in texts[1:]:
        joined = np.where((joined != "") & (text != ""), joined + sep + text, joined + text)
    return pd.Series(joined, index=index, dtype="str")


def _equal(links: pd.DataFrame, row: pd.Series, columns: list[str]) -> np.ndarray:
    """Rows of ``links`` equal to ``row`` on every column, missing equal to missing."""
    equal = np.ones(len(links), dtype=bool)
    for column in columns:
        values, target = links[column], row[column]
        equal &= values.isna().to_numpy() if pd.isna(target) else values.eq(target).fillna(False).to_numpy(bool)
    return equal


def _python(value):
    """Plain Python scalar of a numpy/pandas scalar (for dicts handed to users)."""
    return value.item() if hasattr(value, "item") else value
