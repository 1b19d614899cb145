"""Issue 10, cache classes: damaged cache files give a CacheError naming the file and the fix, nothing else.

Never another exception type; killed builds leave no lasting temporary files.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import filelock
import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from roundtrip import example_datasets, roundtrip

from ddxr import coders
from ddxr.cache import SCHEMA_VERSION, TEMPORARY_NAME, cached_build, open_dataset, open_runs, write_dataset
from ddxr.errors import CacheError

REBUILD = "`ddxr build --refresh`"
#: Python internals a CLI user cannot act on; CacheError messages must not name them.
INTERNALS = ("refresh=True", "cached_build", "TypeError", "Traceback")


@pytest.fixture(scope="module")
def example() -> tuple[xr.Dataset, xr.Dataset]:
    curves, runs = example_datasets()
    return curves, runs.assign(history_repaired=("run", np.array([True, None, False, True], dtype=object)))


@pytest.fixture(scope="module")
def valid_bytes(example: tuple[xr.Dataset, xr.Dataset], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_dataset(*example, tmp_path_factory.mktemp("valid") / "cache.nc").read_bytes()


@pytest.fixture
def path(example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path) -> Path:
    return write_dataset(*example, tmp_path / "cache.nc")


def _opens(path: Path) -> None:
    """Everything a reader does with a file: open both groups and read every value."""
    with open_dataset(path) as curves:
        curves.load()
    open_runs(path).close()


def _cache_error(path: Path) -> str:
    with pytest.raises(CacheError) as caught:
        _opens(path)
    message = str(caught.value)
    assert str(path) in message
    return message


# --- decode errors are CacheErrors (was: TypeError from `_READ_ERRORS | BuildError`) --------------------------------


def test_decode_failure_is_a_cache_error_not_a_type_error(path: Path) -> None:
    with netCDF4.Dataset(path, "a") as nc:
        nc["lineage__codes"].setncattr("ddxr_values", "no_such_table")  # the decoder's lookup fails (KeyError)
    message = _cache_error(path)
    assert "truncated, corrupt or foreign file" in message and REBUILD in message


def test_out_of_range_level_codes(path: Path) -> None:
    with netCDF4.Dataset(path, "a") as nc:
        nc["params__codes"][3] = 7  # the params table holds 2 values
    message = _cache_error(path)
    assert "variable 'params': expected codes in [0, 2)" in message and "found codes from 0 to 7" in message
    assert REBUILD in message


def test_out_of_range_codes_of_a_lazy_coordinate(path: Path) -> None:
    with netCDF4.Dataset(path, "a") as nc:
        nc["run_id__codes"][5] = -3
    with open_dataset(path) as curves:  # the index is fine: run_id is read, and refused, when used
        assert curves["train_loss"].size == 71
        with pytest.raises(CacheError, match=r"variable 'run_id': expected codes in \[0, 8\).*from -3"):
            curves["run_id"].load()


@pytest.mark.parametrize("owner", ["root", "variable", "runs"])
def test_non_json_attribute(path: Path, owner: str) -> None:
    with netCDF4.Dataset(path, "a") as nc:
        if owner == "root":
            nc.setncattr("build_report", "{runs_read: 4")  # listed in ddxr_json_attrs, but not JSON
        elif owner == "variable":
            nc["train_loss"].setncattr("higher_is_better", "Flase")
        else:
            nc["runs"].setncattr("ddxr_json_attrs", "[not json")
    message = _cache_error(path)
    assert "expected JSON text" in message


def test_missing_runs_group(path: Path) -> None:
    with netCDF4.Dataset(path, "a") as nc:
        nc.renameGroup("runs", "renamed")
    with open_dataset(path) as curves:
        assert curves.sizes["point"] == 71  # the curves are intact
    with pytest.raises(CacheError, match=rf"\(group 'runs'\): expected a readable ddxr netCDF cache.*{REBUILD}"):
        open_runs(path)


def test_older_layout_asks_for_a_rebuild_by_cli_command(path: Path) -> None:
    with netCDF4.Dataset(path, "a") as nc:
        nc.setncattr("schema_version", SCHEMA_VERSION - 1)
    message = _cache_error(path)
    older = f"file layout {SCHEMA_VERSION - 1}, this ddxr reads {SCHEMA_VERSION}"
    assert f"written by an older ddxr ({older}); rebuild it with {REBUILD}" in message


@pytest.mark.parametrize(
    "damage", ["truncated", "text", "empty", "codes", "json", "schema", "old schema", "missing runs"]
)
def test_cache_error_messages_name_cli_commands_not_internals(path: Path, damage: str) -> None:
    with netCDF4.Dataset(path, "a") as nc:
        if damage == "codes":
            nc["data__codes"][0] = 99
        elif damage == "json":
            nc.setncattr("build_report", "{")
        elif damage == "schema":
            nc.setncattr("schema_version", "two")
        elif damage == "old schema":
            nc.setncattr("schema_version", 1)
        elif damage == "missing runs":
            nc.renameGroup("runs", "other")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:2000])
    elif damage == "text":
        path.write_text("run_id,step\n")
    elif damage == "empty":
        path.write_bytes(b"")
    message = _cache_error(path)
    assert not [word for word in INTERNALS if word in message], message
    if damage != "schema":  # a foreign netCDF file: the message says what a ddxr cache carries instead
        assert REBUILD in message


# --- leftover temporary files of killed builds ----------------------------------------------------------------------


def test_leftover_temporaries_of_killed_builds_are_removed(
    example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path
) -> None:
    target = tmp_path / "ddxr-0123456789abcdef.nc"
    killed = tmp_path / f".{target.name}.{'a' * 32}.tmp"  # a build of this file killed mid-write
    other = tmp_path / f".ddxr-fedcba9876543210.nc.{'b' * 32}.tmp"  # a killed build of another file
    busy = tmp_path / f".ddxr-busy.nc.{'c' * 32}.tmp"  # another file's build, writing right now
    foreign = [tmp_path / "notes.tmp", tmp_path / ".notes.tmp", tmp_path / f".x.{'d' * 31}.tmp", tmp_path / "a.nc"]
    for file in (killed, other, busy, *foreign):
        file.write_bytes(b"partial")

    with filelock.FileLock(f"{tmp_path / 'ddxr-busy.nc'}.lock"):
        cached_build(target, lambda: example)

    assert not killed.exists() and not other.exists()
    assert busy.exists()
    assert all(file.exists() for file in foreign)  # never a file ddxr did not name
    assert TEMPORARY_NAME.match(killed.name) and not TEMPORARY_NAME.match(foreign[2].name)


def test_a_build_killed_mid_write_leaves_a_temporary_the_next_build_removes(
    example: tuple[xr.Dataset, xr.Dataset], tmp_path: Path
) -> None:
    target = tmp_path / "cache.nc"
    killer = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from roundtrip import example_datasets
        import ddxr.cache

        def write_then_die(target, write):
            write(target.with_name(f".{{target.name}}.{"e" * 32}.tmp"))
            os._exit(9)  # killed after the temporary file is written, before it is renamed

        ddxr.cache.replace_atomically = lambda path, write: write_then_die(path, write)
        ddxr.cache.write_dataset(*example_datasets(), {str(target)!r})
        """
    )
    assert subprocess.run([sys.executable, "-c", killer], check=False).returncode == 9
    leftover = tmp_path / f".cache.nc.{'e' * 32}.tmp"
    assert leftover.exists() and not target.exists()

    cached_build(target, lambda: example)
    assert not leftover.exists() and target.exists()


