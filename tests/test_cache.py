"""The netCDF cache: identical round trips, lazy opening, encodings, damaged files, fingerprints, cached builds."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from roundtrip import assert_roundtrip, curves_datasets, example_datasets, roundtrip
from xarray.backends import BackendArray
from xarray.core import indexing

import ddxr
import ddxr.cache
from ddxr.cache import SCHEMA_VERSION, cached_build, fingerprint, open_dataset, open_runs, write_dataset
from ddxr.errors import BuildError, CacheError
from ddxr.index import LEVELS, POINT_DIM, DdxrIndex, point_coordinates

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def example() -> tuple[xr.Dataset, xr.Dataset]:
    return example_datasets()


@pytest.fixture
def written(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> Path:
    return write_dataset(*example, tmp_path / "cache.nc")


# --- round trips ----------------------------------------------------------------------------------------------------


def test_round_trip_is_identical(example: tuple[xr.Dataset, xr.Dataset]) -> None:
    assert_roundtrip(*example)  # through ddxr.open_dataset/open_runs and xr.open_dataset(engine="ddxr")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(curves=curves_datasets())
def test_generated_datasets_round_trip_identically(curves: xr.Dataset) -> None:
    assert_roundtrip(curves)


def test_types_come_back_as_written(example: tuple[xr.Dataset, xr.Dataset]) -> None:
    curves, runs = example
    with roundtrip(curves, runs) as (curves_back, runs_back):
        assert curves_back["pretraining_phase"].dtype == bool
        assert curves_back["step"].dtype == np.int64
        assert curves_back["cumulative_compute"].dtype == np.float64
        assert curves_back["train_loss"].dtype == np.float32
        assert curves_back["train_loss"].attrs["higher_is_better"] is False
        assert curves_back.attrs["build_report"] == curves.attrs["build_report"]
        assert runs_back["created_at"].values[1] == np.datetime64("2025-08-21T10:00:00.123456789")
        assert runs_back["tokens_estimated"].dtype == bool
        assert "ddxr_json_attrs" not in curves_back.attrs


@pytest.mark.parametrize(
    ("created", "stored"),
    [
        (["2025-08-20T09:00:00", "2025-08-21T10:00:01"], "seconds since 1970-01-01"),  # ddxr's own encoding
        (["2025-08-20T09:00:00", "NaT"], None),  # xarray's, as with fractions of a second (the example's)
    ],
)
def test_run_creation_times_round_trip(
    example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path, created: list[str], stored: str | None
) -> None:
    curves, runs = example
    times = np.resize(np.array(created, dtype="datetime64[ns]"), runs.sizes["run"])
    runs = runs.assign(created_at=(runs["created_at"].dims, times, runs["created_at"].attrs))
    assert_roundtrip(curves, runs)
    with netCDF4.Dataset(write_dataset(curves, runs, tmp_path / "cache.nc")) as file:
        variable = file.groups["runs"]["created_at"]
        assert variable.dtype == np.int64
        assert (variable.units == stored) if stored else variable.units != "seconds since 1970-01-01"


def test_point_coordinates_survive_without_data_variables(example: tuple[xr.Dataset, xr.Dataset]) -> None:
    # cf_xarray's decoder keeps only coordinates some data variable carries: ours must keep them all
    coords_only = example[0].drop_vars(list(example[0].data_vars))
    with roundtrip(coords_only) as (back, _):
        xr.testing.assert_identical(back.load(), coords_only)
        assert {"run_id", "run_type", "seed", "step", "pretraining_phase", "tokens_estimated"} <= set(back.coords)


def test_empty_dataset_round_trips(example: tuple[xr.Dataset, xr.Dataset]) -> None:
    empty = example[0].sel(cumulative_tokens=slice(1e30, None))
    with roundtrip(empty) as (back, _):
        xr.testing.assert_identical(back.load(), empty)
        assert back["lineage"].dtype == object
        assert back.sel(params=slice("1", "2")).sizes[POINT_DIM] == 0


def test_provenance_is_stamped_when_absent(example: tuple[xr.Dataset, xr.Dataset]) -> None:
    bare = example[0].drop_attrs(deep=False)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with roundtrip(bare) as (back, runs_back):
        assert back.attrs["ddxr_version"] == ddxr.__version__
        assert back.attrs["schema_version"] == SCHEMA_VERSION
        assert dt.datetime.fromisoformat(back.attrs["created"]) >= before
        assert runs_back.attrs["schema_version"] == SCHEMA_VERSION


def test_selection_right_after_open(written: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    curves = example[0]
    labels = {"params": "150M", "learning_rate": [1e-5, 1e-4], "cumulative_tokens": slice(2e9, None)}
    with open_dataset(written) as opened:
        assert isinstance(opened.xindexes[POINT_DIM], DdxrIndex)
        xr.testing.assert_identical(opened.sel(labels).load(), curves.sel(labels))
        assert opened.sel(labels).sizes[POINT_DIM] == 2 * 5


def test_open_is_lazy(written: Path) -> None:
    with open_dataset(written) as opened:
        lazy = [name for name, variable in opened.variables.items() if name not in (POINT_DIM, *LEVELS)]
        assert all(not opened[name].variable._in_memory for name in lazy), "variables were read on open"
        selected = opened.sel(params="4M")
        assert not selected["pile_valppl"].variable._in_memory
        assert np.isfinite(selected["pile_valppl"].values).all()


@pytest.mark.filterwarnings("ignore:The specified chunks separate the stored chunks")  # small chunks on purpose
def test_open_with_chunks_is_dask_backed(written: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    with open_dataset(written, chunks={POINT_DIM: 16}) as opened:
        assert opened["train_loss"].chunks == ((16, 16, 16, 16, 7),)
        assert opened["run_id"].chunks is not None
        xr.testing.assert_identical(opened.load(), example[0])


def test_encodings_in_the_file(written: Path) -> None:
    with netCDF4.Dataset(written) as nc:
        metric = nc["train_loss"]
        assert metric.dtype == np.float32
        assert metric.filters()["zlib"] and metric.filters()["complevel"] == 1
        # mostly NaN in this example (its pretraining points have no train loss): stored unshuffled
        metric.set_auto_mask(False)
        assert np.isnan(metric[:]).mean() > 0.5 and not metric.filters()["shuffle"]
        assert metric.chunking() == [min(metric.size, 16_000)]  # 64,000 bytes at most
        assert nc["cumulative_compute"].dtype == np.float64 and nc["cumulative_compute"].filters()["zlib"]
        assert nc["learning_rate"].dtype == np.float64 and nc["cumulative_tokens"].dtype == np.float64
        assert nc["step"].dtype == np.int64
        # strings along point: a compressed character array for plain readers (whole strings in a chunk) ...
        assert nc["run_id"].dtype == "S1" and nc["run_id"].filters()["zlib"]
        assert nc["run_id"].chunking() == list(nc["run_id"].shape)
        # ... and codes as narrow as their table allows for ddxr, compressed; tables uncompressed
        assert nc["run_id__codes"].dtype == np.int8 and nc["run_id__codes"].filters()["zlib"]
        assert nc["run_id__values"].dimensions == ("run_id__value",)
        assert not nc["cumulative_tokens__values"].filters()["zlib"]
        assert {f"{level}__codes" for level in LEVELS} <= set(nc.variables)
        assert "point" not in nc.variables  # no index in the file: plain .sel never hits a category table
        assert nc["pretraining_phase"].getncattr("dtype") == "bool"  # xarray's own boolean encoding
        assert nc.getncattr("Conventions").startswith("CF-")
        assert set(nc.groups) == {"runs"}


def test_codes_of_near_unique_values_are_stored_uncompressed(tmp_path: Path) -> None:
    # every open reads the index codes whole: codes of a table too large for int16 (near-unique values such as
    # cumulative_tokens) barely compress, so they are stored as they are
    many = 40_000
    frame = pd.DataFrame(
        {"lineage": "a", "params": "4M", "data": "C4", "learning_rate": 0.0, "cumulative_tokens": np.arange(many) * 1.0}
    )
    coords = point_coordinates(frame).assign(
        run_id=(POINT_DIM, np.full(many, "a", object)), step=(POINT_DIM, frame.index)
    )
    long = xr.Dataset({"train_loss": (POINT_DIM, np.zeros(many, np.float32))}, coords=coords)

    with netCDF4.Dataset(write_dataset(long, xr.Dataset(), tmp_path / "long.nc")) as nc:
        codes = nc["cumulative_tokens__codes"]
        # one uncompressed chunk (point is unlimited, so HDF5 needs chunks: large ones, read at disk speed)
        assert codes.dtype == np.int32 and codes.chunking() == [many] and not codes.filters()["zlib"]
        assert nc.dimensions["point"].isunlimited() and nc.dimensions["cumulative_tokens__value"].isunlimited()
        assert nc["lineage__codes"].dtype == np.int8 and nc["lineage__codes"].filters()["zlib"]
    assert_roundtrip(long)


def test_unused_level_values_are_not_written(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    curves = example[0]
    keep = (curves["params"] == "4M").values
    subset = curves.drop_indexes([POINT_DIM, *LEVELS]).isel({POINT_DIM: keep})
    stock = pd.MultiIndex.from_frame(curves.to_dataframe().reset_index()[list(LEVELS)])[keep]  # keeps all level values
    assert "150M" in stock.levels[1]
    with_stock_index = subset.drop_vars([POINT_DIM, *LEVELS]).assign_coords(
        xr.Coordinates.from_pandas_multiindex(stock, POINT_DIM)
    )

    path = write_dataset(with_stock_index, example[1], tmp_path / "cache.nc")

    with netCDF4.Dataset(path) as nc:
        assert nc["params__values"][:].tolist() == ["4M"]
    with open_dataset(path) as back:
        assert back.sizes[POINT_DIM] == 12


def test_file_is_one_netcdf4_file_without_pickles(written: Path) -> None:
    head = written.read_bytes()[:8]
    assert head == b"\x89HDF\r\n\x1a\n"  # netCDF4 = HDF5 container
    assert [path.name for path in written.parent.iterdir()] == ["cache.nc"]  # no temporary file left behind


class ComputedMetric(BackendArray):
    """A float32 metric computed on access: records each read and which values returned before are still alive."""

    def __init__(self, values: np.ndarray, returned: list[weakref.ref], alive_at_read: list[int]) -> None:
        self.values, self.returned, self.alive_at_read = values, returned, alive_at_read
        self.shape, self.dtype = values.shape, values.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._compute)

    def _compute(self, key: tuple) -> np.ndarray:
        self.alive_at_read.append(sum(ref() is not None for ref in self.returned))
        values = self.values[key].copy()  # fresh memory, as a computation returns
        self.returned.append(weakref.ref(values))
        return values


def test_lazy_metrics_are_read_one_at_a_time_as_they_are_written(
    example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path
) -> None:
    # the assembled curves may hold their metrics as lazily indexed arrays, so that writing streams them: the write
    # decides everything from dtypes and attrs, and holds one metric's values at a time
    curves, runs = example
    returned: list[weakref.ref] = []
    alive_at_read: list[int] = []
    metrics = {
        name: xr.Variable(
            POINT_DIM,
            indexing.LazilyIndexedArray(ComputedMetric(curves[name].values, returned, alive_at_read)),
            attrs=curves[name].attrs,
        )
        for name in curves.data_vars
    }
    lazy = curves.assign(metrics)

    ddxr.cache.encode(lazy, runs)
    assert returned == []  # checking and encoding read no metric

    path = write_dataset(lazy, runs, tmp_path / "cache.nc")

    assert len(returned) == len(metrics)  # each metric read once, while it was written ...
    assert alive_at_read == [0] * len(metrics)  # ... after the values of the one before were released
    with open_dataset(path) as back:
        xr.testing.assert_identical(back.load().drop_attrs(deep=False), curves.drop_attrs(deep=False))


def test_plain_string_copies_are_gathered_in_slices_as_they_are_written(
    example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a character copy of run_id or lineage for every point is 1.3 GB at 10 M points: it is gathered from its table
    # a slice at a time, and the file holds exactly what xarray writes from the whole copy
    curves, runs = example
    with monkeypatch.context() as xarray_alone:
        xarray_alone.setattr(ddxr.cache._WriteStore, "encode", xr.backends.NetCDF4DataStore.encode)
        reference = write_dataset(curves, runs, tmp_path / "whole.nc")
    monkeypatch.setattr(ddxr.cache, "_WRITE_SLICE_BYTES", 100)
    rows_read: dict[int, list[int]] = {}
    read = ddxr.cache._Gathered._read

    def counted(gathered: ddxr.cache._Gathered, key: tuple) -> np.ndarray:
        values = read(gathered, key)
        rows_read.setdefault(gathered.row_bytes, []).append(len(values))
        return values

    monkeypatch.setattr(ddxr.cache._Gathered, "_read", counted)
    path = write_dataset(curves, runs, tmp_path / "sliced.nc")

    with netCDF4.Dataset(reference) as whole, netCDF4.Dataset(path) as nc:
        for name in ("lineage", "params", "data", "run_id", "run_type"):
            width = nc[name].shape[1]
            assert nc[name].dtype == "S1" and nc[name].dimensions == ("point", f"string{width}")
            assert max(rows_read[width]) == max(1, 100 // width) < curves.sizes["point"]  # never the whole copy
            assert {key: nc[name].getncattr(key) for key in nc[name].ncattrs()} == {
                key: whole[name].getncattr(key) for key in whole[name].ncattrs()
            }
            assert nc[name].chunking() == whole[name].chunking() and nc[name].filters() == whole[name].filters()
            nc[name].set_auto_chartostring(False)
            whole[name].set_auto_chartostring(False)
            np.testing.assert_array_equal(nc[name][:], whole[name][:])
    with xr.open_dataset(path, engine="netcdf4") as plain:  # a plain reader gets the strings back
        assert plain["run_id"].values.astype(str).tolist() == curves["run_id"].values.tolist()


# --- refusals before writing ----------------------------------------------------------------------------------------


def test_duplicate_points_are_refused_before_writing(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    curves, runs = example
    doubled = xr.concat([curves, curves.isel({POINT_DIM: [0, 1]})], dim=POINT_DIM)
    path = tmp_path / "cache.nc"

    with pytest.raises(BuildError, match=r"expected points unique by \('lineage', 'run_id', 'step'\), found 4 points"):
        write_dataset(doubled, runs, path)
    assert not path.exists()


def test_missing_level_values_are_refused(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    curves, runs = example
    frame = curves.to_dataframe().reset_index()
    frame.loc[0, "learning_rate"] = np.nan
    stock = xr.Coordinates.from_pandas_multiindex(pd.MultiIndex.from_frame(frame[list(LEVELS)]), POINT_DIM)
    holed = curves.drop_vars([POINT_DIM, *LEVELS]).assign_coords(stock)

    with pytest.raises(
        BuildError, match=r"index levels must not hold missing values .*, found learning_rate: 1; use sentinels"
    ):
        write_dataset(holed, runs, tmp_path / "cache.nc")


def test_missing_strings_are_refused(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    curves, runs = example
    run_ids = curves["run_id"].values.copy()
    run_ids[3] = None
    with pytest.raises(BuildError, match=r"curves variable 'run_id': expected strings, found 1 missing values"):
        write_dataset(curves.assign_coords(run_id=(POINT_DIM, run_ids)), runs, tmp_path / "cache.nc")
    states = runs["state"].values.copy()
    states[0] = np.nan
    with pytest.raises(BuildError, match=r"runs variable 'state'.* explicit sentinel"):
        write_dataset(curves, runs.assign(state=("run", states)), tmp_path / "cache.nc")


def test_curves_without_a_multiindex_are_refused(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"expected a MultiIndex over 'point'.* found no index"):
        write_dataset(example[0].reset_index(POINT_DIM), example[1], tmp_path / "cache.nc")


# --- damaged and foreign files --------------------------------------------------------------------------------------


def test_newer_schema_is_refused(written: Path) -> None:
    with netCDF4.Dataset(written, "a") as nc:
        nc.setncattr("schema_version", SCHEMA_VERSION + 1)
        nc["runs"].setncattr("schema_version", SCHEMA_VERSION + 1)
    newer = rf"written by a newer ddxr \(schema {SCHEMA_VERSION + 1} > {SCHEMA_VERSION}\); upgrade ddxr"
    with pytest.raises(CacheError, match=newer):
        open_dataset(written)
    with pytest.raises(CacheError, match=newer):
        open_runs(written)


def test_older_schema_asks_for_a_rebuild(written: Path) -> None:
    with netCDF4.Dataset(written, "a") as nc:
        nc.setncattr("schema_version", 1)
    older = rf"older ddxr \(file layout 1, this ddxr reads {SCHEMA_VERSION}\); rebuild it with `ddxr build --refresh`"
    with pytest.raises(CacheError, match=older):
        open_dataset(written)


def test_truncated_file_is_a_cache_error(written: Path) -> None:
    with written.open("r+b") as handle:
        handle.truncate(written.stat().st_size // 2)
    with pytest.raises(CacheError, match=rf"{written}: expected a readable ddxr netCDF cache.*`ddxr build --refresh`"):
        open_dataset(written)


@pytest.mark.parametrize("damage", ["text", "header", "empty"])
def test_corrupt_or_foreign_file_is_a_cache_error(written: Path, damage: str) -> None:
    if damage == "text":
        written.write_text("run_id,step\nabc,1\n")
    elif damage == "empty":
        written.write_bytes(b"")
    else:
        with written.open("r+b") as handle:
            handle.write(b"\x00" * 64)
    with pytest.raises(CacheError, match=r"truncated, corrupt or foreign file .*delete the file"):
        open_dataset(written)
    with pytest.raises(CacheError, match=r"\(group 'runs'\)"):
        open_runs(written)


def test_netcdf_without_ddxr_attrs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.nc"
    xr.Dataset({"x": ("t", [1.0])}).to_netcdf(path, engine="netcdf4")
    with pytest.raises(CacheError, match="expected a ddxr cache file with an integer schema_version attribute"):
        open_dataset(path)


def test_rewriting_an_open_file_in_place(written: Path, example: tuple[xr.Dataset, xr.Dataset]) -> None:
    # the lazy Dataset keeps reading the old file while the new one is written beside it and moved over it
    with open_dataset(written) as curves, open_runs(written) as runs:
        write_dataset(curves.sel(params="4M"), runs, written)
    with open_dataset(written) as smaller:
        xr.testing.assert_identical(smaller.load(), example[0].sel(params="4M"))


def test_missing_file_is_a_cache_error(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match=r"no such cache file; build it with `ddxr build`"):
        open_dataset(tmp_path / "absent.nc")


# --- fingerprints ---------------------------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_sensitive(tmp_path: Path) -> None:
    parts = {
        "datadecide": {"path": tmp_path / "full_eval.parquet", "size": 123, "mtime": 1.5},
        "store": {"runs": 517, "history_rows": np.int64(100_000), "max_created_at": dt.datetime(2025, 11, 10)},
        "options": {"metrics": ("core",), "tau": 779.0, "seeds": {2, 0, 1}},
    }
    reordered = {
        "options": {"seeds": {1, 2, 0}, "tau": 779.0, "metrics": ["core"]},
        "store": parts["store"],
        "datadecide": parts["datadecide"],
    }

    digest = fingerprint(parts)

    assert len(digest) == 16 and int(digest, 16) >= 0
    assert fingerprint(reordered) == digest
    assert fingerprint({**parts, "store": {**parts["store"], "runs": 518}}) != digest


def test_fingerprint_includes_the_schema_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = fingerprint({"options": "core"})
    monkeypatch.setattr(ddxr.cache, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    assert fingerprint({"options": "core"}) != before


def test_fingerprint_names_what_it_cannot_describe() -> None:
    with pytest.raises(CacheError, match=r"parts.options.callback: expected str, numbers.* found function"):
        fingerprint({"options": {"callback": lambda: None}})


# --- cached builds --------------------------------------------------------------------------------------------------


class CountingBuild:
    """A build function that counts its calls."""

    def __init__(self, datasets: tuple[xr.Dataset, xr.Dataset]) -> None:
        self.datasets = datasets
        self.calls = 0

    def __call__(self) -> tuple[xr.Dataset, xr.Dataset]:
        self.calls += 1
        return self.datasets


def test_cached_build_builds_once_then_opens(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    build = CountingBuild(example)
    path = tmp_path / "cache" / "0123456789abcdef.nc"

    first_curves, first_runs = open_dataset(cached_build(path, build)), open_runs(path)
    again_curves = open_dataset(cached_build(path, build))

    assert build.calls == 1
    xr.testing.assert_identical(first_curves.load(), example[0])
    xr.testing.assert_identical(first_runs.load(), example[1])
    xr.testing.assert_identical(again_curves.load(), example[0])
    for ds in (first_curves, first_runs, again_curves):
        ds.close()


def test_cached_build_refresh_rebuilds(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    path = write_dataset(*example, tmp_path / "cache.nc")
    smaller = (example[0].sel(params="4M"), example[1])
    build = CountingBuild(smaller)

    curves, runs = open_dataset(cached_build(path, build, refresh=True)), open_runs(path)

    assert build.calls == 1
    assert curves.sizes[POINT_DIM] == 12
    curves.close()
    runs.close()


def test_cached_build_on_a_corrupt_file(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    path = tmp_path / "cache.nc"
    path.write_bytes(b"not netcdf")
    build = CountingBuild(example)

    with pytest.raises(CacheError, match="`ddxr build --refresh`"):
        open_dataset(cached_build(path, build))
    curves = open_dataset(cached_build(path, build, refresh=True))

    assert build.calls == 1
    xr.testing.assert_identical(curves.load(), example[0])
    curves.close()


def test_failed_write_keeps_the_old_file(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    path = write_dataset(*example, tmp_path / "cache.nc")
    before = path.read_bytes()
    unwritable = example[0].assign(bad=(POINT_DIM, np.ones(example[0].sizes[POINT_DIM], dtype=np.complex128)))

    with pytest.raises(Exception, match="complex"):  # netCDF has no complex type: the write fails midway
        write_dataset(unwritable, example[1], path)

    assert path.read_bytes() == before
    assert sorted(item.name for item in tmp_path.iterdir()) == ["cache.nc"]


# --- concurrency: separate processes, as two notebooks or a notebook and a CLI would be ---------------------------

BUILDER = textwrap.dedent(
    """
    import hashlib, sys, time
    from pathlib import Path
    from roundtrip import example_datasets
    from ddxr.cache import cached_build, open_dataset, open_runs

    path, counter = Path(sys.argv[1]), Path(sys.argv[2])

    def build():
        with counter.open("a") as handle:
            handle.write("built\\n")
        time.sleep(1.0)  # long enough for the other process to arrive while this one holds the lock
        return example_datasets()

    cached_build(path, build)
    curves, runs = open_dataset(path), open_runs(path)
    text = curves.load().to_dataframe().to_csv() + runs.load().to_dataframe().to_csv()
    print(hashlib.sha256(text.encode()).hexdigest())
    """
)

REWRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from roundtrip import example_datasets
    from ddxr.cache import write_dataset
    from ddxr.index import POINT_DIM

    curves, runs = example_datasets()
    big = curves.assign(noise=(POINT_DIM, np.zeros((curves.sizes[POINT_DIM], ), "float32")))
    big = big.assign({f"metric_{i}": big["noise"] for i in range(200)})  # a slower write: more variables
    Path(sys.argv[3]).touch()  # tell the reader the writes begin
    for _ in range(int(sys.argv[2])):
        write_dataset(big, runs, Path(sys.argv[1]))
    """
)


