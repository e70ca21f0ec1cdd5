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
    ri = recon_items.c
    open_ = conn.execute(select(func.count()).where(ri.run_id == run_id, ri.status == "open")).scalar_one()
    return expected_remittances(conn, [run_id])[run_id], int(open_)


def expected_remittances(conn, run_ids) -> dict[int, int]:
    """run_id -> expected remittance (see ``expected_remittance``) of the bank runs ``run_ids``."""
    rr, ri = recon_runs.c, recon_items.c
    out: dict[int, int] = {}
    ids = sorted(set(run_ids))
    for start in range(0, len(ids), 900):
        chunk = ids[start:start + 900]
        out.update((int(r), int(s)) for r, s in conn.execute(select(rr.run_id, rr.matched_sum)
                                                             .where(rr.run_id.in_(chunk))))
        for run_id, extra in conn.execute(select(ri.run_id, func.sum(ri.bank_amount)).where(
                ri.run_id.in_(chunk), ri.bank_status == "S", ri.status.in_(("resolved", "matched")))
                .group_by(ri.run_id)):
            out[int(run_id)] += int(extra)
    return out


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
