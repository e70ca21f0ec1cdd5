"""The posting batch's queries, built once per dialect, and the reads the back office's kinds share.

``open_bills_query`` is the one "open bills" query: the posting batch, inquiries, the debit
engine's plans and the prepaid application (imports, corrections) all read open bills with it.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Iterable

from sqlalchemy import exists, func, literal_column, select
from sqlalchemy.orm import aliased

from runtime.bulk_sql import CHUNK, in_list, key_filters
from ledger.schema import (
    allocations, bank_requests, banks, bills, business_day_closures, customers, debit_bills, debits,
    orphan_reversals, payments, prepaid_movements, request_rrns, reversals,
)


_reversing = aliased(bills)


@functools.cache
def statements(dialect_name: str) -> SimpleNamespace:
    """The batch's queries, built once per dialect (``select_many`` compiles each once)."""
    def IN(col, name):
        return in_list(dialect_name, col, name)

    br, pay, orph, pm, al = bank_requests.c, payments.c, orphan_reversals.c, prepaid_movements.c, allocations.c
    rr = request_rrns.c
    bdc = business_day_closures.c
    return SimpleNamespace(
        debits=select(debits).where(IN(debits.c.debit_id, "ids")),
        lock_customers=(select(customers.c.customer_no, customers.c.customer_name, customers.c.status,
                               customers.c.prepay_allowed, customers.c.mobile)
                        .where(IN(customers.c.customer_no, "custs")).order_by(customers.c.customer_no)
                        .with_for_update(key_share=True)),
        known_requests=(select(br.bank_code, br.id_year, br.transmitted, br.stan, br.content_digest,
                               br.response_code, br.response_fields)
                        .where(IN(br.stan, "stans"), IN(br.transmitted, "ts"))),  # the identity index's lead
        banks=select(banks.c.bank_code).where(IN(banks.c.bank_code, "codes")),
        # by rrn alone, uq_payments_rrn's leading column, matched to the whole key in Python: with a
        # condition on the bank and date too, a planner without statistics took the (date, bank)
        # index for selective and filtered the whole day's payments
        used_rrns=(select(pay.bank_code, pay.channel, pay.business_date, pay.rrn, pay.id_year, pay.transmitted,
                          pay.stan).where(IN(pay.rrn, "rrns"))),
        # likewise by rrn alone, the primary key's leading column
        request_rrns=(select(rr.bank_code, rr.business_date, rr.rrn, rr.id_year, rr.transmitted, rr.stan)
                      .where(IN(rr.rrn, "rrns"))),
        orphans=(select(orph.bank_code, orph.id_year, orph.orig_transmitted, orph.orig_stan)
                 .where(IN(orph.orig_stan, "stans"))),
        reversal_targets=select(payments).where(pay.channel == "C", IN(pay.stan, "stans"), IN(pay.transmitted, "ts")),
        debit_payments=select(payments).where(IN(pay.debit_id, "ids")),
        lock_debits=(select(debits).where(IN(debits.c.debit_id, "ids")).order_by(debits.c.debit_id)
                     .with_for_update(key_share=True)),
        debit_bills=select(debit_bills).where(IN(debit_bills.c.debit_id, "ids")),
        prepaid=(select(pm.customer_no, func.sum(pm.amount)).where(IN(pm.customer_no, "custs"))
                 .group_by(pm.customer_no)),
        target_allocations=(select(al.payment_id, al.bill_id, al.amount)
                            .where(IN(al.payment_id, "ids"), al.reversal_id.is_(None), al.correction_bill_id.is_(None))
                            .order_by(al.id)),
        prepaid_history=(select(pm.customer_no, pm.payment_id, pm.reversal_id, pm.kind, pm.bill_id, pm.amount)
                         .where(IN(pm.customer_no, "custs")).order_by(pm.id)),
        target_reversals=select(reversals.c.payment_id).where(IN(reversals.c.payment_id, "ids")),
        share_banks=select(banks.c.bank_code).where(IN(banks.c.bank_code, "codes")).with_for_update(read=True),
        closures=select(bdc.bank_code, bdc.business_date).where(IN(bdc.bank_code, "codes")),
    )


