"""Manual matching: list open items, show one with ranked candidates, match by hand, undo.

- ``open_items(engine, bank=, business_date=, kind=, run_id=)``: open items, by bank and date.
- ``show_item(engine, item_id)``: the item, its match (if any) and candidates ranked by score
  (each with its bank, date, amount, method or channel, cheque number and customer, side by side):
  same amount (+100), near date (+30 same day, +20 one day, +10 within the window), same
  customer (+50), same reference / cheque number (+40). Candidates are the other side's open
  items (bank-only ↔ ledger-only of the same bank; any open item for a statement entry), the
  ledger's unreversed, not yet matched payments, and bank runs (for a remittance).
- ``match_items(engine, item_ids, payment_ids=, run_ids=, actor=, note=)``: one-to-one or
  many-to-one: the file side (bank lines, statement entries) must equal the ledger side (ledger
  items, payments, what remains of bank runs' expected remittances once other credits' claims are
  taken off) within ``tolerance`` fen; a credit claiming a run is matched only to it; every item
  becomes ``matched``; a ``recon_matches`` row (kind manual) and its members record it.
- ``unmatch(engine, match_id, actor=, reason=)``: undoes a manual match: its items are open again.
- A statement credit matched to a bank run moves out of the bank's clearing account, and an unmatch
  posts the red reversal (``ledger.recon.remittances.settle_remittance``).
- ``match_items_in``, ``unmatch_in``: the same in the caller's transaction (the HTTP service).

Every action writes an ``audit_log`` row with the operator's name.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import Engine, or_, select, update

from ledger.audit import audit_row, write_audit
from config.clock import SYSTEM_CLOCK
from ledger.errors import Refused
from ledger.recon.match_queries import expected_remittance, matched_payment_ids, new_match
from ledger.recon.remittances import remitted_of_runs, settle_remittance
from ledger.recon.resolutions import load_item
from ledger.recon_tables import recon_items, recon_match_members, recon_matches, recon_runs
from ledger.schema import payments, reversals

FILE_SIDE = ("bank_only", "credit", "debit", "remittance", "cheque", "reversal")
LEDGER_SIDE = ("ledger_only",)
WINDOW_DAYS = 3


def open_items(engine: Engine, *, bank: str | None = None, business_date: date | None = None,
               kind: str | None = None, run_id: int | None = None, status: str = "open") -> list[dict]:
    ri = recon_items.c
    stmt = select(recon_items).where(ri.status == status)
    if bank:
        stmt = stmt.where(ri.bank_code == bank)
    if business_date:
        stmt = stmt.where(ri.business_date == business_date)
    if kind:
        stmt = stmt.where(ri.kind == kind)
    if run_id:
        stmt = stmt.where(ri.run_id == run_id)
    stmt = stmt.order_by(ri.bank_code, ri.business_date, ri.kind, ri.item_id)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def side_amount(item: dict) -> tuple[str, int]:
    """(side, signed amount) an item brings to a match: file side or ledger side."""
    if item["kind"] in LEDGER_SIDE:
        return "ledger", int(item["ledger_amount"] or 0)
    if item["direction"] == "D":
        return "file", -int(item["bank_amount"] or 0)
    if item["kind"] == "debit_unknown" and item["bank_amount"] is None:
        return "ledger", int(item["ledger_amount"] or 0)
    return "file", int(item["bank_amount"] or 0)


def _score(item: dict, amount: int | None, when: date | None, customer: str | None, ref: str | None) -> tuple[int, list[str]]:
    score, why = 0, []
    mine = item["bank_amount"] if item["bank_amount"] is not None else item["ledger_amount"]
    if amount is not None and mine is not None and int(amount) == int(mine):
        score += 100
        why.append("same amount")
    if when is not None and item["business_date"] is not None:
        days = abs((when - item["business_date"]).days)
        if days <= WINDOW_DAYS:
            score += (30, 20, 10, 10)[days]
            why.append("same date" if days == 0 else f"{days} day(s) apart")
    if customer and item["customer_no"] and customer == item["customer_no"]:
        score += 50
        why.append("same customer")
    if ref and ref in {item["reference"], item["cheque_no"], item["rrn"]}:
        score += 40
        why.append("same reference")
    return score, why


def show_item(engine: Engine, item_id: int, limit: int = 10) -> dict:
    with engine.connect() as conn:
        item = load_item(conn, item_id)
        ri, m, mm = recon_items.c, recon_matches.c, recon_match_members.c
        match = conn.execute(select(m.match_id, m.kind, m.created_by, m.created_at, m.note)
                             .select_from(recon_match_members.join(recon_matches, m.match_id == mm.match_id))
                             .where(mm.item_id == item_id, m.undone_at.is_(None))).mappings().first()
        candidates: list[dict] = []
        if item["status"] == "open":
            when = item["business_date"]
            lo, hi = (when - timedelta(days=WINDOW_DAYS), when + timedelta(days=WINDOW_DAYS)) if when else (None, None)
            amount = item["bank_amount"] if item["bank_amount"] is not None else item["ledger_amount"]
            ref = item["cheque_no"] or item["reference"] or item["rrn"]
            # the other side's open items
            if item["kind"] in FILE_SIDE or item["kind"] in LEDGER_SIDE:
                want = LEDGER_SIDE if item["kind"] in FILE_SIDE else ("bank_only",)
                stmt = select(recon_items).where(ri.status == "open", ri.item_id != item_id, ri.kind.in_(want))
                if item["bank_code"] and item["direction"] is None:
                    stmt = stmt.where(ri.bank_code == item["bank_code"])
                if when:
                    stmt = stmt.where(ri.business_date.between(lo, hi))
                for other in conn.execute(stmt.limit(500)).mappings():
                    s, why = _score(dict(other), amount, when, item["customer_no"], ref)
                    if s:
                        candidates.append({"type": "item", "id": other["item_id"], "kind": other["kind"],
                                           "amount": other["bank_amount"] if other["bank_amount"] is not None else other["ledger_amount"],
                                           "date": other["business_date"], "customer_no": other["customer_no"],
                                           "method": other["method"] or other["channel"], "cheque_no": other["cheque_no"],
                                           "bank_code": other["bank_code"],
                                           "score": s, "why": ", ".join(why)})
            # payments (statement entries and bank-only lines)
            if item["kind"] in FILE_SIDE and item["kind"] != "reversal":
                p, r = payments.c, reversals.c
                conds = []
                if amount is not None:
                    conds.append(p.amount == abs(int(amount)))
                if item["customer_no"]:
                    conds.append(p.customer_no == item["customer_no"])
                if item["cheque_no"]:
                    conds.append(p.cheque_no == item["cheque_no"])
                if conds:
                    stmt = (select(p.payment_id, p.amount, p.business_date, p.customer_no, p.bank_code, p.method, p.cheque_no,
                                   p.rrn)
                            .select_from(payments.outerjoin(reversals, r.payment_id == p.payment_id))
                            .where(r.reversal_id.is_(None), or_(*conds)))
                    if when:
                        stmt = stmt.where(p.business_date.between(lo, hi))
                    rows = conn.execute(stmt.limit(500)).all()
                    taken = matched_payment_ids(conn, [x.payment_id for x in rows])
                    for x in rows:
                        if x.payment_id in taken or x.payment_id == item["payment_id"]:
                            continue
                        fake = {"bank_amount": None, "ledger_amount": x.amount, "business_date": x.business_date,
                                "customer_no": x.customer_no, "reference": None, "cheque_no": x.cheque_no, "rrn": x.rrn}
                        s, why = _score(fake, amount, when, item["customer_no"], ref)
                        candidates.append({"type": "payment", "id": x.payment_id, "kind": f"payment bank {x.bank_code}",
                                           "amount": int(x.amount), "date": x.business_date, "customer_no": x.customer_no,
                                           "method": x.method, "cheque_no": x.cheque_no, "bank_code": x.bank_code,
                                           "score": s, "why": ", ".join(why)})
            # bank runs (remittances, other credits)
            if item["direction"] == "C":
                rr = recon_runs.c
                stmt = select(rr.run_id, rr.bank_code, rr.business_date).where(rr.kind == "bank")
                if item["bank_code"]:
                    stmt = stmt.where(rr.bank_code == item["bank_code"])
                if when:
                    stmt = stmt.where(rr.business_date.between(lo - timedelta(days=7), hi))
                for run in conn.execute(stmt.limit(200)):
                    expected, open_ = expected_remittance(conn, run.run_id)
                    expected -= remitted_of_runs(conn, [run.run_id], besides=[item_id]).get(run.run_id, 0)
                    fake = {"bank_amount": None, "ledger_amount": expected, "business_date": run.business_date,
                            "customer_no": None, "reference": f"{run.bank_code}{run.business_date:%Y%m%d}",
                            "cheque_no": None, "rrn": None}
                    s, why = _score(fake, amount, when, None, item["reference"])
                    candidates.append({"type": "run", "id": run.run_id, "kind": f"bank run {run.bank_code} {run.business_date}",
                                       "amount": expected, "date": run.business_date, "customer_no": None,
                                       "method": None, "cheque_no": None, "bank_code": run.bank_code, "score": s,
                                       "why": ", ".join(why) + (f"; {open_} open exception(s)" if open_ else "")})
        candidates.sort(key=lambda c: (-c["score"], c["type"], c["id"]))
    return {"item": item, "match": dict(match) if match else None, "candidates": candidates[:limit]}


def match_items(engine: Engine, item_ids: list[int], *, actor: str, note: str = "", payment_ids: list[int] = (),
                run_ids: list[int] = (), tolerance: int = 0, now: datetime | None = None) -> int:
    with engine.begin() as conn:
        return match_items_in(conn, item_ids, actor=actor, note=note, payment_ids=payment_ids, run_ids=run_ids,
                              tolerance=tolerance, now=now)


def match_items_in(conn, item_ids: list[int], *, actor: str, note: str = "", payment_ids: list[int] = (),
                   run_ids: list[int] = (), tolerance: int = 0, now: datetime | None = None) -> int:
    """``match_items`` in the caller's transaction (the HTTP service stores its answer in it)."""
    if not actor or not actor.strip():
        raise Refused("a match names the operator (actor)")
    if not item_ids:
        raise Refused("name at least one item")
    if len(item_ids) + len(payment_ids) + len(run_ids) < 2:
        raise Refused("a match needs at least two sides: items, --payment or --run")
    now = now or SYSTEM_CLOCK.now()
    members, file_sum, ledger_sum = [], 0, 0
    for item_id in item_ids:
        item = load_item(conn, item_id, lock=True)
        if item["status"] != "open":
            raise Refused(f"item {item_id} is {item['status']}, not open")
        if item["remits_run_id"] is not None and run_ids and item["remits_run_id"] not in run_ids:
            raise Refused(f"item {item_id} remits bank run {item['remits_run_id']}: match it to that run")
        side, amount = side_amount(item)
        members.append({"item_id": item_id, "side": side, "amount": amount})
        if side == "file":
            file_sum += amount
        else:
            ledger_sum += amount
    if payment_ids:
        p, r = payments.c, reversals.c
        rows = {x.payment_id: x for x in conn.execute(
            select(p.payment_id, p.amount, r.reversal_id).select_from(payments.outerjoin(reversals, r.payment_id == p.payment_id))
            .where(p.payment_id.in_(list(payment_ids))))}
        taken = matched_payment_ids(conn, list(payment_ids))
        for pid in payment_ids:
            x = rows.get(pid)
            if x is None:
                raise Refused(f"no payment {pid}")
            if x.reversal_id is not None:
                raise Refused(f"payment {pid} is reversed")
            if pid in taken:
                raise Refused(f"payment {pid} is already matched")
            members.append({"payment_id": pid, "side": "ledger", "amount": int(x.amount)})
            ledger_sum += int(x.amount)
    for run_id in run_ids:
        from ledger.recon.match_queries import active_match_of_run
        if conn.execute(select(recon_runs.c.kind).where(recon_runs.c.run_id == run_id)).scalar() != "bank":
            raise Refused(f"run {run_id} is not a bank reconciliation run")
        if active_match_of_run(conn, run_id) is not None:
            raise Refused(f"bank run {run_id} is already matched to a remittance")
        remaining = _remaining(conn, run_id, item_ids)
        members.append({"run_id": run_id, "side": "ledger", "amount": remaining})
        ledger_sum += remaining
    if not file_sum and not ledger_sum:
        raise Refused("nothing to match")
    if abs(file_sum - ledger_sum) > tolerance:
        raise Refused(f"the file side comes to {file_sum} fen and the ledger side to {ledger_sum}: they must agree "
                      f"(tolerance {tolerance} fen); resolve with a reason instead")
    match_id = new_match(conn, "manual", actor, now, note, members)
    conn.execute(update(recon_items).where(recon_items.c.item_id.in_(list(item_ids)))
                 .values(status="matched", resolved_by=actor, resolved_at=now, note=note[:200] or None))
    write_audit(conn, [audit_row(now, actor, "recon.match", "recon_match", match_id, reason=note, items=list(item_ids),
                                 payments=list(payment_ids), runs=list(run_ids), file_sum=file_sum, ledger_sum=ledger_sum)])
    _settle(conn, item_ids, actor, now, f"match {match_id}")
    return match_id


