"""What the operations API shows of a customer: the customer row, prepaid balance and movements,
bills with their red-reversal history, payments with their reversals, debit agreements, debits with
their attempts, and the SMS notices. Reads only.

Every list is one page in a fixed order, newest first (customers: by number), read from the row
after ``after`` (the last key of the previous page) and at most ``limit`` rows long (the API asks
for one row more than its page, to learn there is a next one: api/pagination.py). Amounts
are integer fen; each function returns plain dicts.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine, and_, func, or_, select

from ledger.db import read_only
from ledger.posting import prepaid_balance
from ledger.schema import (
    agreements, allocations, bills, customers, debit_attempts, debits, outbox, payments, prepaid_movements, reversals,
)


@contextmanager
def snapshot(engine: Engine) -> Iterator:
    """A read transaction: on PostgreSQL one snapshot for every list of a look-up (REPEATABLE READ);
    on SQLite a read that does not take the write lock."""
    with engine.connect() as conn:
        conn = read_only(conn)
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _plain(row) -> dict:
    return dict(row._mapping)


def customer(conn, customer_no: str) -> dict | None:
    """The customer row and its prepaid balance; None when there is no such customer."""
    row = conn.execute(select(customers).where(customers.c.customer_no == customer_no)).first()
    if row is None:
        return None
    return {**_plain(row), "prepaid_balance": prepaid_balance(conn, customer_no)}


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search(conn, *, name: str | None, mobile: str | None, after: str | None, limit: int) -> list[dict]:
    """Customers whose name contains ``name`` and/or whose mobile is ``mobile`` (exactly: a list is
    no way to learn numbers), by customer number."""
    query = select(customers).order_by(customers.c.customer_no).limit(limit)
    if name:
        query = query.where(customers.c.customer_name.like(f"%{_like_escaped(name)}%", escape="\\"))
    if mobile:
        query = query.where(customers.c.mobile == mobile)
    if after is not None:
        query = query.where(customers.c.customer_no > after)
    return [_plain(r) for r in conn.execute(query)]


def _bill_history(conn, bill_ids: list[str]) -> tuple[dict, dict, dict]:
    """(bill -> allocated fen, bill -> the bill reversing it, bill -> the bill replacing it)."""
    if not bill_ids:
        return {}, {}, {}
    allocated = dict(conn.execute(select(allocations.c.bill_id, func.sum(allocations.c.amount))
                                  .where(allocations.c.bill_id.in_(bill_ids)).group_by(allocations.c.bill_id)).all())
    reversed_by = {r.reverses_bill_id: _plain(r) for r in conn.execute(
        select(bills.c.reverses_bill_id, bills.c.bill_id, bills.c.created_at)
        .where(bills.c.reverses_bill_id.in_(bill_ids)))}
    replaced_by = {r.replaces_bill_id: r.bill_id for r in conn.execute(
        select(bills.c.replaces_bill_id, bills.c.bill_id).where(bills.c.replaces_bill_id.in_(bill_ids)))}
    return {k: int(v or 0) for k, v in allocated.items()}, reversed_by, replaced_by


def bill_page(conn, customer_no: str, after: tuple[str, str] | None, limit: int) -> list[dict]:
    """Bills, newest period first (then by bill id), each with what was allocated to it and the
    reversing (red) and replacement bills of its correction, if any."""
    query = (select(bills).where(bills.c.customer_no == customer_no)
             .order_by(bills.c.period.desc(), bills.c.bill_id.desc()).limit(limit))
    if after is not None:
        period, bill_id = after
        query = query.where(or_(bills.c.period < period, and_(bills.c.period == period, bills.c.bill_id < bill_id)))
    rows = [_plain(r) for r in conn.execute(query)]
    allocated, reversed_by, replaced_by = _bill_history(conn, [r["bill_id"] for r in rows])
    for row in rows:
        row["allocated"] = allocated.get(row["bill_id"], 0)
        row["reversed_by"] = reversed_by.get(row["bill_id"])
        row["replaced_by"] = replaced_by.get(row["bill_id"])
    return rows


def _newest_first(conn, table, key, customer_no: str, after: int | None, limit: int) -> list[dict]:
    """A page of ``table``'s rows of the customer, by ``key`` (an id column) descending."""
    query = select(table).where(table.c.customer_no == customer_no).order_by(key.desc()).limit(limit)
    if after is not None:
        query = query.where(key < after)
    return [_plain(r) for r in conn.execute(query)]


def payment_page(conn, customer_no: str, after: int | None, limit: int) -> list[dict]:
    """Payments, newest first, each with its reversal (or None)."""
    rows = _newest_first(conn, payments, payments.c.payment_id, customer_no, after, limit)
    ids = [r["payment_id"] for r in rows]
    found = {r.payment_id: _plain(r) for r in conn.execute(select(reversals).where(reversals.c.payment_id.in_(ids)))} \
        if ids else {}
    for row in rows:
        row["reversal"] = found.get(row["payment_id"])
    return rows


def movement_page(conn, customer_no: str, after: int | None, limit: int) -> list[dict]:
    """Prepaid movements, newest first (their sum is the balance)."""
    return _newest_first(conn, prepaid_movements, prepaid_movements.c.id, customer_no, after, limit)


def agreement_list(conn, customer_no: str) -> list[dict]:
    """The customer's debit agreements, the active one first, then the newest."""
    return [_plain(r) for r in conn.execute(
        select(agreements).where(agreements.c.customer_no == customer_no)
        .order_by(agreements.c.status, agreements.c.updated_at.desc(), agreements.c.id.desc()))]


def debit_page(conn, customer_no: str, after: int | None, limit: int) -> list[dict]:
    """Direct debits, newest first, each with its attempts (every message and state change, in order)."""
    rows = _newest_first(conn, debits, debits.c.debit_id, customer_no, after, limit)
    attempts: dict[int, list[dict]] = {r["debit_id"]: [] for r in rows}
    if rows:
        for attempt in conn.execute(select(debit_attempts).where(debit_attempts.c.debit_id.in_(list(attempts)))
                                    .order_by(debit_attempts.c.id)):
            attempts[attempt.debit_id].append(_plain(attempt))
    for row in rows:
        row["attempts"] = attempts[row["debit_id"]]
    return rows


def notice_page(conn, customer_no: str, after: int | None, limit: int) -> list[dict]:
    """SMS notices of the customer (outbox), newest first, whatever their delivery state."""
    return _newest_first(conn, outbox, outbox.c.id, customer_no, after, limit)