def _bill_columns():
    allocated = (select(func.coalesce(func.sum(allocations.c.amount), 0)).where(allocations.c.bill_id == bills.c.bill_id)
                 .scalar_subquery())
    cancelled = exists().where(_reversing.c.reverses_bill_id == bills.c.bill_id)
    return allocated, cancelled


@functools.cache
def open_bills_query(dialect_name: str):
    """Bills of the customers (bind list ``custs``) still owing something, with what has been paid."""
    allocated, cancelled = _bill_columns()
    return (select(bills.c.bill_id, bills.c.customer_no, bills.c.period, bills.c.principal, bills.c.penalty,
                   bills.c.due_date, allocated.label("allocated"), literal_column("0").label("cancelled"))
            .where(in_list(dialect_name, bills.c.customer_no, "custs"), bills.c.kind != "R", ~cancelled,
                   bills.c.principal + bills.c.penalty > allocated))


@functools.cache
def bills_by_id_query(dialect_name: str):
    allocated, cancelled = _bill_columns()
    return (select(bills.c.bill_id, bills.c.customer_no, bills.c.period, bills.c.principal, bills.c.penalty,
                   bills.c.due_date, allocated.label("allocated"), cancelled.label("cancelled"))
            .where(in_list(dialect_name, bills.c.bill_id, "ids")))



def closed_days_queries(st: SimpleNamespace, codes: list[str]) -> list[tuple]:
    """The banks' shared locks, then their closures (read under them). Reconciliation closes a
    day under the bank row's exclusive lock; a reversal reads the closures under a shared one, so
    it sees a closure that commits before it (PostgreSQL; SQLite has one writer at a time anyway).
    The closures' rows come last, for ``closed_days``."""
    return [(st.share_banks, {"codes": codes}), (st.closures, {"codes": codes})]


def closed_days(rows, days: set[tuple]) -> set[tuple]:
    """Of these (bank, business date), the ones the closures' rows say are closed."""
    return {key for r in rows if (key := (r.bank_code, r.business_date)) in days}


# ---------------------------------------------------------------------------------------------
# Reads of any number of customers (the back office's kinds; imports may name 100,000 of them)

def lock_customers(conn, customer_nos: Iterable[str]) -> None:
    """Lock customers' rows (PostgreSQL: SELECT ... FOR NO KEY UPDATE, Oracle: FOR UPDATE, in key
    order) so that their prepaid balances and bills do not move under us. SQLite needs nothing:
    BEGIN IMMEDIATE. Not FOR UPDATE on PostgreSQL: that lock also waits for, and holds up, every
    foreign-key check on the row (FOR KEY SHARE) - a batch build inserting debits for the customer,
    an import adding bills - where only postings, which all take this lock, must wait for each other."""
    if conn.dialect.name == "sqlite":
        return
    for where in key_filters(conn, customers.c.customer_no, customer_nos):
        conn.execute(select(customers.c.customer_no).where(where)
                     .order_by(customers.c.customer_no).with_for_update(key_share=True)).all()


def prepaid_balances(conn, customer_nos: Iterable[str]) -> dict[str, int]:
    """Prepaid balance of each named customer that has any movement."""
    out: dict[str, int] = {}
    for where in key_filters(conn, prepaid_movements.c.customer_no, customer_nos):
        rows = conn.execute(select(prepaid_movements.c.customer_no, func.sum(prepaid_movements.c.amount))
                            .where(where)
                            .group_by(prepaid_movements.c.customer_no)).all()
        out.update({no: int(total or 0) for no, total in rows})
    return out


def prepaid_balance(conn, customer_no: str) -> int:
    return prepaid_balances(conn, [customer_no]).get(customer_no, 0)


def open_bill_rows(conn, customer_nos: Iterable[str]) -> list:
    """``open_bills_query``'s rows for any number of customers: one statement on PostgreSQL
    (``= ANY(array)``), else a chunk of keys at a time."""
    wanted = sorted(set(customer_nos))
    query = open_bills_query(conn.dialect.name)
    if conn.dialect.name == "postgresql":
        return conn.execute(query, {"custs": wanted}).all() if wanted else []
    return [row for start in range(0, len(wanted), CHUNK)
            for row in conn.execute(query, {"custs": wanted[start:start + CHUNK]})]

