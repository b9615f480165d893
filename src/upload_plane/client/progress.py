"""Progress on a terminal (rich): one bar for the whole set (bytes, and files done), and a bar per
large file in flight, with speed and ETA. Small files, sent in batches by the hundred, move the
whole set's bar only."""

from __future__ import annotations

import sys

from rich import progress as bars
from rich.console import Console
from rich.progress import TaskID

from .transfer import Progress


class LineProgress(Progress):
    """No bars (not a terminal, or ``--json``): only notices, one line each on stderr."""

    def notice(self, message: str) -> None:
        print(f"upload-plane: {message}", file=sys.stderr, flush=True)


class RichProgress(Progress):
    def __init__(self, total: int, count: int) -> None:
        self.bars = bars.Progress(
            bars.TextColumn("{task.description}", markup=False),
            bars.BarColumn(),
            bars.DownloadColumn(binary_units=True),
            bars.TransferSpeedColumn(),
            bars.TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.count = count
        self.files_done = 0
        self.overall = self.bars.add_task(self._label(), total=total or None) if count > 1 else None
        self.tasks: dict[str, TaskID] = {}
        self.done: dict[str, int] = {}

    def _label(self) -> str:
        return f"{self.files_done}/{self.count} files"

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def start(self, key: str, name: str, total: int) -> None:
        if key in self.tasks:  # starting over (a new upload): give back what was counted
            self.advance(key, -self.done[key])
            self.bars.reset(self.tasks[key], total=total)
            return
        self.tasks[key] = self.bars.add_task(name, total=total)
        self.done[key] = 0

    def advance(self, key: str, done: int) -> None:
        self.done[key] += done
        self.bars.advance(self.tasks[key], done)
        if self.overall is not None:
            self.bars.advance(self.overall, done)

    def finish(self, key: str) -> None:
        task = self.tasks.pop(key)
        self.done.pop(key)
        if self.overall is not None:  # many files: only those in flight keep a bar
            self.bars.remove_task(task)
        self.file_done()

    def moved(self, done: int) -> None:
        if self.overall is not None:
            self.bars.advance(self.overall, done)

    def file_done(self) -> None:
        self.files_done += 1
        if self.overall is not None:
            self.bars.update(self.overall, description=self._label())

    def notice(self, message: str) -> None:
        self.bars.console.print(message, markup=False, highlight=False)
