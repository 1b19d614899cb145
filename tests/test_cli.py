"""The ddxr command: demo, build, info, export, and its error exits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ddxr.cache import open_dataset, open_runs
from ddxr.cli import main, parse_selection
from ddxr.errors import DdxrError
from ddxr.frames import to_frame


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--cache-dir", str(root), "--quiet"]) == 0
    return root


def test_demo_writes_the_file_and_the_plot(demo):
    assert (demo / "ddxr-demo.nc").stat().st_size > 0
    png = demo / "ddxr-demo-lr-sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_describes_the_file(demo, capsys):
    assert main(["info", str(demo / "ddxr-demo.nc")]) == 0
    out = capsys.readouterr().out
    for word in (
        "points:",
        "lineages:",
        "levels:",
        "learning_rate",
        "runs by type and state",
        "build report",
        "fingerprint",
    ):
        assert word in out


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_writes_the_selected_long_frame(demo, tmp_path, suffix):
    out = tmp_path / f"sweep{suffix}"
    code = main(
        [
            "export",
            str(demo / "ddxr-demo.nc"),
            "--sel",
            "params=150M",
            "--sel",
            "learning_rate=1e-5,1e-4",
            "--sel",
            "cumulative_tokens=0:5e10",
            "--metrics",
            "olmes_9_average,train_loss",
            "--melt",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    frame = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert set(frame["params"]) == {"150M"}
    # the shared pretraining prefix is the base's own (learning rate 0.0); every post-training point is selected
    post = frame[frame["phase"] != "pretraining"]
    assert set(post["learning_rate"]) == {1e-5, 1e-4} and set(frame["learning_rate"]) == {0.0, 1e-5, 1e-4}
    # several recipes selected: curve names carry size and recipe
    pretraining = set(frame.loc[frame["phase"] == "pretraining", "curve"])
    assert "150M Dolma1.7 pretraining seed 0" in pretraining
    assert all(name.startswith("150M ") and name.endswith(" pretraining seed 0") for name in pretraining)
    # the same plot-correct segments as to_frame: anchors, curve names, labels of the run that produced each point
    selected = open_dataset(demo / "ddxr-demo.nc").sel(
        params="150M", learning_rate=[1e-5, 1e-4], cumulative_tokens=slice(0, 5e10)
    )
    expected = to_frame(selected, ["olmes_9_average", "train_loss"], melt=True, runs=open_runs(demo / "ddxr-demo.nc"))
    columns = ["curve", "anchor", "cumulative_tokens", "metric", "value"]
    columns += ["learning_rate_label"] if suffix == ".parquet" else []  # CSV reads "1e-04" back as a number
    pd.testing.assert_frame_equal(
        frame[columns].astype(str), expected[columns].astype(str).reset_index(drop=True), check_dtype=False
    )
    assert frame["cumulative_tokens"].max() <= 5e10
    assert set(frame["metric"]) <= {"olmes_9_average", "train_loss"}
    assert frame["value"].notna().all()


def test_selection_parsing():
    labels = parse_selection(["params=150M", "learning_rate=1e-5,1e-4", "cumulative_tokens=0:5e9", "seed=0"])
    assert labels == {
        "params": "150M",
        "learning_rate": [1e-5, 1e-4],
        "cumulative_tokens": slice(0.0, 5e9),
        "seed": 0,
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "does-not-exist.nc"], "does-not-exist.nc"),
        (["export", "{demo}", "--sel", "params", "-o", "x.csv"], "expected NAME=VALUE"),
        (["export", "{demo}", "--sel", "learning_rate=fast", "-o", "x.csv"], "takes numbers"),
        (["export", "{demo}", "-o", "x.xlsx"], ".parquet or .csv"),
        (["export", "{demo}", "--sel", "params=77M", "-o", "{tmp}/x.csv"], "77M"),
    ],
)
def test_bad_arguments_exit_with_one_line(demo, tmp_path, capsys, argv, message):
    argv = [a.replace("{demo}", str(demo / "ddxr-demo.nc")).replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_corrupt_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "broken.nc"
    bad.write_bytes(b"not a netcdf file at all")
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "broken.nc" in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "broken.nc"
    bad.write_bytes(b"garbage")
    with pytest.raises(DdxrError):
        main(["--debug", "info", str(bad)])


def test_build_command_writes_and_reports(demo, tmp_path, capsys):
    out = tmp_path / "built.nc"
    url = f"sqlite:///{demo / 'demo' / 'wandb.db'}"
    assert main(["build", "--datadecide", str(demo / "demo"), "--db", url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.exists() and "runs_read" in printed and "runs_unlinked" in printed


def test_missing_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["build"])
    assert exit_info.value.code == 2


def test_selection_errors_read_as_prose_not_as_a_quoted_key():
    from ddxr.errors import SelectionError

    assert str(SelectionError("no point has params '77M'")) == "no point has params '77M'"


def test_demo_sweep_is_one_lineage_per_hue_and_style_group(demo):
    ds = open_dataset(demo / "ddxr-demo.nc")
    runs = open_runs(demo / "ddxr-demo.nc")
    sweep = ds.sel(params="150M", data="Dolma1.7", learning_rate=[1e-5, 3e-5, 1e-4, 3e-4])
    frame = to_frame(sweep, metrics=["olmes_9_average", "train_loss"], melt=True, runs=runs)
    for metric, rows in frame.groupby("metric"):
        groups = rows.groupby(["learning_rate_label", "phase"], observed=True)
        assert (groups["curve"].nunique() == 1).all() and (groups["lineage"].nunique() == 1).all(), metric
        for _, line in groups:
            assert (np.diff(line["cumulative_tokens"].to_numpy()) > 0).all(), metric
    olmes = frame[frame["metric"] == "olmes_9_average"]
    assert set(olmes["learning_rate_label"].astype(str)) == {"pretraining", "1e-05", "3e-05", "1e-04", "3e-04"}
    # every SFT run has one end-of-run eval: with its anchor at the base checkpoint, a two-point segment
    post = olmes[olmes["phase"] == "supervised_ft"].groupby("curve", observed=True)
    assert (post.size() == 2).all() and (post["anchor"].first()).all()
    base = olmes[olmes["phase"] == "pretraining"].iloc[-1]
    assert (olmes.loc[olmes["anchor"], "cumulative_tokens"] == base["cumulative_tokens"]).all()
    # the whole 150M Dolma1.7 selection: three seeds, every SFT rate and a DPO lineage, one true line per curve
    everything = to_frame(ds.sel(params="150M", data="Dolma1.7"), metrics="train_loss", melt=True, runs=runs)
    assert "DPO lr=1e-06 ← SFT lr=1e-05" in set(everything["curve"])
    for _, line in everything.groupby("curve", observed=True):
        assert line["lineage"].nunique() == 1 and (np.diff(line["cumulative_tokens"].to_numpy()) > 0).all()


def test_plot_command_draws_the_sweep_and_the_scaling_curves(demo, tmp_path, capsys):
    sweep, scaling = tmp_path / "sweep.png", tmp_path / "scaling.png"
    sel = ["--sel", "params=150M", "--sel", "data=Dolma1.7", "--sel", "learning_rate=1e-5,3e-5,1e-4,3e-4"]
    assert main(["plot", str(demo / "ddxr-demo.nc"), *sel, "-o", str(sweep)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {sweep} (5 curves of olmes_9_average, train_loss)"
    argv = ["plot", str(demo / "ddxr-demo.nc"), "--sel", "data=Dolma1.7", "--kind", "scaling", "-o", str(scaling)]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == f"wrote {scaling} (5 curves of olmes_9_average)"
    for png in (sweep, scaling):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert main(["plot", str(demo / "ddxr-demo.nc"), "-o", str(tmp_path / "x.svg")]) == 1
