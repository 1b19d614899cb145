"""The package itself: a light read path, lazily imported build layer, version, error conventions."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from roundtrip import example_datasets

import ddxr
from ddxr.cache import write_dataset

#: Modules of the build layer that reading a file must not load. pyarrow's core is not among them: pandas >= 3
#: imports it on ``import pandas`` and builds its default string arrays with it whenever it is installed, so only the
#: parts ddxr's sources use (parquet, csv) tell whether the build layer was loaded.
BUILD_ONLY = (
    "sqlalchemy",
    "psycopg2",
    "pyarrow.parquet",
    "pyarrow.csv",
    "ddxr.sources",
    "ddxr.managers",
    "ddxr.facade",
    "tqdm",
)

_READ_PATH = """
import json, sys
import ddxr
ds = ddxr.open_dataset(sys.argv[1])
sweep = ds.sel(params="150M", learning_rate=[1e-5, 1e-4])
frame = sweep.ddxr.to_frame(metrics=["train_loss"])
runs = ddxr.open_runs(sys.argv[1])
print(json.dumps({
    "rows": len(frame),
    "lineages": sorted(frame["lineage"].unique().tolist()),
    "modules": sorted(sys.modules),
}))
"""


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    curves, runs = example_datasets()
    return write_dataset(curves, runs, tmp_path_factory.mktemp("light") / "example.nc")


def test_reading_a_file_loads_neither_the_database_stack_nor_the_build_layer(cache_file):
    result = subprocess.run(
        [sys.executable, "-c", _READ_PATH, str(cache_file)], capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout)
    # the read really happened: the two 150M SFT lineages at 1e-5 and 1e-4 (the DPO lineage's leaf LR is 2e-7)
    assert len(report["lineages"]) == 2
    assert report["rows"] > 0
    loaded = [name for name in report["modules"] if name.split(".")[0] in BUILD_ONLY or name.startswith(BUILD_ONLY)]
    assert loaded == []


def test_build_layer_is_imported_on_first_use():
    code = (
        "import sys, ddxr\n"
        "before = 'sqlalchemy' in sys.modules\n"
        "store = ddxr.WandBStore\n"
        "print(before, 'sqlalchemy' in sys.modules, store.__module__, ddxr.DataDecideNext.__module__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True", "ddxr.sources.wandb_store", "ddxr.facade"]


def test_public_names_resolve_and_unknown_names_raise_attribute_error():
    from ddxr import DataDecideNext, WandBStore  # noqa: F401  (PEP 562 module __getattr__)

    for name in ddxr.__all__:
        assert getattr(ddxr, name) is not None
    assert {"DataDecideNext", "WandBStore"} <= set(dir(ddxr))
    with pytest.raises(AttributeError, match="no attribute 'DataDecide'"):
        ddxr.DataDecide  # noqa: B018


def test_version_has_one_home():
    from ddxr._version import __version__

    assert ddxr.__version__ == __version__
    assert __version__.count(".") >= 2


def test_invalid_argument_errors_are_value_errors():
    assert issubclass(ddxr.InvalidArgumentError, ValueError)
    assert issubclass(ddxr.InvalidArgumentError, ddxr.DdxrError)


def test_the_suite_runs_the_docstring_examples():
    import tomllib

    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    pytest_config = config["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in pytest_config["addopts"].split() and "ddxr" in pytest_config["testpaths"]


def test_version_flag_and_quiet_on_every_command(capsys):
    from ddxr.cli import main, make_parser

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"ddxr {ddxr.__version__}\n"
    parser = make_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)).choices
    assert {"demo", "build", "load", "info", "export"} <= set(commands)
    for name, command in commands.items():
        assert any("--quiet" in action.option_strings for action in command._actions), name
    # before or after the command name, the flag means the same; absent, it is off
    assert parser.parse_args(["--quiet", "info", "f.nc"]).quiet is True
    assert parser.parse_args(["info", "f.nc", "--quiet"]).quiet is True
    assert parser.parse_args(["info", "f.nc"]).quiet is False
