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
from functools import cache
from typing import Iterator

from sqlalchemy import Engine, and_, bindparam, func, or_, select

from ledger.db import read_only
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
    row = conn.execute(_customer_query(), {"customer_no": customer_no}).first()
    if row is None:
        return None
    return {**_plain(row), "prepaid_balance": int(row.prepaid_balance)}


@cache
def _customer_query():
    # the balance as ledger.posting.prepaid_balance sums it, in the same read
    balance = (select(func.coalesce(func.sum(prepaid_movements.c.amount), 0))
               .where(prepaid_movements.c.customer_no == customers.c.customer_no).scalar_subquery())
    return select(customers, balance.label("prepaid_balance")).where(customers.c.customer_no == bindparam("customer_no"))


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


def bill_page(conn, customer_no: str, after: tuple[str, str] | None, limit: int) -> list[dict]:
    """Bills, newest period first (then by bill id), each with what was allocated to it and the
    reversing (red) and replacement bills of its correction, if any."""
    period, bill_id = after or (None, None)
    rows = [_plain(r) for r in conn.execute(_bill_query(after is not None), {
        "customer_no": customer_no, "limit": limit, "period": period, "bill_id": bill_id})]
    for row in rows:
        row["allocated"] = int(row["allocated"])
        red, at = row.pop("red_bill_id"), row.pop("red_created_at")
        row["reversed_by"] = None if red is None else {"bill_id": red, "created_at": at}
    return rows


@cache
def _bill_query(paged: bool):
    """One read for a page of bills and their history: a bill has at most one red bill (unique
    ``reverses_bill_id``); of replacements, the newest id is shown."""
    red, replacement = bills.alias("red"), bills.alias("replacement")
    allocated = (select(func.coalesce(func.sum(allocations.c.amount), 0))
                 .where(allocations.c.bill_id == bills.c.bill_id).scalar_subquery())
    replaced_by = select(func.max(replacement.c.bill_id)).where(replacement.c.replaces_bill_id == bills.c.bill_id)
    query = (select(bills, allocated.label("allocated"), red.c.bill_id.label("red_bill_id"),
                    red.c.created_at.label("red_created_at"), replaced_by.scalar_subquery().label("replaced_by"))
             .select_from(bills.outerjoin(red, red.c.reverses_bill_id == bills.c.bill_id))
             .where(bills.c.customer_no == bindparam("customer_no"))
             .order_by(bills.c.period.desc(), bills.c.bill_id.desc()).limit(bindparam("limit")))
    if paged:
        period = bindparam("period")
        query = query.where(or_(bills.c.period < period, and_(bills.c.period == period, bills.c.bill_id < bindparam("bill_id"))))
    return query


def _newest_first(conn, table, key, customer_no: str, after: int | None, limit: int, *extra) -> list[dict]:
    """A page of ``table``'s rows of the customer, by ``key`` (an id column) descending; ``extra``:
    (a table joined one-to-one by ``key`` or not at all, its columns' prefix)."""
    query = _newest_first_query(table, key, after is not None, *extra)
    return [_plain(r) for r in conn.execute(query, {"customer_no": customer_no, "limit": limit, "after": after})]


@cache
def _newest_first_query(table, key, paged: bool, joined=None, prefix: str = ""):
    columns, source = [table], table
    if joined is not None:
        columns += [c.label(prefix + c.name) for c in joined.c]
        source = table.outerjoin(joined, joined.c[key.name] == key)
    query = (select(*columns).select_from(source).where(table.c.customer_no == bindparam("customer_no"))
             .order_by(key.desc()).limit(bindparam("limit")))
    return query.where(key < bindparam("after")) if paged else query


def payment_page(conn, customer_no: str, after: int | None, limit: int) -> list[dict]:
    """Payments, newest first, each with its reversal (or None; a payment has at most one)."""
    rows = _newest_first(conn, payments, payments.c.payment_id, customer_no, after, limit, reversals, "reversal_")
    for row in rows:
        reversal = {name[len("reversal_"):]: row.pop(name) for name in [n for n in row if n.startswith("reversal_")]}
        row["reversal"] = reversal if reversal["reversal_id"] is not None else None
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
