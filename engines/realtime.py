"""``gridpay debit now``: one real-time debit an operator starts for a customer.

The debit is a batch of one (no plan) in a chunk of priority 100. A running engine for the bank
claims it at its next poll (highest priority first) and this command polls the database for the
outcome. With no engine running - or none taking it within ``pickup_s`` - the command claims the
chunk itself and sends it through its own ``BankLink`` (the claim is the same row-locked claim,
so exactly one of them sends it). On a timeout the debit is unknown and its reversal is under
way: this command sends the 0420 itself when it owns the link, and on exit gives up its lease so
a running engine carries the 0421 repeats on (store and forward).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from engines.plans import SINGLE_PRIORITY, PlanError, build_batch
from engines.tables import debit_chunks, debit_reversals
from config.clock import Clock
from ledger.schema import SINGLE_CHANNELS, agreements, customers, debits

MEANING = {"05": "declined, no reason given", "12": "invalid transaction", "13": "invalid amount",
           "14": "invalid account", "30": "format error", "51": "insufficient funds",
           "57": "not permitted for this customer (no agreement / account closed)",
           "58": "not permitted for this bank", "61": "exceeds the account's debit limit",
           "91": "bank host unavailable / not signed on", "94": "duplicate transmission",
           "96": "system malfunction at the bank", "A0": "MAC verification failed"}


@dataclass
class Single:
    batch_id: int
    debit_id: int
    chunk_id: int
    bank_code: str
    customer_no: str
    amount: int


class SingleRefused(PlanError):
    """A single debit refused before anything was written; ``reason`` says why, for a client to
    branch on: customer-unknown, no-agreement, debit-in-flight, nothing-due, customer-skipped (suspended,
    over the debit limit), no-realtime (the bank takes files only), bad-channel."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def create_single(db, settings, customer_no: str, *, bank_code: str | None, now: datetime, actor: str,
                  channel: str = "district_office") -> Single:
    with db.begin() as conn:
        return create_single_in(conn, settings, customer_no, bank_code=bank_code, now=now, actor=actor,
                                channel=channel)


def create_single_in(conn, settings, customer_no: str, *, bank_code: str | None, now: datetime, actor: str,
                     channel: str) -> Single:
    """The single debit in ``conn``'s transaction (the API stores its idempotent answer in the same one)."""
    if channel not in SINGLE_CHANNELS:
        raise SingleRefused("bad-channel", f"channel {channel!r} is not one of {', '.join(SINGLE_CHANNELS)}")
    a, d = agreements.c, debits.c
    if conn.execute(select(customers.c.customer_no).where(customers.c.customer_no == customer_no)).first() is None:
        raise SingleRefused("customer-unknown", f"no customer {customer_no}")
    q = select(a.bank_code).where(a.customer_no == customer_no, a.status == "A")
    if bank_code:
        q = q.where(a.bank_code == bank_code)
    banks = sorted(set(conn.execute(q).scalars()))
    if not banks:
        raise SingleRefused("no-agreement", f"customer {customer_no} has no active debit agreement"
                            + (f" with bank {bank_code}" if bank_code else ""))
    in_flight = conn.execute(select(d.debit_id, d.state).where(d.customer_no == customer_no,
                                                                d.state.in_(("pending", "sent")))
                             .order_by(d.debit_id).limit(1)).first()
    if in_flight is not None:
        raise SingleRefused("debit-in-flight", f"customer {customer_no} has debit {in_flight.debit_id} in flight "
                            f"({in_flight.state}): wait for its outcome")
    bank = banks[0]
    cfg = settings.banks.get(bank)
    if cfg is None or "debit" not in cfg.channels:
        raise SingleRefused("no-realtime", f"bank {bank} has no debit channel configured")
    if cfg.debit.mode != "online":
        raise SingleRefused("no-realtime", f"bank {bank} takes debits by file only (debit.mode = file): "
                            "no real-time debit")
    s = build_batch(conn, bank_code=bank, at=now, clock=Clock.of(settings.business), mode="online",
                    customers_only=[customer_no], chunk_size=1, priority=SINGLE_PRIORITY, kind="single", actor=actor,
                    include_not_due=True, channel=channel)
    if s.skipped:
        raise SingleRefused("customer-skipped", f"customer {customer_no} skipped: {s.skipped[0][2]}")
    if not s.debits:
        raise SingleRefused("nothing-due", f"customer {customer_no} has nothing to debit (no unpaid bills outside "
                            "open debits)")
    chunk_id = conn.execute(select(debit_chunks.c.chunk_id).where(debit_chunks.c.batch_id == s.batch_id)).scalar_one()
    return Single(s.batch_id, s.debit_ids[0], chunk_id, bank, customer_no, s.total)


