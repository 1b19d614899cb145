"""One open netCDF4 handle per version of a file, shared by every Dataset opened from it in this process.

Each handle has an HDF5 companion (h5py, read-only) opened with it on the same file: number variables of the root
group are read through it. netCDF-C works out the length of an unlimited dimension on every read by asking each
variable of the group for its extent, so a read of a cache file (whose ``point`` dimension is unlimited, for
refreshes) costs ~1 µs per variable in the file: 180 µs a read in a file of 160 variables, 2 ms in one of 1,900,
where h5py takes 5 µs.

netCDF-C/HDF5 crash on opening a file that is already open through other handles when the garbage collector has
closed some of them (pydata/xarray#8289). Opening every file through one shared handle avoids the situation without
reading the file into memory: variables are read from disk when used.

A *version* of a file is its inode (device and inode number), which is also how HDF5 recognises a file it has open:
two handles on one inode are exactly the situation that crashes. ddxr replaces cache files with ``os.replace``, so a
rebuilt file is a new inode and gets a new handle, while Datasets opened before keep reading the old version through
theirs (an unlinked file stays readable while it is open).

A handle stays open while a Dataset uses it, and the :data:`RECENT_FILES` files opened last stay open after their
last Dataset is garbage-collected, each with a memo the opener keeps decoded metadata in: opening the same file
again (a notebook cell run twice, a loop over selections) then costs no netCDF open and no decoding. A recent file
is forgotten, and its handle closed once no Dataset uses it, when

- a Dataset of it is closed explicitly (``close()`` or leaving ``with``: the caller is done with the file),
- the file at its path is replaced, removed, or modified in place (its mtime or size changed), seen at any open,
- more recent files push it out, or :func:`forget` is called.

Closing takes xarray's netCDF lock, so it never runs while another thread reads; a collection that happens while the
lock is held (inside a read) leaves the handle to be closed at the next open.
"""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import netCDF4
from xarray.backends.file_manager import FileManager
from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK

from ddxr.errors import CacheError

#: Files kept open (with their memo) after their last Dataset is gone; each holds its decoded point index in memory.
RECENT_FILES = 2
#: Bytes of decompressed chunks each variable of an open file keeps, so that sweeps repeated on one region of a file
#: decompress nothing (a few of the writer's 64,000-byte chunks).
CHUNK_CACHE = 1 << 18
_ATTEMPTS = 5  # opens of a path that keeps being replaced while it is opened, before giving up
# All guarded by xarray's netCDF lock, which every read holds too: netCDF-C is not thread-safe, so no read may run
# while a file opens or closes.
_OPEN: weakref.WeakValueDictionary[FileVersion, _Handle] = weakref.WeakValueDictionary()
_RECENT: OrderedDict[FileVersion, _Recent] = OrderedDict()  # the most recently opened last
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
        return _stat(path)[0]


class _Handle:
    """An open netCDF4 Dataset and its HDF5 companion, closed when the last manager holding them is gone."""

    __slots__ = ("__weakref__", "dataset", "hdf5", "hdf5_variables")

    def __init__(self, dataset: netCDF4.Dataset, hdf5: h5py.File) -> None:
        self.dataset = dataset
        self.hdf5 = hdf5
        self.hdf5_variables: dict[str, h5py.Dataset] = {}  # looked up once each (a lookup costs ~80 µs)
        # not at interpreter exit: the modules may be torn down already, and the OS closes files anyway
        weakref.finalize(self, _close, dataset, hdf5).atexit = False


@dataclass
class _Recent:
    """A recently opened file: its handle, kept open, and the memo of what was decoded from this content."""

    handle: _Handle
    content: tuple[int, int]  # mtime (ns) and size: a file rewritten in place is not the content the memo describes
    memo: dict[str, Any] = field(default_factory=dict)


class SharedFileManager(FileManager):
    """xarray file manager over the shared handle of one file version.

    ``close()`` ends this Dataset's use of the handle (and forgets the file as a recent one); the handle itself closes
    with its last user. Acquiring after ``close()`` reopens the same version if the file at the path is still that
    version, else raises :class:`~ddxr.errors.CacheError`. Pickling keeps the version, so a dask worker process
    reopens the same file.

    """

    def __init__(self, version: FileVersion, handle: _Handle | None = None) -> None:
        self.version = version
        self._handle = handle

    def acquire(self, needs_lock: bool = True) -> netCDF4.Dataset:
        """Return the shared open file (opened on first use)."""
        return self._held(needs_lock).dataset

    def hdf5_variable(self, name: str) -> h5py.Dataset:
        """Return the root-group variable ``name`` of the shared file as an h5py Dataset (opened on first use)."""
        handle = self._held()
        variable = handle.hdf5_variables.get(name)
        if variable is None:
            variable = handle.hdf5_variables[name] = handle.hdf5[name]
        return variable

    def _held(self, needs_lock: bool = True) -> _Handle:
        if self._handle is None:  # xarray reads with needs_lock=False while holding the netCDF lock
            self._handle = _shared_handle(self.version, needs_lock)
        return self._handle

    @contextmanager
    def acquire_context(self, needs_lock: bool = True) -> Iterator[netCDF4.Dataset]:
        """Yield the shared open file."""
        yield self.acquire(needs_lock)

    def close(self, needs_lock: bool = True) -> None:
        """Drop this manager's reference to the shared file, and forget the file as a recent one."""
        if self._handle is not None:
            _forget(lambda version, content: version == self.version, needs_lock)
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

    The file becomes the most recent one: its handle and memo outlive the manager (see the module docstring).

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
        found = _stat(path)
        # a replaced, removed or rewritten file is forgotten first: its handle closes now if no Dataset uses it, so
        # a file rewritten in place (same inode) is opened afresh rather than read through stale metadata
        _forget(lambda version, content: _current_content(version.path) != (version, content))
        version, content = found
        handle = _shared_handle(version, check=False)
        if _stat(path) == found:  # the handle opened the version (and content) it is filed under
            _remember(version, content, handle)
            return SharedFileManager(version, handle)
        with NETCDF4_PYTHON_LOCK:
            if _OPEN.get(version) is handle:
                del _OPEN[version]
    raise CacheError(f"{path}: the file was replaced {_ATTEMPTS} times while being opened; retry once it is written")


