"""One bank connection on the counter channel: frames in, answers out, timers around them.

Several requests may be outstanding on one connection; each answer is written when its
request completes. At the bank's ``max_outstanding_requests`` the connection is not read
(``pauseProducing``) until an answer goes out: complete frames already read wait in order,
and the bank's own TCP window holds the rest, so a flood costs the gateway no more than
the cap, and other connections' requests are not queued behind it.
Timers (all on the injectable reactor clock):
- handshake (TLS listeners): no finished handshake within ``tls_handshake_timeout_s`` → close;
- idle: no bytes from the bank for ``idle_timeout_s`` → close;
- frame: a frame begun but not finished within ``frame_timeout_s`` → close;
- echo: no bytes for ``echo_interval_s`` → the gateway sends an 0800 echo (301). A bank's
  0810 is never answered, so echoes cannot loop.
Bytes arriving only note the time: the idle and echo timers, when they fire, measure from the
last bytes and wait again for what is left (a busy link would otherwise reschedule two timers
on every read). A link's timeouts only lengthen once its bank is known, so a timer armed with
the shorter ones fires early at worst, and waits on. A connection the gateway is not reading is
neither idle nor in the middle of a frame.
"""
from __future__ import annotations

import logging
from collections import deque
from datetime import datetime

from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from gateway.counter_service import Link
from gateway.exchange import Exchange
from iso8583_specs import codec, shapes
from iso8583_specs.errors import FramingError
from iso8583_specs.framing import encode_frame, make_tpdu, response_tpdu
from iso8583_specs.links import EchoTimer, FrameTimer, Stans, network_request, no_delay, times_at

log = logging.getLogger("gridpay.link")


