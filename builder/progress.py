"""Progress for long runs: the two callback shapes every layer reports through, and the
display: a live table, one row per target, on a terminal; timestamped lines (one per step)
elsewhere, so that CI logs read well."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

# A job's progress: (target id, or "" for the whole job; message).
TargetProgressFn = Callable[[str, str], None]
# One step's progress (an image build, a run): the message only.
StepProgress = Callable[[str], None]


class TargetProgress:
    def __init__(self, console: Console, targets: list[str]) -> None:
        self.console = console
        self.rows: dict[str, tuple[str, float]] = {
            t: ("waiting", time.monotonic()) for t in targets
        }
        self.general = ""
        self.lock = threading.Lock()
        self.live: Live | None = None
        if console.is_terminal:
            self.live = Live(
                self._table(),
                console=console,
                refresh_per_second=4,
                transient=False,
                get_renderable=self._table,
            )

    def __call__(self, target: str, message: str) -> None:
        with self.lock:
            if target in self.rows:
                self.rows[target] = (message, time.monotonic())
            else:
                self.general = message
        if self.live is None:
            stamp = time.strftime("%H:%M:%S")
            self.console.print(f"[dim]{stamp}[/] [cyan]{target or 'cbuild'}[/] {escape(message)}")

    def _table(self) -> Table:
        table = Table("target", "step", "for", box=None, title=self.general or None)
        now = time.monotonic()
        with self.lock:
            for target, (step, since) in self.rows.items():
                table.add_row(target, escape(step), f"{now - since:4.0f} s")
        return table

    def __enter__(self) -> TargetProgress:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.__exit__(typ, exc, tb)
