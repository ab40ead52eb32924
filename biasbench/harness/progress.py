"""Progress display: rich progress bars with an ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _RichTask:
    def __init__(self, progress: Progress, description: str, total: int) -> None:
        self.progress = progress
        self.id = progress.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.id, n)


class _PlainTask:
    def __init__(self, console: Console, description: str, total: int) -> None:
        self.console, self.description, self.total = console, description, max(1, total)
        self.done, self.next_report, self.t0 = 0, 0.25, time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n
        frac = self.done / self.total
        if frac >= self.next_report or self.done >= self.total:
            el = time.perf_counter() - self.t0
            eta = el / frac * (1 - frac) if frac > 0 else 0.0
            self.console.print(f"    {self.description}: {self.done}/{self.total} ({el:.1f}s, eta {eta:.1f}s)")
            while self.next_report <= frac:
                self.next_report += 0.25


class RunUI:
    """What the executor tells the user. ``live=None``: rich bars when stderr is a TTY."""

    def __init__(self, console: Console | None = None, live: bool | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self.progress: Progress | None = None
        if self.live:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )

    def __enter__(self) -> RunUI:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def print(self, *args: Any, **kw: Any) -> None:
        self.console.print(*args, **kw)

    def task(self, description: str, total: int) -> _RichTask | _PlainTask:
        if self.progress is not None:
            return _RichTask(self.progress, description, total)
        return _PlainTask(self.console, description, total)

    def finish_task(self, task: Any) -> None:
        if isinstance(task, _RichTask):
            task.progress.remove_task(task.id)


def is_tty() -> bool:
    return sys.stderr.isatty()