def _remaining(conn, run_id: int, item_ids) -> int:
    """What remains of a bank run to remit: its expected remittance less what other credits claim."""
    expected, _ = expected_remittance(conn, run_id)
    remaining = expected - remitted_of_runs(conn, [run_id], besides=item_ids).get(run_id, 0)
    if remaining <= 0:
        raise Refused(f"bank run {run_id} is remitted in full by other credits already")
    return remaining


def _settle(conn, item_ids, actor: str, now: datetime, reason: str) -> None:
    for item_id in item_ids:
        settle_remittance(conn, item_id, actor=actor, now=now, reason=reason)


def unmatch(engine: Engine, match_id: int, *, actor: str, reason: str, now: datetime | None = None) -> list[int]:
    with engine.begin() as conn:
        return unmatch_in(conn, match_id, actor=actor, reason=reason, now=now)


def unmatch_in(conn, match_id: int, *, actor: str, reason: str, now: datetime | None = None) -> list[int]:
    """``unmatch`` in the caller's transaction (the HTTP service stores its answer in it)."""
    if not actor or not actor.strip():
        raise Refused("undoing a match names the operator (actor)")
    now = now or SYSTEM_CLOCK.now()
    m, mm = recon_matches.c, recon_match_members.c
    match = conn.execute(select(recon_matches).where(m.match_id == match_id).with_for_update()).mappings().first()
    if match is None:
        raise Refused(f"no match {match_id}")
    if match["undone_at"] is not None:
        raise Refused(f"match {match_id} was already undone by {match['undone_by']}")
    if match["kind"] != "manual":
        raise Refused(f"match {match_id} was made automatically; only manual matches can be undone")
    item_ids = [i for i in conn.execute(select(mm.item_id).where(mm.match_id == match_id, mm.item_id.is_not(None))).scalars()]
    conn.execute(update(recon_matches).where(m.match_id == match_id).values(undone_by=actor, undone_at=now))
    conn.execute(update(recon_items).where(recon_items.c.item_id.in_(item_ids))
                 .values(status="open", resolved_by=None, resolved_at=None, note=None))
    write_audit(conn, [audit_row(now, actor, "recon.unmatch", "recon_match", match_id, reason=reason, items=item_ids)])
    _settle(conn, item_ids, actor, now, f"unmatch {match_id}: {reason}")
    return item_ids


def match_of_item(engine: Engine, item_id: int) -> int | None:
    m, mm = recon_matches.c, recon_match_members.c
    with engine.connect() as conn:
        return conn.execute(select(m.match_id).select_from(recon_match_members.join(recon_matches, m.match_id == mm.match_id))
                            .where(mm.item_id == item_id, m.undone_at.is_(None))).scalar()
