"""One connection to the bank simulator's host: frames in to the host, its answers out, and
the host's echoes of an idle connection (``Behaviour.echo_interval_s``)."""
from __future__ import annotations

import logging

from twisted.internet import defer

from iso8583_specs import codec, shapes
from iso8583_specs.errors import FramingError
from iso8583_specs.framing import encode_frame, make_tpdu
from iso8583_specs.links import EchoTimer, IsoConnection, Stans, network_request, times_at

log = logging.getLogger("gridpay.sim.bank")


class BankConnection(IsoConnection):
    def __init__(self, host):  # gateway.sim.bank.BankHost
        super().__init__(host.dialect, host.max_frame)
        self.host = host
        self.echo = EchoTimer(host.clock, lambda: host.behaviour.echo_interval_s, self._echo)
        self.stans = Stans()
        self.closed = defer.Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.host.connections.add(self)
        self.host.counters["connections"] += 1
        self.echo.start()

    def connectionLost(self, reason=None) -> None:
        self.host.connections.discard(self)
        self.echo.stop()
        self.closed.callback(None)

    def _echo(self) -> None:
        host = self.host
        fields = network_request(times_at(host.clock.local()), self.stans.next(), host.bank_code, shapes.ECHO)
        tpdu = make_tpdu(host.nii_gateway, host.nii_bank) if host.dialect.framing.tpdu else None
        self.write(codec.encode(host.dialect, "0800", fields), tpdu)
        host.counters["echoes_sent"] += 1

    def write(self, iso: bytes, tpdu: bytes | None) -> None:
        if self.connected:
            self.transport.write(encode_frame(self.dialect.framing, iso, tpdu))

    def dataReceived(self, data: bytes) -> None:
        self.echo.heard()
        try:
            frames = list(self.framer.feed(data))  # a stream that breaks off is answered not at all
        except FramingError as err:
            self.framing_failed(err)
            return
        for frame in frames:
            if not frame.keepalive:
                self.frame_received(frame)
                if not self.connected:
                    return

    def frame_received(self, frame) -> None:
        self.host.handle(self, frame)

    def framing_failed(self, err: FramingError) -> None:
        self.host.counters["framing_errors"] += 1
        log.warning("bank sim: %s; closing", err.reason)
        self.transport.abortConnection()
