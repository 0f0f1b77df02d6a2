"""Liveness of long work on stderr: a rich progress bar on a terminal, one plain line per stage elsewhere.

Results go to stdout and nothing else does; this module only ever writes to stderr. Modes:
- "bar": a rich bar (description, done/total, elapsed) redrawn in place; for a terminal.
- "lines": `prefix: stage (i/n)` once per stage, flushed, so that CI logs and a parent process reading the
  pipe (the study's measurement subprocess) see that the work is alive.
- "off": nothing (library callers that did not ask for progress).
"""

from __future__ import annotations

import sys
import time
from typing import Literal

Mode = Literal["bar", "lines", "off"]


def cli_mode(as_json: bool = False) -> Mode:
    """What a command shows: the bar on a terminal (not with --json, whose caller is a program), else lines."""
    return "bar" if sys.stderr.isatty() and not as_json else "lines"


def resolve(progress: bool | str) -> Mode:
    """A library `progress` argument as a mode: True = the CLI's choice, False = off, or a mode by name."""
    if progress is True:
        return cli_mode()
    if progress is False or progress is None:
        return "off"
    if progress not in ("bar", "lines", "off"):
        raise ValueError(f"progress mode must be bar, lines or off, got {progress!r}")
    return progress  # type: ignore[return-value]


class Progress:
    """Steps of one piece of work. `step(detail, stage)` marks one step started; in "lines" mode a line is
    written when the stage changes (stage defaults to the detail), so a sweep of many small steps logs its
    rounds, not every step. Use as a context manager; the bar is removed when the work ends."""

    def __init__(self, prefix: str, total: int | None, mode: Mode = "lines") -> None:
        self.prefix, self.total, self.mode = prefix, total, mode
        self.done, self._stage, self._bar, self._task, self._started = 0, None, None, None, time.perf_counter()

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                SpinnerColumn(), TextColumn(f"{self.prefix}: {{task.description}}"), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("starting", total=self.total)
        return self

    def step(self, detail: str, stage: str | None = None) -> None:
        """Step `done + 1` of `total` begins: `detail` says what it does."""
        if self.mode == "bar" and self._bar is not None:
            from rich.markup import escape

            self._bar.update(self._task, completed=self.done, description=escape(detail))  # names are user text
        elif self.mode == "lines":
            stage = detail if stage is None else stage
            if stage != self._stage:
                count = f" ({self.done + 1}/{self.total})" if self.total else ""
                sys.stderr.write(f"{self.prefix}: {stage}{count}\n")
                sys.stderr.flush()
        self._stage = detail if stage is None else stage
        self.done += 1

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            self._bar.__exit__(*exc)
            self._bar = None
        if self.mode != "off" and exc[0] is None:
            sys.stderr.write(f"{self.prefix}: done in {time.perf_counter() - self._started:.1f} s\n")
            sys.stderr.flush()
