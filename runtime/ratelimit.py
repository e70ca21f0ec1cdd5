"""Small timing helpers every process may use: retry backoff (bank links, the SMS notifier, the
group commit's settling of an unknown COMMIT) and a token bucket (a link's rate cap).

``Backoff`` only computes delays; ``TokenBucket`` reads time from the clock it is given (anything
with ``seconds()``: a ``config.clock.Clock``, the reactor, ``twisted.internet.task.Clock``), so
both are tested without sleeping.
"""
from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter: the delay after n failed attempts is ``initial * factor**(n-1)``
    capped at ``cap``, then shortened by a random fraction of at most ``jitter``.

    With ``jitter < 1 - 1/factor`` (0.3 < 0.5 by default) successive delays still grow until the
    cap, so a bank (or an SMS gateway) coming back is not hit by every retrier at the same instant,
    yet a dead one is retried less and less often. Two ways to use it: ``next()`` counts the
    failures itself (``reset()`` after a success: a link's sign-on), ``delay(n)`` is told them (a
    notice's stored attempt count).
    """

    def __init__(self, initial: float = 0.5, cap: float = 30.0, factor: float = 2.0, jitter: float = 0.3,
                 rng: random.Random | None = None):
        if not (initial >= 0 and cap >= initial and factor >= 1 and 0 <= jitter <= 1):
            raise ValueError("backoff: need initial >= 0, cap >= initial, factor >= 1, 0 <= jitter <= 1")
        self.initial, self.cap, self.factor, self.jitter = initial, cap, factor, jitter
        self.rng = rng or random.Random()
        self.attempts = 0

    def next(self) -> float:
        self.attempts += 1
        return self.delay(self.attempts)

    def reset(self) -> None:
        self.attempts = 0

    def delay(self, failed_attempts: int, retry_after_s: float | None = None) -> float:
        """The pause before attempt n+1 after n failed ones; never shorter than a ``retry_after_s``
        the other side asked for (429, 503 Retry-After), but that too at most ``cap``."""
        d = min(self.cap, self.initial * self.factor ** min(max(failed_attempts, 1) - 1, 64))
        if self.jitter:
            d *= 1.0 - self.jitter * self.rng.random()
        if retry_after_s is not None:
            d = max(d, min(retry_after_s, self.cap))
        return d


class TokenBucket:
    """At most ``rate`` takes per second on average, bursts of at most ``burst``.

    ``take()`` returns 0.0 and uses a token when one is available, otherwise the seconds until
    the next token (and takes nothing). The default burst is 1/20 s of tokens (at least one), so
    the cap holds over any window of a second, not only on average.
    """

    def __init__(self, rate: float, clock, burst: float | None = None):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate / 20.0)
        self.clock = clock
        self.tokens = self.burst
        self.stamp = clock.seconds()

    def _refill(self) -> None:
        now = self.clock.seconds()
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> float:
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate
