"""Failure modes of the ``ddxr`` command (issue 10).

No destroyed files, atomic exports, selections that mean what they say, messages that name command-line flags.
One test per class of bad input or fault.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ddxr.cache import is_ddxr_cache, write_dataset
from ddxr.cli import DEMO_MANIFEST, UsageError, _clear_demo_sources, cli_message, main, parse_selection
from ddxr.index import point_coordinates
from ddxr.synthetic import generate

#: Python spellings no message of the command may show.
PYTHON_INTERNALS = ("refresh=True", "cached_build", "mean=True", "ds.data_vars", "DATA_FORMATS", "DESIGN.md")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Small generated sources: two sizes of one recipe, a few runs."""
    folder = tmp_path_factory.mktemp("sources")
    truth = generate(folder, params=["4M", "20M"], data=["Dolma1.7"], n_runs=6, messy=False)
    return folder, truth.store_url


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a ddxr file of two lineages (one pretraining base finetuned once), written by ddxr."""
    steps = np.arange(4)
    points = pd.DataFrame(
        {
            "lineage": ["150M/dolma1_7/seed0"] * 4 + ["sft"] * 6,
            "params": "150M",
            "data": "Dolma1.7",
            "learning_rate": [0.0] * 4 + [1e-5] * 6,
            "cumulative_tokens": np.r_[steps * 1e9, steps[:3] * 1e9, 3e9 + np.arange(1, 4) * 1e7],
            "run_id": ["150M/dolma1_7/seed0"] * 7 + ["sft"] * 3,
            "run_type": ["pretraining"] * 7 + ["supervised_ft"] * 3,
            "seed": 0,
            "step": np.r_[steps * 1000, steps[:3] * 1000, 1, 2, 3],
            "pretraining_phase": [True] * 7 + [False] * 3,
            "cumulative_compute": 0.0,
            "tokens_estimated": False,
        }
    )
    points.loc[6, ["cumulative_tokens", "step"]] = [3e9, 3000]  # the SFT lineage's prefix ends at the base
    curves = xr.Dataset(
        {"olmes_9_average": ("point", np.linspace(0.3, 0.5, 10).astype(np.float32))},
        coords=point_coordinates(points[["lineage", "params", "data", "learning_rate", "cumulative_tokens"]]),
    ).assign_coords({name: ("point", points[name].to_numpy()) for name in points.columns[5:]})
    runs = xr.Dataset({"learning_rate": ("run", [1e-5])}, coords={"run_id": ("run", ["sft"])}).set_xindex("run_id")
    return write_dataset(curves, runs, tmp_path_factory.mktemp("file") / "small.nc")


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """Return the command's stderr, checked to be one line with no traceback and no Python spellings."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not [word for word in PYTHON_INTERNALS if word in err], err
    return err


# ------------------------------------------------------------------ data loss / destruction
def test_build_out_refuses_a_file_ddxr_did_not_write(sources, tmp_path, capsys) -> None:
    folder, url = sources
    notes = tmp_path / "notes.nc"
    notes.write_text("my notes")
    build = ["build", "--datadecide", str(folder), "--db", url, "--cache-dir", str(tmp_path / "cache")]
    assert main([*build, "--out", str(notes)]) == 1
    err = one_line_error(capsys)
    assert "was not written by ddxr" in err and "pass --force to replace it anyway" in err
    assert notes.read_text() == "my notes"
    # an input of the build is refused even with --force
    store = Path(url.removeprefix("sqlite:///"))
    before = store.read_bytes()
    assert main([*build, "--out", str(store), "--force"]) == 1
    assert "is an input of this command" in one_line_error(capsys)
    assert store.read_bytes() == before
    # --force replaces the foreign file; the file written is a ddxr file, which a later build may replace
    assert main([*build, "--out", str(notes), "--force"]) == 0
    assert is_ddxr_cache(notes)
    assert f"wrote {notes}" in capsys.readouterr().out


def test_build_says_reused_for_a_fresh_cache(sources, tmp_path, capsys) -> None:
    folder, url = sources
    build = ["build", "--datadecide", str(folder), "--db", url, "--cache-dir", str(tmp_path)]
    assert main(build) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("wrote ") and first.endswith(".nc")
    cached = Path(first.removeprefix("wrote "))
    stamp = cached.stat().st_mtime_ns
    assert main(build) == 0
    second = capsys.readouterr().out
    assert second.splitlines()[0].startswith(f"reused {cached}") and "ddxr build --refresh" in second
    assert "wrote" not in second and cached.stat().st_mtime_ns == stamp


