"""Network management (docs/spec/INTERFACE.md §4.1): the 0800 requests (sign-on 001, sign-off 002, echo 301), the
fields of their 0810 answers, and the echo timer that keeps an idle connection proven alive.

An 0810 is never answered in turn, so two sides echoing each other cannot loop."""
from __future__ import annotations

from typing import Callable

from ..shapes import NETWORK_ECHO


def network_request(times: dict[str, str], stan: str, bank: str, code: str) -> dict[str, str]:
    """An 0800's fields: its times (7, 12, 13), STAN, the bank (32) and the network code (70)."""
    return {**times, "11": stan, "32": bank, "70": code}


def network_answer(request: dict[str, str], settlement: str, code: str) -> dict[str, str]:
    """An 0810's fields: what it echoes of the 0800, the settlement date (15), the response code (39)."""
    fields = {k: request[k] for k in NETWORK_ECHO if k in request}
    fields["15"] = settlement
    fields["39"] = code
    return fields


class EchoTimer:
    """Calls ``send`` once the peer has been quiet for ``seconds()``, then every ``seconds()``
    while it stays quiet; ``send`` returns False to stop echoing, and so does an interval of 0
    or None. Bytes arriving only note the time (``heard``): the timer, when it fires, measures
    from the last of them and waits again for what is left, so a busy connection does not
    reschedule a timer on every read."""

    __slots__ = ("clock", "seconds", "send", "call", "heard_at")

    def __init__(self, clock, seconds: Callable[[], float | None], send: Callable[[], bool | None]):
        self.clock, self.seconds, self.send = clock, seconds, send
        self.call = None
        self.heard_at = clock.seconds()

    def heard(self) -> None:
        self.heard_at = self.clock.seconds()

    def quiet_left(self, seconds: float) -> float:
        """How much of ``seconds`` of silence is still to come since the peer was last heard."""
        return self.heard_at + seconds - self.clock.seconds()

    def start(self) -> None:
        if self.call is None or not self.call.active():
            interval = self.seconds()
            if interval:
                self.call = self.clock.callLater(interval, self._due)

    def stop(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()

    def _due(self) -> None:
        interval = self.seconds()
        if not interval:
            return
        left = self.quiet_left(interval)
        if left <= 0:
            if self.send() is False:
                return
            left = interval
        self.call = self.clock.callLater(left, self._due)
