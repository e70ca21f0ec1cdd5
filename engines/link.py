"""Outbound debit links (docs/spec/INTERFACE.md §1, §4.1, §4.6): the gateway connects to a bank's host.

``BankLink`` keeps ``debit.connections`` TCP connections to one bank. Each connection signs on
(0800/001) and reads the MAK the bank issues in its 0810 (``MK``/``KV`` under the ZMK); the
newest MAK is used for every connection, the one it replaced is still accepted on answers for
the grace period (``gateway.keys.KeyStore``). A connection with no traffic from the bank for
``echo_interval_s`` sends an echo (0800/301) and is closed if that goes unanswered; the bank's
own echoes are answered (field 15: the utility's business date from ``calendar``), 0810s never
are, so echoes cannot loop. A lost or refused connection is retried with exponential backoff and
jitter (``engines.ratelimit.Backoff``).

``send(mti, fields)`` writes a request the caller has fully identified (fields 7, 11, 32: the
debit engine assigns and stores them before the send, and gives a debit a new identity only
when the bank answered A0, §4.7) and returns a Deferred for the bank's answer, matched by 7, 11
and 32 and MAC-checked. Outcomes:

- the answer (a ``Message``) - whatever its response code;
- ``DebitTimeout``: sent, no valid answer within ``timeout_s`` (the caller reverses);
- ``OutcomeUnknown`` (a ``DebitTimeout``): sent, then the connection was lost before an answer;
- ``NotSent`` (``LinkDown``, ``LinkBusy``, ``LinkStopped``, or the wire layer's
  ``MessageError`` for fields that cannot be encoded): certainly never written, nothing to reverse.

An answer that comes after its request timed out goes to ``on_late_response(message)``.
At most ``max_in_flight`` requests are outstanding per bank and at most ``max_per_second``
are written per second (token bucket); the rest wait in a queue, reversals ahead of debits.

All timers run on ``clock`` (default: the reactor), so tests drive them with ``task.Clock``.
"""
from __future__ import annotations

import logging
import random
from collections import Counter, OrderedDict, deque
from datetime import datetime
from typing import Callable, Iterable

from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory, Protocol

from engines.ratelimit import Backoff, TokenBucket
from gateway.keys import KeyStore
from gateway.tcp import no_delay
from gateway.sim.client import SHANGHAI, Stans, request_times
from iso8583_specs import codec, shapes
from iso8583_specs.dialects import dialect_for_bank, request_tpdu
from iso8583_specs.errors import FramingError, MessageError
from iso8583_specs.framing import encode_frame, response_tpdu
from iso8583_specs.keys import read_sign_on_field48
from iso8583_specs.tlv import Bill, build_tlv
from ledger.business_date import BusinessCalendar

log = logging.getLogger("gridpay.debit.link")

CHANNEL = "debit"
DEBIT = "510000"
CURRENCY = "156"
RESPONSE_MTIS = frozenset({"0210", "0430"})
REVERSAL_MTIS = frozenset({"0420", "0421"})


# --- outcomes --------------------------------------------------------------------------------

class LinkError(Exception):
    """Base of the link's failures."""


class NotSent(LinkError):
    """The request was never written to the bank: nothing happened there, nothing to reverse."""


class LinkDown(NotSent):
    """No signed-on connection to the bank within the timeout."""


class LinkBusy(NotSent):
    """Queued behind the in-flight or rate cap for longer than the timeout."""


class LinkStopped(NotSent):
    """The link was stopped before the request could be written."""


class DebitTimeout(LinkError):
    """Written, but no valid answer within the timeout: the outcome is unknown, reverse it."""


class OutcomeUnknown(DebitTimeout):
    """Written, then the connection was lost before an answer came: reverse it, never resend."""


# --- metrics ---------------------------------------------------------------------------------

class LinkMetrics:
    """Hooks the link calls; the default does nothing. Subclass, or use ``PrometheusLinkMetrics``."""

    def sent(self, bank: str, mti: str) -> None: ...
    def answered(self, bank: str, mti: str, code: str, seconds: float) -> None: ...
    def timed_out(self, bank: str, mti: str, unknown: bool) -> None: ...
    def not_sent(self, bank: str, mti: str, reason: str) -> None: ...
    def late(self, bank: str, mti: str) -> None: ...
    def rejected_answer(self, bank: str, reason: str) -> None: ...  # bad_mac, bad_response, unmatched
    def connections(self, bank: str, open_: int, ready: int) -> None: ...
    def signed_on(self, bank: str, ok: bool) -> None: ...
    def reconnect(self, bank: str, delay: float) -> None: ...
    def in_flight(self, bank: str, in_flight: int, queued: int) -> None: ...


