"""Opening large files lazily: shared handles (no whole-file read, no reopen crash, replaced files), dask chunks."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from roundtrip import curve_coordinates, example_datasets

import ddxr.handles
from ddxr import analysis
from ddxr.cache import open_dataset, open_runs, write_dataset
from ddxr.errors import CacheError
from ddxr.schema import POINT_DIM
from ddxr.synthetic.curves import checkpoint_steps, compute_at, perplexity, primary_score, tokens_at
from ddxr.vocabulary import DATA, RECIPES

_READ_AHEAD = 4 * 2**20  # what HDF5 reads of any file it opens
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def example() -> tuple[xr.Dataset, xr.Dataset]:
    return example_datasets()


def grid_curves(post_steps: int = 300, noise_variables: int = 0) -> xr.Dataset:
    """Return pretraining-only lineages and four finetuning lineages.

    Pretraining: 3 sizes × 6 recipes × 3 seeds, noisy known curves; finetuning: ``post_steps`` steps from
    150M/Dolma1.7 seed 0; plus ``noise_variables`` incompressible float32 variables.
    """
    rng = np.random.default_rng(0)
    pretraining = pd.concat(
        [
            pd.DataFrame({"params": params, "data": data, "seed": seed, "step": checkpoint_steps(params)})
            for params in ("20M", "150M", "1B")
            for data in DATA[:6]
            for seed in range(3)
        ],
        ignore_index=True,
    )
    pretraining["lineage"] = (
        pretraining["params"] + "/" + RECIPES.loc[pretraining["data"], "slug"].to_numpy() + "/seed"
    ) + pretraining["seed"].astype(str)
    pretraining = pretraining.assign(run_id=pretraining["lineage"], run_type="pretraining", learning_rate=0.0)
    pretraining["cumulative_tokens"] = tokens_at(pretraining["params"].to_numpy(), pretraining["step"].to_numpy())
    base = pretraining[(pretraining["lineage"] == "150M/dolma1_7/seed0") & (pretraining["step"] <= 10_000)]
    posttraining = []
    for number, rate in enumerate((1e-5, 3e-5, 1e-4, 3e-4)):
        run_id = f"sft-{number}"
        steps = np.arange(1, post_steps + 1)
        own = pd.DataFrame(
            {"step": steps, "cumulative_tokens": base["cumulative_tokens"].max() + steps * 1e6, "run_id": run_id}
        ).assign(params="150M", data="Dolma1.7", seed=0, run_type="supervised_ft")
        posttraining.append(pd.concat([base, own]).assign(lineage=run_id, learning_rate=rate))
    frame = pd.concat([pretraining, *posttraining], ignore_index=True)
    phase = (frame["run_type"] == "pretraining").to_numpy() & (frame["lineage"] == frame["run_id"]).to_numpy()
    phase |= frame["run_id"].str.contains("/").to_numpy()  # a finetuning lineage's prefix is pretraining too
    compute = compute_at(frame["params"].to_numpy(), frame["cumulative_tokens"].to_numpy())
    data = frame["data"].to_numpy()
    evaluated = np.where(phase, 1.0, np.nan)
    noisy = 1.0 + rng.normal(0.0, 0.02, len(frame))

    def metric(values: np.ndarray, higher: bool) -> tuple:
        return (POINT_DIM, values.astype(np.float32), {"higher_is_better": higher, "long_name": "metric"})

    metrics = {
        "hellaswag": metric(primary_score("hellaswag", compute, data) * evaluated * noisy, True),
        "arc_easy": metric(primary_score("arc_easy", compute, data) * evaluated * noisy, True),
        "pile_valppl": metric(perplexity("pile", compute, data) * evaluated * noisy, False),
        "train_loss": metric(np.where(phase, np.nan, 2.0 + rng.random(len(frame))), False),
    }
    for number in range(noise_variables):
        metrics[f"noise_{number}"] = metric(rng.random(len(frame)), True)
    coords = curve_coordinates(frame, phase, compute)
    return xr.Dataset(metrics, coords=coords)


@pytest.fixture
def written(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> Path:
    return write_dataset(*example, tmp_path / "cache.nc")


# --- shared handles -------------------------------------------------------------------------------------------------

# netCDF-C/HDF5 used to crash (SIGSEGV) on the next open of a file held by several handles, some of them closed by
# the garbage collector (pydata/xarray#8289): run it in a child process so a crash fails the test, not the session
REOPENER = textwrap.dedent(
    """
    import gc, sys
    from pathlib import Path
    from roundtrip import curve_coordinates, example_datasets
    from ddxr.cache import open_dataset, open_runs, write_dataset

    path = write_dataset(*example_datasets(), Path(sys.argv[1]))
    kept = open_dataset(path)
    for _ in range(5):
        open_dataset(path), open_runs(path)  # dropped unclosed: the garbage collector closes them
        assert open_runs(path).sizes["run"] == 4
        gc.collect()
    print(float(kept["train_loss"].sum()))
    """
)


def test_reopening_with_collected_handles_does_not_crash(
    tmp_path: Path, example: tuple[xr.Dataset, xr.Dataset]
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", REOPENER, str(tmp_path / "cache.nc")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout) == pytest.approx(float(example[0]["train_loss"].sum()))


def test_opens_of_one_file_share_one_handle(written: Path) -> None:
    with open_dataset(written) as first, open_dataset(written) as second, open_runs(written) as runs:
        handles = {id(ds["train_loss"].variable._data) for ds in (first, second)}  # distinct lazy arrays ...
        assert len(handles) == 2
        opened = [version for version in ddxr.handles._OPEN if version.path == str(written.resolve())]
        assert len(opened) == 1  # ... over one netCDF handle
        assert runs.sizes["run"] == 4


def test_handle_closes_with_its_last_dataset(written: Path) -> None:
    first, second = open_dataset(written), open_dataset(written)
    (handle,) = [ddxr.handles._OPEN[v] for v in ddxr.handles._OPEN if v.path == str(written.resolve())]
    dataset = handle.dataset
    del handle
    first.close()
    assert dataset.isopen()  # still used by `second`
    second.close()
    gc.collect()
    assert not dataset.isopen()


# --- recent files: opening a file again costs no netCDF open and no decoding ------------------------------------


def _handle_of(path: Path) -> object:
    """Return the netCDF4 Dataset open on ``path`` (its current version)."""
    return ddxr.handles._OPEN[ddxr.handles.FileVersion.of(path)].dataset


def test_reopening_a_recent_file_reads_nothing_and_shares_nothing_mutable(
    written: Path, example: tuple[xr.Dataset, xr.Dataset]
) -> None:
    first = open_dataset(written)
    first["train_loss"].attrs["long_name"] = "changed in one Dataset"
    first.attrs["build_report"]["skipped"]["added"] = 1  # a JSON attribute: nested dicts
    first["train_loss"][0] = -1.0  # written in memory (copy on write), never to the file
    loaded = first["step"].load()
    handle = _handle_of(written)
    del first, loaded
    gc.collect()
    assert handle.isopen()  # the most recent file stays open after its last Dataset is gone

    before = _bytes_read()
    again = open_dataset(written)
    assert _bytes_read() - before < 4096  # no index, table or attribute read again
    assert _handle_of(written) is handle
    xr.testing.assert_identical(again.load(), example[0])  # none of the first Dataset's changes
    again.close()
    gc.collect()
    assert not handle.isopen()  # closed explicitly: the file is forgotten and its handle closed


def test_recent_files_are_few(tmp_path: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    paths = [write_dataset(*example, tmp_path / f"{number}.nc") for number in range(ddxr.handles.RECENT_FILES + 1)]
    handles = []
    for path in paths:
        open_dataset(path)  # dropped at once
        handles.append(_handle_of(path))
    gc.collect()
    assert [handle.isopen() for handle in handles] == [False] + [True] * ddxr.handles.RECENT_FILES
    ddxr.handles.forget()
    gc.collect()
    assert not any(handle.isopen() for handle in handles)


def test_replaced_recent_file_is_closed_and_read_anew(written: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    open_dataset(written)
    old = _handle_of(written)
    write_dataset(example[0].sel(params="4M"), xr.Dataset(), written)  # a rebuild replaces the file
    with open_dataset(written) as new:
        gc.collect()
        assert not old.isopen()  # no Dataset used it: closed when the next open saw the file replaced
        xr.testing.assert_identical(new.load(), example[0].sel(params="4M"))


def test_recent_file_rewritten_in_place_is_read_anew(
    written: Path, example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path
) -> None:
    open_dataset(written)
    smaller = write_dataset(example[0].sel(params="150M"), xr.Dataset(), tmp_path / "other.nc")
    inode = written.stat().st_ino
    written.write_bytes(smaller.read_bytes())  # same inode, new content: the memo no longer describes the file
    assert written.stat().st_ino == inode
    with open_dataset(written) as reread:
        xr.testing.assert_identical(reread.load(), example[0].sel(params="150M"))


STEPS = ("open and keep", "open and drop", "close the oldest kept", "rebuild", "rewrite in place", "forget")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.sampled_from(STEPS), min_size=1, max_size=8))
def test_any_sequence_of_opens_reads_what_each_open_saw(
    steps: list[str], example: tuple[xr.Dataset, xr.Dataset], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # the recent-file cache must never serve a stale file: each open reads the content at the path then, each kept
    # Dataset keeps reading the version it opened, and whatever happened, nothing stays open once forgotten
    contents = [example[0], example[0].sel(params="4M"), example[0].sel(params="150M")]
    path = write_dataset(contents[0], xr.Dataset(), tmp_path_factory.mktemp("steps") / "cache.nc")
    current, kept = 0, []
    for number, step in enumerate(steps):
        if step in ("open and keep", "open and drop"):
            opened = open_dataset(path)
            xr.testing.assert_identical(
                opened.isel(point=slice(0, 9)).load(), contents[current].isel(point=slice(0, 9))
            )
            if step == "open and keep":
                kept.append((opened, current))
            del opened  # a dropped Dataset holds nothing
        elif step == "close the oldest kept" and kept:
            kept.pop(0)[0].close()
        elif step == "rebuild":
            current = (current + 1) % len(contents)
            write_dataset(contents[current], xr.Dataset(), path)
        elif step == "rewrite in place" and not kept:  # in place under a live Dataset: undefined for any reader
            current = (current + 1) % len(contents)
            other = write_dataset(contents[current], xr.Dataset(), path.with_name(f"other{number}.nc"))
            path.write_bytes(other.read_bytes())
        elif step == "forget":
            ddxr.handles.forget()
        assert len(ddxr.handles._RECENT) <= ddxr.handles.RECENT_FILES
    while kept:
        opened, content = kept.pop()
        xr.testing.assert_identical(opened.load(), contents[content])
        del opened
    handles = [handle.dataset for version, handle in ddxr.handles._OPEN.items() if version.path == str(path)]
    ddxr.handles.forget()
    gc.collect()
    assert not any(handle.isopen() for handle in handles)


def test_open_files_keep_few_decompressed_chunks(written: Path) -> None:
    # netCDF-C's default (64 MiB a variable) kept every chunk ever read: a medium file loaded once left 1.35 GB in
    # the handle of a recent file
    with open_dataset(written) as opened:
        opened.load()
        handle = _handle_of(written)
        groups = [handle, *handle.groups.values()]
        sizes = {variable.get_var_chunk_cache()[0] for group in groups for variable in group.variables.values()}
    assert sizes == {ddxr.handles.CHUNK_CACHE}


def test_reading_without_chunks_does_not_import_dask_array(written: Path) -> None:
    # xarray's decoding of variable-length strings imports dask.array when dask is installed: 0.3-0.5 s of the
    # first open in a process
    pytest.importorskip("dask.array")
    code = (
        "import sys, ddxr\n"
        "ddxr.open_dataset(sys.argv[1]).sel(params='150M').to_dataframe(), ddxr.open_runs(sys.argv[1]).load()\n"
        "print('dask.array' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(written)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False"]


@pytest.mark.parametrize(
    "key",
    [[-1, 0, -3], [5, 2, 2, 40], slice(None, None, -2), slice(3, 20, 3), -2, 7, xr.DataArray([[1, 2], [3, -1]])],
    ids=["negative", "unsorted-repeated", "reversed", "stepped", "negative-scalar", "scalar", "vectorized"],
)
def test_lazy_reads_match_memory_for_any_positional_key(
    written: Path, example: tuple[xr.Dataset, xr.Dataset], key: object
) -> None:
    with open_dataset(written) as opened:
        xr.testing.assert_identical(opened.isel({POINT_DIM: key}).load(), example[0].isel({POINT_DIM: key}))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(-60, 60) | st.none(), stop=st.integers(-60, 60) | st.none(), step=st.integers(-7, 7))
def test_lazy_reads_match_memory_for_any_slice(grid_file: Path, start: int | None, stop: int | None, step: int) -> None:
    key = slice(start, stop, step or None)
    with open_dataset(grid_file) as opened:
        eager = opened.load()
    with open_dataset(grid_file) as opened:
        xr.testing.assert_identical(opened.isel({POINT_DIM: key}).load(), eager.isel({POINT_DIM: key}))


def test_point_reads_bypass_netcdf_c(written: Path, example: tuple[xr.Dataset, xr.Dataset], monkeypatch) -> None:
    # netCDF-C asks every variable of the file for its extent at each read (an unlimited dimension): on files of
    # many variables that dominates a sweep's export, so point variables are read through h5py
    with open_dataset(written) as opened:
        sweep = opened.isel({POINT_DIM: [0, 3, 4, 40]})

        def refused(*args: object, **kwargs: object) -> None:
            raise AssertionError("a point variable was read through netCDF-C")

        monkeypatch.setattr(xr.backends.netCDF4_.NetCDF4ArrayWrapper, "_getitem", refused)
        xr.testing.assert_identical(sweep.load(), example[0].isel({POINT_DIM: [0, 3, 4, 40]}))


def test_open_does_not_read_the_whole_file(tmp_path: Path) -> None:
    curves = grid_curves(post_steps=50_000, noise_variables=20)
    path = write_dataset(curves, xr.Dataset(), tmp_path / "big.nc")
    size = path.stat().st_size
    assert size > 10_000_000

    before = _bytes_read()
    with open_dataset(path) as opened:
        read_at_open = _bytes_read() - before
        subset = opened["noise_3"].isel(point=slice(0, 5)).values
    # HDF5 reads up to 4 MiB ahead when it opens a file, then ddxr reads the point index: compressed codes of the
    # small tables (~0.1 MB here), and the uncompressed codes and table of the near-unique cumulative_tokens (at most
    # 4 + 8 bytes a point); the in-memory image this replaced read every byte
    index = 12 * curves.sizes[POINT_DIM]
    assert read_at_open < _READ_AHEAD + index + size / 20, f"open read {read_at_open:,} of {size:,} bytes"
    np.testing.assert_array_equal(subset, curves["noise_3"].values[:5])


def _bytes_read() -> int:
    """Bytes this process has read through read(2) and friends (Linux), else skip."""
    io = Path("/proc/self/io")
    if not io.exists():
        pytest.skip("needs /proc/self/io to count the bytes read")
    return int(dict(line.split(": ") for line in io.read_text().splitlines())["rchar"])


def test_replaced_file_old_open_keeps_its_version_new_open_reads_the_new(
    written: Path, example: tuple[xr.Dataset, xr.Dataset]
) -> None:
    curves = example[0]
    old = open_dataset(written)
    write_dataset(curves.sel(params="4M"), xr.Dataset(), written)  # a rebuild: new file moved over the path
    new = open_dataset(written)
    xr.testing.assert_identical(new.load(), curves.sel(params="4M"))
    xr.testing.assert_identical(old.load(), curves)  # read after the replacement: still the old version
    old.close()
    new.close()


def test_closed_dataset_reopens_its_version_or_fails_clearly(
    written: Path, example: tuple[xr.Dataset, xr.Dataset]
) -> None:
    closed = open_dataset(written)
    closed.close()
    gc.collect()
    reread = closed["train_loss"].isel(point=slice(0, 3)).values  # the same version is still on disk: reopened
    np.testing.assert_array_equal(reread, example[0]["train_loss"].values[:3])
    del closed  # it holds the handle again, which would keep the old version readable

    replaced = open_dataset(written)
    replaced.close()
    gc.collect()
    write_dataset(*example, written)
    with pytest.raises(CacheError, match="replaced or removed since this Dataset was opened and closed; open it again"):
        replaced["step"].load()


def test_manager_pickles_to_the_same_file_version(written: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    # a dask worker process unpickles the manager and reopens the same version
    with open_dataset(written, chunks={}) as opened:
        restored = pickle.loads(pickle.dumps(opened))
        xr.testing.assert_identical(restored.load(), example[0])


# --- dask chunks ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(grid_curves(), xr.Dataset(), tmp_path_factory.mktemp("grid") / "grid.nc")


@pytest.fixture
def threads() -> Iterator[None]:
    dask = pytest.importorskip("dask")
    with dask.config.set(scheduler="threads", num_workers=2):
        yield


ANALYSES = {
    "mean_over_seeds": lambda ds: analysis.mean_over_seeds(ds),
    "std_over_seeds": lambda ds: analysis.std_over_seeds(ds, ["hellaswag", "pile_valppl"]),
    "at_tokens": lambda ds: analysis.at_tokens(ds, [1e9, 5e9, 2e10, 7e10]),
    "at_tokens_nearest": lambda ds: analysis.at_tokens(ds, [3e9, 4e10], "train_loss", method="nearest"),
    "final": lambda ds: analysis.final(ds, "posttraining"),
}


CHUNKS_SPLIT = pytest.mark.filterwarnings("ignore:The specified chunks separate the stored chunks")  # on purpose


@CHUNKS_SPLIT
@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_analyses_on_dask_chunks_equal_eager_ones(grid_file: Path, name: str) -> None:
    with open_dataset(grid_file) as eager, open_dataset(grid_file, chunks={POINT_DIM: 500}) as chunked:
        assert chunked["hellaswag"].chunks is not None and len(chunked["hellaswag"].chunks[0]) > 5
        expected, result = ANALYSES[name](eager), ANALYSES[name](chunked)
        assert chunked["hellaswag"].chunks is not None  # the analysis did not load the chunked variables in place
    xr.testing.assert_identical(result.compute(), expected.compute())
    assert int(result.notnull().to_array().sum()) > 0  # not vacuously equal


@CHUNKS_SPLIT
@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("seeds", ["mean", "majority"])
def test_decision_accuracy_on_dask_chunks_equals_the_eager_one(grid_file: Path, seeds: str) -> None:
    with open_dataset(grid_file) as eager, open_dataset(grid_file, chunks={POINT_DIM: 500}) as chunked:
        for metric, small in (("hellaswag", "20M"), ("pile_valppl", "150M")):
            expected = analysis.decision_accuracy(eager, metric, small, "1B", target_metric="arc_easy", seeds=seeds)
            result = analysis.decision_accuracy(chunked, metric, small, "1B", target_metric="arc_easy", seeds=seeds)
            assert result == expected
            assert result.n_recipes == 6 and 0.0 <= result.value <= 1.0


def test_one_handle_per_inode_whatever_its_path_or_mtime(written: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    # HDF5 knows an open file by its inode: a second handle on the same inode is what crashed (pydata/xarray#8289)
    link = written.with_name("link.nc")
    os.link(written, link)
    with open_dataset(written) as first:
        os.utime(written, ns=(1, 1))  # touched: same inode, new mtime
        with open_dataset(link) as second:
            inode = written.stat().st_ino
            assert [version.inode for version in ddxr.handles._OPEN].count(inode) == 1
            xr.testing.assert_identical(second.load(), first.load())
