"""End-to-end benchmark: build the Dataset from generated sources at three scales, stage by stage, against targets.

Sources: the full DataDecide grid (14 sizes × 25 recipes, every seed; generated once into ``cache/bench/`` and
reused) and ``ddxr.synthetic`` post-training runs written into a throwaway PostgreSQL database (created, vacuumed as
a store read before would be, dropped at the end):

    small   100 runs ×   500 steps
    medium  2,000 runs × 1,000 steps
    large   10,000 runs × 1,000 steps

Each measured step runs in a fresh process (its peak RSS is its own; the build's stages share one process, as in a
real build) with a fresh cache folder, so the build is cold:

- stages of ``DataDecideNext.build`` (fingerprint sources, read DataDecide, read store runs, link, read store history,
  assemble), then write and open + sweep ``.sel`` + ``to_dataframe()``: wall time, CPU time and peak RSS each;
- the floor: a bare ``COPY (SELECT run_id, step, …, metrics->>'…') TO STDOUT`` of exactly the history the build reads,
  against ``WandBStore.iter_history`` of the same rows (best of 2 each);
- the refresh: 50 runs added to the store, then ``DataDecideNext.dataset()`` on the same cache folder (median of
  3, each from the folder as the build left it).

Prints the table and pass/fail per target; writes everything as JSON to ``benchmarks/results/<scale>-<time>.json``
(git-ignored, except the committed ``reference.json``). The machine's load average is recorded: on a shared machine
wall times are noisy, CPU times less so.

    python benchmarks/run.py --scale medium [--pg postgresql://postgres@127.0.0.1:5432] [--datadecide raw]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "cache" / "bench"
RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = RESULTS / "reference.json"
SCALES = {"small": (100, 500), "medium": (2_000, 1_000), "large": (10_000, 1_000)}
REFRESH_RUNS = 50
REFRESH_TRIALS = 3
SWEEP = {"params": "150M", "data": "Dolma1.7", "learning_rate": [1e-5, 3e-5, 1e-4, 3e-4]}
GiB = 2**30
TARGETS = {
    "medium_seconds": 40.0,
    "medium_peak_gib": 3.0,
    "large_over_medium": 5.0,
    "large_peak_gib": 4.0,
    "open_select_export_seconds": 0.3,
    "floor_ratio": 1.5,
    "refresh_fraction": 0.10,
}


# --------------------------------------------------------------------------------------------- measuring in a child


class StageMeter:
    """Wall time, CPU time and peak RSS of consecutive stages of this process.

    The peak of a stage is the kernel's high-water mark of this process's memory (``VmHWM``), reset when the stage
    starts (``/proc/self/clear_refs``). Not ``ru_maxrss``: Linux carries it over ``exec`` from the parent, so a
    child started by a parent holding the generated store would report the parent's size. Above ``RSS_CAP_GIB``
    (environment, default 8) a sampling thread (every 5 ms) stops the process at once and reports the stages so far,
    so a run that would exhaust a shared machine's memory fails alone.
    """

    def __init__(self) -> None:
        self.stages: list[dict] = []
        self._label = ""
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._cap = float(os.environ.get("RSS_CAP_GIB", "8")) * GiB
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        with open("/proc/self/statm") as statm:
            while not self._stop.wait(0.005):
                statm.seek(0)
                resident = int(statm.read().split()[1]) * self._page
                if resident > self._cap:
                    aborted = {"stage": self._label, "seconds": float("nan"), "cpu_seconds": float("nan")}
                    self.stages.append(aborted | {"peak_bytes": resident})
                    print(json.dumps({"stages": self.stages, "peak_bytes": resident, "aborted": self._label}))
                    sys.stdout.flush()
                    os._exit(0)

    @contextmanager
    def stage(self, label: str) -> Iterator[None]:
        before = resource.getrusage(resource.RUSAGE_SELF)
        self._label = label
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts at the current RSS
        start = time.perf_counter()
        yield
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        self.stages.append({"stage": label, "seconds": wall, "cpu_seconds": cpu, "peak_bytes": high_water_mark()})

    def close(self) -> dict:
        self._stop.set()
        return {"stages": self.stages, "peak_bytes": max((stage["peak_bytes"] for stage in self.stages), default=0)}


def high_water_mark() -> int:
    """Peak resident bytes of this process since it started or since the last reset (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line: peak memory needs Linux")


def child_build(data_dir: str, url: str, cache_dir: str) -> dict:
    """Return a cold build, stage by stage, then the write of its cache file."""
    from ddxr.cache import write_dataset
    from ddxr.facade import DataDecideNext

    meter = StageMeter()
    dd = DataDecideNext(data_dir, url, cache_dir=cache_dir, progress=False)
    path = history_rows = None
    for label, step in dd.build_stages():
        result = None  # the build keeps only what later stages use: holding every stage's result would keep more
        with meter.stage(label):
            result = step()
        if label == "fingerprint sources":  # names the file
            path = result
        elif label == "read store history":
            history_rows = len(result.frame)
    with meter.stage("write"):
        write_dataset(*result, path, dd._basis)  # with the basis a refresh compares with, as dataset() writes it
    curves, _ = result
    linked = dd.relationships.links.query("link_status == 'linked'")["run_id"].tolist()
    return meter.close() | {
        "path": str(path),
        "points": curves.sizes["point"],
        "variables": len(curves.data_vars),
        "history_rows": history_rows,
        "linked_runs": linked,
        "file_bytes": path.stat().st_size,
    }


def child_open(path: str) -> dict:
    """Open + select one learning-rate sweep + ``to_dataframe()``: the first call in the process, then best of 3."""
    import ddxr

    meter = StageMeter()
    rows = 0
    for attempt in range(4):
        with meter.stage("open + select + export" if attempt == 0 else "again"):
            rows = len(ddxr.open_dataset(path).sel(**SWEEP).to_dataframe())
    first, *again = meter.close()["stages"]
    best = min(again, key=lambda stage: stage["seconds"])
    return {"first": first, "best": best | {"stage": "open + select + export"}, "rows": rows}


def child_refresh(data_dir: str, url: str, cache_dir: str) -> dict:
    """``DataDecideNext.dataset()`` after the store gained runs: what a researcher's next session pays."""
    from ddxr.facade import DataDecideNext

    meter = StageMeter()
    with meter.stage("refresh"):
        dd = DataDecideNext(data_dir, url, cache_dir=cache_dir, progress=False)
        points = dd.dataset().sizes["point"]
    # an incremental refresh reads the runs of the lineages it lays out again; a full build reads every linked run
    read = dd.refreshed_from[1] if dd.refreshed_from is not None else dd.history_read_from_store
    return meter.close() | {"points": points, "runs_read_from_store": len(read), "how": dd.refresh_note}


def child_store_read(url: str, run_ids_file: str) -> dict:
    """``WandBStore.iter_history`` of the build's runs and keys, every chunk turned into its frame."""
    from ddxr.managers.progression import HISTORY_KEYS
    from ddxr.sources.wandb_store import WandBStore

    run_ids = json.loads(Path(run_ids_file).read_text())
    meter = StageMeter()
    with WandBStore(url) as store, meter.stage("store read"):
        rows = sum(len(chunk) for chunk in store.iter_history(run_ids, HISTORY_KEYS))
    return meter.close() | {"rows": rows}


def child_store(url: str, n_runs: str, steps: str, random_seed: str, messy: str, when: str = "any") -> dict:
    """:func:`store_runs` in a process of its own: the generated frames never inflate the parent."""
    runs, rows = store_runs(url, int(n_runs), int(steps), int(random_seed), messy == "messy", when == "newest")
    return {"runs": runs, "history_rows": rows}


CHILDREN: dict[str, Callable[..., dict]] = {
    "build": child_build,
    "store": child_store,
    "open": child_open,
    "refresh": child_refresh,
    "store-read": child_store_read,
}


def in_child(name: str, *arguments: str) -> dict:
    command = [sys.executable, __file__, "--child", name, *arguments]
    output = subprocess.run(command, capture_output=True, text=True)
    if output.returncode:
        sys.exit(f"the {name} step failed:\n{output.stderr}")
    return json.loads(output.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- sources


def datadecide_dir(layout: str) -> Path:
    """Return the full-grid DataDecide files, generated on first use."""
    from ddxr.sources.datadecide import DOWNSTREAM_FILE
    from ddxr.synthetic.pretraining import write_datadecide

    folder = CACHE / f"datadecide-{layout}"
    marker = folder / "datadecide" / ("full_eval.parquet" if layout == "full_eval" else DOWNSTREAM_FILE)
    if not marker.is_file():
        start = time.perf_counter()
        write_datadecide(folder, layouts=(layout,))
        print(f"generated the full DataDecide grid ({layout}) in {time.perf_counter() - start:.0f} s")
    return folder


def store_runs(
    url: str, n_runs: int, steps: int, random_seed: int, messy: bool, newest: bool = False
) -> tuple[int, int]:
    """Generate runs over the full grid and append those the store does not hold yet; (runs, history rows) added.

    ``newest``: the runs are created after every run the store holds (the generator dates every batch from the same
    day), as a day of new runs is.
    """
    import pandas as pd

    from ddxr.sources.wandb_store import WandBStore
    from ddxr.synthetic.posttraining import generate_posttraining
    from ddxr.vocabulary import DATA, PARAMS

    runs, history, _ = generate_posttraining(
        n_runs, params=PARAMS, data=DATA, steps_per_run=steps, random_seed=random_seed, messy=messy
    )
    with WandBStore(url) as store:
        store.create_tables()
        stored = store.read_runs(json_columns=())
        runs = runs[~runs["run_id"].isin(set(stored["run_id"]))]
        if newest and len(stored):
            latest = stored["created_at"].max().tz_convert(None)
            shift = latest - runs["created_at"].min() + pd.Timedelta(days=1)
            runs = runs.assign(created_at=runs["created_at"] + shift)
        history = history[history["run_id"].isin(runs["run_id"])]
        store.store_runs(runs)
        store.store_history(history)
    vacuum(url)
    return len(runs), len(history)


def stored_runs(
    url: str, n_runs: int, steps: int, random_seed: int, messy: bool, newest: bool = False
) -> tuple[int, int]:
    """Return :func:`store_runs` run in a child process."""
    kinds = ("messy" if messy else "clean", "newest" if newest else "any")
    arguments = (str(n_runs), str(steps), str(random_seed), *kinds)
    added = in_child("store", url, *arguments)
    return added["runs"], added["history_rows"]


def vacuum(url: str) -> None:
    # a freshly COPYed table sets its hint bits on first read: vacuum, as a store read before would be
    connection = psycopg2.connect(url)
    connection.autocommit = True
    connection.cursor().execute("VACUUM ANALYZE")
    connection.close()


@contextmanager
def throwaway_database(server: str) -> Iterator[str]:
    name = f"ddxr_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(f"{server}/postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# --------------------------------------------------------------------------------------------- the floor


class _Sink:
    """A file that keeps nothing: the COPY output's only cost is its transfer."""

    bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)


def floor(url: str, run_ids: list[str]) -> dict:
    """Return a bare COPY of exactly the history columns and rows the build reads, in the build's order."""
    from ddxr.managers.progression import HISTORY_KEYS

    metrics = ", ".join(f"metrics->>'{key}'" for key in HISTORY_KEYS)
    query = (
        f'SELECT run_id, step, "timestamp", runtime, {metrics} FROM wandb_history '
        "WHERE run_id = ANY(%s) ORDER BY run_id, step, id"
    )
    connection = psycopg2.connect(url)
    sink = _Sink()
    with connection.cursor() as cursor:
        copy = cursor.mogrify(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", (run_ids,)).decode()
        start, cpu = time.perf_counter(), time.process_time()
        cursor.copy_expert(copy, sink)
        seconds = time.perf_counter() - start
    connection.close()
    return {"seconds": seconds, "bytes": sink.bytes, "client_cpu_seconds": time.process_time() - cpu}


# --------------------------------------------------------------------------------------------- report


def table(stages: list[dict]) -> str:
    lines = [f"{'stage':<26}{'wall s':>9}{'CPU s':>9}{'peak RSS GiB':>14}"]
    for stage in stages:
        lines.append(
            f"{stage['stage']:<26}{stage['seconds']:>9.2f}{stage['cpu_seconds']:>9.2f}"
            f"{stage['peak_bytes'] / GiB:>14.2f}"
        )
    return "\n".join(lines)


def medium_reference() -> float | None:
    """End-to-end seconds of the latest medium run on this machine, else of the committed reference."""
    runs = sorted(RESULTS.glob("medium-*.json"))
    for path in [*reversed(runs), REFERENCE]:
        if path.is_file():
            result = json.loads(path.read_text())
            result = result.get("medium", result)
            if "end_to_end_seconds" in result:
                return result["end_to_end_seconds"]
    return None


def verdicts(scale: str, result: dict) -> list[tuple[str, bool]]:
    checks = [
        (
            f"open + select + export {result['open']['best']['seconds']:.3f} s <= "
            f"{TARGETS['open_select_export_seconds']} s",
            result["open"]["best"]["seconds"] <= TARGETS["open_select_export_seconds"],
        ),
        (
            f"store read / floor {result['floor_ratio']:.2f} <= {TARGETS['floor_ratio']}",
            result["floor_ratio"] <= TARGETS["floor_ratio"],
        ),
        (
            f"refresh after {REFRESH_RUNS} runs {result['refresh_fraction']:.1%} of the full build <= "
            f"{TARGETS['refresh_fraction']:.0%}",
            result["refresh_fraction"] <= TARGETS["refresh_fraction"],
        ),
    ]
    seconds, peak = result["end_to_end_seconds"], result["peak_bytes"] / GiB
    if scale == "medium":
        checks += [
            (f"end-to-end {seconds:.1f} s <= {TARGETS['medium_seconds']:.0f} s", seconds <= TARGETS["medium_seconds"]),
            (f"peak RSS {peak:.2f} GiB <= {TARGETS['medium_peak_gib']:.0f} GiB", peak <= TARGETS["medium_peak_gib"]),
        ]
    if scale == "large":
        medium = medium_reference()
        ratio = seconds / medium if medium else float("nan")
        checks += [
            (
                f"end-to-end {seconds:.1f} s = {ratio:.2f} x medium ({medium or float('nan'):.1f} s) <= "
                f"{TARGETS['large_over_medium']:.0f} x",
                medium is not None and ratio <= TARGETS["large_over_medium"],
            ),
            (f"peak RSS {peak:.2f} GiB <= {TARGETS['large_peak_gib']:.0f} GiB", peak <= TARGETS["large_peak_gib"]),
        ]
    return checks


# --------------------------------------------------------------------------------------------- main


def run(scale: str, server: str, layout: str) -> dict:
    n_runs, steps = SCALES[scale]
    data_dir = datadecide_dir(layout)
    work = CACHE / f"run-{uuid.uuid4().hex[:8]}"
    loads = [os.getloadavg()]
    with throwaway_database(server) as url:
        start = time.perf_counter()
        stored = stored_runs(url, n_runs, steps, random_seed=0, messy=True)
        print(
            f"{scale}: stored {stored[0]:,} runs and {stored[1]:,} history rows in {time.perf_counter() - start:.0f} s"
        )
        try:
            loads.append(os.getloadavg())
            # the store's writes reach the disk first: a researcher builds after the runs were logged, not while the
            # kernel writes them back (which otherwise lands in whichever step is timed next)
            os.sync()
            build = in_child("build", str(data_dir), url, str(work))
            if "aborted" in build:
                return aborted(scale, stored, layout, loads, build)
            use = in_child("open", build["path"])
            run_ids = work / "linked_runs.json"
            run_ids.write_text(json.dumps(build.pop("linked_runs")))
            floors = [floor(url, json.loads(run_ids.read_text())) for _ in range(2)]
            reads = [in_child("store-read", url, str(run_ids)) for _ in range(2)]
            loads.append(os.getloadavg())
            added = stored_runs(url, REFRESH_RUNS, steps, random_seed=1, messy=False, newest=True)
            refreshes = refresh_trials(data_dir, url, work)
            refresh = sorted(refreshes, key=lambda trial: trial["stages"][0]["seconds"])[len(refreshes) // 2]
            loads.append(os.getloadavg())
        finally:
            shutil.rmtree(work, ignore_errors=True)
    stages = [*build["stages"], use["first"]]
    full_build = sum(stage["seconds"] for stage in build["stages"])
    store_read = min(read["stages"][0]["seconds"] for read in reads)
    floor_seconds = min(result["seconds"] for result in floors)
    return {
        **described(scale, stored, layout, loads),
        "stages": stages,
        "end_to_end_seconds": sum(stage["seconds"] for stage in stages),
        "end_to_end_cpu_seconds": sum(stage["cpu_seconds"] for stage in stages),
        "peak_bytes": max(build["peak_bytes"], use["first"]["peak_bytes"]),
        "points": build["points"],
        "variables": build["variables"],
        "file_bytes": build["file_bytes"],
        "open": use,
        "floor_seconds": floor_seconds,
        "floor_bytes": floors[0]["bytes"],
        "store_read_seconds": store_read,
        "floor_ratio": store_read / floor_seconds,
        "refresh": {
            "runs_added": added[0],
            "history_rows_added": added[1],
            **refresh,
            "trial_seconds": [trial["stages"][0]["seconds"] for trial in refreshes],
        },
        "full_build_seconds": full_build,
        "refresh_fraction": refresh["stages"][0]["seconds"] / full_build,
    }


def refresh_trials(data_dir: Path, url: str, work: Path) -> list[dict]:
    """Return :data:`REFRESH_TRIALS` refreshes of the store that gained runs, each from the built cache folder.

    A refresh takes seconds, so one slow moment of a shared machine moves it by tens of percent where it moves a
    full build by a few: the median of the trials is reported. Each trial starts from a copy of the folder as the
    build left it, written to disk first (as the store's writes are before the build).
    """
    built = work.with_name(f"{work.name}-built")
    shutil.copytree(work, built)
    trials = []
    try:
        for _ in range(REFRESH_TRIALS):
            shutil.rmtree(work)
            shutil.copytree(built, work)
            os.sync()
            trials.append(in_child("refresh", str(data_dir), url, str(work)))
    finally:
        shutil.rmtree(built, ignore_errors=True)
    return trials


def described(scale: str, stored: tuple[int, int], layout: str, loads: list) -> dict:
    """Return what every result records of its run: scale, store size, DataDecide layout, time and machine load."""
    return {
        "scale": scale,
        "runs": stored[0],
        "history_rows": stored[1],
        "datadecide": layout,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_1_5_15": loads,
        "cpus": os.cpu_count(),
    }


def aborted(scale: str, stored: tuple[int, int], layout: str, loads: list, build: dict) -> dict:
    """Return the result of a build stopped above the RSS cap: its stages so far; nothing after it was measured."""
    return {
        **described(scale, stored, layout, [*loads, os.getloadavg()]),
        "stages": build["stages"],
        "peak_bytes": build["peak_bytes"],
        "aborted": build["aborted"],
        "rss_cap_gib": float(os.environ.get("RSS_CAP_GIB", "8")),
    }


def report(result: dict) -> bool:
    if "aborted" in result:
        print(f"\n{result['scale']}: {result['runs']:,} runs, {result['history_rows']:,} history rows")
        print(table(result["stages"]))
        print(
            f"FAIL  the build passed the RSS cap of {result['rss_cap_gib']:.0f} GiB in stage {result['aborted']!r} "
            f"(peak RSS target {TARGETS[result['scale'] + '_peak_gib'] if result['scale'] != 'small' else '-'} GiB); "
            "stopped there, nothing after it was measured"
        )
        return False
    print(
        f"\n{result['scale']}: {result['runs']:,} runs, {result['history_rows']:,} history rows, full DataDecide grid "
        f"({result['datadecide']}) -> {result['points']:,} points x {result['variables']} variables, "
        f"{result['file_bytes'] / 2**20:.0f} MiB file; {result['cpus']} CPUs, load average "
        f"{result['load_average_1_5_15'][0][0]:.1f} before the build, {result['load_average_1_5_15'][-1][0]:.1f} after"
    )
    print(table(result["stages"]))
    print(
        f"{'end to end':<26}{result['end_to_end_seconds']:>9.2f}{result['end_to_end_cpu_seconds']:>9.2f}"
        f"{result['peak_bytes'] / GiB:>14.2f}"
    )
    open_best = result["open"]["best"]
    print(f"open + select + export, best of 3 more in the same process: {open_best['seconds']:.3f} s")
    print(
        f"floor (bare COPY of the build's history, {result['floor_bytes'] / 2**20:.0f} MiB): "
        f"{result['floor_seconds']:.2f} s; store read (iter_history): {result['store_read_seconds']:.2f} s; "
        f"ratio {result['floor_ratio']:.2f}"
    )
    refresh = result["refresh"]
    print(
        f"refresh after adding {refresh['runs_added']} runs ({refresh['history_rows_added']:,} rows), median of "
        f"{', '.join(f'{seconds:.2f}' for seconds in refresh['trial_seconds'])} s: "
        f"{refresh['stages'][0]['seconds']:.2f} s ({refresh['runs_read_from_store']} runs' history read from the "
        f"store) = {result['refresh_fraction']:.1%} of the full build ({result['full_build_seconds']:.2f} s); "
        f"{refresh.get('how', '')}"
    )
    checks = verdicts(result["scale"], result)
    for label, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {label}")
    return all(passed for _, passed in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=list(SCALES), default="small")
    parser.add_argument("--pg", default=os.environ.get("DDXR_TEST_PG", "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--datadecide", choices=["full_eval", "raw"], default="full_eval", help="DataDecide layout")
    parser.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)  # set by the parent process
    args, rest = parser.parse_known_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](*rest)))
        return
    result = run(args.scale, args.pg, args.datadecide)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.scale}-{result['when'].replace(':', '')}.json"
    path.write_text(json.dumps(result, indent=1))
    passed = report(result)
    print(f"\nwritten {path.relative_to(ROOT)}")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
