"""The ``ddxr`` command: demo, build, load, info, export, plot.

Errors a user can act on end the command with one line on stderr and a non-zero exit; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ddxr._version import __version__
from ddxr.cache import is_ddxr_cache, open_dataset, open_runs, replace_atomically, write_dataset
from ddxr.errors import CacheError, DdxrError
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
    """``--sel`` items (``name=value``, ``name=a,b``, ``name=lo:hi``) → labels for :func:`ddxr.index.select`.

    Repeating a name merges its values (``--sel params=150M --sel params=1B`` selects both); a range cannot be
    merged with anything.
    """
    labels: dict = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name or not text:
            raise UsageError(f"--sel {item!r}: expected NAME=VALUE, NAME=A,B or NAME=LO:HI (e.g. params=150M)")
        value = _parse_labels(name, text)
        if name in labels:
            value = _merged(name, labels[name], value)
        labels[name] = value
    return labels


def _merged(name: str, before, after) -> list:
    """Values of a repeated ``--sel NAME``, in order and without repeats."""
    if isinstance(before, slice) or isinstance(after, slice):
        raise UsageError(f"--sel {name}: a range LO:HI cannot be combined with another --sel {name}; give one range")
    values = [*(before if isinstance(before, list) else [before]), *(after if isinstance(after, list) else [after])]
    return list(dict.fromkeys(values))


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
        number = float(text)
    except ValueError:
        raise UsageError(f"--sel {name}={text}: {name} takes numbers, e.g. {name}=1e-5") from None
    if not np.isfinite(number):
        raise UsageError(f"--sel {name}={text}: {name} takes finite numbers")
    if convert is int and not number.is_integer():
        # int() would truncate: step=1.5 must not quietly select step 1
        raise UsageError(f"--sel {name}={text}: {name} takes whole numbers, e.g. {name}=1000")
    return convert(number)


# ---------------------------------------------------------------------- commands
def command_demo(args: argparse.Namespace) -> None:
    """Generate the embedded demo sources, build, write the netCDF file and the sweep plot."""
    from ddxr.synthetic import generate

    root = Path(args.cache_dir)
    demo_dir = root / "demo"
    out = root / "ddxr-demo.nc"
    _check_replaceable(out, "--cache-dir", force=False, remedy="move it away or pass another --cache-dir")
    _clear_demo_sources(demo_dir)  # regenerated from scratch: the demo is deterministic
    if not args.quiet:
        print(f"generating demo sources in {demo_dir} ...")
    truth = generate(demo_dir)
    _write_demo_manifest(demo_dir)  # now, so that a build that fails leaves files a rerun knows it may delete
    dd = DataDecideNext(demo_dir, truth.store_url, cache_dir=demo_dir / "cache", progress=not args.quiet)
    curves, runs = dd.build()
    _write_demo_manifest(demo_dir)
    write_dataset(curves, runs, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)\n")
    print(summary(curves, runs))
    png = _plot_demo_sweep(curves, runs, root / "ddxr-demo-lr-sweep.png")
    if png is not None:
        print(f"\nwrote {png}")


#: Files ``ddxr demo`` wrote in its sources folder, so that a rerun deletes those and nothing else.
DEMO_MANIFEST = ".ddxr-demo-files.json"


def _clear_demo_sources(folder: Path) -> None:
    """Delete the files an earlier ``ddxr demo`` wrote in ``folder`` (its manifest lists them), never another file.

    Raises
    ------
    UsageError
        If ``folder`` still holds a file ddxr did not write (it is left untouched).
    """
    manifest = folder / DEMO_MANIFEST
    try:
        written = json.loads(manifest.read_text()) if manifest.is_file() else []
    except (OSError, ValueError):
        written = []  # an unreadable manifest proves nothing: every file counts as the user's
    root = folder.resolve()
    for name in written if isinstance(written, list) else []:
        path = (folder / str(name)).resolve()
        if path.is_relative_to(root) and path.is_file():  # a manifest cannot point outside its folder
            path.unlink()
    manifest.unlink(missing_ok=True)
    unknown = sorted(path for path in folder.rglob("*") if not path.is_dir()) if folder.is_dir() else []
    if unknown:
        raise UsageError(
            f"{folder} holds {len(unknown)} file(s) ddxr demo did not write (e.g. {unknown[0]}); ddxr never deletes "
            "them — move them away or pass another --cache-dir"
        )
    for path in sorted(folder.rglob("*"), reverse=True) if folder.is_dir() else []:
        path.rmdir()  # only empty folders are left: the demo's own


def _write_demo_manifest(folder: Path) -> None:
    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    (folder / DEMO_MANIFEST).write_text(json.dumps(files, indent=0))


def _plot_demo_sweep(curves: xr.Dataset, runs: xr.Dataset, path: Path) -> Path | None:
    try:
        from ddxr.plotting import plot_sweep
    except ImportError:  # pragma: no cover - matplotlib is an optional extra
        print("matplotlib is not installed: skipped the plot (pip install 'ddxr[plot]')", file=sys.stderr)
        return None
    sweep = select(curves, params=DEMO_SWEEP["base_params"], data=DEMO_SWEEP["base_data"], run_type="supervised_ft")
    leaves = list(np.unique(sweep["lineage"].to_numpy()))
    lineages = select(curves, lineage=leaves, learning_rate=DEMO_SWEEP["learning_rates"])
    frame = to_frame(lineages, metrics=["olmes_9_average", "train_loss"], melt=True, runs=runs)
    return plot_sweep(frame, path)


def _check_replaceable(
    path: Path,
    flag: str,
    force: bool,
    inputs: Sequence[str | Path] = (),
    remedy: str = "choose another file, or pass --force to replace it anyway",
) -> None:
    """Refuse to replace a folder, an input of the command, or a file ddxr did not write (unless ``force``)."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name ending in .nc")
    if path.exists() and any(path.resolve() == Path(source).resolve() for source in inputs):
        raise UsageError(f"{flag} {path}: is an input of this command; write the dataset to another file")
    if path.exists() and not force and not is_ddxr_cache(path):
        raise UsageError(f"{flag} {path}: exists and was not written by ddxr; refusing to replace it — {remedy}")


