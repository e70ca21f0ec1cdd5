"""Reconciliation matches as the finance run, manual matching and the day report read and write them:
a bank run's expected remittance, the match a run or payment is in, a new match."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select

from ledger.ids import reserve_ids
from ledger.recon_tables import recon_items, recon_match_members, recon_matches, recon_runs


def expected_remittance(conn, run_id: int) -> tuple[int, int]:
    """(expected remittance, open exceptions) of a bank run: its matched S sum plus the bank-side S
    amounts of its items since resolved or matched by hand."""
    rr, ri = recon_runs.c, recon_items.c
    matched = conn.execute(select(rr.matched_sum).where(rr.run_id == run_id)).scalar_one()
    extra = conn.execute(select(func.coalesce(func.sum(ri.bank_amount), 0)).where(
        ri.run_id == run_id, ri.bank_status == "S", ri.status.in_(("resolved", "matched")))).scalar_one()
    open_ = conn.execute(select(func.count()).where(ri.run_id == run_id, ri.status == "open")).scalar_one()
    return int(matched) + int(extra), int(open_)


def active_match_of_run(conn, run_id: int) -> int | None:
    m, mm = recon_matches.c, recon_match_members.c
    return conn.execute(select(m.match_id).select_from(recon_match_members.join(recon_matches, m.match_id == mm.match_id))
                        .where(mm.run_id == run_id, m.undone_at.is_(None))).scalar()


def matched_payment_ids(conn, payment_ids) -> set[int]:
    if not payment_ids:
        return set()
    m, mm = recon_matches.c, recon_match_members.c
    return set(conn.execute(select(mm.payment_id).select_from(recon_match_members.join(recon_matches, m.match_id == mm.match_id))
                            .where(mm.payment_id.in_(list(payment_ids)), m.undone_at.is_(None))).scalars())


def new_match(conn, kind: str, actor: str, now: datetime, note: str, members: list[dict]) -> int:
    (match_id,) = reserve_ids(conn, recon_matches, 1)
    conn.execute(insert(recon_matches), {"match_id": match_id, "kind": kind, "created_by": actor, "created_at": now,
                                         "note": note[:200], "undone_by": None, "undone_at": None})
    conn.execute(insert(recon_match_members), [
        {"match_id": match_id, "item_id": m.get("item_id"), "payment_id": m.get("payment_id"), "run_id": m.get("run_id"),
         "refund_id": m.get("refund_id"), "side": m["side"], "amount": m["amount"]} for m in members])
    return match_id
