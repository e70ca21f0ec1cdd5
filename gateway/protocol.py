"""One bank connection on the counter channel: frames in, answers out, timers around them.

Several requests may be outstanding on one connection; each answer is written when its
request completes. Timers (all on the injectable reactor clock):
- idle: no bytes from the bank for ``idle_timeout_s`` → close;
- frame: a frame begun but not finished within ``frame_timeout_s`` → close;
- echo: no bytes for ``echo_interval_s`` → the gateway sends an 0800 echo (301). A bank's
  0810 is never answered, so echoes cannot loop.
Bytes arriving only note the time: the idle and echo timers, when they fire, measure from the
last bytes and wait again for what is left (a busy link would otherwise reschedule two timers
on every read). A link's timeouts only lengthen once its bank is known, so a timer armed with
the shorter ones fires early at worst, and waits on.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from twisted.internet import defer
from twisted.internet.protocol import Protocol

from gateway.counter import CHANNEL, Link
from gateway.exchange import Exchange
from gateway.tcp import no_delay
from iso8583_specs import codec
from iso8583_specs.errors import FramingError
from iso8583_specs.framing import encode_frame, make_tpdu, response_tpdu

log = logging.getLogger("gridpay.link")


class CounterProtocol(Protocol):
    def __init__(self, factory, link: Link, max_frame: int):
        self.factory = factory
        self.link = link
        self.framer = link.dialect.framer(max_frame)
        self.clock = factory.clock
        self.pending: set[defer.Deferred] = set()
        self._idle = self._frame = self._echo = None
        self._last_bytes = 0.0
        self._stan = 0
        self._certificate_checked = False
        self._unframed = False  # the stream lost its place: ignore what follows, close once answered

    # --- connection lifecycle -----------------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()
        no_delay(self.transport)
        self._last_bytes = self.clock.seconds()
        self._idle_due()  # each arms itself for its full time: nothing was quiet yet
        self._echo_due()

    def connectionLost(self, reason=None) -> None:
        for timer in (self._idle, self._frame, self._echo):
            if timer is not None and timer.active():
                timer.cancel()
        self.factory.connection_closed(self)

    def dataReceived(self, data: bytes) -> None:
        if not self._certificate_checked:  # the TLS handshake is complete once data arrives
            self._certificate_checked = True
            if not self.factory.certificate_admits(self):
                self.transport.abortConnection()
                return
        if self._unframed:
            return
        self._last_bytes = self.clock.seconds()
        try:
            for frame in self.framer.feed(data):  # the frames before a bad header come first
                if not frame.keepalive:
                    self._handle(frame)
        except FramingError as err:
            log.warning("%s: %s; closing once its %d requests are answered", self._who(), err.reason,
                        len(self.pending))
            self.factory.metrics.format_errors.labels(self.link.bank or "unknown").inc()
            self._unframed = True
            self._watch_partial_frame()  # nothing is buffered now: the frame timer stops
            self._close_if_unframed()
            return
        self._watch_partial_frame()

    # --- requests -----------------------------------------------------------------------

    def _handle(self, frame) -> None:
        ex = Exchange(frame=frame.message, tpdu=frame.tpdu, received=self.clock.seconds(),
                      received_at=datetime.now(timezone.utc))
        d = defer.ensureDeferred(self.factory.service.handle(ex, self.link))
        self.pending.add(d)
        d.addCallback(self._answer, ex)
        d.addErrback(self._failed, ex)
        d.addBoth(self._done, d)

    def _answer(self, message: bytes | None, ex: Exchange) -> None:
        if ex.bank and self.link.bank is None and ex.code not in (None, "58"):
            self.factory.identified(self, ex.bank)
        if message is not None and self.transport is not None and self.connected:
            tpdu = response_tpdu(ex.tpdu) if ex.tpdu else None
            self.transport.write(encode_frame(self.link.dialect.framing, message, tpdu))

    def _failed(self, failure, ex: Exchange) -> None:
        # A fault of ours, not the bank's: log it; the connection stays up and the bank may retry.
        log.error("%s: request %s/%s failed: %s", self._who(), ex.mti, ex.fields.get("11"),
                  failure.getTraceback())

    def _done(self, result, d) -> None:
        self.pending.discard(d)
        self.factory.request_done()
        self._close_if_unframed()

    def _close_if_unframed(self) -> None:
        if self._unframed and not self.pending and self.connected:
            self.transport.loseConnection()  # after the answers written so far

    # --- timers -------------------------------------------------------------------------

    def _quiet_left(self, seconds: float) -> float:
        """How much of ``seconds`` of silence is still to come since the last bytes."""
        return self._last_bytes + seconds - self.clock.seconds()

    def _idle_due(self) -> None:
        left = self._quiet_left(self.factory.timing(self.link).idle_timeout_s)
        if left > 0:
            self._idle = self.clock.callLater(left, self._idle_due)
        else:
            self._idle_timeout()

    def _echo_due(self) -> None:
        interval = self.factory.timing(self.link).echo_interval_s
        left = self._quiet_left(interval)
        if left <= 0:
            self._send_echo()
            left = interval
        self._echo = self.clock.callLater(left, self._echo_due)

    def _watch_partial_frame(self) -> None:
        if self.framer.buffered:
            if self._frame is None or not self._frame.active():
                self._frame = self.clock.callLater(self.factory.timing(self.link).frame_timeout_s,
                                                   self._frame_timeout)
        elif self._frame is not None and self._frame.active():
            self._frame.cancel()

    def _idle_timeout(self) -> None:
        log.info("%s: idle, closing", self._who())
        self.transport.loseConnection()

    def _frame_timeout(self) -> None:
        log.warning("%s: frame not completed in time (%d bytes held), closing", self._who(), self.framer.buffered)
        self.transport.abortConnection()

    def _send_echo(self) -> None:
        if self.link.bank is None or not self.connected:
            return
        self._stan = self._stan % 999999 + 1
        message = codec.encode(self.link.dialect, "0800", echo_fields(self.link.bank, self._stan))
        bank = self.factory.directory.config(self.link.bank)
        tpdu = make_tpdu(bank.nii_bank, bank.nii_gateway) if self.link.dialect.framing.tpdu else None
        self.transport.write(encode_frame(self.link.dialect.framing, message, tpdu))

    def _who(self) -> str:
        return f"{self.link.bank or 'unidentified'}@{self.peer.host}:{self.peer.port}"


def echo_fields(bank: str, stan: int) -> dict[str, str]:
    now = datetime.now().astimezone()
    return {"7": now.strftime("%m%d%H%M%S"), "11": f"{stan:06d}", "12": now.strftime("%H%M%S"),
            "13": now.strftime("%m%d"), "32": bank, "70": "301"}