def command_build(args: argparse.Namespace) -> None:
    """Build from real sources, with progress bars and the build report."""
    if args.out is not None:  # refused before any work
        _check_replaceable(Path(args.out), "--out", args.force, inputs=[args.datadecide, *_sqlite_file(args.db)])
    metrics = args.metrics if args.metrics in ("core", "all") else args.metrics.split(",")
    dd = DataDecideNext(args.datadecide, args.db, cache_dir=args.cache_dir, metrics=metrics, progress=not args.quiet)
    if args.out is None:
        out = dd.cache_path()
        reused = out.exists() and not args.refresh  # the cache is rebuilt only when missing or refreshed
        curves = dd.dataset(refresh=args.refresh)
    else:
        curves, runs = dd.build()
        out, reused = write_dataset(curves, runs, args.out), False
    if reused:
        print(f"reused {out} (its sources are unchanged; ddxr build --refresh rebuilds it)")
    else:
        print(f"wrote {out}")
        if dd.refreshed_from is not None:
            previous, read = dd.refreshed_from
            print(f"refreshed from {previous.name}: only what changed was read ({len(read)} runs from the store)")
        elif args.out is None and dd.refresh_note:
            print(f"full build: {dd.refresh_note}")
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


def _sqlite_file(url: str) -> list[str]:
    """Return the database file of a ``sqlite:///`` URL (an input --out must not replace); none for other stores."""
    prefix = "sqlite:///"
    return [url.removeprefix(prefix).split("?", 1)[0]] if url.startswith(prefix) else []


def command_info(args: argparse.Namespace) -> None:
    """Describe a ddxr file: dims, levels, runs, metrics, provenance."""
    print(summary(*_open_file(args.file), provenance=True))


def command_export(args: argparse.Namespace) -> None:
    """Write the frame of a selection to parquet or CSV, atomically (a failed write leaves no partial file)."""
    out = Path(args.output)
    if out.suffix not in (".parquet", ".csv"):
        raise UsageError(f"-o {out}: the output must end in .parquet or .csv")
    _check_output(out)
    curves, runs = _open_file(args.file)
    ds = select(curves, **parse_selection(args.sel))
    metrics = args.metrics.split(",") if args.metrics else None
    frame = to_frame(ds, metrics=metrics, melt=args.melt, prefix=args.prefix, runs=runs)
    if out.suffix == ".csv":
        _write_atomically(out, lambda target: frame.to_csv(target, index=False))
    else:
        _write_atomically(out, lambda target: frame.to_parquet(target, index=False))
    print(f"wrote {len(frame):,} rows x {frame.shape[1]} columns to {out}")