def debit_state(db, debit_id: int) -> dict:
    d, r = debits.c, debit_reversals.c
    with db.connect() as conn:
        row = conn.execute(select(d.state, d.response_code, d.approval_code, d.transmitted, d.stan, d.rrn)
                           .where(d.debit_id == debit_id)).mappings().one()
        rev = conn.execute(select(r.state, r.attempts).where(r.debit_id == debit_id)).mappings().first()
    return {**row, "reversal": dict(rev) if rev else None}


def wait_for(db, debit_id: int, states: tuple, timeout_s: float, poll_s: float = 0.1) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        st = debit_state(db, debit_id)
        if st["state"] in states or time.monotonic() >= deadline:
            return st
        time.sleep(poll_s)


def run_own_link(db, settings, single: Single, *, reversal_wait_s: float) -> None:
    """Claim the chunk and send it through this process's own link; wait for the answer (and,
    on a timeout, for the first reversal attempt's answer up to reversal_wait_s)."""
    from twisted.internet import defer

    from engines.engine import DebitEngine
    from runtime.bootstrap import install_reactor

    reactor = install_reactor()
    eng = DebitEngine(settings, reactor, db, name=f"debit-now:{os.getpid()}", banks=[single.bank_code],
                      only_chunks=[single.chunk_id], files=False, single=False, lease_s=30.0, poll_s=0.2)
    errors = []

    @defer.inlineCallbacks
    def main():
        try:
            yield eng.start()
            yield eng.when(lambda: eng.stats["chunks"] >= 1 and single.chunk_id not in eng.chunks)
            if eng.reversals:
                deadline = reactor.seconds() + reversal_wait_s
                while eng.reversals and reactor.seconds() < deadline:
                    d = defer.Deferred()
                    reactor.callLater(0.1, d.callback, None)
                    yield d
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            try:
                yield eng.stop(grace_s=0.5)
            finally:
                reactor.stop()

    reactor.callWhenRunning(main)
    reactor.run(installSignalHandlers=False)
    if errors:
        raise errors[0]


def describe(single: Single, st: dict, timeout_s: float, settings) -> tuple[str, int]:
    head = f"debit {single.debit_id}: customer {single.customer_no}, bank {single.bank_code}, {single.amount} fen"
    state = st["state"]
    if state == "approved":
        return f"{head}: APPROVED (approval code {st['approval_code'] or '-'}, RRN {st['rrn']}); the bills are paid", 0
    if state == "declined":
        code = st["response_code"] or "--"
        return f"{head}: DECLINED {code} ({MEANING.get(code, 'declined')}); the bills stay unpaid", 1
    cfg = settings.bank(single.bank_code).debit
    rev = st["reversal"]
    if state in ("unknown", "reversed") or rev:
        if state == "reversed":
            tail = "the reversal was answered: nothing was taken from the account"
        elif rev and rev["state"] == "unanswered":
            tail = "its reversal went unanswered: open for reconciliation"
        else:
            tail = (f"a reversal (0420, repeated as 0421 every {cfg.reversal_interval_s:g} s up to "
                    f"{cfg.reversal_max} times) is under way")
        return (f"{head}: OUTCOME UNKNOWN - no answer within {timeout_s:g} s; {tail}; the bills stay unpaid", 3)
    if state == "sent":
        return (f"{head}: OUTCOME UNKNOWN - sent (RRN {st['rrn']}) and not answered yet; the engine will reverse it "
                f"if no answer comes within {timeout_s:g} s", 3)
    return f"{head}: not sent yet (no engine took it); it stays queued for the next engine", 4
