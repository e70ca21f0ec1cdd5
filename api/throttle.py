"""Log-in throttling per client address, before any password is checked.

The account lock-out (``access.max_failed_logins``) protects one account; this protects the service
from one address trying many names: after ``api.login_attempts_per_minute`` failed log-ins from one
address within a minute, its log-ins are refused (429 ``too-many-logins``, audited and counted like
every refusal) until the minute has passed. Times come from the service's clock. Each process
counts its own attempts (two instances behind HAProxy allow twice as many).
"""
from __future__ import annotations

import threading
from collections import deque
from datetime import datetime, timedelta

WINDOW = timedelta(minutes=1)


class LoginThrottle:
    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._attempts: dict[str, deque[datetime]] = {}
        self._lock = threading.Lock()

    def _recent(self, source: str, now: datetime) -> deque[datetime]:
        recent = self._attempts.setdefault(source, deque())
        while recent and recent[0] <= now - WINDOW:
            recent.popleft()
        return recent

    def wait(self, source: str, now: datetime) -> float | None:
        """None when ``source`` may try to log in now, else the seconds until it may."""
        with self._lock:
            recent = self._recent(source, now)
            if len(recent) >= self.per_minute:
                return max(1.0, (recent[0] + WINDOW - now).total_seconds())
            return None

    def failed(self, source: str, now: datetime) -> None:
        """Count a failed log-in from ``source``."""
        with self._lock:
            self._recent(source, now).append(now)
            if len(self._attempts) > 10_000:   # forget addresses that went quiet
                for quiet in [s for s, q in self._attempts.items() if not q or q[-1] <= now - WINDOW]:
                    del self._attempts[quiet]
