"""Progress bars: redrawn on a terminal, plain lines elsewhere, closed on error, silent when asked."""

from __future__ import annotations

import io

import pytest

from ddxr.progress import StepLines, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_each_step_is_one_plain_line():
    out = io.StringIO()
    with progress_bar(total=2, desc="ddxr build", unit="stage", stream=out) as bar:
        for label in ("read DataDecide", "link runs"):
            bar.set_postfix_str(label)
            bar.update()
    assert out.getvalue() == "ddxr build: read DataDecide (1/2 stage)\nddxr build: link runs (2/2 stage)\n"
    assert list(progress_bar(["a", "b"], desc="chunks", stream=out)) == ["a", "b"]
    assert out.getvalue().endswith("chunks: (1/2 it)\nchunks: (2/2 it)\n")


def test_nested_and_disabled_bars_are_silent_off_a_terminal():
    out = io.StringIO()
    assert list(progress_bar(range(3), desc="inner", nested=True, stream=out)) == [0, 1, 2]
    assert list(progress_bar(range(3), desc="quiet", enabled=False, stream=out)) == [0, 1, 2]
    assert out.getvalue() == ""
    assert isinstance(progress_bar(range(3), desc="quiet", enabled=False, stream=Terminal()), StepLines)


def test_on_a_terminal_the_bar_is_closed_when_a_step_fails():
    terminal = Terminal()
    with pytest.raises(RuntimeError), progress_bar(total=3, desc="ddxr build", unit="stage", stream=terminal) as bar:
        bar.update()
        raise RuntimeError("stage failed")
    # the bar ends its line, so the error printed next starts on its own line
    assert "ddxr build" in terminal.getvalue() and terminal.getvalue().endswith("\n")
