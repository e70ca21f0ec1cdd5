"""What a month's removed rows carry forward, summed by the database over the marked rows (no row
is read into memory): the figures of ``archive_openings`` (ledger/archive/tables.py) and, per
customer, the opening prepaid movement."""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, insert, literal, select

from ledger.archive.marks import Marks
from ledger.recon.remittances import attributed
from ledger.recon_tables import recon_items
from ledger.schema import Ts, allocations, bills, journal_lines, payments, prepaid_movements, reversals

OPENING_KIND = "opening"


def month_openings(conn, marks: Marks, month: str) -> list[dict]:
    """The figures the month's marked rows carry forward, as ``archive_openings`` rows."""
    figures: dict[tuple[str, str], int] = defaultdict(int)
    jl, b, a, p, r = journal_lines.c, bills.c, allocations.c, payments.c, reversals.c
    for account, fen in conn.execute(select(jl.account, func.sum(jl.amount))
                                     .where(jl.entry_id.in_(marks.going("journal_entries"))).group_by(jl.account)):
        figures[("account", account)] += int(fen)
    figures[("billed", "")] += _sum(conn, b.principal + b.penalty, b.bill_id.in_(marks.going("bills")))
    figures[("allocated", "")] += _sum(conn, a.amount, a.id.in_(marks.going("allocations")))
    for bank, fen in conn.execute(select(p.bank_code, func.sum(p.amount))
                                  .where(p.payment_id.in_(marks.going("payments"))).group_by(p.bank_code)):
        figures[("bank_paid", bank)] += int(fen)
    for bank, fen in conn.execute(select(p.bank_code, func.sum(r.amount))
                                  .select_from(reversals.join(payments, p.payment_id == r.payment_id))
                                  .where(r.reversal_id.in_(marks.going("reversals"))).group_by(p.bank_code)):
        figures[("bank_paid", bank)] -= int(fen)
    figures[("feed_rows", "")] += marks.count("billing_feed")
    for bank, fen in _remitted(conn, marks).items():
        figures[("remitted", bank)] += fen
    return [{"month": month, "figure": f, "key": k, "amount": v} for (f, k), v in sorted(figures.items()) if v]


def _sum(conn, amount, where) -> int:
    return int(conn.execute(select(func.coalesce(func.sum(amount), 0)).where(where)).scalar_one())


def _remitted(conn, marks: Marks) -> dict[str, int]:
    """bank -> what reconciliation attributes of the removed statement credits to the bank's
    remittances (read before they go: what attributes them goes with them)."""
    i = recon_items.c
    removed = set(conn.execute(select(i.item_id).where(i.direction == "C",     # statement credits: few
                                                       i.item_id.in_(marks.going("recon_items")))).scalars())
    out: dict[str, int] = defaultdict(int)
    for item, banks in attributed(conn).items():
        if item in removed:
            for bank, fen in banks.items():
                out[bank] += fen
    return out


def carry_prepaid(conn, marks: Marks, at) -> int:
    """A movement of kind ``opening`` per customer whose removed movements do not net to 0 (every
    reader of the balance sums the same rows as before). Returns the movements written."""
    m = prepaid_movements.c
    total = func.sum(m.amount)
    return conn.execute(insert(prepaid_movements).from_select(
        ["customer_no", "amount", "kind", "created_at"],
        select(m.customer_no, total, literal(OPENING_KIND), literal(at, Ts))
        .where(m.id.in_(marks.going("prepaid_movements"))).group_by(m.customer_no).having(total != 0))).rowcount
