"""Refunds of prepaid balances, with two approvals for large ones.

A refund request names the customer, the amount in fen, the operator and the reason. It may not
exceed what is refundable: the prepaid balance less the refunds still waiting for approval. A
request below the customer type's threshold (``business.refund_approval_resident_fen`` for
residents, ``..._nonresident_fen`` for non-residents; the amount *equal* to the threshold already
needs approval) is paid at once. A larger one needs both levels of ``ledger.identity.approvals``:
the accounting centre's and the department director's, by two different people, neither of them
the one who asked (docs/access.md, "Large refunds"). A rejection at either level ends it; it is
paid when the second approval is given, if the balance still covers it. Decisions made before
migration 0011 were a single second operator's: level ``single``, final by itself.

Paying a refund is the posting kind ``PrepaidRefund`` (``ledger.posting``): a prepaid movement
(kind ``refund``, negative), a journal entry Dr prepaid / Cr refunds_payable, and an audit row;
every request and decision is audited too. Paying it out to the customer (``pay_out_in``: an
operator's ``record_payout_in``, or the finance statement's debit line for it,
``ledger.recon.refund_lines``) marks the refund paid out (when, by whom, the transfer's reference)
and posts ``RefundPayout``: Dr refunds_payable / Cr collection. Once: the refund row's
``paid_out_at`` is set only while empty, so of two payouts of one refund the second is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, and_, case, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from config.clock import Clock
from config.settings import BusinessConfig
from ledger.audit import audit_row, write_audit
from ledger.errors import Refused
from ledger.identity.approvals import LEVELS, PERMISSION, check_approval
from ledger.identity.principal import Principal
from ledger.posting import PrepaidRefund, RefundPayout, apply_batch, lock_customers, post_one, prepaid_balance
from ledger.schema import customers, refund_decisions, refunds

PENDING, PAID, REJECTED = "pending", "paid", "rejected"
STATUSES = (PENDING, PAID, REJECTED)
SINGLE = "single"     # the one second-operator approval of decisions made before 0011
APPROVE, REJECT = "A", "J"


@dataclass
class Decision:
    level: str
    decision: str                 # approve | reject
    decided_by: str
    decided_at: datetime
    note: str


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
    decisions: list[Decision] = field(default_factory=list)
    paid_out_at: datetime | None = None
    paid_out_by: str | None = None
    payout_reference: str | None = None

    @property
    def decided_by(self) -> str | None:
        return self.decisions[-1].decided_by if self.decisions else None

    def approvals(self) -> dict[str, str]:
        """level -> approver's actor, of the approvals given so far."""
        return {d.level: d.decided_by for d in self.decisions if d.decision == "approve"}

    def summary(self) -> str:
        whole, cents = divmod(self.amount, 100)
        text = f"refund {self.refund_id}: {whole}.{cents:02d} yuan to customer {self.customer_no}: {self.status}"
        if self.status == PENDING:
            missing = [level for level in LEVELS if level not in self.approvals()]
            text += f" (waits for the {' and '.join(missing)} approval)"
        elif self.decided_by:
            text += f" (decided by {self.decided_by})"
        return text


def approval_threshold(customer_type: str, business: BusinessConfig) -> int:
    return business.refund_approval_resident_fen if customer_type == "R" else business.refund_approval_nonresident_fen


def _decided(refund_id_col, decision: str, level: str | None = None):
    cond = and_(refund_decisions.c.refund_id == refund_id_col, refund_decisions.c.decision == decision)
    if level is not None:
        cond = and_(cond, refund_decisions.c.level == level)
    return exists().where(cond)


def _approvals(refund_id_col):
    return (select(func.count()).select_from(refund_decisions)
            .where(refund_decisions.c.refund_id == refund_id_col, refund_decisions.c.decision == APPROVE)
            .scalar_subquery())


# The one place a refund's status is worked out, in SQL so that lists filter and page by it.
STATUS = case((refunds.c.needs_approval == "N", PAID),
              (_decided(refunds.c.id, REJECT), REJECTED),
              (_decided(refunds.c.id, APPROVE, SINGLE), PAID),
              (_approvals(refunds.c.id) >= len(LEVELS), PAID),
              else_=PENDING)


def _need(text: str | None, what: str) -> None:
    if not text or not text.strip():
        raise Refused(f"a refund {what}")


def _decisions(conn, refund_ids: list[int]) -> dict[int, list[Decision]]:
    out: dict[int, list[Decision]] = {i: [] for i in refund_ids}
    d = refund_decisions.c
    for row in conn.execute(select(refund_decisions).where(d.refund_id.in_(refund_ids)).order_by(d.id)):
        out[int(row.refund_id)].append(Decision(row.level, "approve" if row.decision == APPROVE else "reject",
                                                row.decided_by, row.decided_at, row.note or ""))
    return out


