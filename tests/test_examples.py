"""The example scripts of ``examples/``: each runs as a script and writes a real PNG; their tables hold what they claim.

Every test shares one working directory, so the demo sources are generated and the Dataset built once (by whichever
test comes first); the scripts then open the cached file.
"""

from __future__ import annotations

import importlib
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from ddxr.analysis import posttraining_decision_accuracy
from ddxr.frames import to_frame
from ddxr.plotting import size_colours
from ddxr.vocabulary import PARAMS, PRETRAINING_LEARNING_RATE, SIZES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ("lr_sweep", "scaling_curves", "decision_accuracy", "pretraining_vs_posttraining")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Working directory of every example run in this module (they write under ``cache/examples``)."""
    return tmp_path_factory.mktemp("examples")


@pytest.fixture(scope="module")
def out(workdir: Path) -> Path:
    """Return the examples' output folder as the scripts see it from ``workdir``."""
    return workdir / "cache" / "examples"


@pytest.fixture(scope="module")
def modules() -> Iterator[dict[str, ModuleType]]:
    """Return the example modules and ``_demo``, imported from ``examples/`` as the scripts import ``_demo``."""
    names = ("_demo", *SCRIPTS)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLES))
        yield {name: importlib.import_module(name) for name in names}
    for name in names:  # generic names such as decision_accuracy must not shadow anything later
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def demo(modules: dict[str, ModuleType], out: Path) -> xr.Dataset:
    """Return the demo Dataset the examples plot (built on first use, shared with the script runs)."""
    return modules["_demo"].demo_next(out).dataset()


