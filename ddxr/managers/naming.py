"""Parsers of W&B run names, model paths and launch arguments (docs/sources.md §6.1, §6.3, §6.7).

Every parser takes a whole column and returns a frame aligned on its index, built with pandas' vectorized string
methods (``str.extract`` on anchored regexes), so linking costs a handful of regex passes, not a loop over runs.
Values come back raw (recipe codes, size labels, numbers as floats); the relationship manager decides what they mean.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ddxr.vocabulary import SIZES

#: Size labels as one regex alternation, longest first (``150M`` before ``1B`` never matters, but it is safe).
SIZE_PATTERN = "|".join(sorted(SIZES.index, key=len, reverse=True))
#: A decimal or scientific number as the launcher writes it (``5e-07``, ``0.0001``).
NUMBER_PATTERN = r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_END = r"(?=_|$)"  # name tokens end at an underscore or at the end of the name

#: Tokens of one epoch of the whole Tulu-3 SFT mixture, the ``Ft`` budget (docs/sources.md §5.1).
FULL_MIX_TOKENS = 665_127_434
#: Epochs of a ``Ft`` (full mixture) run.
FULL_MIX_EPOCHS = 2

# Name families (docs/sources.md §6.3); the size list anchors the block because slugs contain '-' and '.'.
_DD_BLOCK = rf"(?:^|_)DD-(?P<recipe_code>.+?)-(?P<size>{SIZE_PATTERN})(?:-(?P<step>\d+)-(?P<n>\d+))?{_END}"
_LEGACY_BLOCK = rf"allenai--DataDecide-(?P<recipe_code>.+?)-(?P<size>{SIZE_PATTERN})_(?P<checkpoint>[^_]+)"
_DPO_BLOCK = (
    rf"(?:^|_)dd__(?P<recipe_code>.+?)-(?P<size>{SIZE_PATTERN})__(?P<checkpoint>[^_]+)"
    rf"__(?P<parent_budget>\d+(?:\.\d+)?)Mt(?:_lr=(?P<parent_learning_rate>{NUMBER_PATTERN}))?{_END}"
)
_BUDGET = rf"(?:^|_)(?P<millions>\d+(?:\.\d+)?)M(?:tx(?P<epochs>\d+)|_toks|t){_END}"
_FULL_MIX = rf"(?:^|_)Ft{_END}"
_SHORT_LEARNING_RATE = r"(?:^|_)lr=(?P<value>[^_]+)"
# short spellings of perplexity sets in match names
_PPL_SHORT = {"c4": "c4_en"}
_MATCH = rf"(?:^|_)match_(?P<match_params>{SIZE_PATTERN})(?:_(?P<match_metric>.+?))?_finetune{_END}"
#: Launcher options a run name may repeat as ``[--]<key>=<value>``.
NAME_OPTIONS = ("learning_rate", "num_train_epochs", "max_train_samples", "reduce_loss")
#: Checkpoint tokens meaning the final checkpoint of the default seed (``Ft`` names carry no token at all).
MAIN_CHECKPOINTS = ("main", "Ft")

_MODEL_PATH = rf"DataDecide-(?P<slug>.+)-(?P<size>{SIZE_PATTERN})(?:/|$)"
_HF_CACHE = r"(?:^|/)models--[^/]+--[^/]+"
_HF_REPO = r"[\w.-]+(?:/[\w.-]+)?"

#: Largest ratio between a W&B ``model_size`` and the true N of the size it is mapped to. Launchers round N to
#: 0.1M (≤ 1.3% off) or write the label (750M for 681M parameters, 10% off); ladder neighbours differ by ≥ 11%.
MODEL_SIZE_TOLERANCE = 1.25


def parse_run_names(names: pd.Series) -> pd.DataFrame:
    """Split run names into the fields of docs/sources.md §6.3.

    Parameters
    ----------
    names : pandas.Series of str
        W&B run names.

    Returns
    -------
    pandas.DataFrame
        Aligned on ``names.index``, with columns

        - ``family``: ``"dd"`` (``_DD-<recipe>-<size>``), ``"legacy"`` (``allenai--DataDecide-…``), ``"dpo"``
          (``dd__<slug>-<size>__<ckpt>__<N>Mt``) or missing when the name has no DataDecide block;
        - ``recipe_code``, ``size``: raw recipe spelling and size label of the block;
        - ``checkpoint``: ``"main"`` for the final checkpoint, ``"<step>-<n>"`` for an explicit one, or the raw
          token when it is neither (the caller reports it); ``step``, ``seed_index`` (float) of an explicit one;
        - ``budget_tokens``, ``epochs``: the run's own finetuning budget (``<N>Mtx<E>``, ``<N>M_toks``, ``<N>Mt``,
          ``Ft``) and epochs (``x<E>``, ``Ft`` → 2); missing on DPO names, whose ``<N>Mt`` is the parent's;
        - ``parent_budget_tokens``, ``parent_learning_rate``: the SFT parent's ``<N>Mt`` × 1e6 and ``lr=`` of a
          DPO name;
        - ``learning_rate``, ``num_train_epochs``, ``max_train_samples``, ``reduce_loss``: ``[--]<key>=<value>``
          options as raw text; the run's own rate also from ``lr=`` outside a DPO block (there it is the parent's);
        - ``match_params``, ``match_metric``: comparison model of ``match_<size>[_<metric>]`` names, the metric
          as a perplexity set (``c4`` → ``c4_en``, default ``pile``).

    Examples
    --------
    >>> row = parse_run_names(pd.Series(["250912-172812_match_150M_c4_finetune_100Mtx1_DD-d17-530M-6250-2"])).iloc[0]
    >>> row["family"], row["recipe_code"], row["size"], row["checkpoint"], row["match_metric"]
    ('dd', 'd17', '530M', '6250-2', 'c4_en')
    >>> float(row["budget_tokens"]), float(row["step"]), float(row["seed_index"])
    (100000000.0, 6250.0, 2.0)
    """
    names = names.astype("str")
    fields = _data_decide_block(names)
    dpo = fields["family"] == "dpo"
    budget = _budget(names)
    fields["budget_tokens"] = budget["budget_tokens"].mask(dpo)
    fields["epochs"] = budget["epochs"].mask(dpo)
    options = _name_options(names)
    short_rate = names.str.extract(_SHORT_LEARNING_RATE)["value"].mask(dpo)
    options["learning_rate"] = options["learning_rate"].fillna(short_rate)
    return pd.concat([fields, options, _match(names)], axis=1)


def _data_decide_block(names: pd.Series) -> pd.DataFrame:
    """Family, recipe, size and checkpoint of the first DataDecide block a name has (DPO, then DD, then legacy)."""
    dpo = names.str.extract(_DPO_BLOCK)
    dd = names.str.extract(_DD_BLOCK)
    legacy = names.str.extract(_LEGACY_BLOCK)
    explicit = dd["step"] + "-" + dd["n"]
    dd_checkpoint = explicit.where(dd["step"].notna(), "main").where(dd["size"].notna())
    choose = [dpo["size"].notna(), dd["size"].notna()]
    fields = pd.DataFrame(index=names.index)
    fields["family"] = _select(choose, ["dpo", "dd"], np.where(legacy["size"].notna(), "legacy", None))
    for column in ("recipe_code", "size"):
        fields[column] = _select(choose, [dpo[column], dd[column]], legacy[column])
    checkpoint = _select(choose, [dpo["checkpoint"], dd_checkpoint], legacy["checkpoint"])
    fields["checkpoint"] = checkpoint.where(~checkpoint.isin(MAIN_CHECKPOINTS), "main")
    explicit_parts = fields["checkpoint"].str.extract(r"^(?P<step>\d+)-(?P<seed_index>\d+)$")
    fields["step"] = pd.to_numeric(explicit_parts["step"])
    fields["seed_index"] = pd.to_numeric(explicit_parts["seed_index"])
    fields["parent_budget_tokens"] = pd.to_numeric(dpo["parent_budget"]) * 1e6
    fields["parent_learning_rate"] = pd.to_numeric(dpo["parent_learning_rate"])
    return fields


def _budget(names: pd.Series) -> pd.DataFrame:
    """Finetuning tokens and epochs a name announces: ``<N>Mtx<E>`` = N × 1e6 × E tokens, ``Ft`` the whole mix."""
    parts = names.str.extract(_BUDGET)
    epochs = pd.to_numeric(parts["epochs"])
    tokens = pd.to_numeric(parts["millions"]) * 1e6 * epochs.fillna(1.0)
    full_mix = names.str.contains(_FULL_MIX)
    return pd.DataFrame(
        {
            "budget_tokens": tokens.mask(full_mix, float(FULL_MIX_TOKENS * FULL_MIX_EPOCHS)),
            "epochs": epochs.mask(full_mix, float(FULL_MIX_EPOCHS)),
        }
    )


def _name_options(names: pd.Series) -> pd.DataFrame:
    """``[--]<key>=<value>`` tokens of the launcher options a name repeats, as raw text."""
    return pd.DataFrame(
        {key: names.str.extract(rf"(?:^|_)(?:--)?{key}=(?P<value>[^_]+)")["value"] for key in NAME_OPTIONS}
    )


def _match(names: pd.Series) -> pd.DataFrame:
    """Comparison model of ``match_<size>[_<metric>]_finetune`` names, the metric spelled as a perplexity set."""
    parts = names.str.extract(_MATCH)
    metric = parts["match_metric"].fillna("pile").replace(_PPL_SHORT)
    return parts.assign(match_metric=metric.where(parts["match_params"].notna()))


def parse_model_paths(paths: pd.Series) -> pd.DataFrame:
    """Kind, DataDecide slug and size, and last component of ``model_name_or_path`` values (docs/sources.md §6.1).

    Parameters
    ----------
    paths : pandas.Series of str
        Model paths; missing or empty values are ``"missing"``.

    Returns
    -------
    pandas.DataFrame
        ``kind`` (``"hf_cache"``, ``"hf_repo"``, ``"output_dir"`` or ``"missing"``), ``slug`` and ``size`` of a
        DataDecide model (Hugging Face forms only), ``last_component`` (trailing ``/`` stripped): an output
        folder's last component is the run name of the run that wrote it.

    Examples
    --------
    >>> paths = pd.Series(["allenai/DataDecide-dclm-baseline-150M", "/models/exp/model/run_a/", None])
    >>> parse_model_paths(paths)[["kind", "slug", "size", "last_component"]].to_numpy().tolist()
    [['hf_repo', 'dclm-baseline', '150M', 'DataDecide-dclm-baseline-150M'], ['output_dir', nan, nan, 'run_a'], \
['missing', nan, nan, nan]]
    """
    paths = paths.astype("str").str.strip()
    paths = paths.mask(paths == "")
    in_cache = paths.str.contains(_HF_CACHE, na=False)
    repo_id = paths.str.fullmatch(_HF_REPO, na=False)
    kind = _select([paths.isna(), in_cache, repo_id], ["missing", "hf_cache", "hf_repo"], "output_dir")
    model = paths.where(in_cache | repo_id).str.extract(_MODEL_PATH)
    last = paths.str.rstrip("/").str.extract(r"(?P<last_component>[^/]+)$")["last_component"]
    return pd.DataFrame({"kind": kind, "slug": model["slug"], "size": model["size"], "last_component": last})


def parse_cli_args(args: pd.Series, keys: tuple[str, ...]) -> pd.DataFrame:
    """Values of command-line options in ``wandb_metadata.args`` token lists.

    Both ``--key value`` and ``--key=value`` forms count, ``-`` and ``_`` are the same in option names (as in
    Hugging Face's argument parser), and the last occurrence with a value wins, as it does for argparse.

    Parameters
    ----------
    args : pandas.Series of list of str
        One token list per run (missing values allowed).
    keys : tuple of str
        Option names to extract, without the leading ``--``.

    Returns
    -------
    pandas.DataFrame
        One column per key, raw text, aligned on ``args.index``; missing where the option is absent.

    Examples
    --------
    >>> args = pd.Series([["--learning_rate", "5e-06", "--seed", "8", "--learning-rate=5e-05"], None])
    >>> parse_cli_args(args, ("learning_rate", "seed")).to_numpy().tolist()
    [['5e-05', '8'], [nan, nan]]
    """
    positional = args.reset_index(drop=True)  # grouping by position stays right whatever the caller's index
    tokens = positional.explode().astype("str")
    following = tokens.groupby(level=0).shift(-1)
    # only options that may name a wanted key are split: the extract runs token by token in Python
    spellings = "|".join(re.escape(key).replace("_", "[-_]") for key in keys)
    is_option = tokens.str.match(rf"--(?:{spellings})(?:=|\n|$)", na=False)
    option = tokens[is_option].str.extract(r"^--(?P<key>[A-Za-z][\w-]*)(?:=(?P<value>.*))?$")
    option["key"] = option["key"].str.replace("-", "_")
    separate = following[is_option].where(~following[is_option].str.startswith("--", na=True))
    option["value"] = option["value"].fillna(separate)
    option = option[option["key"].isin(keys) & option["value"].notna()].rename_axis("row").reset_index()
    option = option.drop_duplicates(["row", "key"], keep="last")
    wide = option.pivot(index="row", columns="key", values="value")
    wide = wide.reindex(index=positional.index, columns=list(keys)).rename_axis(index=None, columns=None)
    return wide.set_axis(args.index)


def nearest_size(model_size: pd.Series) -> pd.Series:
    """Size label whose true parameter count is nearest in log distance to each W&B ``model_size``.

    Numbers given as strings (``"530100000"``) are read as numbers. Values further than
    :data:`MODEL_SIZE_TOLERANCE` from every DataDecide size, non-numbers and missing values map to missing.

    Examples
    --------
    >>> nearest_size(pd.Series([3.7e6, "530100000", 681.3e6, 7e9])).tolist()
    ['4M', '530M', '750M', nan]
    """
    values = pd.to_numeric(model_size, errors="coerce").astype("float64")
    log_values = np.log(values.where(values > 0).to_numpy())
    distance = np.abs(log_values[:, None] - np.log(SIZES["true_params"].to_numpy(np.float64))[None, :])
    nearest = np.argmin(np.nan_to_num(distance, nan=np.inf), axis=1)
    close = distance[np.arange(len(values)), nearest] <= np.log(MODEL_SIZE_TOLERANCE)
    labels = pd.Series(np.asarray(SIZES.index)[nearest], index=model_size.index, dtype="str")
    return labels.where(close)


def _select(conditions: list[pd.Series], choices: list, default) -> pd.Series:
    """``np.select`` for string columns: the first true condition's choice, else the default (missing stays NA)."""
    index = conditions[0].index
    fallback = default if np.ndim(default) == 0 else np.asarray(default, dtype=object)
    result = pd.Series(fallback, index=index, dtype="str")
    for condition, choice in zip(reversed(conditions), reversed(choices), strict=True):
        result = result.mask(condition.to_numpy(bool), choice)
    return result
