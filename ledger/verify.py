"""``verify(engine)``: check every invariant of the ledger; returns failures in plain words.

An empty list means the ledger is consistent. ``gridpay ledger verify`` prints these.
Sums over history add what archived months carried forward (``ledger.archive``: the openings of
accounts, billed, allocated, each bank's payments; a customer's prepaid balance is carried by a
movement of kind ``opening``). Invariants (the chart of accounts is in ledger/schema.py):
 1. every journal entry balances, and so does the journal as a whole;
 2. per bill, the sum of its allocations is between 0 and principal + penalty; a bill with a
    reversing twin (a corrected bill) is cancelled and its allocations net to 0; a reversing
    bill has none;
 3. every customer's prepaid balance (sum of prepaid movements) is >= 0;
 4. the receivable account = everything billed - everything allocated;
 5. the prepaid account = - (sum of all prepaid movements);
 6. each bank_clearing:<bank> account = that bank's payments - their reversals - its remittances
    (the statement credits reconciliation attributes to it, invariant 13);
 7. every reversal refers to a payment of the same amount and bank, and its allocations and
    prepaid movements take back exactly that amount;
 8. every payment's allocations plus its prepaid excess equal its amount;
 9. every payment and every reversal has exactly one journal entry;
10. every journal line's entry, and every payment, reversal and prepaid movement an allocation or
    a prepaid movement names, exists (the references a posting creates together with the rows it
    points at carry no foreign key: migration 0005); every journal line is dated as its entry (its
    month's partition on PostgreSQL: migration 0023);
11. the billing feed's seqs are 1 .. its counter's last_seq, without a gap;
12. every change the billing feed covers has exactly one feed row, and every feed row is a change
    (``ledger.billing_feed.verify`` says which, exactly);
13-17. money that leaves the ledger: remittances tie to reconciliation, refunds payable, the
    collection account, refund payouts, no bank run remitted twice (``ledger.verify_money_out``).
"""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Engine, String, and_, cast, func, or_, select

from ledger.archive.openings import opening, openings
from ledger.billing_feed.verify import feed_failures
from ledger.journal import PREPAID, RECEIVABLE
from ledger.verify_money_out import money_out_failures, remitted_by_bank
from ledger.schema import (
    allocations, bills, journal_entries, journal_lines, payments, prepaid_movements, reversals,
)

LIMIT = 20  # failures listed per invariant; the rest are counted


