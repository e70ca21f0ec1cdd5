"""The one clock: what time it is, in UTC and in the business timezone, which business date that
is, and the timers that run on it.

Every "now" in gridpay comes from a ``Clock``, handed down from where a process starts (or from a
test). A Twisted process builds its clock on its reactor (``Clock(..., timer=reactor)``), so the
timers it arms (``callLater``) and the times it reads are one clock; a test hands in a
``twisted.internet.task.Clock`` as the timer and moves time with ``advance()`` - across the
business date's cut-off, say - while sockets stay real. A thread-only process (a worker child, the
notifier's loop) uses the system's clock (``timer=None``).

The business timezone (``business.timezone``) is also the zone of the wire's dates and times:
docs/spec/INTERFACE.md §1 fixes them as the sender's local time, Asia/Shanghai, which is the default.
"""
from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from datetime import time as dt_time
from zoneinfo import ZoneInfo

DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_CUTOFF = "23:00"


class Clock:
    """Wall time, process time and the business calendar of one process.

    ``cutoff``: from this local time on, it is the next business date (HH:MM).
    ``timer``: an ``IReactorTime`` (the reactor, or ``task.Clock`` in tests) that the times are read
    from and timers are armed on; None reads the system's clocks and arms no timers."""

    def __init__(self, timezone: str = DEFAULT_TIMEZONE, cutoff: str = DEFAULT_CUTOFF, timer=None):
        hours, minutes = (int(x) for x in cutoff.split(":"))
        self.timezone, self.cutoff, self.timer = timezone, cutoff, timer
        self.zone = ZoneInfo(timezone)
        self._cutoff = dt_time(hours, minutes)

    @classmethod
    def of(cls, business, timer=None) -> "Clock":
        """The clock of a site's ``[business]`` settings (timezone and cut-off)."""
        return cls(business.timezone, business.cutoff, timer)

    def on(self, timer) -> "Clock":
        """This calendar read from (and timing on) ``timer``."""
        return Clock(self.timezone, self.cutoff, timer)

    # -- reading it
    def seconds(self) -> float:
        """Seconds since the epoch (what Twisted's ``IReactorTime.seconds`` gives)."""
        return time.time() if self.timer is None else self.timer.seconds()

    def monotonic(self) -> float:
        """For a thread's deadlines and durations: the system's monotonic clock, always - a thread
        that sleeps until a deadline sleeps in real time. (What runs on a reactor times itself with
        ``seconds()`` and ``callLater``, which follow the timer.)"""
        return time.monotonic()

    def now(self) -> datetime:
        """Now, aware, in UTC (what the database stores)."""
        return datetime.fromtimestamp(self.seconds(), dt_timezone.utc)

    def local(self, at: datetime | None = None) -> datetime:
        """``at`` (default: now) in the business timezone."""
        return (self.now() if at is None else at).astimezone(self.zone)

    def business_date(self, at: datetime | None = None) -> date:
        """The business date of ``at`` (default: now): its local date, one day on from the cut-off."""
        if at is not None and at.tzinfo is None:
            raise ValueError("business dates are computed from aware datetimes")
        local = self.local(at)
        return local.date() + timedelta(days=1) if local.time() >= self._cutoff else local.date()

    def end_of(self, business_date: date) -> datetime:
        """When ``business_date`` ends (UTC): the cut-off, local time, on its own date (it began at
        the cut-off the day before)."""
        local = datetime.combine(business_date, self._cutoff, tzinfo=self.zone)
        return local.astimezone(dt_timezone.utc)

    # -- timers (IReactorTime, delegated to the timer)
    def callLater(self, delay: float, f, *args, **kwargs):  # noqa: N802 - Twisted's name
        if self.timer is None:
            raise RuntimeError("this clock has no timer: build it with Clock(..., timer=reactor)")
        return self.timer.callLater(delay, f, *args, **kwargs)

    def getDelayedCalls(self):  # noqa: N802 - Twisted's name
        return [] if self.timer is None else self.timer.getDelayedCalls()

    def __repr__(self) -> str:
        return f"Clock({self.timezone!r}, {self.cutoff!r}, timer={self.timer!r})"


def as_clock(clock_or_timer, timer=None) -> Clock:
    """A ``Clock`` as is; a bare timer (a reactor, ``task.Clock``), or else ``timer``, under the
    default calendar: for parts that a process hands its clock and a test may hand a timer."""
    if isinstance(clock_or_timer, Clock):
        return clock_or_timer
    return Clock(timer=clock_or_timer if clock_or_timer is not None else timer)


class ManualClock(Clock):
    """A clock that stands still until moved: for tests and simulations of code that reads ``now()``
    (no timers: a Twisted test hands ``task.Clock`` in as a ``Clock``'s timer instead)."""

    def __init__(self, at: datetime, timezone: str = DEFAULT_TIMEZONE, cutoff: str = DEFAULT_CUTOFF):
        if at.tzinfo is None:
            raise ValueError("a manual clock is set to an aware datetime")
        super().__init__(timezone, cutoff)
        self.at = at.astimezone(dt_timezone.utc)

    def now(self) -> datetime:
        return self.at

    def seconds(self) -> float:
        return self.at.timestamp()

    def advance(self, seconds: float) -> datetime:
        self.at += timedelta(seconds=seconds)
        return self.at

    def set(self, at: datetime) -> datetime:
        self.at = at.astimezone(dt_timezone.utc)
        return self.at


SYSTEM_CLOCK = Clock()
"""The system's clock with the default calendar: for a call that was handed no clock (a command, a
test). A process hands its own clock, built from its settings, to what it starts."""
