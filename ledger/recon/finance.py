"""Second reconciliation: the finance department's statement of the collection account (docs/spec/INTERFACE.md §7.3).

``reconcile_statement(engine, path, actor=..., rules=FinanceRules())`` reads the statement
(``camt.read_statement``: camt.053 001.02+ or CSV; a bad statement applies nothing) and stores a
run whose items are ALL its booked entries, each matched or left open:

- reversals first: an entry with ``RvslInd`` cancels the entry of the other direction with the
  same amount and reference in the same statement; both are stored as kind ``reversal``, matched
  to each other. A reversal whose original is not in the statement stays open;
- a credit referenced ``{bank code}{YYYYMMDD}`` is that bank's remittance for that business date
  (kind ``remittance``): matched to the bank's reconciliation run of that date (one credit to the
  many payments the run matched) when the amount equals what remains of the run's expected
  remittance (its matched S sum plus the bank-side S amounts of the run's items resolved or
  matched since, less what earlier credits claiming the run remitted) within the tolerance; open
  otherwise (no run yet; less: partly matched, claiming the run; more: nothing posted; that run
  already matched to another credit);
- a cheque credit (kind ``cheque``: a cheque number on the entry, or any credit whose reference
  is the number of a cheque payment) is matched to the unreversed, not yet matched cheque
  payments (method 03) with that number when their sum equals the credit (within the tolerance,
  and within the date window when one is set);
- a debit referenced ``RFD{refund id}`` pays that refund out (kind ``refund``,
  ``ledger.recon.refund_lines``): matched to the refund when the amounts agree, and the refund
  paid out unless an operator did already (never twice);
- anything else stays open (kind ``credit`` / ``debit``) for manual matching.

A remittance credit attributed to its bank (matched, or partly matched: the run was there but the
credit is less than what remains of it) moves its amount out of the bank's clearing account into
the collection account (``ledger.recon.remittances``), in the statement's transaction.

A statement already reconciled (same SHA-256) changes nothing and says so; an entry already stored
by an earlier statement (same AcctSvcrRef, amount, direction and booking date) is skipped.
"""
from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import Engine, insert, select

from ledger.audit import audit_row, write_audit
from config.clock import SYSTEM_CLOCK
from ledger.ids import reserve_ids
from ledger.progress import NoProgress
from ledger.recon.camt import Statement, StatementEntry, StatementError, read_statement
from ledger.recon.match_queries import active_match_of_run, expected_remittance, matched_payment_ids, new_match
from ledger.recon.refund_lines import match_refund_debits, pay_out
from ledger.recon.remittances import remitted_of_runs, settle_remittance
from ledger.recon_tables import recon_items, recon_runs
from ledger.schema import payments, reversals
from runtime.bulk_sql import insert_rows

REMITTANCE = re.compile(r"^(\d{1,11})(\d{8})$")


@dataclass(frozen=True)
class FinanceRules:
    amount_tolerance_fen: int = 0            # |credit - expected| allowed for a match (default exact)
    cheque_date_window_days: int | None = None   # |booking date - payment's business date|; None: any
    match_cheques: bool = True
    match_remittances: bool = True


@dataclass
class FinanceRunResult:
    status: str                  # applied | rejected | duplicate
    message: str
    statement: Statement | None = None
    run_id: int | None = None
    counts: dict = field(default_factory=dict)
    items: list[dict] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)
    errors: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("applied", "duplicate")


