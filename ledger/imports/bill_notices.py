"""The SMS notices of new bills, worded after each customer's collection type."""
from __future__ import annotations

from datetime import datetime
from typing import Iterable, Mapping, Sequence

from sqlalchemy import func, select

from config import notices
from runtime.bulk_sql import key_filters
from ledger.schema import agreements, customers


# ---------------------------------------------------------------------------------------------
# Bill notices (shared with corrections)


def _active_account():
    """The account of a customer's active agreement (at most one is active), for a query of customers."""
    a = agreements.c
    return (select(func.max(a.account_no)).where(a.customer_no == customers.c.customer_no, a.status == "A")
            .scalar_subquery())


def bill_notice_facts(conn, customer_nos: Iterable[str]) -> dict[str, tuple[str, str | None, str | None]]:
    """What a bill notice needs of each named customer with a mobile: (mobile, collection type as
    stored, account of the active agreement or None)."""
    c = customers.c
    out: dict[str, tuple] = {}
    for where in key_filters(conn, c.customer_no, customer_nos):
        for no, mobile, collection, account in conn.execute(
                select(c.customer_no, c.mobile, c.collection_type, _active_account())
                .where(where, c.mobile.is_not(None))):
            out[no] = (mobile, collection, account)
    return out


def bill_notice_rows(conn, new_bills: Sequence[Mapping], paid_ids: set[str], at: datetime) -> list[dict]:
    """Outbox rows telling customers with a mobile of their new bills (kind bill_notice, ref bill:<id>),
    worded after their collection type; a bill already paid from prepaid is told as paid."""
    facts = bill_notice_facts(conn, {b["customer_no"] for b in new_bills})
    rows = []
    for b in new_bills:
        if b["customer_no"] not in facts:
            continue
        mobile, collection, account = facts[b["customer_no"]]
        total = int(b["principal"]) + int(b["penalty"])
        if b["bill_id"] in paid_ids:
            sms = notices.bill_paid_from_prepaid(b["customer_no"], b["period"], total)
        else:
            sms = notices.bill_notice(b["customer_no"], b["period"], total, b["due_date"], collection, account)
        rows.append(notices.outbox_row(b["customer_no"], mobile, "bill_notice", f"bill:{b['bill_id']}", sms, at))
    return rows


