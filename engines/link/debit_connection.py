"""One TCP connection to a bank's host on the debit channel, and the pool slot that holds it.

The connection frames the byte stream, signs on when the pool asks (0800/001), echoes the bank
after ``echo_interval_s`` of silence once signed on (0800/301, closed if unanswered), and hands
every frame to the link. The link owns all state beyond the connection."""
from __future__ import annotations

import logging

from twisted.internet import defer
from twisted.internet.protocol import Factory

from runtime.ratelimit import Backoff
from iso8583_specs import codec, shapes
from iso8583_specs.errors import FramingError
from iso8583_specs.links import EchoTimer, IsoConnection, request_key

log = logging.getLogger("gridpay.debit.link")


class DebitConnection(IsoConnection):
    def __init__(self, link, slot: "Slot"):
        super().__init__(link.dialect, link.max_frame, link.tpdu)
        self.link, self.slot = link, slot
        self.in_flight: dict[tuple, object] = {}   # request key -> the link's request written here
        self.signed_on = False
        self.signon_key = self.echo_key = None
        self.echo = EchoTimer(link.clock, lambda: link.cfg.echo_interval_s, self._send_echo)
        self._signon_call = self._echo_wait = None
        self.closing = False

    # lifecycle

    def connectionMade(self) -> None:
        super().connectionMade()
        self.link._connected(self)

    def connectionLost(self, reason=None) -> None:
        self.echo.stop()
        for call in (self._signon_call, self._echo_wait):
            if call is not None and call.active():
                call.cancel()
        self.signed_on = False
        self.link._lost(self, reason)

    def close(self, reason: str) -> None:
        if not self.closing:
            self.closing = True
            log.warning("%s: closing connection: %s", self.link.bank, reason)
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.echo.heard()
        super().dataReceived(data)

    def frame_received(self, frame) -> None:
        self.link._frame(self, frame)

    def framing_failed(self, err: FramingError) -> None:
        self.link.stats["framing_errors"] += 1
        self.close(err.reason)

    # network management

    def _network_request(self, code: str) -> tuple[tuple, bytes]:
        fields = self.link._network_fields(code)
        return request_key(fields["7"], fields["11"], fields["32"]), codec.encode(self.link.dialect, "0800", fields)

    def sign_on(self) -> None:
        self.signon_key, iso = self._network_request(shapes.SIGN_ON)
        self.write_iso(iso)
        if self._signon_call is not None and self._signon_call.active():
            self._signon_call.cancel()
        self._signon_call = self.link.clock.callLater(self.link.cfg.timeout_s, self.close, "sign-on unanswered")

    def network_answer(self, message) -> None:
        key = request_key(*(message.fields.get(k, "") for k in shapes.IDENTITY))
        if key == self.signon_key:
            self.signon_key = None
            if self._signon_call is not None and self._signon_call.active():
                self._signon_call.cancel()
            self.link._signed_on(self, message)
        elif key == self.echo_key:
            self.echo_key = None
            if self._echo_wait is not None and self._echo_wait.active():
                self._echo_wait.cancel()
            self.link.stats["echoes_answered"] += 1
        else:
            self.link.stats["unmatched"] += 1

    def start_echo_timer(self) -> None:
        self.echo.start()

    def _send_echo(self) -> bool:
        if not self.connected or self.closing:
            return False
        self.echo_key, iso = self._network_request(shapes.ECHO)
        self.write_iso(iso)
        self.link.stats["echoes_sent"] += 1
        if self._echo_wait is None or not self._echo_wait.active():
            self._echo_wait = self.link.clock.callLater(self.link.cfg.timeout_s, self.close, "echo unanswered")
        return True


class Slot:
    """One of the bank's ``connections``: its current connection and its reconnect backoff."""

    def __init__(self, index: int, backoff: Backoff):
        self.index = index
        self.backoff = backoff
        self.conn: DebitConnection | None = None
        self.connecting: defer.Deferred | None = None
        self.retry = None


class SlotFactory(Factory):
    noisy = False

    def __init__(self, link, slot):
        self.link, self.slot = link, slot

    def buildProtocol(self, addr):
        proto = DebitConnection(self.link, self.slot)
        proto.factory = self
        return proto