def _refunds(conn, query) -> list[Refund]:
    rows = conn.execute(query.add_columns(STATUS.label("status"))).all()
    decisions = _decisions(conn, [int(r.id) for r in rows]) if rows else {}
    return [Refund(int(r.id), r.customer_no, int(r.amount), r.reason, r.requested_by, r.requested_at,
                   r.needs_approval == "Y", r.status, decisions[int(r.id)], r.paid_out_at, r.paid_out_by,
                   r.payout_reference) for r in rows]


def load_refund(conn, refund_id: int) -> Refund:
    found = _refunds(conn, select(refunds).where(refunds.c.id == refund_id))
    if not found:
        raise Refused(f"no refund {refund_id}")
    return found[0]


def _pending_sum(conn, customer_no: str) -> int:
    query = (select(func.coalesce(func.sum(refunds.c.amount), 0))
             .where(refunds.c.customer_no == customer_no, STATUS == PENDING))
    return int(conn.execute(query).scalar_one())


def _pay(conn, refund: Refund, actor: str, at: datetime, business: BusinessConfig) -> None:
    apply_batch(conn, [PrepaidRefund(refund.refund_id, refund.customer_no, refund.amount, actor, refund.reason)],
                Clock.of(business), at)


def request_refund(engine: Engine, customer_no: str, amount_fen: int, *, actor: str, reason: str,
                   business: BusinessConfig | None = None, now: datetime | None = None) -> Refund:
    """Ask for a refund of ``amount_fen`` from the customer's prepaid balance; paid at once below the
    approval threshold, else pending. Raises ``Refused`` when not allowed."""
    business = business or BusinessConfig()
    at = now or Clock.of(business).now()
    with engine.begin() as conn:
        return request_refund_in(conn, customer_no, amount_fen, actor=actor, reason=reason, business=business,
                                 now=at)


def request_refund_in(conn, customer_no: str, amount_fen: int, *, actor: str, reason: str,
                      business: BusinessConfig, now: datetime) -> Refund:
    """``request_refund`` in the caller's transaction (the HTTP service stores its answer to an
    idempotent request in the same one)."""
    _need(actor, "names the operator who asks for it")
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
                                 balance=balance, approvals_needed=list(LEVELS) if needs else [])])
    refund = load_refund(conn, refund_id)
    if not needs:
        _pay(conn, refund, actor, now, business)
    return refund


def level_for(approver: Principal, given: dict[str, str]) -> str:
    """The level an approver decides at: the one their permissions give (the first not given yet
    when they hold both); a principal with neither gets the accounting level, which
    ``check_approval`` then refuses."""
    held = [level for level in LEVELS if approver.may(PERMISSION[level])]
    return next((level for level in held if level not in given), held[0] if held else LEVELS[0])


def _check_actor(actor: str, level: str, refund: Refund, given: dict[str, str]) -> None:
    """The rule for a decision named only by its actor (a caller that has no authenticated principal: tests, scripts)."""
    if actor == refund.requested_by:
        raise Refused(f"refund {refund.refund_id} was asked for by {actor}; another operator must decide it")
    if level in given:
        raise Refused(f"refund {refund.refund_id}: the {level} approval was given already (by {given[level]})")
    if actor in given.values():
        raise Refused(f"refund {refund.refund_id}: {actor} approved it already; the two approvals must come "
                      f"from two different people")


def decide_refund_in(conn, refund_id: int, decision: str, note: str, *, business: BusinessConfig, now: datetime,
                     approver: Principal | None = None, actor: str | None = None,
                     level: str | None = None) -> Refund:
    """Approve (``A``) or reject (``J``) a pending refund at one level, in the caller's transaction.
    The approver is an authenticated ``Principal`` (its permission chooses the level, and
    ``check_approval`` refuses with ``Forbidden``), or an ``actor`` name (level: the one given,
    else the first missing). Paid when the last level approves."""
    refund = load_refund(conn, refund_id)
    lock_customers(conn, [refund.customer_no])
    refund = load_refund(conn, refund_id)
    if not refund.needs_approval:
        raise Refused(f"refund {refund_id} needed no approval; it was paid when asked for")
    if refund.status != PENDING:
        raise Refused(f"refund {refund_id} was already {refund.status} by {refund.decided_by}")
    given = refund.approvals()
    if approver is not None:
        level = level or level_for(approver, given)
        check_approval(approver, level, refund.requested_by, given)
        actor = approver.actor
    else:
        if level is not None and level not in LEVELS:
            raise Refused(f"no approval level {level!r} (one of {', '.join(LEVELS)})")
        level = level or next(lv for lv in LEVELS if lv not in given)
    _check_actor(actor, level, refund, given)
    last = decision == APPROVE and len(given) + 1 == len(LEVELS)
    if decision == APPROVE:
        balance = prepaid_balance(conn, refund.customer_no)
        if refund.amount > balance:
            raise Refused(f"customer {refund.customer_no} has a prepaid balance of {balance} fen now: "
                          f"refund {refund_id} of {refund.amount} fen cannot be paid (reject it)")
    conn.execute(insert(refund_decisions), [{"refund_id": refund_id, "level": level, "decision": decision,
                                             "decided_by": actor, "decided_at": now, "note": note[:200]}])
    write_audit(conn, [audit_row(now, actor, "refund.approve" if decision == APPROVE else "refund.reject",
                                 "refund", refund_id, note, level=level, customer_no=refund.customer_no,
                                 amount=refund.amount, requested_by=refund.requested_by, paid=last)])
    if last:
        _pay(conn, refund, actor, now, business)
    return load_refund(conn, refund_id)


