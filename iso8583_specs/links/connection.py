"""One ISO 8583 connection on a byte stream: frames in, frames out, and the frame timer.

``IsoConnection`` frames what it reads (``dialect.framer``) and hands each frame to
``frame_received``; a stream it can no longer frame goes to ``framing_failed``. The kinds of
connection (the gateway's counter link, the debit link, the simulators) differ in those two
methods, jPOS style. ``FrameTimer`` closes a connection whose peer began a frame and does not
finish it in time."""
from __future__ import annotations

from typing import Callable

from twisted.internet.protocol import Protocol

from ..errors import FramingError
from ..framing import encode_frame


def no_delay(transport) -> None:
    """Switch Nagle's algorithm off. Several requests may be outstanding on one connection, so one
    side often writes two small frames in a row; with Nagle on, the second waits for the ACK of
    the first, which the peer holds back (delayed ACK) for up to 40 ms: the p99 of a loaded link
    was ~45 ms where the gateway itself took 11. Frames are whole messages: nothing is gained by
    holding them back."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)


class IsoConnection(Protocol):
    """``tpdu``: the TPDU of the frames this side starts (None without TPDU framing)."""

    def __init__(self, dialect, max_frame: int, tpdu: bytes | None = None):
        self.dialect = dialect
        self.framer = dialect.framer(max_frame)
        self.tpdu = tpdu

    def connectionMade(self) -> None:
        no_delay(self.transport)

    def dataReceived(self, data: bytes) -> None:
        try:
            for frame in self.framer.feed(data):  # the frames before a bad header come first
                if not frame.keepalive:
                    self.frame_received(frame)
        except FramingError as err:
            self.framing_failed(err)

    def frame_received(self, frame) -> None:
        raise NotImplementedError

    def framing_failed(self, err: FramingError) -> None:
        """No next frame can be found: by default the connection is closed at once."""
        self.transport.abortConnection()

    def write_iso(self, iso: bytes, tpdu: bytes | None = None) -> None:
        """Frame and write one message; ``tpdu`` for an answer (the request's, swapped)."""
        self.transport.write(encode_frame(self.dialect.framing, iso, tpdu or self.tpdu))


class FrameTimer:
    """Calls ``expired`` when a frame begun is not complete within ``seconds()`` (read when the
    frame begins: a connection's limits may change once its bank is known)."""

    __slots__ = ("clock", "seconds", "expired", "call")

    def __init__(self, clock, seconds: Callable[[], float], expired: Callable[[], None]):
        self.clock, self.seconds, self.expired = clock, seconds, expired
        self.call = None

    def watch(self, partial: bool) -> None:
        """``partial``: part of a frame is buffered (and being read); the timer runs while it is."""
        call = self.call
        if partial:
            if call is None or not call.active():
                self.call = self.clock.callLater(self.seconds(), self.expired)
        elif call is not None and call.active():
            call.cancel()

    def stop(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