def test_demo_never_deletes_files_it_did_not_write(tmp_path, capsys) -> None:
    demo = tmp_path / "demo"
    (demo / "datadecide").mkdir(parents=True)
    (demo / "datadecide" / "old.parquet").write_bytes(b"PAR1")  # written by an earlier demo
    (demo / "thesis.tex").write_text("months of work")  # not
    (tmp_path / "elsewhere.txt").write_text("outside")
    (demo / DEMO_MANIFEST).write_text(json.dumps(["datadecide/old.parquet", "../elsewhere.txt"]))
    assert main(["demo", "--cache-dir", str(tmp_path), "--quiet"]) == 1
    assert "did not write" in one_line_error(capsys)
    assert (demo / "thesis.tex").read_text() == "months of work"
    assert (tmp_path / "elsewhere.txt").read_text() == "outside"  # a manifest cannot reach outside its folder
    assert not (demo / "datadecide" / "old.parquet").exists()  # what the demo wrote is gone
    # without the stranger, what is left of the demo is cleared, folders included
    (demo / "thesis.tex").unlink()
    (demo / "datadecide" / "cache").mkdir()
    _clear_demo_sources(demo)
    assert not any(demo.iterdir())
    # a file named like the demo's output but not written by ddxr is not replaced either
    (tmp_path / "ddxr-demo.nc").write_text("not netCDF")
    with pytest.raises(UsageError, match="was not written by ddxr.*move it away or pass another --cache-dir"):
        main(["--debug", "demo", "--cache-dir", str(tmp_path), "--quiet"])


def test_export_is_atomic_when_the_disk_is_full(small_file, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "sweep.csv"
    out.write_text("the previous export\n")

    def full_disk(frame, target, *args, **kwargs):
        Path(target).write_text("lineage,cur")  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    assert main(["export", str(small_file), "--melt", "-o", str(out)]) == 1
    err = one_line_error(capsys)
    assert str(out) in err and "No space left on device" in err and "nothing was written" in err
    assert out.read_text() == "the previous export\n"  # the old file is intact, no partial file under its name
    assert [path.name for path in tmp_path.iterdir()] == ["sweep.csv"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("missing/sweep.csv", "folder {tmp}/missing does not exist"),
        (".", "is a folder"),
        ("x.xlsx", ".parquet or .csv"),
    ],
)
def test_export_to_a_bad_path_is_one_line(small_file, tmp_path, capsys, output, message) -> None:
    target = tmp_path / output if output != "." else tmp_path / "folder.csv"
    target.mkdir() if output == "." else None
    assert main(["export", str(small_file), "-o", str(target)]) == 1
    assert message.format(tmp=tmp_path) in one_line_error(capsys)
    assert not (tmp_path / "missing").exists()


# ------------------------------------------------------------------ silent wrong results
def test_fractional_or_non_finite_numbers_are_refused() -> None:
    with pytest.raises(UsageError, match=r"--sel step=1.5: step takes whole numbers"):
        parse_selection(["step=1.5"])
    with pytest.raises(UsageError, match="seed takes whole numbers"):
        parse_selection(["seed=0,0.5"])
    with pytest.raises(UsageError, match="learning_rate takes finite numbers"):
        parse_selection(["learning_rate=nan"])
    assert parse_selection(["step=1e3", "seed=2.0"]) == {"step": 1000, "seed": 2}


def test_repeated_selections_merge(small_file, tmp_path, capsys) -> None:
    labels = parse_selection(["params=150M", "params=1B,150M", "learning_rate=1e-5", "learning_rate=0"])
    assert labels == {"params": ["150M", "1B"], "learning_rate": [1e-5, 0.0]}
    with pytest.raises(UsageError, match="a range LO:HI cannot be combined"):
        parse_selection(["step=0:10", "step=20"])
    out = tmp_path / "both.csv"
    argv = ["export", str(small_file), "--sel", "lineage=sft", "--sel", "lineage=150M/dolma1_7/seed0", "-o", str(out)]
    assert main([*argv, "--prefix", "copied"]) == 0
    assert set(pd.read_csv(out)["lineage"]) == {"sft", "150M/dolma1_7/seed0"}


# ------------------------------------------------------------------ unclear errors
def test_messages_name_command_line_flags(small_file, tmp_path, capsys) -> None:
    broken = tmp_path / "broken.nc"
    broken.write_bytes(small_file.read_bytes()[:2000])  # a truncated ddxr file
    for argv, message in [
        (["info", str(tmp_path / "missing.nc")], "no such file; check the path, or write one with ddxr build --out"),
        (["info", str(broken)], "not a ddxr file"),
        (["export", str(small_file), "--metrics", "nope", "-o", str(tmp_path / "x.csv")], "unknown metric(s) 'nope'"),
        (
            ["plot", str(small_file), "--kind", "scaling", "--metric", "a,b", "-o", str(tmp_path / "x.png")],
            "one --metric",
        ),
    ]:
        assert main(argv) == 1
        assert message in one_line_error(capsys)
    # remedies the library spells as Python arguments read as flags on the command line
    assert cli_message(ValueError("x.nc: corrupt; rebuild with refresh=True or delete the file")) == (
        "x.nc: corrupt; rebuild with ddxr build --refresh or delete the file"
    )
    assert cli_message(ValueError("x.nc: no such cache file; build it (cached_build) or\ncheck")) == (
        "x.nc: no such cache file; build it with ddxr build or check"
    )
