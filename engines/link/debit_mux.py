"""The debit link's multiplexer: requests written and awaiting answers, matched by 7, 11 and 32.

An answer is taken only once its MAC verifies (under the current key, one still in its grace
period, or one another engine stored) and its echoed fields match the request. A request with
no answer by its deadline fails with ``DebitTimeout``; its answer, should it come later, goes
to ``on_late_response``. A part of ``BankLink``."""
from __future__ import annotations

import logging
from collections import deque

from engines.link.outcomes import DebitTimeout
from engines.link.pool import CHANNEL
from iso8583_specs import codec, shapes
from iso8583_specs.errors import MessageError
from iso8583_specs.links import Multiplexer, request_key

log = logging.getLogger("gridpay.debit.link")


class Request:
    """One request from ``send`` to its outcome: queued, then written on ``conn``, then done."""

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


class AnswerMatcher:
    """The link's requests in flight: ``_pending`` and ``_expired`` are the kit's ``Multiplexer``
    tables, ``_sent`` orders them by deadline (all timeouts are equal, so one timer serves all)."""

    def _init_matcher(self, late_memory: int) -> None:
        self.mux = Multiplexer(late_memory)
        self._pending: dict[tuple, Request] = self.mux.pending    # written, awaiting an answer
        self._expired = self.mux.expired                          # given up: a late answer is known
        self._sent: deque[Request] = deque()        # by deadline (timeouts are all equal)
        self._in_flight = 0

    def _mac_ok(self, message) -> bool:
        fields = message.fields
        if fields.get("39") == "91" and "64" not in fields and "128" not in fields:
            return True  # docs/spec/INTERFACE.md §4.1: 91 travels without a MAC
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

    def _response(self, conn, message) -> None:
        f = message.fields
        key = request_key(f.get("7", ""), f.get("11", ""), f.get("32", ""))
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
        self.pump()

    def _finish(self, req: Request) -> None:
        req.done = True
        del self._pending[req.key]
        if req.conn is not None:
            req.conn.in_flight.pop(req.key, None)
        self._in_flight -= 1
        self.metrics.in_flight(self.bank, self._in_flight, self._queued)

    def _expire(self, req: Request, exc: DebitTimeout, unknown: bool = False) -> None:
        self._finish(req)
        self.mux.give_up(req.key, req)
        self.stats["outcome_unknown" if unknown else "timeouts"] += 1
        self.metrics.timed_out(self.bank, req.mti, unknown)
        req.deferred.errback(exc)
        self.pump()

    def _expire_overdue(self, now: float) -> None:
        sent = self._sent
        while sent and (sent[0].done or sent[0].deadline <= now):
            req = sent.popleft()
            if not req.done:
                log.warning("bank %s: %s %s/%s unanswered after %.1f s: outcome unknown", self.bank, req.mti,
                            req.key[0], req.key[1], self.cfg.timeout_s)
                self._expire(req, DebitTimeout(f"bank {self.bank}: {req.mti} {req.key[1]} unanswered after "
                                               f"{self.cfg.timeout_s} s"))