def verify(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            return _verify(conn)


def _listed(failures: list[str], items: list[str], what: str) -> None:
    failures.extend(items[:LIMIT])
    if len(items) > LIMIT:
        failures.append(f"... and {len(items) - LIMIT} more {what}")


def _verify(conn) -> list[str]:
    failures: list[str] = []
    jl, je = journal_lines, journal_entries

    # 1. journal balance
    rows = conn.execute(select(jl.c.entry_id, func.sum(jl.c.amount)).group_by(jl.c.entry_id)
                        .having(func.sum(jl.c.amount) != 0)).all()
    _listed(failures, [f"journal entry {e} does not balance: lines sum to {int(s)}" for e, s in rows], "unbalanced entries")
    total = int(conn.execute(select(func.coalesce(func.sum(jl.c.amount), 0))).scalar_one())
    if total != 0:
        failures.append(f"the journal as a whole does not balance: {total}")
    balances = openings(conn, "account")   # archived months' lines, then what remains
    for a, s in conn.execute(select(jl.c.account, func.sum(jl.c.amount)).group_by(jl.c.account)):
        balances[a] += int(s)
    if sum(balances.values()) != total:
        failures.append(f"the archived months' openings do not balance: {sum(balances.values()) - total}")

    # 2. bills: only the bad ones leave the database (4.3 million bills, read whole, took 2.3 GB)
    alloc = (select(allocations.c.bill_id, func.sum(allocations.c.amount).label("allocated"))
             .group_by(allocations.c.bill_id).subquery())
    twin = bills.alias("twin")
    amount = bills.c.principal + bills.c.penalty
    allocated = func.coalesce(alloc.c.allocated, 0)
    rows = conn.execute(select(bills.c.bill_id, bills.c.kind, amount.label("amount"), allocated.label("allocated"),
                               twin.c.bill_id.label("reversed_by"))
                        .select_from(bills.outerjoin(alloc, alloc.c.bill_id == bills.c.bill_id)
                                     .outerjoin(twin, twin.c.reverses_bill_id == bills.c.bill_id))
                        .where(or_(and_(or_(bills.c.kind == "R", twin.c.bill_id.is_not(None)), allocated != 0),
                                   and_(bills.c.kind != "R", twin.c.bill_id.is_(None),
                                        or_(allocated < 0, allocated > amount))))
                        .order_by(bills.c.bill_id)).all()
    bad = []
    for r in rows:
        if r.kind == "R":
            bad.append(f"reversing bill {r.bill_id} has allocations of {int(r.allocated)}")
        elif r.reversed_by is not None:
            bad.append(f"bill {r.bill_id} is cancelled (reversed by {r.reversed_by}) but keeps {int(r.allocated)} allocated")
        else:
            bad.append(f"bill {r.bill_id}: allocated {int(r.allocated)} outside 0..{int(r.amount)}")
    _listed(failures, bad, "bad bills")
    billed = opening(conn, "billed") + int(conn.execute(select(func.coalesce(func.sum(amount), 0))).scalar_one())

    # 3. prepaid per customer
    rows = conn.execute(select(prepaid_movements.c.customer_no, func.sum(prepaid_movements.c.amount))
                        .group_by(prepaid_movements.c.customer_no).having(func.sum(prepaid_movements.c.amount) < 0)).all()
    _listed(failures, [f"customer {c} has a negative prepaid balance {int(s)}" for c, s in rows], "negative balances")

    # 4. receivable
    allocated_total = opening(conn, "allocated") + int(conn.execute(
        select(func.coalesce(func.sum(allocations.c.amount), 0))).scalar_one())
    if balances.get(RECEIVABLE, 0) != billed - allocated_total:
        failures.append(f"receivable account is {balances.get(RECEIVABLE, 0)}, but billed {billed} - allocated "
                        f"{allocated_total} = {billed - allocated_total}")

    # 5. prepaid account
    moved = int(conn.execute(select(func.coalesce(func.sum(prepaid_movements.c.amount), 0))).scalar_one())
    if balances.get(PREPAID, 0) != -moved:
        failures.append(f"prepaid account is {balances.get(PREPAID, 0)}, but prepaid movements sum to {moved} "
                        f"(expected {-moved})")

    # 6. bank clearing
    paid = openings(conn, "bank_paid")
    for b, s in conn.execute(select(payments.c.bank_code, func.sum(payments.c.amount)).group_by(payments.c.bank_code)):
        paid[b] += int(s)
    for b, s in conn.execute(select(payments.c.bank_code, func.sum(reversals.c.amount))
                             .select_from(reversals.join(payments, payments.c.payment_id == reversals.c.payment_id))
                             .group_by(payments.c.bank_code)):
        paid[b] -= int(s)
    for b, s in remitted_by_bank(conn).items():
        paid[b] -= s
    clearing = {a.split(":", 1)[1]: v for a, v in balances.items() if a.startswith("bank_clearing:")}
    for bank in sorted(set(paid) | set(clearing)):
        if paid.get(bank, 0) != clearing.get(bank, 0):
            failures.append(f"bank_clearing:{bank} is {clearing.get(bank, 0)}, but the bank's payments less "
                            f"reversals and remittances are {paid.get(bank, 0)}")

    # 7. reversals
    rev_alloc = (select(allocations.c.reversal_id, func.sum(allocations.c.amount).label("s"))
                 .where(allocations.c.reversal_id.is_not(None)).group_by(allocations.c.reversal_id).subquery())
    rev_move = (select(prepaid_movements.c.reversal_id, func.sum(prepaid_movements.c.amount).label("s"))
                .where(prepaid_movements.c.reversal_id.is_not(None)).group_by(prepaid_movements.c.reversal_id).subquery())
    rows = conn.execute(select(reversals.c.reversal_id, reversals.c.amount, reversals.c.bank_code,
                               payments.c.payment_id, payments.c.amount.label("paid"), payments.c.bank_code.label("pbank"),
                               func.coalesce(rev_alloc.c.s, 0).label("a"), func.coalesce(rev_move.c.s, 0).label("m"))
                        .select_from(reversals.outerjoin(payments, payments.c.payment_id == reversals.c.payment_id)
                                     .outerjoin(rev_alloc, rev_alloc.c.reversal_id == reversals.c.reversal_id)
                                     .outerjoin(rev_move, rev_move.c.reversal_id == reversals.c.reversal_id))).all()
    bad = []
    for r in rows:
        if r.payment_id is None:
            bad.append(f"reversal {r.reversal_id} refers to no payment")
            continue
        if int(r.amount) != int(r.paid):
            bad.append(f"reversal {r.reversal_id} of {int(r.amount)} differs from its payment {r.payment_id} of {int(r.paid)}")
        if r.bank_code != r.pbank:
            bad.append(f"reversal {r.reversal_id} is by bank {r.bank_code}, its payment by {r.pbank}")
        if int(r.a) + int(r.m) != -int(r.amount):
            bad.append(f"reversal {r.reversal_id} takes back {-(int(r.a) + int(r.m))}, not {int(r.amount)}")
    _listed(failures, bad, "bad reversals")

    # 8. payments: allocations + excess = amount
    pay_alloc = (select(allocations.c.payment_id, func.sum(allocations.c.amount).label("s"))
                 .where(allocations.c.payment_id.is_not(None), allocations.c.reversal_id.is_(None),
                        allocations.c.correction_bill_id.is_(None))
                 .group_by(allocations.c.payment_id).subquery())
    pay_move = (select(prepaid_movements.c.payment_id, func.sum(prepaid_movements.c.amount).label("s"))
                .where(prepaid_movements.c.kind == "excess").group_by(prepaid_movements.c.payment_id).subquery())
    rows = conn.execute(select(payments.c.payment_id, payments.c.amount,
                               func.coalesce(pay_alloc.c.s, 0).label("a"), func.coalesce(pay_move.c.s, 0).label("m"))
                        .select_from(payments.outerjoin(pay_alloc, pay_alloc.c.payment_id == payments.c.payment_id)
                                     .outerjoin(pay_move, pay_move.c.payment_id == payments.c.payment_id))
                        .where(func.coalesce(pay_alloc.c.s, 0) + func.coalesce(pay_move.c.s, 0) != payments.c.amount)).all()
    _listed(failures, [f"payment {r.payment_id} of {int(r.amount)}: allocations {int(r.a)} + prepaid excess {int(r.m)} "
                       f"do not make up its amount" for r in rows], "bad payments")

    # 9. one journal entry per payment and per reversal
    for table, key, ref_type in ((payments, payments.c.payment_id, "payment"), (reversals, reversals.c.reversal_id, "reversal")):
        counts = (select(je.c.ref_id, func.count().label("n")).where(je.c.ref_type == ref_type)
                  .group_by(je.c.ref_id).subquery())
        per_row = table.outerjoin(counts, counts.c.ref_id == cast(key, String))
        rows = conn.execute(select(key, func.coalesce(counts.c.n, 0)).select_from(per_row)
                            .where(func.coalesce(counts.c.n, 0) != 1)).all()
        _listed(failures, [f"{ref_type} {k} has {n} journal entries, not 1" for k, n in rows], f"{ref_type}s without entries")
        # entries naming no row = entries - those the rows' own count finds: joined the other way
        # (entry -> row), SQLite uses no index through the cast and reads every row once per entry
        entries = conn.execute(select(func.count()).select_from(je).where(je.c.ref_type == ref_type)).scalar_one()
        named = conn.execute(select(func.coalesce(func.sum(counts.c.n), 0)).select_from(per_row)).scalar_one()
        orphans = entries - int(named)
        if orphans:
            failures.append(f"{orphans} journal entries of type {ref_type} refer to no {ref_type}")

    # 10. references without foreign keys
    for child, column, parent, key in REFERENCES:
        rows = conn.execute(select(child.c[column]).distinct()
                            .select_from(child.outerjoin(parent, parent.c[key] == child.c[column]))
                            .where(child.c[column].is_not(None), parent.c[key].is_(None))
                            .order_by(child.c[column])).scalars().all()
        _listed(failures, [f"{child.name}.{column} {v} refers to no {parent.name} row" for v in rows],
                f"dangling {child.name}.{column}")
    rows = conn.execute(select(jl.c.id, jl.c.entry_id, jl.c.business_date, je.c.business_date.label("entry_date"))
                        .select_from(jl.join(je, je.c.entry_id == jl.c.entry_id))
                        .where(jl.c.business_date != je.c.business_date).order_by(jl.c.id)).all()
    _listed(failures, [f"journal line {r.id} is dated {r.business_date}, its entry {r.entry_id} {r.entry_date}"
                       for r in rows], "lines dated unlike their entries")
    # a partitioned journal's key holds its month (PostgreSQL, docs/runbook.md "Partitions"): an
    # entry id stays unique by its sequence alone, so it is checked here
    rows = conn.execute(select(je.c.entry_id).group_by(je.c.entry_id).having(func.count() > 1)
                        .order_by(je.c.entry_id)).scalars().all()
    _listed(failures, [f"journal entry id {e} is used more than once" for e in rows], "reused entry ids")

    # 11, 12. the billing feed
    failures += feed_failures(conn)
    # 13-17. money that leaves the ledger
    failures += money_out_failures(conn, balances)
    return failures


REFERENCES = [(journal_lines, "entry_id", journal_entries, "entry_id"),
              (allocations, "payment_id", payments, "payment_id"),
              (allocations, "reversal_id", reversals, "reversal_id"),
              (allocations, "prepaid_movement_id", prepaid_movements, "id"),
              (prepaid_movements, "payment_id", payments, "payment_id"),
              (prepaid_movements, "reversal_id", reversals, "reversal_id")]
