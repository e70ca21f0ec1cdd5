"""A bank's counter front-end, as a Twisted client: sends requests, matches answers by 7/11/32.

A request may carry a time limit: past it the request is given up (``RequestTimedOut``) and a
late answer is ignored. A request on a closed connection fails at once (``ConnectionError``)
instead of waiting for an answer that cannot come. Numbering and matching are the connection
kit's (``iso8583_specs.links``)."""
from __future__ import annotations

from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory

from iso8583_specs import codec
from iso8583_specs.errors import FramingError, MessageError
from iso8583_specs.framing import make_tpdu
from iso8583_specs.links import IsoConnection, Multiplexer, network_answer


class Answer:
    __slots__ = ("message", "raw", "latency", "request_fields")

    def __init__(self, message, raw: bytes, latency: float):
        self.message, self.raw, self.latency = message, raw, latency
        self.request_fields: dict = {}


def _unanswered() -> ConnectionError:
    return ConnectionError("connection closed with the request unanswered")


class CounterClient(IsoConnection):
    def __init__(self, dialect, nii_gateway: str = "0000", nii_bank: str = "0001", clock=None):
        super().__init__(dialect, 65535, make_tpdu(nii_gateway, nii_bank) if dialect.framing.tpdu else None)
        self.clock = clock  # for request time limits (the reactor)
        self.mux = Multiplexer()
        self.closed = defer.Deferred()
        self.echoes_answered = 0

    @property
    def waiting(self) -> dict:
        return self.mux.pending

    send_raw = IsoConnection.write_iso

    def request(self, iso: bytes, identity: tuple, timeout: float | None = None) -> defer.Deferred:
        """The answer to ``iso``; with ``timeout``, RequestTimedOut when none comes in that many seconds."""
        if self.closed.called:
            return defer.fail(ConnectionError("connection closed before the request was sent"))
        d = self.mux.request(identity, self.clock, timeout)
        self.write_iso(iso)
        return d

    def frame_received(self, frame) -> None:
        try:
            message = codec.decode(self.dialect, frame.message)
        except MessageError:
            return
        if message.mti == "0800":  # the gateway echoes an idle link: answer, never echo back
            self._answer_echo(message)
            return
        waiter = self.mux.take(message.identity)
        if waiter is not None:
            d, latency = waiter
            d.callback(Answer(message, frame.message, latency))

    def framing_failed(self, err: FramingError) -> None:
        raise err  # the reactor logs it and drops the connection

    def _answer_echo(self, message) -> None:
        fields = network_answer(message.fields, message.fields.get("13", "0101"), "00")
        self.write_iso(codec.encode(self.dialect, "0810", fields))
        self.echoes_answered += 1

    def connectionLost(self, reason=None) -> None:
        self.mux.fail_all(_unanswered)
        if not self.closed.called:
            self.closed.callback(None)


async def connect(reactor, host: str, port: int, dialect, timeout: float = 10, **kwargs) -> CounterClient:
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    return await endpoint.connect(Factory.forProtocol(lambda: CounterClient(dialect, clock=reactor, **kwargs)))
