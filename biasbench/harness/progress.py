"""Progress display: rich progress bars with an ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
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
        self.id = progress.add_task(escape(description), total=total)  # ids and names are text, not markup

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.id, n)


class _PlainTask:
    """A line at most every ``interval`` seconds across the whole run (``ui.last_line``: when any
    line was last printed), so logs stay short; each job's own ✓ line reports its end."""

    interval = 10.0

    def __init__(self, ui: RunUI, description: str, total: int) -> None:
        self.ui, self.description, self.total = ui, description, max(1, total)
        self.done, self.t0 = 0, time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.ui.last_line >= self.interval:
            el, frac = now - self.t0, self.done / self.total
            eta = el / frac * (1 - frac) if frac > 0 else 0.0
            self.ui.print(
                f"    {self.description}: {self.done}/{self.total} ({el:.0f}s, eta {eta:.0f}s)", markup=False
            )


class RunUI:
    """What the executor tells the user. ``live=None``: rich bars when stderr is a TTY."""

    def __init__(self, console: Console | None = None, live: bool | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self.progress: Progress | None = None
        self.last_line = time.perf_counter()
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
        self.last_line = time.perf_counter()

    def task(self, description: str, total: int) -> _RichTask | _PlainTask:
        if self.progress is not None:
            return _RichTask(self.progress, description, total)
        return _PlainTask(self, description, total)

    def finish_task(self, task: Any) -> None:
        if isinstance(task, _RichTask):
            task.progress.remove_task(task.id)
