"""Progress reporting that respects a non-terminal.

On a terminal, a rich progress bar; in CI logs or when output is piped,
a plain line every few percent instead of a flood of carriage returns.
Both show the rate (items per second since the start), the figure that
says whether adding workers helped.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

from audit.sinks import terminal_text


class Progress:
    """A counter with a description that renders itself as it advances.

    The description may name a target or a file of the user's: it is shown
    through :func:`audit.sinks.terminal_text`, and never read as rich markup.
    """

    def __init__(self, description: str, total: int, *, stream: TextIO | None = None,
                 enabled: bool = True, unit: str = "images") -> None:
        self.description = terminal_text(description)
        self.unit = unit
        self.total = max(int(total), 0)
        self.completed = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled and self.total > 0
        self._is_terminal = bool(getattr(self._stream, "isatty", lambda: False)())
        self._rich = None
        self._task = None
        self._last_reported_percent = -1
        self._started = time.monotonic()

    def __enter__(self) -> "Progress":
        if self._enabled and self._is_terminal:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeRemainingColumn)
            self._rich = RichProgress(TextColumn("{task.description}", markup=False), BarColumn(),
                                      MofNCompleteColumn(), _rate_column(self.unit), TimeRemainingColumn(),
                                      console=Console(file=self._stream), transient=False)
            self._rich.__enter__()
            self._task = self._rich.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        self.completed += n
        if not self._enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.completed)
            return
        percent = int(100 * self.completed / self.total) if self.total else 100
        if percent >= self._last_reported_percent + 10 or self.completed == self.total:
            self._last_reported_percent = percent
            elapsed = time.monotonic() - self._started
            print(f"{self.description}: {self.completed}/{self.total} ({percent}%, {elapsed:.0f}s, "
                  f"{format_rate(self.completed, elapsed, self.unit)})", file=self._stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)


def format_rate(completed: int, seconds: float, unit: str = "images") -> str:
    """``"12.3 images/s"``: the mean rate since the start (``"- images/s"`` before any time passed)."""
    if seconds <= 0:
        return f"- {unit}/s"
    rate = completed / seconds
    return f"{rate:.1f} {unit}/s" if rate < 100 else f"{rate:.0f} {unit}/s"


def _rate_column(unit: str):
    """A rich column showing the mean rate since the task started."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(format_rate(int(task.completed), task.elapsed or 0.0, unit))

    return RateColumn()


@contextmanager
def progress(description: str, total: int, *, enabled: bool = True,
             unit: str = "images") -> Iterator[Progress]:
    """``with progress("Embedding", n) as bar: bar.advance()``."""
    with Progress(description, total, enabled=enabled, unit=unit) as bar:
        yield bar