class PrometheusLinkMetrics(LinkMetrics):
    """The hooks as Prometheus metrics in the given registry (one instance per registry,
    shared by all banks' links: every metric is labelled by bank)."""

    def __init__(self, registry):
        from prometheus_client import Counter as C, Gauge, Histogram

        from gateway.metrics import LATENCY_BUCKETS, LabelCache

        r = registry
        self._sent = C("gridpay_debit_requests_sent", "Debit-channel requests written", ["bank", "mti"], registry=r)
        self._answered = C("gridpay_debit_answers", "Answers matched to a request", ["bank", "mti", "response_code"],
                           registry=r)
        self._latency = Histogram("gridpay_debit_answer_seconds", "Request written to answer read", ["bank", "mti"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self._timeouts = C("gridpay_debit_timeouts", "Requests with no answer (outcome unknown)",
                           ["bank", "mti", "kind"], registry=r)
        self._not_sent = C("gridpay_debit_not_sent", "Requests failed before being written", ["bank", "mti", "reason"],
                           registry=r)
        self._late = C("gridpay_debit_late_answers", "Answers that came after their request timed out",
                       ["bank", "mti"], registry=r)
        self._rejected = C("gridpay_debit_answers_rejected", "Answers ignored", ["bank", "reason"], registry=r)
        self._open = Gauge("gridpay_debit_connections", "Open debit connections", ["bank"], registry=r)
        self._ready = Gauge("gridpay_debit_connections_ready", "Signed-on debit connections", ["bank"], registry=r)
        self._signons = C("gridpay_debit_sign_ons", "Sign-ons by outcome", ["bank", "outcome"], registry=r)
        self._reconnects = C("gridpay_debit_reconnects", "Reconnects scheduled", ["bank"], registry=r)
        self._in_flight = Gauge("gridpay_debit_in_flight", "Requests written and not answered", ["bank"], registry=r)
        self._queued = Gauge("gridpay_debit_queued", "Requests waiting for the caps", ["bank"], registry=r)
        self._child = LabelCache()
        self._levels: dict[str, tuple[int, int]] = {}

    def sent(self, bank, mti):
        self._child(self._sent, bank, mti).inc()

    def answered(self, bank, mti, code, seconds):
        self._child(self._answered, bank, mti, code).inc()
        self._child(self._latency, bank, mti).observe(seconds)

    def timed_out(self, bank, mti, unknown):
        self._timeouts.labels(bank, mti, "connection_lost" if unknown else "timeout").inc()

    def not_sent(self, bank, mti, reason):
        self._not_sent.labels(bank, mti, reason).inc()

    def late(self, bank, mti):
        self._late.labels(bank, mti).inc()

    def rejected_answer(self, bank, reason):
        self._rejected.labels(bank, reason).inc()

    def connections(self, bank, open_, ready):
        self._open.labels(bank).set(open_)
        self._ready.labels(bank).set(ready)

    def signed_on(self, bank, ok):
        self._signons.labels(bank, "ok" if ok else "failed").inc()

    def reconnect(self, bank, delay):
        self._reconnects.labels(bank).inc()

    def in_flight(self, bank, in_flight, queued):
        # called on every send and answer: kept here, read by the gauges only when scraped
        if bank not in self._levels:
            self._in_flight.labels(bank).set_function(lambda: self._levels[bank][0])
            self._queued.labels(bank).set_function(lambda: self._levels[bank][1])
        self._levels[bank] = (in_flight, queued)


# --- message helpers -------------------------------------------------------------------------

def _times(transmitted: str) -> dict[str, str]:
    if not (len(transmitted) == 10 and transmitted.isdigit()):
        raise ValueError(f"field 7 is MMDDhhmmss, got {transmitted!r}")
    return {"7": transmitted, "12": transmitted[4:], "13": transmitted[:4]}


def original_data(mti: str, stan: str, transmitted: str, bank_code: str) -> str:
    """Field 90 (§3): orig MTI + orig 11 + orig 7 + orig 32 zero-filled to 11 + 11 zeros."""
    return f"{mti}{stan.zfill(6)}{transmitted.zfill(10)}{bank_code.zfill(11)}{'0' * 11}"


def debit_fields(*, bank_code: str, transmitted: str, stan: str, rrn: str, customer_no: str, account_no: str,
                 bills: Iterable[Bill | tuple[str, int, int]], amount: int | None = None,
                 terminal_id: str = "GPDEBIT1", acceptor_id: str = "GRIDPAY") -> dict[str, str]:
    """A direct debit 0200/510000 (§4.6): field 4 = the sum of the bills (principal + penalty).
    Fixed fields come at full width, as they will be on the wire (text space-filled), so that
    the answer's echoed fields compare equal without decoding the request again.

    ``transmitted`` (field 7, MMDDhhmmss local time) also gives fields 12 and 13, so the same
    stored identity always rebuilds the same message."""
    items = [b if isinstance(b, Bill) else Bill(*b) for b in bills]
    if not items:
        raise ValueError("a debit needs at least one bill")
    total = sum(b.principal + b.penalty for b in items)
    if amount is not None and amount != total:
        raise ValueError(f"amount {amount} differs from the bills' sum {total}")
    if total <= 0:
        raise ValueError("a debit's amount must be > 0")
    return {"3": DEBIT, "4": f"{total:012d}", **_times(transmitted), "11": stan.zfill(6), "32": bank_code,
            "37": rrn.ljust(12), "41": terminal_id.ljust(8), "42": acceptor_id.ljust(15),
            "48": build_tlv([("CN", customer_no)] + [("BI", b.encode()) for b in items]),
            "49": CURRENCY, "102": account_no}


def reversal_fields(original: dict[str, str], *, transmitted: str, stan: str) -> dict[str, str]:
    """A debit reversal 0420 (send it again unchanged as 0421) of the 0200 ``original`` fields
    (§4.6): its own 7/11, and field 90 / 4 / 37 / 48 CN from the original."""
    from iso8583_specs.tlv import Tlv

    customer = Tlv.parse(original["48"]).get("CN")
    return {"3": DEBIT, "4": original["4"].zfill(12), **_times(transmitted), "11": stan.zfill(6),
            "32": original["32"], "37": original["37"], "41": original["41"], "42": original["42"],
            "48": build_tlv([("CN", customer)]), "49": CURRENCY,
            "90": original_data("0200", original["11"], original["7"], original["32"])}


def _key(f7: str, f11: str, f32: str) -> tuple[str, str, str]:
    return (f7.zfill(10), f11.zfill(6), f32)


# --- one request -----------------------------------------------------------------------------

class _Request:
    __slots__ = ("mti", "fields", "key", "deferred", "queued_until", "deadline", "sent_at", "conn", "iso", "done",
                 "epoch")

    def __init__(self, mti, fields, key, deferred, queued_until):
        self.mti, self.fields, self.key, self.deferred = mti, fields, key, deferred
        self.queued_until = queued_until
        self.deadline = self.sent_at = 0.0
        self.conn = None
        self.iso = b""
        self.done = False
        self.epoch = 0


# --- one connection --------------------------------------------------------------------------

class DebitConnection(Protocol):
    """One TCP connection to the bank's host; the link owns all state beyond the connection."""

    def __init__(self, link: "BankLink", slot: "_Slot"):
        self.link, self.slot = link, slot
        self.framer = link.dialect.framer(link.max_frame)
        self.in_flight: dict[tuple, _Request] = {}
        self.signed_on = False
        self.signon_key = self.echo_key = None
        self._signon_call = self._echo_call = self._echo_wait = None
        self.closing = False

    # lifecycle

    def connectionMade(self) -> None:
        no_delay(self.transport)
        self.link._connected(self)

    def connectionLost(self, reason=None) -> None:
        for call in (self._signon_call, self._echo_call, self._echo_wait):
            if call is not None and call.active():
                call.cancel()
        self.signed_on = False
        self.link._lost(self, reason)

    def write_iso(self, iso: bytes, tpdu: bytes | None = None) -> None:
        self.transport.write(encode_frame(self.link.dialect.framing, iso, tpdu or self.link.tpdu))

    def close(self, reason: str) -> None:
        if not self.closing:
            self.closing = True
            log.warning("%s: closing connection: %s", self.link.bank, reason)
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._echo_call is not None and self._echo_call.active():
            self._echo_call.reset(self.link.cfg.echo_interval_s)
        try:
            for frame in self.framer.feed(data):  # the frames before a bad header come first
                if not frame.keepalive:
                    self.link._frame(self, frame)
        except FramingError as err:
            self.link.stats["framing_errors"] += 1
            self.close(err.reason)

    # network management

    def sign_on(self) -> None:
        fields = self.link._network_fields("001")
        self.signon_key = _key(fields["7"], fields["11"], fields["32"])
        self.write_iso(codec.encode(self.link.dialect, "0800", fields))
        if self._signon_call is not None and self._signon_call.active():
            self._signon_call.cancel()
        self._signon_call = self.link.clock.callLater(self.link.cfg.timeout_s, self.close, "sign-on unanswered")

    def network_answer(self, message) -> None:
        key = _key(*(message.fields.get(k, "") for k in ("7", "11", "32")))
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
        if self._echo_call is None or not self._echo_call.active():
            self._echo_call = self.link.clock.callLater(self.link.cfg.echo_interval_s, self._send_echo)

    def _send_echo(self) -> None:
        if not self.connected or self.closing:
            return
        fields = self.link._network_fields("301")
        self.echo_key = _key(fields["7"], fields["11"], fields["32"])
        self.write_iso(codec.encode(self.link.dialect, "0800", fields))
        self.link.stats["echoes_sent"] += 1
        if self._echo_wait is None or not self._echo_wait.active():
            self._echo_wait = self.link.clock.callLater(self.link.cfg.timeout_s, self.close, "echo unanswered")
        self._echo_call = self.link.clock.callLater(self.link.cfg.echo_interval_s, self._send_echo)


class _Slot:
    """One of the bank's ``connections``: its current connection and its reconnect backoff."""

    def __init__(self, index: int, backoff: Backoff):
        self.index = index
        self.backoff = backoff
        self.conn: DebitConnection | None = None
        self.connecting: defer.Deferred | None = None
        self.retry = None


class _SlotFactory(Factory):
    noisy = False

    def __init__(self, link, slot):
        self.link, self.slot = link, slot

    def buildProtocol(self, addr):
        proto = DebitConnection(self.link, self.slot)
        proto.factory = self
        return proto


# --- the link --------------------------------------------------------------------------------

class BankLink:
    def __init__(self, reactor, bank_code: str, bank_config, zmk: bytes, clock=None,
                 on_late_response: Callable | None = None, metrics: LinkMetrics | None = None,
                 stans: Stans | None = None, now: Callable[[], datetime] | None = None,
                 rng: random.Random | None = None, endpoint: Callable | None = None,
                 backoff: Callable[[], Backoff] | None = None, key_grace_s: float = 60.0,
                 keys: KeyStore | None = None, calendar: BusinessCalendar | None = None,
                 late_memory: int = 100_000, connect_timeout_s: float = 10.0):
        self.reactor = reactor
        self.clock = clock or reactor
        self.bank = bank_code
        self.config = bank_config
        self.cfg = bank_config.debit
        self.zmk = zmk
        self.dialect = dialect_for_bank(bank_config)
        self.tpdu = request_tpdu(bank_config) if self.dialect.framing.tpdu else None
        self.max_frame = bank_config.max_frame
        self.on_late_response = on_late_response
        self.metrics = metrics or LinkMetrics()
        self.stans = stans or Stans()
        self.now = now or (lambda: datetime.now(SHANGHAI))
        # field 15 of the gateway's responses is the utility's business date (§3, §8), which
        # rolls over at the cut-off: the engine passes its settings' calendar
        self.calendar = calendar or BusinessCalendar()
        rng = rng or random.Random()
        self._endpoint = endpoint or (lambda: endpoints.TCP4ClientEndpoint(
            reactor, self.cfg.host, self.cfg.port, timeout=connect_timeout_s))
        make_backoff = backoff or (lambda: Backoff(0.5, 30.0, 2.0, 0.3, rng))
        # engines of one bank share its MAK through the database (a KeyStore with a backend)
        self.keys = keys or KeyStore(self.clock, grace_s=key_grace_s)
        self.bucket = TokenBucket(self.cfg.max_per_second, self.clock)
        self.slots = [_Slot(i, make_backoff()) for i in range(self.cfg.connections)]
        self.stats: Counter = Counter()
        self.reconnect_delays: deque[float] = deque(maxlen=1000)
        self._pending: dict[tuple, _Request] = {}    # written, awaiting an answer
        self._queued_keys: dict[tuple, _Request] = {}
        self._high: deque[_Request] = deque()        # reversals
        self._normal: deque[_Request] = deque()      # debits
        self._sent: deque[_Request] = deque()        # by deadline (timeouts are all equal)
        self._expired: OrderedDict[tuple, _Request] = OrderedDict()
        self._late_memory = late_memory
        self._in_flight = 0
        self._queued = 0
        self._sweep_call = self._pump_call = None
        self._pumping = self._pump_again = False
        self._waiting_ready: list[defer.Deferred] = []
        self._started = self._stopped = False
        self._closed: list[defer.Deferred] = []
        self._key_valid = False                        # the bank holds our current MAK
        self._epoch = 0                                # sign-ons so far
        self._signing: DebitConnection | None = None   # the connection whose sign-on is outstanding

    # --- state -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return bool(self.ready_connections())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def connections(self) -> list[DebitConnection]:
        return [s.conn for s in self.slots if s.conn is not None]

    def ready_connections(self) -> list[DebitConnection]:
        if not self._key_valid:
            return []
        return [s.conn for s in self.slots if s.conn is not None and s.conn.signed_on and not s.conn.closing]

    def when_ready(self) -> defer.Deferred:
        """Fires (with the link) once a connection is signed on."""
        if self.ready:
            return defer.succeed(self)
        d = defer.Deferred()
        self._waiting_ready.append(d)
        return d

    whenReady = when_ready

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "BankLink":
        if not self._started:
            self._started = True
            for slot in self.slots:
                self._connect(slot)
        return self

    def stop(self, grace_s: float = 0.0) -> defer.Deferred:
        """Stop: no new requests; queued ones fail with ``LinkStopped``; requests in flight get
        up to ``grace_s`` to be answered, then their connections close (``OutcomeUnknown``).
        Fires when every connection is closed."""
        self._stopped = True
        for call in (self._pump_call,):
            if call is not None and call.active():
                call.cancel()
        for queue in (self._high, self._normal):
            while queue:
                req = queue.popleft()
                if not req.done:
                    self._fail_unsent(req, LinkStopped(f"bank {self.bank}: link stopped"), "stopped")
        for slot in self.slots:
            if slot.retry is not None and slot.retry.active():
                slot.retry.cancel()
            if slot.connecting is not None:
                slot.connecting.cancel()
        done = defer.Deferred()
        if grace_s > 0 and self._in_flight:
            deadline = self.clock.seconds() + grace_s

            def check():
                if self._in_flight and self.clock.seconds() < deadline:
                    self.clock.callLater(0.05, check)
                else:
                    self._close_all(done)
            check()
        else:
            self._close_all(done)
        return done

    def _close_all(self, done: defer.Deferred) -> None:
        conns = self.connections
        if not conns:
            self._finish_stop()
            done.callback(None)
            return
        self._closed.append(done)
        for conn in conns:
            conn.closing = True
            conn.transport.loseConnection()

    def _finish_stop(self) -> None:
        for call in (self._sweep_call, self._pump_call):
            if call is not None and call.active():
                call.cancel()
        for d in self._waiting_ready:
            d.errback(LinkStopped(f"bank {self.bank}: link stopped"))
        self._waiting_ready.clear()

    # --- connecting --------------------------------------------------------------------------

    def _connect(self, slot: _Slot) -> None:
        slot.retry = None
        if self._stopped:
            return
        d = self._endpoint().connect(_SlotFactory(self, slot))
        slot.connecting = d

        def failed(failure):
            slot.connecting = None
            if self._stopped:
                return None
            self.stats["connect_failures"] += 1
            log.warning("bank %s: connect to %s:%s failed: %s", self.bank, self.cfg.host, self.cfg.port,
                        failure.getErrorMessage())
            self._schedule_reconnect(slot)
            return None

        def made(_proto):
            slot.connecting = None

        d.addCallbacks(made, failed)

    def _schedule_reconnect(self, slot: _Slot) -> None:
        if self._stopped or (slot.retry is not None and slot.retry.active()):
            return
        delay = slot.backoff.next()
        self.reconnect_delays.append(delay)
        self.metrics.reconnect(self.bank, delay)
        log.info("bank %s: connection %d: reconnecting in %.2f s", self.bank, slot.index, delay)
        slot.retry = self.clock.callLater(delay, self._connect, slot)

    def _connected(self, conn: DebitConnection) -> None:
        conn.slot.conn = conn
        self.stats["connections_made"] += 1
        if self._key_valid:
            self._activate(conn)
            self._pump()
        else:
            self._ensure_sign_on()
        self._report_connections()

    def _activate(self, conn: DebitConnection) -> None:
        conn.signed_on = True
        conn.slot.backoff.reset()
        conn.start_echo_timer()

    def _ensure_sign_on(self) -> None:
        """One sign-on per bank at a time: its MAK serves every connection (§4.1). Signing on
        per connection would replace the key several times in a row, and a request MACed two
        keys back is refused (A0) by a bank that keeps one previous key."""
        if self._key_valid or self._signing is not None or self._stopped:
            return
        for slot in self.slots:
            conn = slot.conn
            if conn is not None and not conn.closing:
                self._signing = conn
                conn.sign_on()
                return

    def _invalidate_key(self, why: str) -> None:
        """The bank no longer holds our key (91, its sign-off): stop sending and sign on again.
        The key stays in the store, so answers already MACed with it still verify."""
        if self._key_valid:
            log.warning("bank %s: %s; signing on again", self.bank, why)
        self._key_valid = False
        for conn in self.connections:
            conn.signed_on = False
        self._report_connections()
        self._ensure_sign_on()

    def _lost(self, conn: DebitConnection, reason) -> None:
        slot = conn.slot
        if slot.conn is conn:
            slot.conn = None
        if self._signing is conn:
            self._signing = None
        if not self.connections:
            self._key_valid = False  # the bank may have restarted: the next connection signs on
        unknown = list(conn.in_flight.values())
        conn.in_flight.clear()
        self._report_connections()
        closed: list[defer.Deferred] = []
        if self._stopped:
            if not self.connections:
                self._finish_stop()
                closed, self._closed = self._closed, []
        else:
            self.stats["connections_lost"] += 1
            self._schedule_reconnect(slot)
            self._ensure_sign_on()
        # the link's state is settled before any caller hears of it
        if unknown:
            log.warning("bank %s: connection lost with %d requests in flight: outcome unknown", self.bank,
                        len(unknown))
        for req in unknown:
            self._expire(req, OutcomeUnknown(f"bank {self.bank}: connection lost with {req.mti} "
                                             f"{req.key[1]} unanswered"), unknown=True)
        for d in closed:
            d.callback(None)

    def _report_connections(self) -> None:
        self.metrics.connections(self.bank, len(self.connections), len(self.ready_connections()))

    def _network_fields(self, code: str) -> dict[str, str]:
        return {**request_times(self.now()), "11": self.stans.next(), "32": self.bank, "70": code}

    def _signed_on(self, conn: DebitConnection, message) -> None:
        if self._signing is conn:
            self._signing = None
        code = message.fields.get("39")
        if code != "00":
            self.stats["sign_on_declined"] += 1
            self.metrics.signed_on(self.bank, False)
            conn.close(f"sign-on answered {code}")
            return
        try:
            mak = read_sign_on_field48(self.zmk, message.fields.get("48", ""))
        except MessageError as err:
            self.stats["sign_on_bad_key"] += 1
            self.metrics.signed_on(self.bank, False)
            conn.close(f"sign-on key rejected: {err.reason}")
            return
        self.keys.install(self.bank, CHANNEL, mak)
        self._key_valid = True
        self._epoch += 1
        for other in self.connections:
            if not other.closing:
                self._activate(other)
        self.stats["sign_ons"] += 1
        self.metrics.signed_on(self.bank, True)
        self._report_connections()
        log.info("bank %s: signed on (connection %d)", self.bank, conn.slot.index)
        waiting, self._waiting_ready = self._waiting_ready, []
        for d in waiting:
            d.callback(self)
        self._pump()

    def settlement_date(self) -> str:
        """Field 15 (MMDD) of every response the gateway sends on this channel: the utility's
        business date now (§3, §8), not the bank's field 13 - after the cut-off they differ."""
        return self.calendar.business_date(self.now()).strftime("%m%d")

    def _answer_bank_network(self, conn: DebitConnection, message, tpdu: bytes | None) -> None:
        """The bank's 0800: echo → 00; sign-off → 00 and sign on again; sign-on → 40 (on the
        debit channel the gateway signs on, the bank issues keys)."""
        network = message.fields.get("70")
        fields = {k: message.fields[k] for k in ("7", "11", "12", "13", "32", "70") if k in message.fields}
        fields["15"] = self.settlement_date()
        fields["39"] = "00" if network in ("301", "002") else "40"
        conn.write_iso(codec.encode(self.dialect, "0810", fields), response_tpdu(tpdu) if tpdu else None)
        self.stats[f"bank_network_{network}"] += 1
        if network == "002":
            self._invalidate_key("the bank signed the debit channel off")

    # --- frames in ---------------------------------------------------------------------------

    def _frame(self, conn: DebitConnection, frame) -> None:
        try:
            message = codec.decode(self.dialect, frame.message)
        except MessageError as err:
            self.stats["undecodable"] += 1
            log.warning("bank %s: undecodable frame ignored: %s", self.bank, err.reason)
            return
        mti = message.mti
        if mti in RESPONSE_MTIS:
            self._response(conn, message)
        elif mti == "0810":
            conn.network_answer(message)
        elif mti == "0800":
            self._answer_bank_network(conn, message, frame.tpdu)
        else:
            self.stats["unexpected_mti"] += 1
            log.warning("bank %s: unexpected MTI %s ignored", self.bank, mti)

    def _mac_ok(self, message) -> bool:
        fields = message.fields
        if fields.get("39") == "91" and "64" not in fields and "128" not in fields:
            return True  # §4.1: 91 travels without a MAC
        if self._verifies(message):
            return True
        # another engine may have signed this bank on since: take its key, if any, and look again;
        # failing that, the bank's key may be one the store holds under an older version (two
        # engines' sign-ons saved in the other order than the bank issued them)
        try:
            if self.keys.refresh(self.bank, CHANNEL) and self._verifies(message):
                return True
            if self.keys.adopt(self.bank, CHANNEL, lambda key: codec.verify_mac(self.dialect, message.raw, key)):
                log.warning("bank %s: its MAC key is one the store held as an older version; using it", self.bank)
                return True
            return False
        except Exception:  # noqa: BLE001 - the key store is unreachable: the answer stays unverified
            return False

    def _verifies(self, message) -> bool:
        return any(codec.verify_mac(self.dialect, message.raw, key) for key in self.keys.accepted(self.bank, CHANNEL))

    def _reject(self, reason: str, message, detail: str = "") -> None:
        self.stats[reason] += 1
        self.metrics.rejected_answer(self.bank, reason)
        log.warning("bank %s: %s %s/%s ignored (%s)%s", self.bank, reason.replace("_", " "), message.mti,
                    message.fields.get("11"), reason, f": {detail}" if detail else "")

    def _response(self, conn: DebitConnection, message) -> None:
        f = message.fields
        key = _key(f.get("7", ""), f.get("11", ""), f.get("32", ""))
        req = self._pending.get(key)
        if req is None:
            late = self._expired.get(key)
            if late is None:
                self.stats["unmatched"] += 1
                self.metrics.rejected_answer(self.bank, "unmatched")
                log.info("bank %s: unmatched %s %s/%s (duplicate or unknown) ignored", self.bank, message.mti,
                         f.get("7"), f.get("11"))
                return
            if not self._mac_ok(message):
                self._reject("bad_mac", message)
                return
            del self._expired[key]
            self.stats["late"] += 1
            self.metrics.late(self.bank, late.mti)
            log.warning("bank %s: late %s %s/%s (39=%s) after its request timed out", self.bank, message.mti,
                        f.get("7"), f.get("11"), f.get("39"))
            if self.on_late_response is not None:
                try:
                    self.on_late_response(message)
                except Exception:  # noqa: BLE001 - the caller's bug must not break the link
                    log.exception("bank %s: on_late_response failed", self.bank)
            return
        if not self._mac_ok(message):
            self._reject("bad_mac", message)
            return
        try:
            try:
                shapes.validate_response(message, codec.Message(req.mti, req.fields), require_mac=False)
            except MessageError:
                # the caller's fields may be short forms (say "55216" for field 4): compare with
                # the request as it went out before calling the answer bad
                shapes.validate_response(message, codec.decode(self.dialect, req.iso), require_mac=False)
        except MessageError as err:
            self._reject("bad_response", message, err.reason)
            return
        self._finish(req)
        self.stats[f"answered_{f.get('39')}"] += 1
        self.metrics.answered(self.bank, req.mti, f.get("39", "--"), self.clock.seconds() - req.sent_at)
        if f.get("39") == "91" and req.epoch == self._epoch:  # not a 91 to a key already replaced
            self._invalidate_key("answered 91 (not signed on)")
        req.deferred.callback(message)
        self._pump()

    def _finish(self, req: _Request) -> None:
        req.done = True
        del self._pending[req.key]
        if req.conn is not None:
            req.conn.in_flight.pop(req.key, None)
        self._in_flight -= 1
        self.metrics.in_flight(self.bank, self._in_flight, self._queued)

    def _expire(self, req: _Request, exc: DebitTimeout, unknown: bool = False) -> None:
        self._finish(req)
        self._expired[req.key] = req
        if len(self._expired) > self._late_memory:
            self._expired.popitem(last=False)
        self.stats["outcome_unknown" if unknown else "timeouts"] += 1
        self.metrics.timed_out(self.bank, req.mti, unknown)
        req.deferred.errback(exc)
        self._pump()

    # --- requests out ------------------------------------------------------------------------

    def send(self, mti: str, fields: dict[str, str]) -> defer.Deferred:
        """Write a financial request (0200 debit, 0420/0421 reversal) with its caller-given
        fields 7, 11 and 32; the MAC is added. Fires with the answer ``Message``; fails with
        ``DebitTimeout``/``OutcomeUnknown`` (sent, outcome unknown) or ``NotSent``."""
        try:
            key = _key(fields["7"], fields["11"], fields["32"])
        except KeyError as missing:
            return defer.fail(ValueError(f"field {missing.args[0]} is required: the caller assigns the identity"))
        if self._stopped:
            return defer.fail(LinkStopped(f"bank {self.bank}: link stopped"))
        if key in self._pending or key in self._queued_keys:
            return defer.fail(ValueError(f"a request {key} is already in flight"))
        self._expired.pop(key, None)  # a 0421 repeats its 0420's identity
        d = defer.Deferred()
        req = _Request(mti, fields, key, d, self.clock.seconds() + self.cfg.timeout_s)
        (self._high if mti in REVERSAL_MTIS else self._normal).append(req)
        self._queued_keys[key] = req
        self._queued += 1
        self._pump()
        if not req.done:
            self._arm()
        return d

    def _pump(self) -> None:
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                self._pump_once()
        finally:
            self._pumping = False
        self.metrics.in_flight(self.bank, self._in_flight, self._queued)

    def _pump_once(self) -> None:
        if self._pump_call is not None and self._pump_call.active():
            return  # waiting for a token
        cap = self.cfg.max_in_flight
        ready = None
        while self._in_flight < cap:
            queue = self._high if self._high else self._normal
            while queue and queue[0].done:
                queue.popleft()
            if not queue:
                if queue is self._high and self._normal:
                    continue
                return
            if ready is None:
                ready = self.ready_connections()
                if not ready:
                    return
            wait = self.bucket.take()
            if wait > 0:
                self._pump_call = self.clock.callLater(wait, self._pump)
                return
            req = queue.popleft()
            conn = min(ready, key=lambda c: len(c.in_flight)) if len(ready) > 1 else ready[0]
            self._write(conn, req)

    def _write(self, conn: DebitConnection, req: _Request) -> None:
        del self._queued_keys[req.key]
        self._queued -= 1
        try:
            req.iso = codec.encode(self.dialect, req.mti, req.fields, mac_key=self.keys.current(self.bank, CHANNEL))
        except MessageError as err:
            req.done = True
            self.metrics.not_sent(self.bank, req.mti, "bad_fields")
            req.deferred.errback(err)
            return
        now = self.clock.seconds()
        req.sent_at, req.deadline, req.conn, req.epoch = now, now + self.cfg.timeout_s, conn, self._epoch
        self._pending[req.key] = req
        conn.in_flight[req.key] = req
        self._in_flight += 1
        self._sent.append(req)
        conn.write_iso(req.iso)
        self.stats[f"sent_{req.mti}"] += 1
        self.metrics.sent(self.bank, req.mti)

    def _fail_unsent(self, req: _Request, exc: NotSent, reason: str) -> None:
        req.done = True
        self._queued_keys.pop(req.key, None)
        self._queued -= 1
        self.stats[f"not_sent_{reason}"] += 1
        self.metrics.not_sent(self.bank, req.mti, reason)
        req.deferred.errback(exc)

    # --- timeouts ----------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._sweep_call is not None and self._sweep_call.active():
            return  # deadlines only grow, so the armed sweep is never late
        heads = [q[0].deadline for q in (self._sent,) if q]
        heads += [q[0].queued_until for q in (self._high, self._normal) if q]
        if heads:
            self._sweep_call = self.clock.callLater(max(0.0, min(heads) - self.clock.seconds()), self._sweep)

    def _sweep(self) -> None:
        self._sweep_call = None
        now = self.clock.seconds()
        sent = self._sent
        while sent and (sent[0].done or sent[0].deadline <= now):
            req = sent.popleft()
            if not req.done:
                log.warning("bank %s: %s %s/%s unanswered after %.1f s: outcome unknown", self.bank, req.mti,
                            req.key[0], req.key[1], self.cfg.timeout_s)
                self._expire(req, DebitTimeout(f"bank {self.bank}: {req.mti} {req.key[1]} unanswered after "
                                               f"{self.cfg.timeout_s} s"))
        for queue in (self._high, self._normal):
            while queue and (queue[0].done or queue[0].queued_until <= now):
                req = queue.popleft()
                if not req.done:
                    if self.ready:
                        self._fail_unsent(req, LinkBusy(f"bank {self.bank}: queued {self.cfg.timeout_s} s behind "
                                                        f"the caps"), "busy")
                    else:
                        self._fail_unsent(req, LinkDown(f"bank {self.bank}: no signed-on connection within "
                                                        f"{self.cfg.timeout_s} s"), "down")
        if not self._stopped:
            self._arm()
