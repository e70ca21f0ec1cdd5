"""The debit link's dispatcher: ``send`` queues a request, the pump writes it to the least busy
ready connection once the caps allow (``max_in_flight`` outstanding, ``max_per_second`` by token
bucket), reversals ahead of debits. A request queued past its time limit fails unsent
(``LinkBusy``, or ``LinkDown`` with no ready connection). With both queues empty and room under
the caps, the pump asks the ``feeder`` (if one is set) for more: a caller with many requests hands
them over as the window frees, not all at once to wait out their time limit in the queue. A part
of ``BankLink``."""
from __future__ import annotations

from collections import deque
from typing import Callable

from twisted.internet import defer

from engines.link.debit_mux import Request
from engines.link.outcomes import LinkBusy, LinkDown, LinkStopped, NotSent
from engines.link.pool import CHANNEL
from runtime.ratelimit import TokenBucket
from iso8583_specs import codec, shapes
from iso8583_specs.errors import MessageError
from iso8583_specs.links import request_key

REVERSAL_MTIS = shapes.mtis_of(CHANNEL, "reversal")


class Dispatcher:
    """The link's requests not yet written: two queues (reversals first), the token bucket, the pump."""

    def _init_dispatcher(self) -> None:
        self.bucket = TokenBucket(self.cfg.max_per_second, self.clock)
        self._queued_keys: dict[tuple, Request] = {}
        self._high: deque[Request] = deque()        # reversals
        self._normal: deque[Request] = deque()      # debits
        self._queued = 0
        self._pump_call = None
        self._pumping = self._pump_again = False
        # called with the room under max_in_flight when nothing waits and a connection is ready;
        # it may call send() that many times
        self.feeder: Callable[[int], None] | None = None

    def send(self, mti: str, fields: dict[str, str]) -> defer.Deferred:
        """Write a financial request (0200 debit, 0420/0421 reversal) with its caller-given
        fields 7, 11 and 32; the MAC is added. Fires with the answer ``Message``; fails with
        ``DebitTimeout``/``OutcomeUnknown`` (sent, outcome unknown) or ``NotSent``."""
        try:
            key = request_key(fields["7"], fields["11"], fields["32"])
        except KeyError as missing:
            return defer.fail(ValueError(f"field {missing.args[0]} is required: the caller assigns the identity"))
        if self._stopped:
            return defer.fail(LinkStopped(f"bank {self.bank}: link stopped"))
        if key in self._pending or key in self._queued_keys:
            return defer.fail(ValueError(f"a request {key} is already in flight"))
        self._expired.pop(key, None)  # a 0421 repeats its 0420's identity
        d = defer.Deferred()
        req = Request(mti, fields, key, d, self.clock.seconds() + self.cfg.timeout_s)
        (self._high if mti in REVERSAL_MTIS else self._normal).append(req)
        self._queued_keys[key] = req
        self._queued += 1
        self.pump()
        if not req.done:
            self._arm()
        return d

    def pump(self) -> None:
        """Write what the caps allow now; with room left, ask the feeder."""
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
        ready, fed = None, False
        while self._in_flight < cap:
            queue = self._high if self._high else self._normal
            while queue and queue[0].done:
                queue.popleft()
            if not queue:
                if queue is self._high and self._normal:
                    continue
                if self.feeder is None or fed or self._stopped:
                    return
                ready = self.ready_connections() if ready is None else ready
                if not ready:
                    return
                fed = True
                self.feeder(cap - self._in_flight)
                continue
            if ready is None:
                ready = self.ready_connections()
                if not ready:
                    return
            wait = self.bucket.take()
            if wait > 0:
                self._pump_call = self.clock.callLater(wait, self.pump)
                return
            req = queue.popleft()
            conn = min(ready, key=lambda c: len(c.in_flight)) if len(ready) > 1 else ready[0]
            self._write(conn, req)

    def _write(self, conn, req: Request) -> None:
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

    def _fail_unsent(self, req: Request, exc: NotSent, reason: str) -> None:
        req.done = True
        self._queued_keys.pop(req.key, None)
        self._queued -= 1
        self.stats[f"not_sent_{reason}"] += 1
        self.metrics.not_sent(self.bank, req.mti, reason)
        req.deferred.errback(exc)

    def _drop_overdue(self, now: float) -> None:
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