def forget(path: str | Path | None = None) -> None:
    """Forget the recent file at ``path`` (every recent file if None): its handle closes once no Dataset uses it.

    Call it before writing into a file in place (ddxr only ever replaces files), or to free the recent files' memos.
    """
    if path is None:
        _forget(lambda version, content: True)
        return
    where, current = os.path.abspath(path), _current(path)
    _forget(lambda version, content: version.path == where or version == current)


def _forget(which: Callable[[FileVersion, tuple[int, int]], bool], needs_lock: bool = True) -> None:
    """Forget the recent files ``which(version, content)`` selects."""
    with NETCDF4_PYTHON_LOCK if needs_lock else nullcontext():
        forgotten = [
            _RECENT.pop(version) for version, recent in list(_RECENT.items()) if which(version, recent.content)
        ]
    # dropped here, outside the lock, so that the handles no Dataset uses close now (or at the next open when the
    # caller holds the lock)
    del forgotten


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
        handle = _OPEN[version] = _Handle(*_opened(version.path))
        return handle


def _opened(path: str) -> tuple[netCDF4.Dataset, h5py.File]:
    """Open ``path`` read-only with netCDF4 and with h5py, each variable caching :data:`CHUNK_CACHE` bytes of chunks.

    netCDF-C's default, 64 MiB a variable, keeps every chunk a Dataset ever read while the file is open: a whole
    medium file loaded once left 1.35 GB behind in a recent file's handle. The h5py file takes no lock: ddxr never
    writes a file in place, and a lock of this second HDF5 library would stop another program's netCDF writer.
    Both open the file at ``path`` now; the caller checks it is still the version it means.
    """
    dataset = netCDF4.Dataset(path, mode="r")
    groups = [dataset]
    while groups:
        group = groups.pop()
        groups.extend(group.groups.values())
        for variable in group.variables.values():
            variable.set_var_chunk_cache(size=CHUNK_CACHE)
    try:
        hdf5 = h5py.File(path, "r", locking=False, rdcc_nbytes=CHUNK_CACHE)
    except OSError:
        dataset.close()
        raise
    return dataset, hdf5


def recent_memo(manager: SharedFileManager) -> dict[str, Any]:
    """Return the memo of the file ``manager`` reads while it is a recent one (else a new dict, kept nowhere).

    What is kept there lives as long as the file stays recent: it must not refer to ``manager`` or any Dataset
    using it, which would keep the memo itself alive.
    """
    with NETCDF4_PYTHON_LOCK:
        recent = _RECENT.get(manager.version)
        return recent.memo if recent is not None and recent.handle is manager._handle else {}


def _remember(version: FileVersion, content: tuple[int, int], handle: _Handle) -> None:
    """Make ``version`` the most recent file (with a new memo if its content is new)."""
    with NETCDF4_PYTHON_LOCK:
        recent = _RECENT.pop(version, None)
        if recent is None or recent.content != content:
            recent = _Recent(handle, content)
        _RECENT[version] = recent
        pushed_out = [_RECENT.popitem(last=False) for _ in range(len(_RECENT) - RECENT_FILES)]
    del pushed_out  # outside the lock: their handles close now if no Dataset uses them


def _stat(path: str | Path) -> tuple[FileVersion, tuple[int, int]]:
    status = os.stat(path)
    return FileVersion(os.path.abspath(path), status.st_dev, status.st_ino), (status.st_mtime_ns, status.st_size)


def _current_content(path: str) -> tuple[FileVersion, tuple[int, int]] | None:
    try:
        return _stat(path)
    except OSError:
        return None


def _current(path: str) -> FileVersion | None:
    current = _current_content(path)
    return None if current is None else current[0]


def _close(dataset: netCDF4.Dataset, hdf5: h5py.File) -> None:
    """Close a handle whose last user is gone; later if a read holds the netCDF lock (this may run inside one)."""
    hdf5.close()  # h5py locks its own calls: a read in progress finishes first
    if NETCDF4_PYTHON_LOCK.acquire(blocking=False):
        try:
            dataset.close()
        finally:
            NETCDF4_PYTHON_LOCK.release()
    else:
        _UNCLOSED.append(dataset)
