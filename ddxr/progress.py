"""Progress bars that degrade cleanly.

On a terminal a bar is a tqdm bar redrawn in place. Anywhere else — a pipe, a log file, a notebook cell captured
to text, CI — redrawing writes carriage returns and cursor-up escapes (``ESC[A``) that garble the log, so a bar
there prints one plain line per completed step instead, and nested bars stay silent.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any


def progress_bar(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    enabled: bool = True,
    nested: bool = False,
    stream: IO[str] | None = None,
) -> Any:
    """Return a progress bar for ``iterable`` (or for manual :meth:`update` calls when ``iterable`` is None).

    Parameters
    ----------
    iterable : iterable, optional
        Items to iterate over while the bar advances.
    desc : str
        Label at the start of the bar or line.
    total : int, optional
        Number of steps, when ``iterable`` has no length.
    unit : str, default "it"
        Name of one step.
    enabled : bool, default True
        False draws nothing (``--quiet``).
    nested : bool, default False
        A bar inside another one: temporary on a terminal, silent elsewhere.
    stream : file-like, optional
        Where the bar goes; standard error by default.

    Returns
    -------
    tqdm.tqdm or StepLines
        Supports iteration, ``update``, ``set_postfix_str``, ``close`` and use as a context manager, which closes
        the bar even on error so an error message starts on its own line.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> with progress_bar(total=2, desc="ddxr load", unit="table", stream=out) as bar:
    ...     bar.set_postfix_str("runs")
    ...     bar.update()
    >>> print(out.getvalue(), end="")
    ddxr load: runs (1/2 table)
    """
    stream = sys.stderr if stream is None else stream
    # a notebook's stderr is no terminal but tqdm.auto draws it a widget, which has no escapes to garble
    if enabled and (stream.isatty() or (stream is sys.stderr and "ipykernel" in sys.modules)):
        from tqdm.auto import tqdm  # only builds draw bars: keep tqdm off the read path

        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=not nested, file=stream, dynamic_ncols=True)
    return StepLines(iterable, desc=desc, total=total, unit=unit, stream=stream if enabled and not nested else None)


class StepLines:
    """The plain-text stand-in for a bar: one line per completed step, no control characters.

    Parameters
    ----------
    iterable : iterable, optional
        Items to iterate over; each one is a step.
    desc : str
        Label at the start of every line.
    total : int, optional
        Number of steps, shown as ``(done/total unit)``.
    unit : str
        Name of one step.
    stream : file-like or None
        Where lines go; None prints nothing.
    """

    def __init__(
        self, iterable: Iterable | None, *, desc: str, total: int | None, unit: str, stream: IO[str] | None
    ) -> None:
        self.iterable = iterable
        self.desc = desc
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total  # type: ignore[arg-type]
        self.unit = unit
        self.stream = stream
        self.n = 0
        self.postfix = ""

    def __iter__(self) -> Iterator:
        """Yield the items, printing a line after each."""
        """Yield the items, printing a line after each."""
        for item in self.iterable or ():
            yield item
            self.update()

    def __enter__(self) -> StepLines:
        """Return the bar itself."""
        """Return the bar itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the bar, also on error."""
        self.close()

    def set_postfix_str(self, text: str) -> None:
        """Name the step in progress; it is printed once the step completes."""
        self.postfix = text

    def update(self, n: int = 1) -> None:
        """Count ``n`` completed steps and print one line."""
        self.n += n
        if self.stream is None:
            return
        done = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        label = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}:{label} ({done} {self.unit})", file=self.stream, flush=True)

    def close(self) -> None:
        """Nothing to clear: every line is already complete."""
