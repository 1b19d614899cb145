"""One open netCDF4 handle per version of a file, shared by every Dataset opened from it in this process.

netCDF-C/HDF5 crash on opening a file that is already open through other handles when the garbage collector has
closed some of them (pydata/xarray#8289). Opening every file through one shared handle avoids the situation without
reading the file into memory: variables are read from disk when used.

A *version* of a file is its inode (device and inode number), which is also how HDF5 recognises a file it has open:
two handles on one inode are exactly the situation that crashes. ddxr replaces cache files with ``os.replace``, so a
rebuilt file is a new inode and gets a new handle, while Datasets opened before keep reading the old version through
theirs (an unlinked file stays readable while it is open).

A handle is closed when the last Dataset using it is closed or garbage-collected. Closing takes xarray's netCDF lock,
so it never runs while another thread reads; a collection that happens while the lock is held (inside a read) leaves
the handle to be closed at the next open.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import netCDF4
from xarray.backends.file_manager import FileManager
from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK

from ddxr.errors import CacheError

_ATTEMPTS = 5  # opens of a path that keeps being replaced while it is opened, before giving up
# Both guarded by xarray's netCDF lock, which every read holds too: netCDF-C is not thread-safe, so no read may run
# while a file opens or closes.
_OPEN: weakref.WeakValueDictionary[FileVersion, _Handle] = weakref.WeakValueDictionary()
_UNCLOSED: list[netCDF4.Dataset] = []  # handles released while a read held the netCDF lock


@dataclass(frozen=True)
class FileVersion:
    """One version of a file, its inode: a file replaced under the same path is another version.

    ``path`` is where it was found (to reopen it) and takes no part in comparisons: two paths to one inode (links)
    are one file to HDF5, hence one handle.
    """

    path: str = field(compare=False)
    device: int
    inode: int

    @classmethod
    def of(cls, path: str | Path) -> FileVersion:
        """Return the version of the file now at ``path`` (``OSError`` if there is none)."""
        status = os.stat(path)
        return cls(os.path.abspath(path), status.st_dev, status.st_ino)


class _Handle:
    """An open netCDF4 Dataset, closed when the last manager holding it is gone."""

    __slots__ = ("__weakref__", "dataset")

    def __init__(self, dataset: netCDF4.Dataset) -> None:
        self.dataset = dataset
        # not at interpreter exit: the netCDF4 module may be torn down already, and the OS closes files anyway
        weakref.finalize(self, _close, dataset).atexit = False


class SharedFileManager(FileManager):
    """xarray file manager over the shared handle of one file version.

    ``close()`` ends this Dataset's use of the handle; the handle itself closes with its last user. Acquiring after
    ``close()`` reopens the same version if the file at the path is still that version, else raises
    :class:`~ddxr.errors.CacheError`. Pickling keeps the version, so a dask worker process reopens the same file.
    """

    def __init__(self, version: FileVersion, handle: _Handle | None = None) -> None:
        self.version = version
        self._handle = handle

    def acquire(self, needs_lock: bool = True) -> netCDF4.Dataset:
        """Return the shared open file (opened on first use)."""
        if self._handle is None:  # xarray reads with needs_lock=False while holding the netCDF lock
            self._handle = _shared_handle(self.version, needs_lock)
        return self._handle.dataset

    @contextmanager
    def acquire_context(self, needs_lock: bool = True) -> Iterator[netCDF4.Dataset]:
        """Yield the shared open file."""
        yield self.acquire(needs_lock)

    def close(self, needs_lock: bool = True) -> None:
        """Drop this manager's reference to the shared file."""
        self._handle = None

    def __getstate__(self) -> FileVersion:
        """Pickle the file version only (for dask workers), never an open handle."""
        return self.version

    def __setstate__(self, version: FileVersion) -> None:
        """Rebuild the manager from its file version."""
        self.__init__(version)

    def __repr__(self) -> str:
        """Show the file path and inode."""
        return f"{type(self).__name__}({self.version.path!r}, inode={self.version.inode})"


def open_shared(path: str | Path) -> SharedFileManager:
    """Return a manager over the shared handle of the file now at ``path``, opening it if no Dataset uses it yet.

    Parameters
    ----------
    path : str or pathlib.Path
        A netCDF file.

    Returns
    -------
    SharedFileManager
        Pass it to :class:`xarray.backends.NetCDF4DataStore`.

    Raises
    ------
    OSError, RuntimeError
        What netCDF4 raises on a missing or unreadable file.
    CacheError
        If the path was replaced again during each of several attempts to open it.
    """
    for _ in range(_ATTEMPTS):
        version = FileVersion.of(path)
        handle = _shared_handle(version, check=False)
        if FileVersion.of(path) == version:  # the handle opened the version it is filed under
            return SharedFileManager(version, handle)
        with NETCDF4_PYTHON_LOCK:
            if _OPEN.get(version) is handle:
                del _OPEN[version]
    raise CacheError(f"{path}: the file was replaced {_ATTEMPTS} times while being opened; retry once it is written")


def _shared_handle(version: FileVersion, needs_lock: bool = True, check: bool = True) -> _Handle:
    """Return the open handle of ``version``, opened now if no Dataset holds it.

    ``needs_lock``: False when the caller holds the netCDF lock already. ``check``: the file at the path must still
    be ``version`` (a reopen after ``close()``).
    """
    with NETCDF4_PYTHON_LOCK if needs_lock else nullcontext():
        handle = _OPEN.get(version)
        if handle is not None:
            return handle
        if check and _current(version.path) != version:
            raise CacheError(
                f"{version.path}: the file was replaced or removed since this Dataset was opened and closed; "
                "open it again (ddxr.open_dataset) to read the current file"
            )
        while _UNCLOSED:
            _UNCLOSED.pop().close()
        handle = _OPEN[version] = _Handle(netCDF4.Dataset(version.path, mode="r"))
        return handle


def _current(path: str) -> FileVersion | None:
    try:
        return FileVersion.of(path)
    except OSError:
        return None


def _close(dataset: netCDF4.Dataset) -> None:
    """Close a handle whose last user is gone; later if a read holds the netCDF lock (this may run inside one)."""
    if NETCDF4_PYTHON_LOCK.acquire(blocking=False):
        try:
            dataset.close()
        finally:
            NETCDF4_PYTHON_LOCK.release()
    else:
        _UNCLOSED.append(dataset)