def assert_png(path: Path, min_width: int = 600, min_height: int = 400) -> None:
    """Return a complete PNG of a drawn figure: signature, size, decodable, neither blank nor solid, with data drawn."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR, the first chunk
    assert width >= min_width and height >= min_height, f"{path} is only {width}x{height}"
    pixels = matplotlib.image.imread(path)  # decodes every chunk: a truncated file fails here
    rgb = pixels[..., :3]
    ink = (rgb < 0.85).any(axis=-1).mean()
    assert 0.01 < ink < 0.6, f"{path}: {ink:.1%} of the pixels are drawn, expected a figure with lines and text"
    # axes, text and grid are grey; only the data are coloured, so an empty panel has no coloured pixel
    coloured = (rgb.max(axis=-1) - rgb.min(axis=-1) > 0.25).mean()
    assert coloured > 2e-4, f"{path}: {coloured:.3%} of the pixels are coloured, expected drawn data"


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_writes_png(name: str, workdir: Path, out: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")], cwd=workdir, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, f"{name}.py failed:\n{result.stderr[-3000:]}"
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f"wrote {Path('cache/examples') / f'{name}.png'}"
    assert_png(out / f"{name}.png")
    assert not list(out.glob("sources-*")), "a staging folder of the demo sources was left behind"


def test_demo_sources_are_generated_once(modules: dict[str, ModuleType], demo: xr.Dataset, out: Path) -> None:
    demo_sources = modules["_demo"].demo_sources
    data_dir, url = demo_sources(out)
    store = data_dir / "wandb.db"
    before = store.stat().st_mtime_ns
    assert demo_sources(out) == (data_dir, url) == (out.resolve() / "sources", f"sqlite:///{store}")
    assert store.stat().st_mtime_ns == before
    assert (data_dir / "datadecide").is_dir()


def test_demo_sources_replace_an_interrupted_generation(modules: dict[str, ModuleType], tmp_path: Path) -> None:
    leftover = tmp_path / "sources"
    (leftover / "datadecide").mkdir(parents=True)
    (leftover / "datadecide" / "half-written.parquet").write_bytes(b"PAR1")
    data_dir, _ = modules["_demo"].demo_sources(tmp_path)
    assert data_dir == leftover.resolve()
    assert (data_dir / "wandb.db").is_file()
    assert not (data_dir / "datadecide" / "half-written.parquet").exists()
    assert not list(tmp_path.glob("sources-*")), "the staging folder was left behind"


def test_size_colours_follow_numeric_size_order() -> None:
    colours = size_colours(["1B", "150M", "4M", "150M"])
    assert list(colours) == ["4M", "150M", "1B"]
    assert len(set(colours.values())) == 3


def sft_final_points(ds: xr.Dataset, metric: str) -> pd.DataFrame:
    """Oracle: the last measured post-training point of every lineage whose leaf run is an SFT run."""
    points = to_frame(ds, metric, dropna=False)
    leaves = points.groupby("lineage").tail(1)  # rows follow each lineage in training order: the leaf run's point
    sft = leaves.loc[leaves["run_type"] == "supervised_ft", "lineage"]
    post = points[~points["pretraining_phase"] & points["lineage"].isin(sft) & points[metric].notna()]
    return post.groupby("lineage").tail(1)


# ------------------------------------------------------------------ scaling_curves
def test_seed_mean_curves_average_the_seeds(modules: dict[str, ModuleType], demo: xr.Dataset) -> None:
    example = modules["scaling_curves"]
    curves = example.seed_mean_curves(demo)
    pretraining = to_frame(demo.sel(data=example.RECIPE, learning_rate=PRETRAINING_LEARNING_RATE), example.METRIC)
    expected = pretraining[pretraining["step"] > 0].groupby(["params", "step"], observed=True)[example.METRIC].mean()
    got = curves.set_index(["params", "step"])["value"]
    assert set(curves["data"]) == {example.RECIPE}
    assert list(curves["params"].cat.categories) == [size for size in PARAMS if size in set(pretraining["params"])]
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False, rtol=1e-6)
    # every seed counts: DataDecide trains 1B on five seeds, smaller sizes on three
    np.testing.assert_array_equal(curves["n_seeds"], np.where(curves["params"].astype(str) == "1B", 5, 3))


def test_finetuning_end_points_are_the_sft_leaves(modules: dict[str, ModuleType], demo: xr.Dataset) -> None:
    example = modules["scaling_curves"]
    ends = example.finetuning_end_points(demo)
    expected = sft_final_points(demo.sel(data=example.RECIPE), example.METRIC)
    assert len(ends) == len(expected) > 0
    np.testing.assert_allclose(np.sort(ends["value"]), np.sort(expected[example.METRIC]), rtol=1e-6)
    np.testing.assert_allclose(np.sort(ends["cumulative_tokens"]), np.sort(expected["cumulative_tokens"]))


# ------------------------------------------------------------------ decision_accuracy
def complete_steps(ds: xr.Dataset, size: str, metric: str) -> np.ndarray:
    """Oracle: steps > 0 where every pretraining-only lineage of a size measured the metric."""
    points = to_frame(ds.sel(params=size, learning_rate=PRETRAINING_LEARNING_RATE), metric, dropna=False)
    measured = points.pivot_table(index="step", columns="lineage", values=metric, aggfunc="count", dropna=False)
    steps = measured.index[(measured.reindex(columns=points["lineage"].unique()) > 0).all(axis=1)].to_numpy()
    return steps[steps > 0]


@settings(max_examples=12, deadline=None)
@given(fractions=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5, unique=True))
def test_checkpoints_are_the_nearest_complete_steps(
    modules: dict[str, ModuleType], demo: xr.Dataset, fractions: list[float]
) -> None:
    example = modules["decision_accuracy"]
    table = example.checkpoints(demo, ("4M", "150M"), sorted(fractions))
    assert not table.duplicated(["params", "step"]).any()
    for size in ("4M", "150M"):  # two sizes: the oracle is a brute-force search per size
        steps = complete_steps(demo, size, example.METRIC)
        rows = table[table["params"] == size]
        distance = np.abs(steps[None, :] - np.asarray(rows["fraction"])[:, None] * steps.max())
        np.testing.assert_array_equal(
            distance[np.arange(len(rows)), np.searchsorted(steps, rows["step"])], distance.min(axis=1)
        )
        true_params, per_step = SIZES.loc[size, ["true_params", "tokens_per_step"]]
        np.testing.assert_allclose(rows["cumulative_compute"], 6.0 * true_params * per_step * rows["step"], rtol=1e-9)


def test_last_checkpoint_skips_perplexity_only_steps(modules: dict[str, ModuleType], demo: xr.Dataset) -> None:
    example = modules["decision_accuracy"]
    last = example.checkpoints(demo, ("4M",), (1.0,))["step"].item()
    four_m = demo.sel(params="4M", learning_rate=PRETRAINING_LEARNING_RATE)
    assert four_m["step"].max().item() > last  # DataDecide's 4M has a later perplexity-only checkpoint
    assert last == complete_steps(demo, "4M", example.METRIC).max()


def test_accuracies_table(modules: dict[str, ModuleType], demo: xr.Dataset) -> None:
    example = modules["decision_accuracy"]
    table = example.accuracies(demo)
    assert list(table["params"].cat.categories) == list(example.SMALL)
    assert table["decision_accuracy"].between(0.0, 1.0).all()
    recipes = demo.sel(params=example.TARGET, learning_rate=PRETRAINING_LEARNING_RATE)["data"].to_numpy()
    n_recipes = len(set(recipes))
    assert (table["n_pairs"] == n_recipes * (n_recipes - 1) // 2).all()
    # compute grows along each size's checkpoints and from size to size at the end of training
    assert (table.groupby("params", observed=True)["cumulative_compute"].diff().dropna() > 0).all()
    assert table.groupby("params", observed=True)["cumulative_compute"].last().is_monotonic_increasing


# ------------------------------------------------------------------ pretraining_vs_posttraining
@settings(max_examples=40, deadline=None)
@given(counts=st.dictionaries(st.sampled_from(PARAMS), st.integers(1, 6), min_size=1))
def test_pick_size_takes_most_recipes_then_the_larger_size(
    modules: dict[str, ModuleType], counts: dict[str, int]
) -> None:
    example = modules["pretraining_vs_posttraining"]
    sizes = [size for size, count in counts.items() for _ in range(count)]
    scores = pd.DataFrame({"params": pd.Categorical(sizes, categories=PARAMS, ordered=True), "data": range(len(sizes))})
    most = max(counts.values())
    assert example.pick_size(scores) == max((size for size in counts if counts[size] == most), key=PARAMS.index)


def test_recipe_scores_match_posttraining_decision_accuracy(modules: dict[str, ModuleType], demo: xr.Dataset) -> None:
    example = modules["pretraining_vs_posttraining"]
    scores = example.recipe_scores(demo)
    assert scores.groupby("params", observed=True).size().max() >= 3  # the demo has a size with ≥ 3 recipes
    size = example.pick_size(scores)
    chosen = scores[scores["params"] == size]
    # the plotted points order every pair as the library's statistic does, so the title describes the figure
    before, after = chosen["pretraining"].to_numpy(), chosen["posttraining"].to_numpy()
    first, second = np.triu_indices(len(chosen), k=1)
    agree = np.sign(before[first] - before[second]) * np.sign(after[first] - after[second])
    expected = posttraining_decision_accuracy(demo, example.METRIC, size, example.RUN_TYPE)
    assert expected.n_recipes == len(chosen)
    assert np.mean((1 + agree) / 2) == pytest.approx(expected.value)


def test_recipe_scores_best_is_the_highest_sft_final(modules: dict[str, ModuleType], demo: xr.Dataset) -> None:
    example = modules["pretraining_vs_posttraining"]
    scores = example.recipe_scores(demo).set_index(["params", "data"])["posttraining"]
    post = sft_final_points(demo, example.METRIC).astype({"params": str})
    expected = post.groupby(["params", "data"])[example.METRIC].max()
    scores.index = scores.index.set_levels(scores.index.levels[0].astype(str), level="params")
    pd.testing.assert_series_equal(scores.sort_index(), expected.sort_index(), check_names=False, rtol=1e-6)
