"""The multiplexer: requests outstanding on a connection (or on a pool of them), matched to
their answers by fields 7, 11 and 32 (jPOS QMUX).

``pending`` maps a request key to whatever its sender keeps for it; ``expired`` remembers, up
to ``late_memory`` of them, the requests given up, so an answer that comes late is told apart
from one that matches nothing. ``request`` and ``take`` are the simple use: a Deferred of the answer,
with a time limit."""
from __future__ import annotations

import time
from collections import OrderedDict

from twisted.internet import defer


class RequestTimedOut(Exception):
    """No answer within the request's time limit."""


class Multiplexer:
    __slots__ = ("pending", "expired", "late_memory")

    def __init__(self, late_memory: int = 0):
        self.pending: dict[tuple, object] = {}
        self.expired: OrderedDict[tuple, object] = OrderedDict()
        self.late_memory = late_memory

    def give_up(self, key: tuple, entry: object) -> None:
        """``entry`` is no longer waited for; with a late memory, its answer is still recognised."""
        self.pending.pop(key, None)
        if self.late_memory:
            self.expired[key] = entry
            if len(self.expired) > self.late_memory:
                self.expired.popitem(last=False)

    # the simple use: one Deferred per request

    def request(self, key: tuple, clock=None, timeout: float | None = None) -> defer.Deferred:
        """A Deferred of the answer to the request ``key`` (fired by ``answer``); with ``timeout``,
        ``RequestTimedOut`` when none comes in that many seconds (a late answer matches nothing)."""
        d = defer.Deferred()
        self.pending[key] = (d, time.perf_counter())
        if timeout is not None:
            d.addTimeout(timeout, clock, onTimeoutCancel=lambda _result, _timeout: self._timed_out(key))
        return d

    def _timed_out(self, key: tuple):
        self.give_up(key, None)
        raise RequestTimedOut("no answer in time")

    def take(self, key: tuple) -> tuple[defer.Deferred, float] | None:
        """The Deferred waiting for the answer to ``key`` and the seconds since it was sent;
        None when no request waits for it."""
        waiter = self.pending.pop(key, None)
        if waiter is None:
            return None
        return waiter[0], time.perf_counter() - waiter[1]

    def fail_all(self, make_error) -> None:
        """The connection is gone: every request still waiting fails with ``make_error()``."""
        waiting = list(self.pending.values())
        self.pending.clear()
        for d, _ in waiting:
            d.errback(make_error())
