"""Network management (§4.1): the 0800 requests (sign-on 001, sign-off 002, echo 301), the
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
    """Calls ``send`` after ``interval`` seconds without a word from the peer, then every
    ``interval`` seconds while it stays quiet; ``send`` returns False to stop echoing."""

    __slots__ = ("clock", "interval", "send", "call")

    def __init__(self, clock, interval: float, send: Callable[[], bool | None]):
        self.clock, self.interval, self.send = clock, interval, send
        self.call = None

    def start(self) -> None:
        if self.call is None or not self.call.active():
            self.call = self.clock.callLater(self.interval, self._due)

    def heard(self) -> None:
        """The peer spoke: the quiet starts again (a timer not started stays so)."""
        if self.call is not None and self.call.active():
            self.call.reset(self.interval)

    def stop(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()

    def _due(self) -> None:
        if self.send() is not False:
            self.call = self.clock.callLater(self.interval, self._due)
