"""DataDecideNext: the single entry point (names from the original DataDecide component design).

It reads both sources, hands them to the three managers, assembles the Dataset and caches it under a fingerprint of
the sources and build options, so a second call opens the shared file instead of rebuilding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import xarray as xr

from ddxr._version import __version__
from ddxr.assemble import assemble_curves, assemble_runs, lineage_created
from ddxr.cache import SCHEMA_VERSION, cached_build, fingerprint, open_dataset, open_runs
from ddxr.errors import SelectionError
from ddxr.frames import to_frame
from ddxr.index import select
from ddxr.managers.evaluations import EvaluationManager
from ddxr.managers.progression import HISTORY_KEYS, PretrainingSeeds, TrainingProgressionManager
from ddxr.managers.relationships import JSON_COLUMNS as LINK_JSON_COLUMNS
from ddxr.managers.relationships import RunRelationshipManager, last_evaluated_steps
from ddxr.progress import progress_bar
from ddxr.refresh import BUILD_CODE, Basis, StoreState, frame_digest, refresh_file
from ddxr.report import build_report, pretraining_report, runs_table
from ddxr.sources.datadecide import PretrainingEvals, PretrainingSource
from ddxr.sources.wandb_store import WandBStore
from ddxr.stage_cache import HistoryRead, MetricsStage, StageCache
from ddxr.vocabulary import DPO_TOKENS_PER_PAIR

_KEYS = ["params", "data", "seed", "step"]


class DataDecideNext:
    """DataDecide pretraining and W&B post-training runs as one Dataset.

    Parameters
    ----------
    data_dir : str, path or datadec.DataDecide
        DataDecide evaluations: a datadec data folder (``datadecide/full_eval.parquet`` or the raw Hugging Face
        exports), a parquet file, or an object with a ``full_eval`` DataFrame.
    db_connection : str
        URL of the W&B store, e.g. ``postgresql://localhost/wandb`` or ``sqlite:///runs.db``.
    cache_dir : str or path, default "cache"
        Where built datasets are kept, one file per fingerprint of sources and options.
    metrics : {"core", "all"} or list of str, default "core"
        Metric variables to include.
    pretraining_seeds : {"base", "mean"}, default "base"
        Pretraining prefix of post-training lineages: the base's own seed or the mean over seeds.
    dpo_tokens_per_pair : float, default 779
        Tokens per preference pair for the DPO token estimate.
    progress : bool, default True
        Show progress bars while building.

    Examples
    --------
    >>> dd = DataDecideNext("./data", "postgresql://localhost/wandb")  # doctest: +SKIP
    >>> ds = dd.dataset()  # doctest: +SKIP
    >>> ds.sel(params="150M", learning_rate=[1e-5, 1e-4])  # doctest: +SKIP
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | object,
        db_connection: str,
        cache_dir: str | os.PathLike = "cache",
        *,
        metrics: str | Sequence[str] = "core",
        pretraining_seeds: PretrainingSeeds = "base",
        dpo_tokens_per_pair: float = DPO_TOKENS_PER_PAIR,
        progress: bool = True,
    ) -> None:
        self.pretraining_source = PretrainingSource(data_dir)
        self.wandb = WandBStore(db_connection)
        self.cache_dir = Path(cache_dir)
        self.metrics = metrics if isinstance(metrics, str) else list(metrics)
        self.pretraining_seeds = pretraining_seeds
        self.dpo_tokens_per_pair = float(dpo_tokens_per_pair)
        self.progress = progress
        self.evaluations = EvaluationManager(metrics)
        self.stage_cache = StageCache(self.cache_dir / "stages")
        self._read_for: Path | None = None  # the cache file the managers below were read for
        self.store_state: StoreState | None = None  # the store as the last fingerprint saw it
        #: ``(previous file, runs read from the store)`` when the last build was an incremental refresh, else None
        self.refreshed_from: tuple[Path, list[str]] | None = None
        #: how the last build was made: "refreshed <file>", or why it was a full build
        self.refresh_note = ""
        #: runs whose history the last full build read from the store; the others' came from the stage cache
        self.history_read_from_store: list[str] = []

    # ------------------------------------------------------------------ sources and managers
    @cached_property
    def pretraining(self) -> PretrainingEvals:
        """The DataDecide evaluations as read (table and counted skips), parsed once per version of the files."""
        return self.stage_cache.datadecide(self.pretraining_source)

    @cached_property
    def _store_runs(self) -> pd.DataFrame:
        return self.wandb.read_runs(json_columns=LINK_JSON_COLUMNS)  # summaries: read as entries, in SQL

    @cached_property
    def _evaluation_entries(self) -> pd.DataFrame:
        return self.wandb.read_run_entries("summary", "oe_eval_metrics/")

    @cached_property
    def relationships(self) -> RunRelationshipManager:
        """Links of every post-training run to its base checkpoint and parent."""
        return RunRelationshipManager(self._store_runs, final_steps=self.final_steps())

    @cached_property
    def _posttraining_evaluations(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.evaluations.posttraining_evaluations(self._evaluation_entries)

    @cached_property
    def _pretraining_stage(self) -> MetricsStage:
        """The standardized pretraining metrics, and the DataDecide report, source and final steps (a stage cache)."""
        return self.stage_cache.metrics(self.pretraining_source, self.metrics, self._standardized)

    @property
    def _pretraining_metrics(self) -> pd.DataFrame:
        return self._pretraining_stage.table

    def _standardized(self) -> tuple[pd.DataFrame, dict]:
        evals = self.pretraining
        table = evals.table
        standardized = self.evaluations.pretraining_evaluations(table)
        schedule = [name for name in ("tokens", "compute", "lr_at_step") if name in table]
        extra = [name for name in schedule if name not in standardized]
        info = {
            "report": pretraining_report(evals),
            "source": evals.source,
            "final_steps": json.loads(last_evaluated_steps(table).to_json(orient="split", index=False)),
        }
        return standardized.merge(table[_KEYS + extra], on=_KEYS, how="left", validate="one_to_one"), info

    def final_steps(self) -> pd.DataFrame:
        """Return the last evaluated step per base (``RunRelationshipManager.final_steps``), from the stage cache."""
        stored = self._pretraining_stage.info["final_steps"]
        steps = pd.DataFrame(stored["data"], columns=stored["columns"])
        return steps.astype({"table_step": "int64", "vocabulary_step": "Int64"})

    @cached_property
    def _history(self) -> HistoryRead:
        """Read the history of the linked runs.

        Runs whose history is unchanged since the last build come from the stage cache, the others from the store;
        values that were neither numbers nor NaN are counted for the report.
        """
        links = self.relationships.links
        linked = links.loc[links["link_status"] == "linked", "run_id"].tolist()

        def bar(chunks):
            return progress_bar(chunks, desc="history chunks", unit="chunk", enabled=self.progress, nested=True)

        snapshot = self._state().snapshot  # of the rows the fingerprint saw, counted before this read
        return self.stage_cache.history(self.wandb, linked, HISTORY_KEYS, snapshot, chunks=bar)

    @cached_property
    def training(self) -> TrainingProgressionManager:
        """Curves of both phases, cleaned and aligned on cumulative tokens."""
        evaluated = set(self._posttraining_evaluations[0].index)
        return TrainingProgressionManager(
            self._pretraining_metrics,
            self._history.frame,
            self.relationships,
            evaluated_runs=evaluated,
            pretraining_seeds=self.pretraining_seeds,
            dpo_tokens_per_pair=self.dpo_tokens_per_pair,
        )

    # ------------------------------------------------------------------ build and cache
    def options(self) -> dict:
        """Build options that change the Dataset (part of the fingerprint)."""
        return {
            "metrics": self.metrics,
            "pretraining_seeds": self.pretraining_seeds,
            "dpo_tokens_per_pair": self.dpo_tokens_per_pair,
        }

    def sources(self) -> dict:
        """Where the data came from, with any password redacted."""
        return {"datadecide": self._pretraining_stage.info["source"], "wandb_store": self.wandb.url_redacted}

    def fingerprint(self) -> str:
        """Digest of the DataDecide files, each run's state, the history's totals, the options and schema version.

        The store's state is kept (:attr:`store_state`) for the build or refresh that follows.
        """
        states, totals = self.wandb.content_state()
        self.store_state = StoreState(self.wandb, states, totals)
        return fingerprint(
            {
                "datadecide": self.pretraining_source.file_stats(),
                "wandb_store": {
                    "url": self.wandb.url_redacted,
                    "layout": self.wandb.layout,
                    "runs": frame_digest(states),
                    "history": list(totals),
                },
                "options": self.options(),
                "schema_version": SCHEMA_VERSION,
            }
        )

    def basis_key(self) -> str:
        """Return what a previous file must share with the current sources to be refreshed (:mod:`ddxr.refresh`).

        The DataDecide files, the store (its URL and layout), the options, the schema and ddxr's own build code.
        """
        return fingerprint(
            {
                "datadecide": self.pretraining_source.file_stats(),
                "store": [self.wandb.url_redacted, self.wandb.layout],
                "options": self.options(),
                "code": [__version__, BUILD_CODE],
            }
        )

    def cache_path(self) -> Path:
        """File the dataset of the current sources is cached in."""
        return self.cache_dir / f"ddxr-{self.fingerprint()}.nc"

    def build_stages(self) -> list[tuple[str, Callable[[], object]]]:
        """Return the steps of :meth:`build` in order, as ``(label, step)``; the last step returns ``(curves, runs)``.

        Each step computes what the next ones use (and keeps it), so running them one by one (a benchmark timing
        each) does exactly what :meth:`build` does. The first fingerprints the sources: it names the cache file and
        keeps the store's state, which the build report and a later refresh compare with.
        """
        return [("fingerprint sources", self._current_cache_path), *self._reading_stages()]

    def _reading_stages(self) -> list[tuple[str, Callable[[], object]]]:
        return [
            ("read DataDecide", lambda: self._pretraining_metrics),
            ("read store runs", lambda: (self._store_runs, self._evaluation_entries)),
            ("link", self._link),
            ("read store history", lambda: self._history),
            ("assemble", self._assemble),
        ]

    def build(self) -> tuple[xr.Dataset, xr.Dataset]:
        """Build the curves and runs Datasets from the sources, bypassing the cache file.

        The stage caches are still used: they are keyed by the sources they hold (see :mod:`ddxr.stage_cache`). The
        curves' metric variables are lazy (gathered from the metric tables when read, see
        :func:`ddxr.assemble.assemble_curves`). Sources and managers a later stage no longer needs are released as
        the build goes (the raw run rows once linked; the history, :attr:`training` and :attr:`pretraining` before the
        curves are made) and read or built again if used afterwards.
        """
        return self._run_stages(self.build_stages())

    def _run_stages(self, stages: list[tuple[str, Callable[[], object]]]) -> tuple[xr.Dataset, xr.Dataset]:
        with progress_bar(total=len(stages), desc="ddxr build", unit="stage", enabled=self.progress) as bar:
            for label, stage in stages:
                bar.set_postfix_str(label)
                result = stage()
                bar.update()
        return result

    def _link(self) -> tuple[RunRelationshipManager, tuple[pd.DataFrame, pd.DataFrame]]:
        linked = self.relationships, self._posttraining_evaluations
        self._forget("_store_runs", "_evaluation_entries")  # the raw run rows, now links and evaluations
        return linked

    def _assemble(self) -> tuple[xr.Dataset, xr.Dataset]:
        post_metrics, issues = self._posttraining_evaluations
        available = [*self._pretraining_metrics.columns, *post_metrics.columns, "train_loss", "lr_at_step"]
        points, metric_table = self.training.points(), self.training.metric_table
        report = self.build_report()
        attrs = self._provenance(report)
        runs_table = self.runs_table()
        runs = assemble_runs(runs_table)
        variables = self.evaluations.variables(available)
        self._basis = Basis.of_build(self, runs_table, issues, list(post_metrics.index), available, variables).encoded()
        # the history as read, the progression manager (cleaned history, point table) and the raw DataDecide table
        # are each as large as the curves' coordinates: let go before the curves are made (the points live on until
        # then); read or rebuilt if used again
        self.history_read_from_store = self._history.read_from_store
        self._forget("_history", "training", "pretraining")
        # what the sources' Arrow tables left in pyarrow's pool would otherwise stay mapped through the write
        pa.default_memory_pool().release_unused()
        curves = assemble_curves(
            points,
            metric_table,
            post_metrics,
            variables,
            self.evaluations.variable_attrs,
            attrs,
            lineage_created(runs_table),
        )
        return curves, runs

    def runs_table(self) -> pd.DataFrame:
        """One row per W&B run: links, hyperparameters, state and what the build did with it."""
        return runs_table(self.relationships.links, self.training)

    def build_report(self) -> dict:
        """Return what the build read, linked, repaired, estimated and skipped, with reasons (JSON-able)."""
        training = self.training  # reads the history, which counts its unreadable values
        _, eval_issues = self._posttraining_evaluations
        links = self.relationships.links
        coercions, orphans = self._history.coercions, self.orphans(links)
        pretraining = self._pretraining_stage.info["report"]
        return build_report(pretraining, links, eval_issues, coercions, orphans, training.report)

    def orphans(self, links: pd.DataFrame) -> dict[str, int]:
        """History rows no run row claims, per run id (from the store's history snapshot): in no lineage."""
        snapshot = self._state().snapshot
        orphaned = snapshot[~snapshot["run_id"].isin(links["run_id"])]
        return dict(zip(orphaned["run_id"], orphaned["rows"].astype(int), strict=True))

    def _state(self) -> StoreState:
        if getattr(self, "store_state", None) is None:
            self.fingerprint()
        return self.store_state

    def _provenance(self, report: dict) -> dict:
        return {
            "ddxr_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "sources": json.dumps(self.sources()),
            "fingerprint": self._read_for.stem.removeprefix("ddxr-"),
            "build_options": json.dumps(self.options()),
            "build_report": json.dumps(report),
        }

    def _current_cache_path(self) -> Path:
        """Cache file of the sources as they are now; managers read from older sources are dropped first."""
        path = self.cache_path()
        if self._read_for not in (None, path):
            self._forget(
                "pretraining",
                "_store_runs",
                "_evaluation_entries",
                "_history",
                "relationships",
                "_posttraining_evaluations",
                "_pretraining_stage",
                "training",
            )
        self._read_for = path
        return path

    def _forget(self, *names: str) -> None:
        """Drop cached sources or managers; the next use of each reads or builds it again."""
        for name in names:
            self.__dict__.pop(name, None)

    def dataset(self, refresh: bool = False) -> xr.Dataset:
        """Return the curves Dataset: opened from the cache when the sources are unchanged, else built and cached.

        When the cache holds a file of the same DataDecide files, options and store from before the store gained
        or changed runs, that file is refreshed (only what changed is read and laid out; see :mod:`ddxr.refresh`)
        instead of a full build; :attr:`refreshed_from` then names it and the runs read.

        Parameters
        ----------
        refresh : bool, default False
            Rebuild in full even if a fresh cache file exists.
        """
        return open_dataset(self._cached(refresh))

    def runs(self, refresh: bool = False) -> xr.Dataset:
        """Return the runs Dataset (dim ``run``), from the same cache file as :meth:`dataset`."""
        return open_runs(self._cached(refresh))

    def _cached(self, refresh: bool) -> Path:
        path = self._current_cache_path()

        def build() -> tuple[xr.Dataset, xr.Dataset, dict[str, bytes]]:
            self.refreshed_from = None
            # the sources were just fingerprinted: fingerprinting again would cost another scan of the history
            return (*self._run_stages(self._reading_stages()), self._basis)

        if refresh:
            self.refresh_note = "full build asked for (refresh=True)"

        def update(target: Path) -> bool:
            return refresh_file(self, target, path, self._provenance)

        return cached_build(path, build, refresh=refresh, update=update)

    # ------------------------------------------------------------------ research interface
    def get_scaling_curves(self, include_posttraining: bool = True) -> pd.DataFrame:
        """Long frame of every lineage over cumulative tokens; pretraining-only unless ``include_posttraining``."""
        ds = self.dataset()
        if not include_posttraining:
            ds = select(ds, run_type="pretraining", learning_rate=0.0)
        return to_frame(ds)

    def get_sweep_analysis(
        self,
        base_params: str,
        base_data: str,
        posttraining_method: str = "supervised_ft",
        learning_rates: Sequence[float] | None = None,
    ) -> xr.Dataset:
        """Lineages of one base (params, data) whose leaf is a ``posttraining_method`` run, one per learning rate.

        Returns the selected points; ``np.unique(sweep["lineage"])`` are the leaf run ids for
        :meth:`get_continuous_curves`.
        """
        labels: dict = {"params": base_params, "data": base_data}
        if learning_rates is not None:
            labels["learning_rate"] = list(learning_rates)
        ds = select(self.dataset(), **labels)
        leaves = np.unique(ds["run_id"].to_numpy()[ds["run_type"].to_numpy() == posttraining_method])
        if leaves.size == 0:
            raise SelectionError(
                f"no {posttraining_method} runs on {base_params}/{base_data} with learning rates {learning_rates}; "
                "see `ddxr info` for the runs and learning rates available"
            )
        return select(ds, lineage=list(leaves))

    def get_continuous_curves(self, run_ids: Sequence[str], metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """Long frame of the lineages ending in ``run_ids``: pretraining base, then post-training, one row per point.

        Each lineage is whole (``to_frame(..., prefix="copied")``): ``groupby("lineage")`` gives its continuous curve.
        """
        return to_frame(select(self.dataset(), lineage=list(run_ids)), metrics=metrics, prefix="copied")