def reconcile_statement(engine: Engine, path: str | Path, *, actor: str, rules: FinanceRules | None = None,
                        now: datetime | None = None, reports_dir: str | Path | None = None,
                        data: bytes | None = None, progress: NoProgress = NoProgress()) -> FinanceRunResult:
    """Match a finance statement's entries against the ledger's collections; ``progress`` hears of
    each phase (read, match and store, reports) as it ends."""
    assert actor, "a reconciliation names who runs it"
    rules = rules or FinanceRules()
    now = now or SYSTEM_CLOCK.now()
    path = Path(path)
    t0 = time.perf_counter()
    try:
        st = read_statement(path, data)
    except StatementError as exc:
        result = FinanceRunResult("rejected", f"{exc}; nothing was applied", errors=[(0, "-", str(exc))])
        if reports_dir is not None:
            from ledger.recon.run_reports import write_rejection
            result.reports = write_rejection(path.name, result.errors, 0, reports_dir)
        return result
    if not st.ok:
        result = FinanceRunResult("rejected", st.summary(), st, errors=[(e.line, e.field, e.reason) for e in st.errors])
        if reports_dir is not None:
            from ledger.recon.run_reports import write_rejection
            result.reports = write_rejection(path.name, result.errors, 0, reports_dir)
        return result
    progress.step(f"{path.name}: read {len(st.entries):,} entries in {time.perf_counter() - t0:.1f} s")
    rr = recon_runs.c
    with engine.connect() as conn:
        same = conn.execute(select(rr.run_id, rr.finished_at).where(rr.kind == "finance", rr.file_sha256 == st.sha256)).first()
    if same is not None:
        return FinanceRunResult("duplicate", f"already reconciled: statement SHA-256 {st.sha256[:16]}... is run "
                                f"{same.run_id} ({same.finished_at:%Y-%m-%d %H:%M}); nothing changed", st, same.run_id)
    t1 = time.perf_counter()
    with engine.begin() as conn:
        result = _match_and_store(conn, st, actor, rules, now)
    progress.step(f"{path.name}: matched and stored in {time.perf_counter() - t1:.1f} s: {result.message}")
    if reports_dir is not None:
        from ledger.recon.run_reports import write_run_reports
        t2 = time.perf_counter()
        result.reports = write_run_reports(engine, result.run_id, reports_dir)
        progress.step(f"{path.name}: {len(result.reports)} reports written in {time.perf_counter() - t2:.1f} s")
    return result


def _remittance_of_run(conn, e: StatementEntry, row: dict, run_id: int, bank: str, bdate: date,
                       claimed: dict[int, int], rules: FinanceRules) -> bool:
    """Compare a credit with what remains of its (unmatched) run: matched (True) when it meets the
    remainder within the tolerance; less: partly matched, claiming the run; more: open, nothing posted."""
    expected, open_ = expected_remittance(conn, run_id)
    already = remitted_of_runs(conn, [run_id]).get(run_id, 0) + claimed[run_id]
    remaining = expected - already
    diff = e.amount - remaining
    row["ledger_amount"] = remaining
    head = f"remittance of bank {bank} for {bdate}: "
    so_far = f" ({already} of its {expected} remitted already)" if already else ""
    exceptions = f"; the run has {open_} open exception(s)" if open_ else ""
    if abs(diff) <= rules.amount_tolerance_fen:
        row.update(status="matched", remits_run_id=run_id,
                   detail=head + f"run {run_id}{so_far}" + (f", difference {diff} fen within tolerance" if diff else ""))
        return True
    row["detail"] = head + f"credit {e.amount} fen, run {run_id} expects {remaining}{so_far} (difference {diff})"
    if diff < 0:
        row["remits_run_id"] = run_id
        claimed[run_id] += e.amount
        row["detail"] += f": what arrived is posted, bank_clearing:{bank} keeps the difference" + exceptions
    else:
        row["detail"] += ": more than remains of the run, nothing posted; resolve it, or match it by hand within a tolerance" + exceptions
    return False


