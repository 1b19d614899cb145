"""The ``ddxr`` command: demo, build, load, info, export.

Errors a user can act on end the command with one line on stderr and a non-zero exit; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ddxr._version import __version__
from ddxr.cache import open_dataset, open_runs, write_dataset
from ddxr.errors import DdxrError
from ddxr.facade import DataDecideNext
from ddxr.frames import to_frame
from ddxr.index import select
from ddxr.vocabulary import DATA, PARAMS

#: Coordinates whose labels are numbers, and their type, for ``--sel`` parsing.
_NUMERIC_COORDS = {
    "learning_rate": float,
    "cumulative_tokens": float,
    "cumulative_compute": float,
    "seed": int,
    "step": int,
}
_BOOLEAN_COORDS = ("pretraining_phase", "tokens_estimated")
DEMO_SWEEP = {"base_params": "150M", "base_data": "Dolma1.7", "learning_rates": [1e-5, 3e-5, 1e-4, 3e-4]}


class UsageError(DdxrError):
    """A command-line argument cannot be understood."""


def parse_selection(items: Sequence[str]) -> dict:
    """``--sel`` items (``name=value``, ``name=a,b``, ``name=lo:hi``) → labels for :func:`ddxr.index.select`."""
    labels: dict = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name or not text:
            raise UsageError(f"--sel {item!r}: expected NAME=VALUE, NAME=A,B or NAME=LO:HI (e.g. params=150M)")
        labels[name] = _parse_labels(name, text)
    return labels


def _parse_labels(name: str, text: str):
    if ":" in text and name in _NUMERIC_COORDS:
        low, high = text.split(":", 1)
        return slice(_parse_value(name, low) if low else None, _parse_value(name, high) if high else None)
    values = [_parse_value(name, part) for part in text.split(",")]
    return values if len(values) > 1 else values[0]


def _parse_value(name: str, text: str):
    if name in _BOOLEAN_COORDS:
        if text.lower() not in ("true", "false"):
            raise UsageError(f"--sel {name}={text}: expected true or false")
        return text.lower() == "true"
    convert = _NUMERIC_COORDS.get(name)
    if convert is None:
        return text
    try:
        return convert(float(text))
    except ValueError:
        raise UsageError(f"--sel {name}={text}: {name} takes numbers, e.g. {name}=1e-5") from None


# ---------------------------------------------------------------------- commands
def command_demo(args: argparse.Namespace) -> None:
    """Generate the embedded demo sources, build, write the netCDF file and the sweep plot."""
    from ddxr.synthetic import generate

    root = Path(args.cache_dir)
    demo_dir = root / "demo"
    if demo_dir.exists():
        shutil.rmtree(demo_dir)  # regenerated from scratch: the demo is deterministic
    if not args.quiet:
        print(f"generating demo sources in {demo_dir} ...")
    truth = generate(demo_dir)
    dd = DataDecideNext(demo_dir, truth.store_url, cache_dir=demo_dir / "cache", progress=not args.quiet)
    curves, runs = dd.build()
    out = write_dataset(curves, runs, root / "ddxr-demo.nc")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)\n")
    print(summary(curves, runs))
    png = _plot_demo_sweep(curves, root / "ddxr-demo-lr-sweep.png")
    if png is not None:
        print(f"\nwrote {png}")


def _plot_demo_sweep(curves: xr.Dataset, path: Path) -> Path | None:
    try:
        from ddxr.plotting import plot_sweep
    except ImportError:  # pragma: no cover - matplotlib is an optional extra
        print("matplotlib is not installed: skipped the plot (pip install 'ddxr[plot]')", file=sys.stderr)
        return None
    sweep = select(curves, params=DEMO_SWEEP["base_params"], data=DEMO_SWEEP["base_data"], run_type="supervised_ft")
    leaves = list(np.unique(sweep["lineage"].to_numpy()))
    lineages = select(curves, lineage=leaves, learning_rate=DEMO_SWEEP["learning_rates"])
    frame = to_frame(lineages, metrics=["olmes_9_average", "train_loss"], melt=True)
    return plot_sweep(frame, path)


def command_build(args: argparse.Namespace) -> None:
    """Build from real sources, with progress bars and the build report."""
    metrics = args.metrics if args.metrics in ("core", "all") else args.metrics.split(",")
    dd = DataDecideNext(args.datadecide, args.db, cache_dir=args.cache_dir, metrics=metrics, progress=not args.quiet)
    if args.out is None:
        curves = dd.dataset(refresh=args.refresh)
        out = dd.cache_path()
    else:
        curves, runs = dd.build()
        out = write_dataset(curves, runs, args.out)
    print(f"wrote {out}")
    print(_format_report(json.loads(curves.attrs["build_report"])))


def command_load(args: argparse.Namespace) -> None:
    """Load a W&B export (runs and history, parquet or JSONL) into a store, with progress and counted skips."""
    from ddxr.sources.exports import find_export, load_export
    from ddxr.sources.wandb_store import WandBStore

    if (args.runs is None) != (args.history is None) or (args.export is None) == (args.runs is None):
        raise UsageError("give an export folder, or both --runs FILE and --history FILE")
    runs, history = find_export(args.export) if args.export is not None else (args.runs, args.history)
    with WandBStore(args.db) as store:
        report = load_export(store, runs, history, chunk_size=args.chunk_size, progress=not args.quiet)
        print(f"{report.summary()}\ninto {store.url_redacted}")


def command_info(args: argparse.Namespace) -> None:
    """Describe a ddxr file: dims, levels, runs, metrics, provenance."""
    print(summary(open_dataset(args.file), open_runs(args.file), provenance=True))


def command_export(args: argparse.Namespace) -> None:
    """Write the long frame of a selection to parquet or CSV."""
    out = Path(args.output)
    if out.suffix not in (".parquet", ".csv"):
        raise UsageError(f"-o {out}: the output must end in .parquet or .csv")
    ds = select(open_dataset(args.file), **parse_selection(args.sel))
    metrics = args.metrics.split(",") if args.metrics else None
    frame = to_frame(ds, metrics=metrics, melt=args.melt)
    if out.suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    print(f"wrote {len(frame):,} rows x {frame.shape[1]} columns to {out}")


# ---------------------------------------------------------------------- summaries
def summary(curves: xr.Dataset, runs: xr.Dataset, provenance: bool = False) -> str:
    """A human-readable description of a built dataset."""
    point_index = curves.indexes["point"]
    lines = [
        f"points: {curves.sizes['point']:,}   lineages: {point_index.get_level_values('lineage').nunique():,}   "
        f"runs: {runs.sizes['run']:,}   metrics: {len(curves.data_vars)}",
        "levels:",
    ]
    for level in point_index.names:
        values = _sorted_labels(level, pd.unique(point_index.get_level_values(level)))
        shown = ", ".join(_short(v) for v in values[:8]) + (f", … ({len(values)} values)" if len(values) > 8 else "")
        lines.append(f"  {level:<18} {shown}")
    run_types = pd.Series(curves["run_type"].to_numpy()).value_counts()
    lines.append("points by run_type: " + ", ".join(f"{k} {v:,}" for k, v in run_types.items()))
    if runs.sizes["run"]:
        by_type_state = runs[["run_type", "state"]].to_dataframe().value_counts().sort_index()
        lines.append("runs by type and state: " + ", ".join(f"{t}/{s} {n}" for (t, s), n in by_type_state.items()))
    names = list(curves.data_vars)
    lines.append(f"metrics: {', '.join(names[:12])}" + (f", … ({len(names)} in all)" if len(names) > 12 else ""))
    if "build_report" in curves.attrs:
        lines.append("build report:")
        lines.append(_format_report(json.loads(curves.attrs["build_report"])))
    if provenance:
        lines.append("provenance:")
        for key in ("ddxr_version", "schema_version", "created", "fingerprint", "sources", "build_options"):
            if key in curves.attrs:
                lines.append(f"  {key}: {curves.attrs[key]}")
    return "\n".join(lines)


def _sorted_labels(level: str, values: np.ndarray) -> list:
    """Level values in the order a reader expects: sizes numerically, recipes as DataDecide lists them."""
    canonical = {"params": PARAMS, "data": DATA}.get(level)
    if canonical is not None:
        return [label for label in canonical if label in set(values)]
    return sorted(values)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float | np.floating) else str(value)


def _format_report(report: dict, indent: str = "  ") -> str:
    """The build report as indented lines; each count is followed by the run ids behind it, one per line."""
    lines = []
    for key, value in report.items():
        if key.endswith("_run_ids") and key.removesuffix("_run_ids") in report:
            continue  # listed under its count
        if isinstance(value, dict):
            if value:
                lines.append(f"{indent}{key}:")
                lines.append(_format_report(value, indent + "  "))
            continue
        lines.append(f"{indent}{key}: {value}")
        run_ids = report.get(f"{key}_run_ids") or []
        lines.extend(f"{indent}  - {run_id}" for run_id in run_ids)
        if isinstance(value, int) and value > len(run_ids) > 0:
            lines.append(f"{indent}  … and {value - len(run_ids)} more (one row each in the runs table)")
    return "\n".join(line for line in lines if line)


# ---------------------------------------------------------------------- entry point
def make_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ddxr`` command."""
    parser = argparse.ArgumentParser(prog="ddxr", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    quiet_help = "no progress bars or progress messages"
    parser.add_argument("--quiet", action="store_true", help=quiet_help)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="build the embedded demo dataset and plot a learning-rate sweep")
    demo.add_argument("--cache-dir", default="cache", help="folder for the demo sources and outputs")
    demo.set_defaults(run=command_demo)

    build = commands.add_parser("build", help="build a dataset from DataDecide files and a W&B store")
    build.add_argument("--datadecide", required=True, help="datadec data folder or full_eval parquet file")
    build.add_argument("--db", required=True, help="W&B store URL (postgresql://… or sqlite:///…)")
    build.add_argument("--out", help="netCDF file to write (default: the cache file of the fingerprint)")
    build.add_argument("--cache-dir", default="cache")
    build.add_argument(
        "--metrics", default="core", help='"core", "all" or a comma-separated list of variables (default core)'
    )
    build.add_argument("--refresh", action="store_true", help="rebuild even when the cache is fresh")
    build.set_defaults(run=command_build)

    load = commands.add_parser(
        "load",
        help="load a W&B export (runs + history, parquet or JSONL) into a store",
        description="Load a W&B export into a W&B store (tables created if needed; runs already there are "
        "replaced with their history). The export is a folder holding runs.jsonl and history.jsonl, or one "
        "*runs*.parquet and one *history*.parquet; or name the two files with --runs and --history.",
    )
    load.add_argument("export", nargs="?", help="export folder")
    load.add_argument("--runs", help="runs file (.parquet or .jsonl)")
    load.add_argument("--history", help="history file (.parquet or .jsonl)")
    load.add_argument("--db", required=True, help="W&B store URL (postgresql://… or sqlite:///…)")
    load.add_argument("--chunk-size", type=int, default=50_000, help="history rows per batch (default 50000)")
    load.set_defaults(run=command_load)

    info = commands.add_parser("info", help="describe a ddxr netCDF file")
    info.add_argument("file")
    info.set_defaults(run=command_info)

    export = commands.add_parser("export", help="write a selection as a long table (parquet or CSV)")
    export.add_argument("file")
    export.add_argument("--sel", action="append", default=[], help="NAME=VALUE | NAME=A,B | NAME=LO:HI (repeat)")
    export.add_argument("--metrics", help="comma-separated metric variables (default: all)")
    export.add_argument("--melt", action="store_true", help="long metric/value columns")
    export.add_argument("-o", "--output", required=True, help="out.parquet or out.csv")
    export.set_defaults(run=command_export)

    # every command also takes --quiet after its name; SUPPRESS keeps an absent one from undoing `ddxr --quiet CMD`
    for command in commands.choices.values():
        command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help=quiet_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ddxr`` command; returns the exit code."""
    args = make_parser().parse_args(argv)
    try:
        args.run(args)
    except (DdxrError, FileNotFoundError, PermissionError) as error:
        if args.debug:
            raise
        print(f"ddxr {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
