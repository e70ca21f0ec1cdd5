"""``BankLink``: one bank's debit link, made of its connection pool (``pool``), its dispatcher
(``dispatcher``) and its multiplexer (``mux``). This module ties them together: it starts and
stops the link, routes the frames the connections read, answers the bank's own network
management, and runs the one timer that gives up overdue requests, queued or written."""
from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Callable

from twisted.internet import defer, endpoints

from engines.link.debit_connection import DebitConnection
from engines.link.debit_mux import AnswerMatcher
from engines.link.dispatcher import Dispatcher
from engines.link.link_metrics import LinkMetrics
from engines.link.outcomes import LinkStopped
from engines.link.pool import CHANNEL, ConnectionPool
from runtime.ratelimit import Backoff
from iso8583_specs import codec, shapes
from iso8583_specs.dialects import dialect_for_bank, request_tpdu
from iso8583_specs.errors import MessageError
from iso8583_specs.framing import response_tpdu
from iso8583_specs.links import Stans, network_answer, network_request, times_at
from config.clock import Clock, as_clock
from ledger.key_store import KeyStore

log = logging.getLogger("gridpay.debit.link")

RESPONSE_MTIS = shapes.response_mtis(CHANNEL)


class BankLink(ConnectionPool, Dispatcher, AnswerMatcher):
    """One bank's debit link. The parts share this one object's state, so a request's way
    (send, pump, write, answer) crosses no extra object per message."""

    def __init__(self, reactor, bank_code: str, bank_config, zmk: bytes, clock: Clock | None = None,
                 on_late_response: Callable | None = None, metrics: LinkMetrics | None = None,
                 stans: Stans | None = None, rng: random.Random | None = None, endpoint: Callable | None = None,
                 backoff: Callable[[], Backoff] | None = None, key_grace_s: float = 60.0,
                 keys: KeyStore | None = None, late_memory: int = 100_000, connect_timeout_s: float = 10.0):
        self.reactor = reactor
        # timers, field 7's time and field 15's business date (docs/spec/INTERFACE.md §3, §8: it rolls over at
        # the cut-off): the engine hands in its clock; a bare timer gets the default calendar
        self.clock = as_clock(clock, reactor)
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
        rng = rng or random.Random()
        self._endpoint = endpoint or (lambda: endpoints.TCP4ClientEndpoint(
            reactor, self.cfg.host, self.cfg.port, timeout=connect_timeout_s))
        # engines of one bank share its MAK through the database (a KeyStore with a backend)
        self.keys = keys or KeyStore(self.clock, grace_s=key_grace_s)
        self.stats: Counter = Counter()
        self._init_pool(backoff or (lambda: Backoff(0.5, 30.0, 2.0, 0.3, rng)))
        self._init_dispatcher()
        self._init_matcher(late_memory)
        self._sweep_call = None
        self._started = self._stopped = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return self._queued

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

    def _finish_stop(self) -> None:
        for call in (self._sweep_call, self._pump_call):
            if call is not None and call.active():
                call.cancel()
        for d in self._waiting_ready:
            d.errback(LinkStopped(f"bank {self.bank}: link stopped"))
        self._waiting_ready.clear()

    # --- network management --------------------------------------------------------------------

    def _network_fields(self, code: str) -> dict[str, str]:
        return network_request(times_at(self.clock.local()), self.stans.next(), self.bank, code)

    def settlement_date(self) -> str:
        """Field 15 (MMDD) of every response the gateway sends on this channel: the utility's
        business date now (§3, §8), not the bank's field 13 - after the cut-off they differ."""
        return self.clock.business_date().strftime("%m%d")

    def _answer_bank_network(self, conn: DebitConnection, message, tpdu: bytes | None) -> None:
        """The bank's 0800: echo → 00; sign-off → 00 and sign on again; sign-on → 40 (on the
        debit channel the gateway signs on, the bank issues keys)."""
        network = message.fields.get("70")
        code = "00" if network in (shapes.ECHO, shapes.SIGN_OFF) else "40"
        fields = network_answer(message.fields, self.settlement_date(), code)
        conn.write_iso(codec.encode(self.dialect, "0810", fields), response_tpdu(tpdu) if tpdu else None)
        self.stats[f"bank_network_{network}"] += 1
        if network == shapes.SIGN_OFF:
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
        self._expire_overdue(now)
        self._drop_overdue(now)
        if not self._stopped:
            self._arm()
