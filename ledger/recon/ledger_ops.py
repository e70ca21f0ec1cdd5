"""The ledger operations reconciliation's resolutions need, done the ledger's own way.

- ``settle_debit``: a debit left unknown gets the outcome the bank's file shows, as a ``DebitResult``
  through ``ledger.postings.apply_batch`` (the public posting API): S → approved (the payment for
  its bills is posted), R → reversed (nothing posted), absent → declined (bills stay unpaid).
- ``post_bank_payment`` (补账) and ``reverse_payment`` (red reversal, source R) have no public
  function in ``ledger.postings`` yet: a counter payment from a bank message is bound to a request
  identity and to the receiving time's business date, and a bank reversal is refused once the
  date is closed, which is exactly when reconciliation needs it. They are built here on the
  posting batch of ``ledger.postings`` (``_Batch``: its customer locks, bill loading,
  ``pay_bills`` allocation rules — prepaid first, oldest bill first, the rest to prepaid —,
  ``reverse``, journal entries, SMS notices, audit rows and id reservation), so the rows are the
  same as the ledger's own; only the source ('R'), the business date (the bank file's) and the
  actor (the operator) differ. If the ledger gains public functions for these, swap them in here.

Every function works in the caller's transaction and raises ``Refused`` (nothing written) when
the ledger's rules say no.
"""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import func, select

from ledger import notices
from ledger.business_date import BusinessCalendar
from ledger.postings import DebitResult, New, _Batch, _Payment, apply_batch
from ledger.schema import allocations, payments, prepaid_movements, reversals

METHODS = ("01", "02", "03")


class Refused(Exception):
    """The ledger refuses the operation; the message says why. Nothing was written."""


def _prepaid(conn, customer_no: str) -> int:
    pm = prepaid_movements.c
    return int(conn.execute(select(func.coalesce(func.sum(pm.amount), 0)).where(pm.customer_no == customer_no))
               .scalar_one())


def post_bank_payment(conn, *, bank_code: str, business_date: date, transmitted: str, stan: str, rrn: str,
                      customer_no: str, amount: int, actor: str, now: datetime, reason: str = "",
                      method: str = "01", cheque_no: str | None = None, terminal_id: str | None = None,
                      calendar: BusinessCalendar | None = None) -> tuple[int, str]:
    """补账: post a counter payment the bank's file shows and the ledger lacks, with source 'R' on
    the file's business date. ``transmitted`` is the file's YYYYMMDDhhmmss. The customer must
    exist and be active, and the amount must cover what was due then as the gateway would have
    required (else the bank's record and ours disagree about more than a lost message: refused).
    Returns (payment_id, receipt_no)."""
    if method not in METHODS:
        raise Refused(f"payment method must be 01, 02 or 03, not {method!r}")
    if method == "03" and not cheque_no:
        raise Refused("a cheque payment (method 03) needs the cheque number")
    if amount <= 0:
        raise Refused("amount must be greater than 0")
    pc = payments.c
    taken = conn.execute(select(pc.payment_id).where(pc.bank_code == bank_code, pc.channel == "C",
                                                     pc.business_date == business_date, pc.rrn == rrn)).first()
    if taken is not None:
        raise Refused(f"RRN {rrn} of bank {bank_code} on {business_date} is already payment {taken[0]}")
    id_year, short = int(transmitted[:4]), transmitted[4:]
    taken = conn.execute(select(pc.payment_id).where(pc.bank_code == bank_code, pc.channel == "C",
                                                     pc.id_year == id_year, pc.transmitted == short,
                                                     pc.stan == stan)).first()
    if taken is not None:
        raise Refused(f"a payment with this field 7/11 identity exists already: payment {taken[0]}")
    batch = _Batch(conn, calendar or BusinessCalendar(), now)
    batch.lock({customer_no})
    cust = batch.customers.get(customer_no)
    if cust is None:
        raise Refused(f"no customer {customer_no}")
    if cust.status != "A":
        raise Refused(f"customer {customer_no} is {'suspended' if cust.status == 'S' else 'closed'}")
    cust.prepaid = _prepaid(conn, customer_no)
    batch.load_bills({customer_no}, set())
    open_bills = cust.open_bills()
    due = max(0, sum(b.owing for b in open_bills) - cust.prepaid)
    if due == 0 and cust.prepay_allowed != "Y":
        raise Refused("nothing is due and the customer may not prepay: the amount does not check out")
    if amount < due:
        raise Refused(f"amount {amount} is less than the {due} due: the amount does not check out")
    pay = _Payment(New(), bank_code, "C", customer_no, amount, business_date, None)
    batch.rows["payments"].append({
        "payment_id": pay.ref, "channel": "C", "bank_code": bank_code, "customer_no": customer_no,
        "id_year": id_year, "transmitted": short, "stan": stan, "rrn": rrn, "business_date": business_date,
        "amount": amount, "method": method, "cheque_no": cheque_no if method == "03" else None,
        "receipt_no": pay, "terminal_id": (terminal_id or None) and terminal_id[:8], "branch_id": None,
        "debit_id": None, "source": "R", "created_at": now})
    periods = batch.pay_bills(pay, cust, open_bills, business_date, actor, use_prepaid=True)
    paid_on_bills = pay.amount - pay.excess
    text = (notices.payment_received(customer_no, periods, paid_on_bills) if periods
            else notices.payment_received(customer_no, [], pay.amount, cust.prepaid))
    batch.notice(cust, "payment", "payment", pay.ref, text)
    batch.audit(actor, "payment.post", "payment", pay.ref, amount=amount, customer_no=customer_no, rrn=rrn,
                stan=stan, transmitted=short, method=method, excess=pay.excess, source="R", reason=reason)
    batch.flush()
    return pay.ref.id, pay.receipt_no()


