"""The billing feed's invariants (``ledger verify``, invariants 11 and 12; docs/billing-feed.md):

11. the feed's seqs are exactly 1 .. the counter's last_seq: none missing, none beyond it (rows
    archived with their months are counted from the archive's openings);
12. every change the feed covers (ids above the counter's ``from_*_id``: the ledger's history
    before migration 0009 is not in the feed) has exactly one feed row of its kind, for its
    customer and with its amount, and every feed row is such a change's:
    - a payment: ``payment`` (counter), ``debit_payment`` (channel D) or ``bank_file_payment``
      (source R), amount = the payment's;
    - a reversal: ``reversal``, ``debit_reversal`` or ``red_reversal`` by its source, amount =
      minus the reversal's;
    - a prepaid movement of kind ``refund`` (``refund``, the movement's amount, negative), of kind
      ``correction`` (``correction``, minus the movement's: taken off the corrected bill), of kind
      ``applied`` without a payment (``prepaid_applied``, minus the movement's: paid on the bill).
"""
from __future__ import annotations

from sqlalchemy import and_, case, func, literal, select

from ledger.archive.openings import opening
from ledger.billing_feed.tables import billing_feed, billing_feed_counter
from ledger.schema import payments, prepaid_movements, reversals

LIMIT = 20
F, P, R, M = billing_feed.c, payments.c, reversals.c, prepaid_movements.c


def feed_failures(conn) -> list[str]:
    counter = conn.execute(select(billing_feed_counter)).all()
    if len(counter) != 1:
        return [f"billing_feed_counter has {len(counter)} rows, not 1"]
    counter = counter[0]
    failures = _numbering(conn, int(counter.last_seq))
    for check in _changes(counter):
        failures += _one_to_one(conn, *check)
    return failures


def _numbering(conn, last_seq: int) -> list[str]:
    """Without archived months, seqs 1..last_seq all present; with them, the rows archived (their
    seqs are in the archive's files) and those remaining make up last_seq, all within 1..last_seq."""
    count, low, high = conn.execute(select(func.count(), func.min(F.seq), func.max(F.seq))).one()
    archived = opening(conn, "feed_rows")
    if count + archived == last_seq and (count == 0 or (low >= 1 and high <= last_seq)):
        if archived or count == 0 or (low == 1 and high == last_seq):
            return []
    held = f" and {archived} archived" if archived else ""
    return [f"billing feed: {count} rows{held}, seq {low}..{high}, but the counter gave out 1..{last_seq}: "
            f"{'numbers are missing' if count + archived < last_seq else 'rows are numbered past the counter'}"]


def _changes(counter) -> list[tuple]:
    """(what, the changes' select: key, kind, customer_no, amount as the feed shows it; the feed
    kinds; the feed column naming the change)."""
    pay_kind = case((P.channel == "D", literal("debit_payment")), (P.source == "R", literal("bank_file_payment")),
                    else_=literal("payment"))
    rev_kind = case((R.source == "D", literal("debit_reversal")), (R.source == "R", literal("red_reversal")),
                    else_=literal("reversal"))
    move_kind = case((M.kind == "refund", literal("refund")), (M.kind == "correction", literal("correction")),
                     else_=literal("prepaid_applied"))
    moves = and_(M.id > counter.from_movement_id,
                 (M.kind.in_(("refund", "correction"))) | ((M.kind == "applied") & M.payment_id.is_(None)))
    return [
        ("payment", select(P.payment_id.label("key"), pay_kind.label("kind"), P.customer_no, P.amount.label("amount"))
         .where(P.payment_id > counter.from_payment_id),
         ("payment", "debit_payment", "bank_file_payment"), F.payment_id),
        ("reversal", select(R.reversal_id.label("key"), rev_kind.label("kind"), P.customer_no,
                            (-R.amount).label("amount"))
         .select_from(reversals.join(payments, P.payment_id == R.payment_id))
         .where(R.reversal_id > counter.from_reversal_id),
         ("reversal", "debit_reversal", "red_reversal"), F.reversal_id),
        ("prepaid movement", select(M.id.label("key"), move_kind.label("kind"), M.customer_no,
                                    case((M.kind == "refund", M.amount), else_=-M.amount).label("amount"))
         .where(moves), ("refund", "correction", "prepaid_applied"), F.prepaid_movement_id),
    ]


def _one_to_one(conn, what: str, changes, kinds: tuple, ref) -> list[str]:
    """Each change has exactly one feed row, of its kind, customer and amount; each feed row of
    these kinds names a change."""
    changes = changes.subquery()
    rows = (select(ref.label("key"), func.count().label("n"), func.min(F.kind).label("kind"),
                   func.max(F.kind).label("kind2"), func.min(F.customer_no).label("customer_no"),
                   func.max(F.customer_no).label("customer_no2"), func.sum(F.amount_fen).label("amount"))
            .where(F.kind.in_(kinds)).group_by(ref).subquery())
    bad = conn.execute(
        select(changes.c.key, rows.c.n, rows.c.kind, changes.c.kind.label("want"), rows.c.customer_no,
               changes.c.customer_no.label("want_customer"), rows.c.amount, changes.c.amount.label("want_amount"))
        .select_from(changes.outerjoin(rows, rows.c.key == changes.c.key))
        .where((rows.c.n.is_(None)) | (rows.c.n != 1) | (rows.c.kind != changes.c.kind)
               | (rows.c.kind2 != changes.c.kind) | (rows.c.customer_no != changes.c.customer_no)
               | (rows.c.customer_no2 != changes.c.customer_no) | (rows.c.amount != changes.c.amount))
        .order_by(changes.c.key).limit(LIMIT + 1)).all()
    failures = [f"billing feed: {what} {r.key} ({r.want}, customer {r.want_customer}, {int(r.want_amount)} fen) has "
                + ("no feed row" if r.n is None else f"{r.n} feed row(s): {r.kind}, customer {r.customer_no}, "
                                                      f"{int(r.amount)} fen") for r in bad]
    strays = conn.execute(select(F.seq, F.kind, ref).select_from(
        billing_feed.outerjoin(changes, changes.c.key == ref)).where(F.kind.in_(kinds), changes.c.key.is_(None))
        .order_by(F.seq).limit(LIMIT + 1)).all()
    failures += [f"billing feed: row {r.seq} ({r.kind}) names {what} {r[2]}, which is not a change the feed covers"
                 for r in strays]
    return failures[:LIMIT] + ([f"... and more {what} rows that disagree"] if len(failures) > LIMIT else [])