# --- fuzzing the decoder --------------------------------------------------------------------------------------------


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(content=st.binary(max_size=4096))
def test_random_bytes_are_cache_errors(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "random.nc"
    path.write_bytes(content)
    with pytest.raises(CacheError):
        _opens(path)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_valid_files_open_or_are_cache_errors(valid_bytes: bytes, tmp_path: Path, data: st.DataObject) -> None:
    content = bytearray(valid_bytes)
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, len(content) - 1), st.integers(0, 255)), min_size=1, max_size=8)
    )
    for position, value in edits:
        content[position] = value
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(content))))
    path = tmp_path / f"mutated-{abs(hash(bytes(content))) % 10**9}.nc"
    path.write_bytes(bytes(content[:cut]))
    try:
        _opens(path)
    except CacheError as error:
        assert str(path) in str(error)


# --- the coders refuse what they cannot decode ----------------------------------------------------------------------


def test_nullable_boolean_decoder_refuses_other_values() -> None:
    stored = xr.Variable("run", np.array([1, 5, -1], dtype=np.int8), attrs={"dtype": "boolean"})
    with pytest.raises(CacheError, match="expected booleans stored as 0, 1 or -1"):
        coders.NullableBooleanCoder().decode(stored, "history_repaired")


# --- runs-table booleans (were the strings 'True'/'False'/'' after a round trip) ------------------------------------


def test_runs_table_booleans_stay_booleans_with_missing_values(example: tuple[xr.Dataset, xr.Dataset]) -> None:
    from ddxr.assemble import assemble_runs

    table = pd.DataFrame(
        {
            "run_id": ["a", "b", "c"],
            "tokens_repaired": pd.Series([True, np.nan, False], dtype=object),  # run facts of an unfollowed run: NaN
            "in_curves": [True, False, True],
        }
    )
    runs = assemble_runs(table)
    assert runs["tokens_repaired"].values.tolist() == [True, None, False]
    assert runs["in_curves"].dtype == bool
    with roundtrip(example[0], runs) as (_, back):
        assert back["tokens_repaired"].values.tolist() == [True, None, False]
        assert back["in_curves"].values.tolist() == [True, False, True]
        assert back.to_dataframe()["tokens_repaired"].map(type).tolist() == [bool, type(None), bool]