def _match_and_store(conn, st: Statement, actor: str, rules: FinanceRules, now: datetime) -> FinanceRunResult:
    (run_id,) = reserve_ids(conn, recon_runs, 1)
    ri = recon_items.c
    # entries stored by an earlier statement (overlapping statements): skipped
    known = set()
    refs = sorted({e.entry_ref for e in st.entries if e.entry_ref})
    for start in range(0, len(refs), 900):
        for r in conn.execute(select(ri.entry_ref, ri.bank_amount, ri.direction, ri.business_date).where(
                ri.entry_ref.in_(refs[start:start + 900]), ri.direction.is_not(None))):
            known.add((r.entry_ref, int(r.bank_amount), r.direction, r.business_date))
    entries = [e for e in st.entries if not (e.entry_ref and (e.entry_ref, e.amount, e.direction, e.booking_date) in known)]
    already = len(st.entries) - len(entries)

    items: list[dict] = []
    for e in entries:
        row = {c.name: None for c in recon_items.c}
        row.update(run_id=run_id, kind="credit" if e.direction == "C" else "debit", status="open", business_date=e.booking_date,
                   bank_amount=e.amount, direction=e.direction, reversal="Y" if e.reversal else "N", method=e.method,
                   cheque_no=(e.cheque_no or None) and e.cheque_no[:35], reference=e.reference[:140] or None,
                   entry_ref=e.entry_ref[:70] or None, counterparty=e.counterparty[:140] or None, value_date=e.value_date,
                   line_no=e.line, detail="", created_at=now)
        items.append(row)
    ids = reserve_ids(conn, recon_items, len(items))
    for row, item_id in zip(items, ids):
        row["item_id"] = item_id
    pending_matches: list[tuple[str, list[dict]]] = []   # (note, members)

    # 1. reversals pair with their originals
    by_key: dict[tuple, list[tuple[StatementEntry, dict]]] = defaultdict(list)
    for e, row in zip(entries, items):
        if not e.reversal:
            by_key[(e.amount, e.reference, e.direction)].append((e, row))
    for e, row in zip(entries, items):
        if not e.reversal:
            continue
        row["kind"] = "reversal"
        other = "D" if e.direction == "C" else "C"
        originals = [o for o in by_key.get((e.amount, e.reference, other), []) if o[1]["status"] == "open"]
        if not originals:
            row["detail"] = "reversal (RvslInd) of an entry not in this statement"
            continue
        _, orig = originals[0]
        orig["kind"] = "reversal"
        for r in (row, orig):
            r["status"] = "matched"
        row["detail"] = f"reverses the entry on line {orig['line_no']}"
        orig["detail"] = f"reversed by the entry on line {row['line_no']}"
        pending_matches.append(("reversal pair", [{"item_id": row["item_id"], "side": "file", "amount": -e.amount},
                                                  {"item_id": orig["item_id"], "side": "file", "amount": e.amount}]))

    # 2. remittances
    runs_used: set[int] = set()
    claimed: dict[int, int] = defaultdict(int)    # run_id -> fen this statement's partly matched credits claim
    rr = recon_runs.c
    for e, row in zip(entries, items):
        if row["status"] != "open" or e.direction != "C" or not rules.match_remittances:
            continue
        target = next(((m.group(1), m.group(2)) for ref in e.references if (m := REMITTANCE.match(ref.strip()))), None)
        if target is None:
            continue
        bank, ymd = target
        try:
            bdate = date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:]))
        except ValueError:
            continue
        row["kind"], row["bank_code"] = "remittance", bank
        run = conn.execute(select(rr.run_id).where(rr.kind == "bank", rr.bank_code == bank, rr.business_date == bdate)).first()
        if run is None:
            row["detail"] = f"remittance of bank {bank} for {bdate}: that date's bank file is not reconciled yet"
            continue
        if run.run_id in runs_used or active_match_of_run(conn, run.run_id) is not None:
            row["detail"] = f"bank {bank} {bdate} (run {run.run_id}) is already matched to another remittance"
            continue
        if _remittance_of_run(conn, e, row, run.run_id, bank, bdate, claimed, rules):
            runs_used.add(run.run_id)
            pending_matches.append((f"remittance {bank}{ymd}", [{"item_id": row["item_id"], "side": "file", "amount": e.amount},
                                                                {"run_id": run.run_id, "side": "ledger",
                                                                 "amount": row["ledger_amount"]}]))

    # 3. cheques
    if rules.match_cheques:
        wanted = {}
        for e, row in zip(entries, items):
            if row["status"] == "open" and e.direction == "C" and row["kind"] == "credit":
                numbers = ([e.cheque_no] if e.cheque_no else []) + [r for r in e.references if r != e.cheque_no]
                wanted[row["item_id"]] = [n[:20] for n in numbers if n]
        numbers = sorted({n for ns in wanted.values() for n in ns})
        cheques: dict[str, list] = defaultdict(list)
        p, r = payments.c, reversals.c
        for start in range(0, len(numbers), 900):
            for pay in conn.execute(select(p.payment_id, p.cheque_no, p.amount, p.business_date, p.customer_no, p.bank_code)
                                    .select_from(payments.outerjoin(reversals, r.payment_id == p.payment_id))
                                    .where(p.method == "03", p.cheque_no.in_(numbers[start:start + 900]),
                                           r.reversal_id.is_(None))):
                cheques[pay.cheque_no].append(pay)
        taken = matched_payment_ids(conn, [pay.payment_id for ps in cheques.values() for pay in ps])
        for e, row in zip(entries, items):
            for number in wanted.get(row["item_id"], ()):
                pays = [pay for pay in cheques.get(number, ()) if pay.payment_id not in taken]
                if not pays:
                    continue
                row["kind"], row["cheque_no"], row["method"] = "cheque", number, "03"
                if rules.cheque_date_window_days is not None:
                    pays = [pay for pay in pays if abs((pay.business_date - e.booking_date).days) <= rules.cheque_date_window_days]
                chosen = None
                if pays and abs(sum(int(x.amount) for x in pays) - e.amount) <= rules.amount_tolerance_fen:
                    chosen = pays
                else:
                    single = [x for x in pays if abs(int(x.amount) - e.amount) <= rules.amount_tolerance_fen]
                    if len(single) == 1:
                        chosen = single
                if chosen is None:
                    row["detail"] = (f"cheque {number}: {len(pays)} unmatched cheque payment(s) of "
                                     f"{sum(int(x.amount) for x in pays)} fen; credit {e.amount}")
                    break
                total = sum(int(x.amount) for x in chosen)
                row.update(status="matched", ledger_amount=total, payment_id=chosen[0].payment_id,
                           customer_no=chosen[0].customer_no, bank_code=chosen[0].bank_code,
                           detail=f"cheque {number}: payment(s) {', '.join(str(x.payment_id) for x in chosen)}")
                taken.update(x.payment_id for x in chosen)
                pending_matches.append((f"cheque {number}", [{"item_id": row["item_id"], "side": "file", "amount": e.amount}]
                                        + [{"payment_id": x.payment_id, "side": "ledger", "amount": int(x.amount)} for x in chosen]))
                break
    refund_matches, payouts = match_refund_debits(conn, entries, items)
    pending_matches += refund_matches
    for row in items:
        if row["status"] == "open" and not row["detail"]:
            row["detail"] = "no remittance reference, cheque or payment matched: for manual matching"

    counts: dict[str, int] = defaultdict(int)
    for row in items:
        counts[f"{row['kind']}:{row['status']}"] += 1
    matched = [r for r in items if r["status"] == "matched"]
    credits = sum(r["bank_amount"] for r in items if r["direction"] == "C")
    debits_ = sum(r["bank_amount"] for r in items if r["direction"] == "D")
    sign = {"C": 1, "D": -1}
    ledger_sum = sum(sign[r["direction"]] * (r["ledger_amount"] or 0) for r in matched if r["kind"] != "reversal")
    conn.execute(insert(recon_runs), {
        "run_id": run_id, "kind": "finance", "bank_code": None, "business_date": None, "file_name": st.path.name[:255],
        "file_sha256": st.sha256, "file_format": st.format, "lines": len(st.entries), "bank_count": len(items),
        "bank_sum": credits - debits_, "ledger_count": len(matched), "ledger_sum": ledger_sum,
        "matched_count": len(matched), "matched_sum": sum(sign[r["direction"]] * r["bank_amount"] for r in matched if r["kind"] != "reversal"),
        "exception_count": len(items) - len(matched), "actor": actor, "started_at": now, "finished_at": SYSTEM_CLOCK.now(),
        "details": json.dumps({"outcomes": dict(counts), "skipped_not_booked": st.skipped, "already_reconciled": already,
                               "account": st.account, "statement_id": st.statement_id, "credits": credits,
                               "debits": debits_, "rules": rules.__dict__}, sort_keys=True, default=str)})
    insert_rows(conn, recon_items, items)
    for note, members in pending_matches:
        new_match(conn, "auto", actor, now, note, members)
    for row in items:
        if row["remits_run_id"] is not None:
            settle_remittance(conn, row["item_id"], actor=actor, now=now, reason=f"finance run {run_id}")
    pay_out(conn, payouts, actor, now)
    write_audit(conn, [audit_row(now, actor, "recon.finance", "recon_run", run_id, file=st.path.name, sha256=st.sha256,
                                 format=st.format, entries=len(items), matched=len(matched))])
    message = (f"run {run_id}: statement {st.path.name} ({st.format}): {len(items)} entries, {len(matched)} matched, "
               f"{len(items) - len(matched)} open" + (f"; {already} already reconciled by an earlier statement" if already else "")
               + (f"; {st.skipped} not booked, skipped" if st.skipped else ""))
    return FinanceRunResult("applied", message, st, run_id, dict(counts), items)