def _decide(engine, refund_id: int, decision: str, note: str, business: BusinessConfig, now: datetime | None,
            **who) -> Refund:
    try:
        with engine.begin() as conn:
            return decide_refund_in(conn, refund_id, decision, note, business=business,
                                    now=now or Clock.of(business).now(), **who)
    except IntegrityError:  # another operator decided this level at the same moment
        raise Refused(f"refund {refund_id} was decided by someone else at the same time") from None


def approve_refund(engine: Engine, refund_id: int, *, actor: str | None = None, note: str = "",
                   level: str | None = None, approver: Principal | None = None,
                   business: BusinessConfig | None = None, now: datetime | None = None) -> Refund:
    """An operator gives one of the two approvals of a pending refund; the second pays it at once if
    the balance still covers it. ``approver`` (an authenticated operator): the level is the one its
    permission gives, checked by ``check_approval``; else ``actor`` and ``level`` (or the first missing)."""
    _need(approver.actor if approver else actor, "decision names the operator who makes it")
    return _decide(engine, refund_id, APPROVE, note or "approved", business or BusinessConfig(), now,
                   actor=actor, level=level, approver=approver)


def reject_refund(engine: Engine, refund_id: int, *, actor: str | None = None, reason: str,
                  level: str | None = None, approver: Principal | None = None,
                  business: BusinessConfig | None = None, now: datetime | None = None) -> Refund:
    """An operator rejects a pending refund at one level (as ``approve_refund`` chooses it); that
    ends it, nothing is paid."""
    _need(approver.actor if approver else actor, "decision names the operator who makes it")
    _need(reason, "rejection gives its reason (--reason)")
    return _decide(engine, refund_id, REJECT, reason, business or BusinessConfig(), now, actor=actor, level=level,
                   approver=approver)


def record_payout_in(conn, refund_id: int, *, actor: str, reference: str, now: datetime,
                     business: BusinessConfig | None = None) -> Refund:
    """An operator records that a paid refund was paid out to the customer (the transfer's
    ``reference``): the money leaves refunds payable (``pay_out_in``), on today's business date."""
    _need(reference, "payout names the transfer's reference")
    clock = Clock.of(business or BusinessConfig())
    return pay_out_in(conn, load_refund(conn, refund_id), actor=actor, reference=reference, now=now,
                      business_date=clock.business_date(now), clock=clock)


def pay_out_in(conn, refund: Refund, *, actor: str, reference: str, now: datetime, business_date,
               clock: Clock) -> Refund:
    """Mark a paid refund paid out and post its ``RefundPayout`` (audited ``refund.payout``), in the
    caller's transaction; ``Refused`` when it is not paid or was paid out already."""
    if refund.status != PAID:
        raise Refused(f"refund {refund.refund_id} is {refund.status}: only a paid refund is paid out")
    done = conn.execute(update(refunds).where(refunds.c.id == refund.refund_id, refunds.c.paid_out_at.is_(None))
                        .values(paid_out_at=now, paid_out_by=actor, payout_reference=reference[:64]))
    if done.rowcount != 1:
        raise Refused(f"refund {refund.refund_id} was paid out already ({refund.payout_reference or 'just now'})")
    outcome = post_one(conn, RefundPayout(refund.refund_id, refund.customer_no, refund.amount, business_date, actor,
                                          reference[:64]), clock, now)
    if not outcome.ok:
        raise Refused(outcome.detail)
    return load_refund(conn, refund.refund_id)


def refunds_query(status: str | None = PENDING, customer_no: str | None = None, after: int | None = None):
    """Refunds (one status, or all), oldest first, after the refund id ``after``."""
    query = select(refunds).order_by(refunds.c.id)
    if customer_no:
        query = query.where(refunds.c.customer_no == customer_no)
    if status is not None:
        query = query.where(STATUS == status)
    if after is not None:
        query = query.where(refunds.c.id > after)
    return query


def refund_page(conn, status: str | None, after: int | None, limit: int) -> list[Refund]:
    """``limit`` refunds after ``after`` (api/pagination.py reads one more)."""
    return _refunds(conn, refunds_query(status, after=after).limit(limit))


def list_refunds(engine: Engine, status: str | None = PENDING, customer_no: str | None = None) -> list[Refund]:
    """Refunds (by default the pending ones), oldest first."""
    with engine.connect() as conn:
        return _refunds(conn, refunds_query(status, customer_no))


def pending_refunds(engine: Engine) -> list[Refund]:
    return list_refunds(engine, PENDING)
