"""Deterministic, realistic synthetic sources with known ground truth: DataDecide files and a W&B store.

:func:`generate` writes both halves into one folder — the DataDecide pretraining files
(:mod:`ddxr.synthetic.pretraining`) and the W&B post-training runs and history (:mod:`ddxr.synthetic.posttraining`)
in a store — and returns the truth a correct build must recover. ``python -m ddxr.synthetic OUT_DIR`` does the same
from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ddxr.errors import DdxrError, InvalidArgumentError
from ddxr.sources.wandb_store import WandBStore
from ddxr.synthetic.layout_a import write_layout_a
from ddxr.synthetic.posttraining import DPO_TOKENS_PER_PAIR, MESS_KINDS, generate_posttraining
from ddxr.synthetic.pretraining import write_datadecide

__all__ = [
    "DEMO_DATA",
    "DEMO_PARAMS",
    "DPO_TOKENS_PER_PAIR",
    "MESS_KINDS",
    "SyntheticTruth",
    "generate",
    "generate_posttraining",
    "write_layout_a",
]

#: Sizes of the demo sample: small to 1B, enough to compare recipe rankings across scale.
DEMO_PARAMS = ("4M", "20M", "150M", "530M", "1B")
#: Recipes of the demo sample.
DEMO_DATA = ("Dolma1.7", "DCLM-Baseline", "C4", "FineWeb-Edu", "Falcon+CC", "Dolma1.7 (no code)")


@dataclass(frozen=True)
class SyntheticTruth:
    """Where :func:`generate` wrote the sources, and what a correct build must find in them.

    Attributes
    ----------
    pretraining_dir : Path
        The ``datadecide`` folder of DataDecide files.
    store_url : str
        URL of the W&B store holding the runs (left out of ``repr``: it may hold a password).
    runs : pandas.DataFrame
        The truth per post-training run (columns :data:`ddxr.synthetic.posttraining.TRUTH_COLUMNS`).
    """

    pretraining_dir: Path
    store_url: str
    runs: pd.DataFrame

    def __repr__(self) -> str:
        """Show the folder and run count, never the store URL (it may hold a password)."""
        return f"SyntheticTruth(pretraining_dir={str(self.pretraining_dir)!r}, runs={len(self.runs)})"


def generate(
    out_dir: str | Path,
    *,
    store_url: str | None = None,
    params: Sequence[str] = DEMO_PARAMS,
    data: Sequence[str] = DEMO_DATA,
    n_runs: int = 60,
    random_seed: int = 0,
    messy: bool = True,
    datadecide_layouts: Sequence[str] = ("raw",),
    store_layout: str = "B",
    layout_a_attributes: bool = False,
) -> SyntheticTruth:
    """Write synthetic DataDecide files and a W&B store of post-training runs; return the ground truth.

    Parameters
    ----------
    out_dir : str or Path
        Folder for ``datadecide/`` (and the default SQLite store ``wandb.db``); created if missing.
    store_url : str, optional
        Where to write the W&B runs (``postgresql://…`` or ``sqlite:///…``). Default ``sqlite:///<out_dir>/wandb.db``.
        The store must hold no runs and no history yet.
    params, data : sequence of str
        Sizes and recipes of both the pretraining files and the runs' bases, so every base the runs name exists.
    n_runs : int
        Post-training runs (SFT and DPO).
    random_seed : int
        Seed of both generators: the same arguments write the same data.
    messy : bool
        Include one run per data-quality trap (:data:`MESS_KINDS`).
    datadecide_layouts : sequence of {"raw", "full_eval"}
        DataDecide files to write: the raw HF exports and/or datadec's ``full_eval.parquet``.
    store_layout : {"B", "A"}, default "B"
        W&B table layout: ``"B"`` (separate JSON columns, what ``WandBStore`` writes) or ``"A"``, the older
        downloader's merged ``raw_data`` (:func:`~ddxr.synthetic.layout_a.write_layout_a`). The same arguments
        write the same runs in either layout.
    layout_a_attributes : bool, default False
        Layout A only: also keep the runs' launch metadata and W&B attributes in columns next to ``raw_data``.

    Returns
    -------
    SyntheticTruth

    Raises
    ------
    DdxrError
        When the store already holds runs or history, or the arguments are invalid (see
        :func:`~ddxr.synthetic.posttraining.generate_posttraining`).
    SourceError
        When the store cannot be reached or holds tables of another layout.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     truth = generate(folder, params=("4M", "150M"), data=("Dolma1.7", "C4"), n_runs=20)
    >>> truth.runs["run_type"].value_counts().to_dict()
    {'supervised_ft': 17, 'dpo': 3}
    """
    if store_layout not in ("A", "B"):
        raise InvalidArgumentError(f"store_layout must be 'A' or 'B', got {store_layout!r}")
    folder = Path(out_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    url = store_url or f"sqlite:///{folder / 'wandb.db'}"
    runs, history, truth = generate_posttraining(n_runs, params=params, data=data, random_seed=random_seed, messy=messy)
    if store_layout == "A":
        write_layout_a(url, runs, history, keep_attributes=layout_a_attributes)
    else:
        store = WandBStore(url)
        try:
            _require_empty(store)
            store.store_runs(runs)
            store.store_history(history)
        finally:
            store.close()
    pretraining_dir = write_datadecide(
        folder, params=params, data=data, random_seed=random_seed, layouts=datadecide_layouts
    )
    return SyntheticTruth(pretraining_dir, url, truth)


def _require_empty(store: WandBStore) -> None:
    """Create the store's tables if missing; refuse a store that already holds runs or history."""
    store.create_tables()
    stats = store.stats()
    rows = stats["wandb_runs"]["rows"], (stats["wandb_history"] or {}).get("rows", 0)
    if any(rows):
        raise DdxrError(
            f"the W&B store at {store.url_redacted} is not empty: expected no runs and no history, found {rows[0]} "
            f"runs and {rows[1]} history rows — pass a new store URL (or a new output folder) to generate synthetic "
            "data"
        )