def _open_file(path: str | Path) -> tuple[xr.Dataset, xr.Dataset]:
    """Return the curves and runs of a ddxr file named on the command line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; check the path, or write one with ddxr build --out {path}")
    if not is_ddxr_cache(path):
        raise UsageError(
            f"{path}: not a ddxr file (expected a netCDF file written by ddxr build or ddxr demo); check the path"
        )
    return open_dataset(path), open_runs(path)


def _check_output(out: Path) -> None:
    """Refuse an output path in a missing folder or naming a folder, before any work is done."""
    if out.is_dir():
        raise UsageError(f"-o {out}: is a folder; give a file name inside it, e.g. -o {out / ('sweep' + out.suffix)}")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: folder {out.parent} does not exist; create it first or choose another path")


def _write_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """Write ``out`` through a temporary file in its folder moved into place: never a partial file under its name."""
    try:
        replace_atomically(out, write)
    except CacheError as error:
        reason = error.__cause__ if isinstance(error.__cause__, OSError) else error
        detail = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise DdxrError(
            f"-o {out}: cannot write the file ({detail}); nothing was written — free space or choose another folder"
        ) from error


def command_plot(args: argparse.Namespace) -> None:
    """Draw the learning-rate sweep or the scaling curves of a selection to a PNG file."""
    try:
        from ddxr import plotting
    except ImportError:  # pragma: no cover - matplotlib is an optional extra
        raise UsageError("drawing needs matplotlib: pip install 'ddxr[plot]'") from None
    out = Path(args.output)
    if out.suffix != ".png":
        raise UsageError(f"-o {out}: the output must end in .png")
    _check_output(out)
    curves, runs = _open_file(args.file)
    ds = select(curves, **parse_selection(args.sel))
    metrics = [name for item in args.metric for name in item.split(",")] or (
        list(plotting.SWEEP_METRICS) if args.kind == "sweep" else ["olmes_9_average"]
    )
    if args.kind == "sweep":
        frame = to_frame(ds, metrics=metrics, melt=True, runs=runs)
        _write_atomically(out, lambda target: plotting.plot_sweep(frame, target, metrics))
    else:
        from ddxr.analysis import mean_over_seeds

        if len(metrics) != 1:
            raise UsageError(f"--metric {','.join(metrics)}: scaling curves draw one metric; give one --metric")
        pretraining = select(ds, pretraining_phase=True)
        frame = to_frame(mean_over_seeds(pretraining, metrics), metrics, melt=True)
        _write_atomically(out, lambda target: plotting.plot_scaling(frame, target, metrics[0]))
    print(f"wrote {out} ({frame['curve'].nunique()} curves of {', '.join(metrics)})")


# ---------------------------------------------------------------------- summaries
def summary(curves: xr.Dataset, runs: xr.Dataset, provenance: bool = False) -> str:
    """Return a human-readable description of a built dataset."""
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
    """Return the build report as indented lines; each count is followed by the run ids behind it, one per line."""
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
    """Return the argument parser of the ``ddxr`` command."""
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
    build.add_argument("--force", action="store_true", help="let --out replace a file ddxr did not write")
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
    export.add_argument(
        "--prefix",
        choices=("shared", "copied"),
        default="shared",
        help="pretraining prefix once per base (shared, default: for plotting) or in every lineage (copied)",
    )
    export.add_argument("-o", "--output", required=True, help="out.parquet or out.csv")
    export.set_defaults(run=command_export)

    plot = commands.add_parser("plot", help="draw the learning-rate sweep or the scaling curves of a selection")
    plot.add_argument("file")
    plot.add_argument("--sel", action="append", default=[], help="NAME=VALUE | NAME=A,B | NAME=LO:HI (repeat)")
    plot.add_argument(
        "--metric", action="append", default=[], help="metric to draw (repeat; default olmes_9_average,train_loss)"
    )
    plot.add_argument(
        "--kind",
        choices=("sweep", "scaling"),
        default="sweep",
        help="sweep: lineages and post-training runs; scaling: seed-mean pretraining curve per size",
    )
    plot.add_argument("-o", "--output", required=True, help="out.png")
    plot.set_defaults(run=command_plot)

    # every command also takes --quiet after its name; SUPPRESS keeps an absent one from undoing `ddxr --quiet CMD`
    for command in commands.choices.values():
        command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help=quiet_help)
    return parser


#: Remedies some library messages spell as Python arguments, and their spelling on the command line.
CLI_SPELLINGS = (
    ("rebuild with refresh=True", "rebuild with ddxr build --refresh"),
    ("build it (cached_build)", "build it with ddxr build"),
    ("pass mean=True for datadec's mean_eval", "ddxr build reads datadec's full_eval, not the seed-averaged mean_eval"),
)


def cli_message(error: BaseException) -> str:
    """Return an error's message as the command shows it: one line, remedies spelled as command-line flags."""
    message = " ".join(str(error).split())
    for python, command in CLI_SPELLINGS:
        message = message.replace(python, command)
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ddxr`` command; returns the exit code."""
    args = make_parser().parse_args(argv)
    try:
        args.run(args)
    except (DdxrError, FileNotFoundError, PermissionError) as error:
        if args.debug:
            raise
        print(f"ddxr {args.command}: {cli_message(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
