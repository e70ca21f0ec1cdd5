"""The invariants of money that leaves the ledger (``ledger.verify``'s 13 to 17).

13. each statement credit's remittance entries move exactly what reconciliation attributes to a
    bank (``ledger.recon.remittances.attributed``: matched to the bank's run, or partly matched)
    out of that bank's clearing account, and nothing else's: every remittance entry ties to such
    an item, and every such item has its entry;
14. refunds_payable = refunds paid (approved) - refunds paid out;
15. the collection account = remitted - refunds paid out;
16. every refund paid out is paid and has exactly one payout entry of its amount, and a payout
    entry is a refund paid out; every statement debit matched to a refund is a debit of its
    amount, of a refund paid out;
17. per bank run, what its remittances took of it (``remitted_of_runs``: the credits claiming it,
    plus what its live match took, the remainder it expected then) is at most its expected
    remittance: money is never remitted twice for one run. (Once matched it was exactly that; the
    run may expect more since, when its exceptions are resolved: the bank owes the rest.)
(6, in ``ledger.verify``, subtracts what 13 attributes: bank_clearing:<bank> = the bank's payments
- their reversals - its remittances.)
"""
from __future__ import annotations

from sqlalchemy import String, and_, cast, func, select

from ledger.archive.openings import openings
from ledger.journal import COLLECTION, REFUNDS_PAYABLE
from ledger.posting.money_out_kinds import CLEARING, ITEM
from ledger.recon.match_queries import expected_remittances
from ledger.recon.remittances import attributed, remitted_of_runs
from ledger.recon_tables import recon_items, recon_match_members, recon_matches
from ledger.refunds import PAID, STATUS
from ledger.schema import journal_entries, journal_lines, refunds


def remitted_by_bank(conn) -> dict[str, int]:
    """bank code -> fen reconciliation attributes to the bank's remittances, archived months' included."""
    out: dict[str, int] = openings(conn, "remitted")
    for banks in attributed(conn).values():
        for bank, amount in banks.items():
            out[bank] += amount
    return out


def money_out_failures(conn, balances: dict[str, int]) -> list[str]:
    failures = _remittance_failures(conn)
    r = refunds.c
    paid = int(conn.execute(select(func.coalesce(func.sum(r.amount), 0)).where(STATUS == PAID)).scalar_one())
    paid_out = int(conn.execute(select(func.coalesce(func.sum(r.amount), 0)).where(r.paid_out_at.is_not(None)))
                   .scalar_one())
    if -balances.get(REFUNDS_PAYABLE, 0) != paid - paid_out:
        failures.append(f"refunds_payable is {-balances.get(REFUNDS_PAYABLE, 0)} (credit), but refunds paid {paid} "
                        f"- paid out {paid_out} = {paid - paid_out}")
    remitted = sum(remitted_by_bank(conn).values())
    if balances.get(COLLECTION, 0) != remitted - paid_out:
        failures.append(f"collection account is {balances.get(COLLECTION, 0)}, but remitted {remitted} - refunds "
                        f"paid out {paid_out} = {remitted - paid_out}")
    return failures + _payout_failures(conn) + _run_failures(conn)


def _run_failures(conn) -> list[str]:
    remitted = remitted_of_runs(conn)
    expected = expected_remittances(conn, remitted)
    return [f"bank run {run_id}: its remittances took {fen} fen of it, more than the {expected[run_id]} it expects"
            for run_id, fen in sorted(remitted.items()) if fen > expected[run_id]]


def _remittance_failures(conn) -> list[str]:
    should = {(item, bank): amount for item, banks in attributed(conn).items() for bank, amount in banks.items()}
    je, jl = journal_entries.c, journal_lines.c
    posted = {(int(ref), account[len(CLEARING):]): -int(total) for ref, account, total in conn.execute(
        select(je.ref_id, jl.account, func.sum(jl.amount))
        .select_from(journal_lines.join(journal_entries, je.entry_id == jl.entry_id))
        .where(je.ref_type == ITEM, jl.account.like(f"{CLEARING}%"))
        .group_by(je.ref_id, jl.account)) if int(total)}
    out = []
    for item, bank in sorted(set(should) | set(posted)):
        want, have = should.get((item, bank), 0), posted.get((item, bank), 0)
        if want != have:
            out.append(f"statement item {item}: reconciliation attributes {want} fen to bank {bank}'s remittance, "
                       f"but its journal entries move {have} out of bank_clearing:{bank}")
    return out


def _payout_failures(conn) -> list[str]:
    r, je, jl = refunds.c, journal_entries.c, journal_lines.c
    entries = (select(je.ref_id, func.count(func.distinct(je.entry_id)).label("n"), func.sum(jl.amount).label("fen"))
               .select_from(journal_entries.join(journal_lines, and_(jl.entry_id == je.entry_id,
                                                                    jl.account == REFUNDS_PAYABLE)))
               .where(je.kind == "refund_payout").group_by(je.ref_id).subquery())
    rows = conn.execute(select(r.id, r.amount, r.paid_out_at, STATUS.label("status"), entries.c.n, entries.c.fen)
                        .select_from(refunds.outerjoin(entries, entries.c.ref_id == cast(r.id, String)))
                        .where((r.paid_out_at.is_not(None)) | entries.c.n.is_not(None))).all()
    out = []
    for x in rows:
        if x.paid_out_at is None:
            out.append(f"refund {x.id} is not paid out but has {x.n} payout entr(ies)")
        elif x.status != PAID:
            out.append(f"refund {x.id} is paid out but {x.status}")
        elif x.n != 1 or int(x.fen) != int(x.amount):
            out.append(f"refund {x.id} of {int(x.amount)} is paid out, but has {x.n or 0} payout entr(ies) "
                       f"of {int(x.fen or 0)}")
    mm, m, ri = recon_match_members.c, recon_matches.c, recon_items.c
    item = recon_match_members.alias("item")
    for x in conn.execute(select(mm.refund_id, ri.item_id, ri.direction, ri.bank_amount, r.amount, r.paid_out_at)
                          .select_from(recon_match_members
                                       .join(recon_matches, and_(m.match_id == mm.match_id, m.undone_at.is_(None)))
                                       .join(item, and_(item.c.match_id == mm.match_id, item.c.item_id.is_not(None)))
                                       .join(recon_items, ri.item_id == item.c.item_id)
                                       .join(refunds, r.id == mm.refund_id))):
        if x.direction != "D" or int(x.bank_amount) != int(x.amount) or x.paid_out_at is None:
            out.append(f"statement item {x.item_id} is matched to refund {x.refund_id} of {int(x.amount)}, but is "
                       f"a {x.direction} of {int(x.bank_amount)}" + ("" if x.paid_out_at else " and it is not paid out"))
    return out
