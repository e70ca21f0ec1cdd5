"""Refunds of prepaid balances, with a second operator's approval for large ones.

A refund request names the customer, the amount in fen, the operator and the reason. It may not
exceed what is refundable: the prepaid balance less the refunds still waiting for approval. A
request below the customer type's threshold (``business.refund_approval_resident_fen`` for
residents, ``..._nonresident_fen`` for non-residents; the amount *equal* to the threshold already
needs approval) is paid at once. A larger one waits until another operator approves or rejects
it; the operator who asked cannot decide. Approval checks the balance again.

Paying a refund is the posting kind ``PrepaidRefund`` (``ledger.posting``): a prepaid movement
(kind ``refund``, negative), a journal entry Dr prepaid / Cr refunds_payable, and an audit row;
every request and decision is audited too. Nothing pays the money out yet: refunds_payable holds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from config.settings import BusinessConfig
from ledger.audit import audit_row, write_audit
from config.clock import Clock
from ledger.errors import Refused
from ledger.posting import PrepaidRefund, apply_batch, lock_customers, prepaid_balance
from ledger.schema import customers, refund_decisions, refunds

PENDING, PAID, REJECTED = "pending", "paid", "rejected"


@dataclass
class Refund:
    refund_id: int
    customer_no: str
    amount: int
    reason: str
    requested_by: str
    requested_at: datetime
    needs_approval: bool
    status: str                   # pending | paid | rejected
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str = ""

    def summary(self) -> str:
        whole, cents = divmod(self.amount, 100)
        text = f"refund {self.refund_id}: {whole}.{cents:02d} yuan to customer {self.customer_no}: {self.status}"
        if self.status == PENDING:
            text += " (waits for approval by a second operator)"
        elif self.decided_by:
            text += f" (decided by {self.decided_by})"
        return text


def approval_threshold(customer_type: str, business: BusinessConfig) -> int:
    return business.refund_approval_resident_fen if customer_type == "R" else business.refund_approval_nonresident_fen


def _clock(business: BusinessConfig) -> Clock:
    return Clock.of(business)


def _need(text: str | None, what: str) -> None:
    if not text or not text.strip():
        raise Refused(f"a refund {what}")


def _load(conn, refund_id: int) -> Refund:
    row = conn.execute(select(refunds, refund_decisions.c.decision, refund_decisions.c.decided_by,
                              refund_decisions.c.decided_at, refund_decisions.c.note)
                       .select_from(refunds.outerjoin(refund_decisions,
                                                      refund_decisions.c.refund_id == refunds.c.id))
                       .where(refunds.c.id == refund_id)).first()
    if row is None:
        raise Refused(f"no refund {refund_id}")
    return _refund(row)


def _refund(row) -> Refund:
    if row.needs_approval == "N" or row.decision == "A":
        status = PAID
    elif row.decision == "J":
        status = REJECTED
    else:
        status = PENDING
    return Refund(int(row.id), row.customer_no, int(row.amount), row.reason, row.requested_by, row.requested_at,
                  row.needs_approval == "Y", status, row.decided_by, row.decided_at, row.note or "")


def _pending_sum(conn, customer_no: str, exclude: int | None = None) -> int:
    query = (select(func.coalesce(func.sum(refunds.c.amount), 0))
             .select_from(refunds.outerjoin(refund_decisions, refund_decisions.c.refund_id == refunds.c.id))
             .where(refunds.c.customer_no == customer_no, refunds.c.needs_approval == "Y",
                    refund_decisions.c.id.is_(None)))
    if exclude is not None:
        query = query.where(refunds.c.id != exclude)
    return int(conn.execute(query).scalar_one())


def _pay(conn, refund: Refund, actor: str, at: datetime, business: BusinessConfig) -> None:
    apply_batch(conn, [PrepaidRefund(refund.refund_id, refund.customer_no, refund.amount, actor, refund.reason)],
                _clock(business), at)


def request_refund(engine: Engine, customer_no: str, amount_fen: int, *, actor: str, reason: str,
                   business: BusinessConfig | None = None, now: datetime | None = None) -> Refund:
    """Ask for a refund of ``amount_fen`` from the customer's prepaid balance; paid at once below the
    approval threshold, else pending. Raises ``Refused`` when not allowed."""
    business = business or BusinessConfig()
    at = now or _clock(business).now()
    with engine.begin() as conn:
        return request_refund_in(conn, customer_no, amount_fen, actor=actor, reason=reason, business=business,
                                 now=at)


def request_refund_in(conn, customer_no: str, amount_fen: int, *, actor: str, reason: str,
                      business: BusinessConfig, now: datetime) -> Refund:
    """``request_refund`` in the caller's transaction (the HTTP service stores its answer to an
    idempotent request in the same one)."""
    _need(actor, "names the operator who asks for it (--actor)")
    _need(reason, "gives its reason (--reason)")
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool) or amount_fen <= 0:
        raise Refused(f"the amount must be whole fen greater than 0, not {amount_fen!r}")
    customer = conn.execute(select(customers).where(customers.c.customer_no == customer_no)).first()
    if customer is None:
        raise Refused(f"no customer {customer_no}")
    lock_customers(conn, [customer_no])
    balance = prepaid_balance(conn, customer_no)
    pending = _pending_sum(conn, customer_no)
    if amount_fen > balance - pending:
        raise Refused(f"customer {customer_no} has a prepaid balance of {balance} fen"
                      + (f", of which {pending} fen are asked for by pending refunds" if pending else "")
                      + f": {amount_fen} fen cannot be refunded")
    needs = amount_fen >= approval_threshold(customer.customer_type, business)
    refund_id = conn.execute(insert(refunds).returning(refunds.c.id), [{
        "customer_no": customer_no, "amount": amount_fen, "reason": reason[:200], "requested_by": actor,
        "requested_at": now, "needs_approval": "Y" if needs else "N"}]).scalar_one()
    write_audit(conn, [audit_row(now, actor, "refund.request", "refund", refund_id, reason,
                                 customer_no=customer_no, amount=amount_fen, needs_approval=needs,
                                 balance=balance)])
    refund = _load(conn, refund_id)
    if not needs:
        _pay(conn, refund, actor, now, business)
    return refund


def _decide(engine, refund_id: int, actor: str, decision: str, note: str, business: BusinessConfig,
            now: datetime | None) -> Refund:
    at = now or _clock(business).now()
    try:
        with engine.begin() as conn:
            refund = _load(conn, refund_id)
            lock_customers(conn, [refund.customer_no])
            refund = _load(conn, refund_id)
            if not refund.needs_approval:
                raise Refused(f"refund {refund_id} needed no approval; it was paid when asked for")
            if refund.status != PENDING:
                raise Refused(f"refund {refund_id} was already {refund.status} by {refund.decided_by}")
            if actor == refund.requested_by:
                raise Refused(f"refund {refund_id} was asked for by {actor}; another operator must decide it")
            if decision == "A":
                balance = prepaid_balance(conn, refund.customer_no)
                if refund.amount > balance:
                    raise Refused(f"customer {refund.customer_no} has a prepaid balance of {balance} fen now: "
                                  f"refund {refund_id} of {refund.amount} fen cannot be paid (reject it)")
            conn.execute(insert(refund_decisions), [{"refund_id": refund_id, "decision": decision,
                                                     "decided_by": actor, "decided_at": at, "note": note[:200]}])
            write_audit(conn, [audit_row(at, actor, "refund.approve" if decision == "A" else "refund.reject",
                                         "refund", refund_id, note, customer_no=refund.customer_no,
                                         amount=refund.amount, requested_by=refund.requested_by)])
            if decision == "A":
                _pay(conn, refund, actor, at, business)
            return _load(conn, refund_id)
    except IntegrityError:  # another operator decided it at the same moment
        raise Refused(f"refund {refund_id} was decided by someone else at the same time") from None


def approve_refund(engine: Engine, refund_id: int, *, actor: str, note: str = "",
                   business: BusinessConfig | None = None, now: datetime | None = None) -> Refund:
    """A second operator approves a pending refund; it is paid at once if the balance still covers it."""
    _need(actor, "decision names the operator who makes it (--actor)")
    return _decide(engine, refund_id, actor, "A", note or "approved", business or BusinessConfig(), now)


def reject_refund(engine: Engine, refund_id: int, *, actor: str, reason: str,
                  business: BusinessConfig | None = None, now: datetime | None = None) -> Refund:
    """A second operator rejects a pending refund; nothing is paid."""
    _need(actor, "decision names the operator who makes it (--actor)")
    _need(reason, "rejection gives its reason (--reason)")
    return _decide(engine, refund_id, actor, "J", reason, business or BusinessConfig(), now)


def list_refunds(engine: Engine, status: str | None = PENDING, customer_no: str | None = None) -> list[Refund]:
    """Refunds (by default the pending ones), oldest first."""
    query = (select(refunds, refund_decisions.c.decision, refund_decisions.c.decided_by,
                    refund_decisions.c.decided_at, refund_decisions.c.note)
             .select_from(refunds.outerjoin(refund_decisions, refund_decisions.c.refund_id == refunds.c.id))
             .order_by(refunds.c.id))
    if customer_no:
        query = query.where(refunds.c.customer_no == customer_no)
    if status == PENDING:
        query = query.where(refunds.c.needs_approval == "Y", refund_decisions.c.id.is_(None))
    with engine.connect() as conn:
        out = [_refund(row) for row in conn.execute(query)]
    return [r for r in out if status is None or r.status == status]


def pending_refunds(engine: Engine) -> list[Refund]:
    return list_refunds(engine, PENDING)