@implementer(IHandshakeListener)
class CounterProtocol(Protocol):
    def __init__(self, factory, link: Link, max_frame: int):
        self.factory = factory
        self.link = link
        self.framer = link.dialect.framer(max_frame)
        self.clock = factory.clock
        self.pending: set[defer.Deferred] = set()
        self.unread: deque = deque()      # complete frames not yet handed to the service
        self.lost_place: FramingError | None = None
        self.paused = False
        self._taking = False
        self._idle = self._handshake = None
        self.frame_timer = FrameTimer(self.clock, self._frame_seconds, self._frame_timeout)
        self.echo = EchoTimer(self.clock, self._echo_seconds, self._send_echo)
        self._stans = Stans()

    # --- connection lifecycle -----------------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()
        no_delay(self.transport)
        self.echo.heard()
        self._idle_due()  # each arms itself for its full time: nothing was quiet yet
        self.echo.start()
        if self.factory.tls:
            self._handshake = self.clock.callLater(self.factory.cfg.tls_handshake_timeout_s, self._handshake_timeout)

    def handshakeCompleted(self) -> None:
        """TLS: the peer's certificate is verified; whose link this is can now be said."""
        if self._handshake is not None and self._handshake.active():
            self._handshake.cancel()
        if not self.factory.certified(self):
            self.transport.abortConnection()

    def connectionLost(self, reason=None) -> None:
        for timer in (self._idle, self._handshake):
            if timer is not None and timer.active():
                timer.cancel()
        self.frame_timer.stop()
        self.echo.stop()
        if self.link.log_allowance.held:
            log.warning("%s: %d more frames dropped unanswered were counted but not logged",
                        self.who(), self.link.log_allowance.held)
        self.factory.connection_closed(self)

    def dataReceived(self, data: bytes) -> None:
        self.echo.heard()
        self.link.log_allowance.earn(len(data))
        completed = False
        if self.lost_place is None:
            try:
                for frame in self.framer.feed(data):
                    completed = True
                    if not frame.keepalive:
                        self.unread.append(frame)
            except FramingError as err:
                self._lose_place(err)
        if completed:
            self.frame_timer.stop()   # the frame it timed is complete: what is buffered now is a new one
        self._take_requests()
        self._watch_partial_frame()

    def _lose_place(self, err: FramingError) -> None:
        """No next frame can be found (docs/spec/INTERFACE.md §6): the frames before the fault are
        still taken; then the connection closes."""
        log.warning("%s: %s; closing", self.who(), err.reason)
        self.factory.metrics.format_errors.labels(self.link.metric_bank("")).inc()
        self.lost_place = err
        self._pause()

    # --- requests -----------------------------------------------------------------------

    def _take_requests(self) -> None:
        """Hand waiting frames to the service while the link is under its cap; read on only then."""
        if self._taking:  # an answer given while handing over: the loop below carries on
            return
        self._taking = True
        try:
            cap = self.factory.limits(self.link).max_outstanding
            while self.unread and len(self.pending) < cap and not self.factory.gateway.draining:
                self._handle(self.unread.popleft())
            if self.lost_place is not None:
                if not self.unread and not self.pending and self.connected:
                    self.transport.loseConnection()
            elif self.unread or len(self.pending) >= cap:
                self._pause()
            elif self.paused and not self.factory.gateway.draining:
                self._resume()
        finally:
            self._taking = False

    def _pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.transport.pauseProducing()
            self._watch_partial_frame()

    def _resume(self) -> None:
        self.paused = False
        self.transport.resumeProducing()
        self.echo.heard()  # quiet while unread is not the bank's silence
        self._watch_partial_frame()

    def _handle(self, frame) -> None:
        ex = Exchange(frame=frame.message, tpdu=frame.tpdu, received=self.clock.seconds(),
                      received_at=self.clock.now())
        d = defer.ensureDeferred(self.factory.service.handle(ex, self.link))
        self.pending.add(d)
        d.addCallback(self._answer, ex)
        d.addErrback(self._failed, ex)
        d.addBoth(self._done, d)

    def _answer(self, message: bytes | None, ex: Exchange) -> None:
        if message is not None and self.transport is not None and self.connected:
            tpdu = response_tpdu(ex.tpdu) if ex.tpdu else None  # checked when the request was decoded
            self.transport.write(encode_frame(self.link.dialect.framing, message, tpdu))

    def _failed(self, failure, ex: Exchange) -> None:
        # A fault of ours, not the bank's: log it; the connection stays up and the bank may retry.
        log.error("%s: request %s/%s failed: %s", self.who(), ex.mti, ex.fields.get("11"),
                  failure.getTraceback())

    def _done(self, result, d) -> None:
        self.pending.discard(d)
        self.factory.request_done()
        if self.connected:
            self._take_requests()

    # --- timers -------------------------------------------------------------------------

    def _idle_due(self) -> None:
        idle_timeout_s = self.factory.limits(self.link).idle_timeout_s
        left = idle_timeout_s if self.paused else self.echo.quiet_left(idle_timeout_s)
        if left > 0:
            self._idle = self.clock.callLater(left, self._idle_due)
        else:
            self._idle_timeout()

    def _echo_seconds(self) -> float:
        return self.factory.limits(self.link).echo_interval_s

    def _watch_partial_frame(self) -> None:
        self.frame_timer.watch(self.framer.buffered > 0 and not self.paused)

    def _frame_seconds(self) -> float:
        return self.factory.limits(self.link).frame_timeout_s

    def _handshake_timeout(self) -> None:
        log.warning("%s: TLS handshake not finished in time, closing", self.who())
        self.factory.refused(self.link, "handshake")
        self.transport.abortConnection()

    def _idle_timeout(self) -> None:
        log.info("%s: idle, closing", self.who())
        self.transport.loseConnection()

    def _frame_timeout(self) -> None:
        log.warning("%s: frame not completed in time (%d bytes held), closing", self.who(), self.framer.buffered)
        self.transport.abortConnection()

    def _send_echo(self) -> None:
        if self.link.bank is None or not self.connected:
            return
        message = codec.encode(self.link.dialect, "0800", echo_fields(self.link.bank, self._stans.next(), self.clock.local()))
        bank = self.factory.directory.config(self.link.bank)
        tpdu = make_tpdu(bank.nii_bank, bank.nii_gateway) if self.link.dialect.framing.tpdu else None
        self.transport.write(encode_frame(self.link.dialect.framing, message, tpdu))

    def who(self) -> str:
        return f"{self.link.bank or 'unidentified'}@{self.peer.host}:{self.peer.port}"


def echo_fields(bank: str, stan: str, local: datetime) -> dict[str, str]:
    """The gateway's echo, sent at ``local`` (the business timezone's time, as §1 has it)."""
    return network_request(times_at(local), stan, bank, shapes.ECHO)
