"""Set-up shared by the example scripts: demo sources generated once, a DataDecideNext on them, Agg figures.

The sources (DataDecide files + a SQLite W&B store, :func:`ddxr.synthetic.generate`) are written once under
``<out>/sources`` and reused by every example; built Datasets are cached under ``<out>/cache`` by fingerprint, so
only the first example run pays for generation and build (≈10 s).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import matplotlib
from filelock import FileLock
from matplotlib.figure import Figure

from ddxr import DataDecideNext
from ddxr.synthetic import generate

#: Where the examples keep their sources, caches and figures (relative to the working directory).
OUT = Path("cache/examples")


def demo_sources(out: Path = OUT) -> tuple[Path, str]:
    """Return the demo sources under ``out/sources``, generated on first use.

    Generation writes to a temporary folder renamed into place under a file lock, so an interrupted run or two
    examples started together never leave half-written sources behind.

    Parameters
    ----------
    out : path, default ``cache/examples``
        Folder of the examples' files.

    Returns
    -------
    data_dir : pathlib.Path
        The DataDecide data folder.
    store_url : str
        SQLite URL of the W&B store.
    """
    out = Path(out).resolve()
    folder, store = out / "sources", out / "sources" / "wandb.db"
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(out / "sources.lock"):
        if not store.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a store-less folder is a leftover of an interrupted run
            staging = Path(tempfile.mkdtemp(prefix="sources-", dir=out))
            try:
                generate(staging)
                staging.rename(folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return folder, f"sqlite:///{store}"


def demo_next(out: Path = OUT) -> DataDecideNext:
    """Return a :class:`ddxr.DataDecideNext` on the demo sources, caching under ``out/cache``, without progress bars."""
    data_dir, store_url = demo_sources(out)
    return DataDecideNext(data_dir, store_url, cache_dir=Path(out) / "cache", progress=False)


def subplots(**kwargs: Any) -> tuple[Figure, Any]:
    """``matplotlib.pyplot.subplots`` on the file-only Agg backend (no display needed)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**kwargs)


def save(figure: Figure, path: Path) -> Path:
    """Write a figure as PNG (folders created), close it and say where it went."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"wrote {path}")
    return path