def run_python(script: str, *args: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    command = [sys.executable, "-c", script, *map(str, args)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_builders_build_once_and_agree(tmp_path: Path) -> None:
    path, counter = tmp_path / "cache.nc", tmp_path / "builds.txt"

    processes = [run_python(BUILDER, path, counter) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], [error for _, error in outputs]
    assert counter.read_text() == "built\n"
    assert outputs[0][0] == outputs[1][0] and len(outputs[0][0].strip()) == 64


def test_readers_never_see_a_partial_file(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    path = write_dataset(*example, tmp_path / "cache.nc")
    started = tmp_path / "writing"
    writer = run_python(REWRITER, path, 3, started)
    opened_while_writing = 0
    while writer.poll() is None:  # read as fast as possible while the other process rewrites the file
        writing = started.exists()
        with open_dataset(path) as curves:  # never raises: the path is always a complete file
            assert curves.sizes[POINT_DIM] == example[0].sizes[POINT_DIM]
            assert curves["train_loss"].load().dtype == np.float32
        opened_while_writing += writing
        time.sleep(0.01)  # leave the writer some CPU

    _, errors = writer.communicate()
    assert writer.returncode == 0, errors
    assert opened_while_writing > 0
    assert sorted(item.name for item in tmp_path.iterdir()) == ["cache.nc", "writing"]  # no temporary file left
    with open_dataset(path) as final:
        assert len(final.data_vars) == len(example[0].data_vars) + 201


def test_the_refresh_basis_reads_back_as_written(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> None:
    basis = {"meta": b'{"key": "abc"}', "runs": bytes(range(256)) * 40, "empty": b""}
    path = write_dataset(*example, tmp_path / "with-basis.nc", basis)
    assert ddxr.cache.read_basis(path) == basis
    smaller = {"meta": b"{}", "runs": b"\x00\x01", "empty": b""}  # overwritten in place: shorter entries
    with netCDF4.Dataset(path, "a") as file:
        ddxr.cache.write_basis(file, smaller)
    assert ddxr.cache.read_basis(path) == smaller
    assert ddxr.cache.read_basis(write_dataset(*example, tmp_path / "without.nc")) is None
    (tmp_path / "not-hdf5.nc").write_bytes(b"CDF\x01 not a netCDF-4 file")
    assert ddxr.cache.read_basis(tmp_path / "not-hdf5.nc") is None


def test_mostly_missing_floats_are_stored_without_shuffle(
    example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path
) -> None:
    # an evaluation logged at a few points is one repeated NaN pattern: unshuffled it is as small and reads faster
    curves, runs = example
    points = curves.sizes[POINT_DIM]
    sparse = np.full(points, np.nan, dtype=np.float32)
    sparse[: points // 3] = 0.5
    dense = np.linspace(0, 1, points, dtype=np.float32)
    dense[: points // 3] = np.nan
    curves = curves.assign(sparse_eval=(POINT_DIM, sparse), dense_metric=(POINT_DIM, dense))
    path = write_dataset(curves, runs, tmp_path / "sparse.nc")
    with netCDF4.Dataset(path) as nc:
        assert not nc["sparse_eval"].filters()["shuffle"] and nc["sparse_eval"].filters()["zlib"]
        assert nc["dense_metric"].filters()["shuffle"]  # numbers mostly present keep it
        assert nc["cumulative_compute"].filters()["shuffle"] and nc["step"].filters()["shuffle"]
    with open_dataset(path) as back:
        xr.testing.assert_identical(
            back[["sparse_eval", "dense_metric"]].load(), curves[["sparse_eval", "dense_metric"]]
        )
