"""Progress of a long job: a bar with rate and ETA on a terminal, plain log lines otherwise.

Long jobs (imports, reconciliation runs, reports, a debit batch being watched) take a
``Progress`` and call ``advance(n)`` as they go; the ledger code never prints. On a terminal
``tqdm`` draws the bar; under systemd, cron or a pipe a bar's carriage returns make an
unreadable log, so there one line is written every ``every_s`` seconds instead. ``finish``
writes one summary line either way. ``NoProgress`` is the default for library callers.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


class NoProgress:
    """Reports nothing: what library callers get unless they ask for progress."""

    def start(self, label: str, total: int | None = None, unit: str = "lines") -> "NoProgress":
        return self

    def advance(self, n: int = 1) -> None:
        pass

    def set_done(self, done: int, total: int | None = None) -> None:
        pass

    def finish(self, summary: str | None = None) -> None:
        pass

    def step(self, text: str) -> None:
        pass


class Progress(NoProgress):
    """One job's progress on ``stream`` (default stderr); reusable for several jobs in a row."""

    def __init__(self, stream: TextIO | None = None, *, every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, terminal: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.clock = clock
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self._bar = None
        self.label, self.total, self.unit = "", None, "lines"
        self.done = 0
        self._started = self._last_line = 0.0

    def start(self, label: str, total: int | None = None, unit: str = "lines") -> "Progress":
        self.finish_bar()
        self.label, self.total, self.unit, self.done = label, total, unit, 0
        self._started = self._last_line = self.clock()
        if self.terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit=f" {unit}", unit_scale=True, file=self.stream,
                             dynamic_ncols=True, leave=False, mininterval=0.2)
        return self

    def advance(self, n: int = 1) -> None:
        self.set_done(self.done + n)

    def set_done(self, done: int, total: int | None = None) -> None:
        """Absolute progress (for a job polled from the database, such as a running batch)."""
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        step, self.done = done - self.done, done
        if self._bar is not None:
            self._bar.update(step)
            return
        now = self.clock()
        if now - self._last_line >= self.every_s:
            self._last_line = now
            self._line(self._status(now))

    def finish(self, summary: str | None = None) -> None:
        now = self.clock()
        self.finish_bar()
        elapsed = max(now - self._started, 1e-9)
        self._line(summary or f"{self.label}: {self.done:,} {self.unit} in {elapsed:.1f} s "
                              f"({self.done / elapsed:,.0f} {self.unit}/s)")

    def step(self, text: str) -> None:
        """One line at once, for a job made of a few phases (a reconciliation run, a report)."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self._line(text)

    def finish_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _status(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f} {self.unit}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {(self.total - self.done) / rate:.0f} s"
        return text

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
