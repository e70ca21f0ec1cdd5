"""A bank's counter front-end, as a Twisted client: sends requests, matches answers by 7/11/32.

A request may carry a time limit: past it the request is given up (``RequestTimedOut``) and a
late answer is ignored. A request on a closed connection fails at once (``ConnectionError``)
instead of waiting for an answer that cannot come."""
from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory, Protocol

from gateway.tcp import no_delay
from iso8583_specs import codec
from iso8583_specs.errors import MessageError
from iso8583_specs.framing import encode_frame, make_tpdu

SHANGHAI = ZoneInfo("Asia/Shanghai")


class Stans:
    """STANs for one bank across all connections of this process (unique per sender per day)."""

    def __init__(self, start: int = 1):
        self.value = start - 1

    @classmethod
    def from_clock(cls, now: float | None = None) -> "Stans":
        """Start where a run begun earlier in the same second cannot be: the start moves on 20,000
        a second, faster than one process sends, so two runs of one bank never share a field 7
        and a STAN (which the gateway would rightly answer 94)."""
        return cls(clock_sequence(now, 999_999) + 1)

    def next(self) -> str:
        self.value = self.value % 999999 + 1
        return f"{self.value:06d}"


def clock_sequence(now: float | None, modulus: int, per_second: int = 20_000) -> int:
    return int((time.time() if now is None else now) * per_second) % modulus


def request_times(now: datetime | None = None) -> dict[str, str]:
    local = (now or datetime.now(SHANGHAI)).astimezone(SHANGHAI)
    return {"7": local.strftime("%m%d%H%M%S"), "12": local.strftime("%H%M%S"), "13": local.strftime("%m%d")}


class RequestTimedOut(Exception):
    """No answer within the request's time limit."""


class Answer:
    __slots__ = ("message", "raw", "latency", "request_fields")

    def __init__(self, message, raw: bytes, latency: float):
        self.message, self.raw, self.latency = message, raw, latency
        self.request_fields: dict = {}


class CounterClient(Protocol):
    def __init__(self, dialect, nii_gateway: str = "0000", nii_bank: str = "0001", clock=None):
        self.dialect = dialect
        self.clock = clock  # for request time limits (the reactor)
        self.framer = dialect.framer(65535)
        self.tpdu = make_tpdu(nii_gateway, nii_bank) if dialect.framing.tpdu else None
        self.waiting: dict[tuple, tuple[defer.Deferred, float]] = {}
        self.closed = defer.Deferred()
        self.echoes_answered = 0

    def connectionMade(self) -> None:
        no_delay(self.transport)

    def send_raw(self, iso: bytes) -> None:
        self.transport.write(encode_frame(self.dialect.framing, iso, self.tpdu))

    def request(self, iso: bytes, identity: tuple, timeout: float | None = None) -> defer.Deferred:
        """The answer to ``iso``; with ``timeout``, RequestTimedOut when none comes in that many seconds."""
        if self.closed.called:
            return defer.fail(ConnectionError("connection closed before the request was sent"))
        d = defer.Deferred()
        self.waiting[identity] = (d, time.perf_counter())
        self.send_raw(iso)
        if timeout is not None:
            d.addTimeout(timeout, self.clock, onTimeoutCancel=lambda _result, _timeout: self._gave_up(identity))
        return d

    def _gave_up(self, identity: tuple):
        self.waiting.pop(identity, None)  # an answer after this is matched to nothing
        raise RequestTimedOut("no answer in time")

    def dataReceived(self, data: bytes) -> None:
        for frame in self.framer.feed(data):
            if frame.keepalive:
                continue
            try:
                message = codec.decode(self.dialect, frame.message)
            except MessageError:
                continue
            if message.mti == "0800":  # the gateway echoes an idle link: answer, never echo back
                self._answer_echo(message)
                continue
            waiter = self.waiting.pop(message.identity, None)
            if waiter is not None:
                d, sent = waiter
                d.callback(Answer(message, frame.message, time.perf_counter() - sent))

    def _answer_echo(self, message) -> None:
        fields = {k: message.fields[k] for k in ("7", "11", "12", "13", "32", "70") if k in message.fields}
        fields["39"] = "00"
        fields["15"] = fields.get("13", "0101")
        self.send_raw(codec.encode(self.dialect, "0810", fields))
        self.echoes_answered += 1

    def connectionLost(self, reason=None) -> None:
        for d, _ in self.waiting.values():
            d.errback(ConnectionError("connection closed with the request unanswered"))
        self.waiting.clear()
        if not self.closed.called:
            self.closed.callback(None)


async def connect(reactor, host: str, port: int, dialect, timeout: float = 10, **kwargs) -> CounterClient:
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    return await endpoint.connect(Factory.forProtocol(lambda: CounterClient(dialect, clock=reactor, **kwargs)))