def reverse_payment(conn, payment_id: int, *, actor: str, now: datetime, reason: str,
                    calendar: BusinessCalendar | None = None) -> int:
    """Red reversal (source 'R') of a payment, allowed although its business date is closed (this is
    reconciliation). The reversal's business date is today's. Returns the reversal id."""
    calendar = calendar or BusinessCalendar()
    row = conn.execute(select(payments).where(payments.c.payment_id == payment_id)).first()
    if row is None:
        raise Refused(f"no payment {payment_id}")
    batch = _Batch(conn, calendar, now)
    batch.lock({row.customer_no})
    if conn.execute(select(reversals.c.reversal_id).where(reversals.c.payment_id == payment_id)).first():
        raise Refused(f"payment {payment_id} is already reversed")
    cust = batch.customers[row.customer_no]
    cust.prepaid = _prepaid(conn, row.customer_no)
    pay = _Payment(row.payment_id, row.bank_code, row.channel, row.customer_no, int(row.amount),
                   row.business_date, row.receipt_no, row.debit_id)
    al, pm = allocations.c, prepaid_movements.c
    pay.allocs = [(r.bill_id, int(r.amount)) for r in conn.execute(
        select(al.bill_id, al.amount).where(al.payment_id == payment_id, al.reversal_id.is_(None),
                                            al.correction_bill_id.is_(None)).order_by(al.id))]
    pay.excess = int(conn.execute(select(func.coalesce(func.sum(pm.amount), 0))
                                  .where(pm.payment_id == payment_id, pm.kind == "excess")).scalar_one())
    batch.load_bills(set(), {b for b, _ in pay.allocs})
    problem = batch.reverse(pay, cust, calendar.business_date(now), actor, "R", None, reason)
    if problem:
        raise Refused(problem)
    rev_ref = batch.rows["reversals"][-1]["reversal_id"]
    batch.flush()
    return rev_ref.id


SETTLE_RESULT = {"S": "approved", "R": "reversed", None: "declined"}


def settle_debit(conn, debit_id: int, bank_status: str | None, *, actor: str, now: datetime, reason: str = "",
                 calendar: BusinessCalendar | None = None) -> dict:
    """Give an unknown debit the outcome the bank's file shows (S, R, or None when absent)."""
    result = SETTLE_RESULT[bank_status]
    detail = reason or {"approved": "reconciliation: the bank's file shows it succeeded",
                        "reversed": "reconciliation: the bank's file shows it reversed",
                        "declined": "reconciliation: not in the bank's file"}[result]
    outcome = apply_batch(conn, [DebitResult(debit_id, result, now, "00" if result == "approved" else None,
                                             detail=detail[:200], actor=actor)],
                          calendar or BusinessCalendar(), now)[0]
    if not outcome.ok:
        raise Refused(f"the ledger refused the debit result {result}: {outcome.response_code} {outcome.detail}")
    return {"result": result, **outcome.fields}
