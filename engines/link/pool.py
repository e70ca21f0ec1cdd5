"""The debit link's connection pool: ``debit.connections`` connections to one bank, each in a slot
that reconnects after a loss or a refusal with exponential backoff and jitter.

One sign-on per bank at a time (0800/001): the MAK the bank issues in its 0810 serves every
connection (docs/spec/INTERFACE.md §4.1). A connection is ready once the bank holds our current key; a 91 or the bank's
sign-off invalidates it and the pool signs on again. A part of ``BankLink``."""
from __future__ import annotations

import logging
from collections import deque

from twisted.internet import defer

from engines.link.debit_connection import DebitConnection, Slot, SlotFactory
from engines.link.outcomes import OutcomeUnknown
from iso8583_specs.errors import MessageError
from iso8583_specs.keys import read_sign_on_field48

log = logging.getLogger("gridpay.debit.link")

CHANNEL = "debit"


class ConnectionPool:
    """The link's slots, their connections and the bank's key on them (valid or not, which sign-on)."""

    def _init_pool(self, make_backoff) -> None:
        self.slots = [Slot(i, make_backoff()) for i in range(self.cfg.connections)]
        self.reconnect_delays: deque[float] = deque(maxlen=1000)
        self._waiting_ready: list[defer.Deferred] = []
        self._closed: list[defer.Deferred] = []
        self._key_valid = False                        # the bank holds our current MAK
        self._epoch = 0                                # sign-ons so far
        self._signing: DebitConnection | None = None   # the connection whose sign-on is outstanding

    # --- state -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return bool(self.ready_connections())

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

    # --- connecting --------------------------------------------------------------------------

    def _connect(self, slot: Slot) -> None:
        slot.retry = None
        if self._stopped:
            return
        d = self._endpoint().connect(SlotFactory(self, slot))
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

    def _schedule_reconnect(self, slot: Slot) -> None:
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
            self.pump()
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
        self.pump()
