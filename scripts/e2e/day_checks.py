"""The checks a whole-system run ends with (scripts/e2e_day.py, scripts/bench/fullscale.py), against the
database (``q(sql, **params)`` gives its rows) and what the banks saw."""
from __future__ import annotations

from collections import Counter

from scripts.e2e.day_files import remittance_open_banks


def debit_problems(q, bank: str, day_lines: list[dict]) -> tuple[dict, list[str]]:
    """Exactly once, for one bank host's debits: it applied each RRN once, what it holds (S) is what
    the ledger approved, a debit the ledger saw as unknown is not held, none was sent twice (a send
    the bank answered A0 applied nothing and is followed by one under a new identity, docs/spec/INTERFACE.md §4.7).
    Returns (figures, problems)."""
    rows = q("select d.rrn, d.state, d.debit_id, (select count(*) from debit_attempts a where "
             "a.debit_id = d.debit_id and a.event = 'sent') - (select count(*) from debit_attempts a "
             "where a.debit_id = d.debit_id and a.event = 'mac_refused') as sent from debits d "
             "where d.bank_code = :b", b=bank)
    problems = []
    rrns = Counter(ln["rrn"] for ln in day_lines)
    twice = [r for r, n in rrns.items() if n > 1]
    if twice:
        problems.append(f"bank {bank} applied an RRN twice: {twice[:10]}")
    bank_status = {ln["rrn"]: ln["status"] for ln in day_lines}
    held = {r for r, st in bank_status.items() if st == "S"}
    approved = {r.rrn for r in rows if r.state == "approved"}
    if held != approved:
        problems.append(f"bank {bank}: bank holds {len(held)} debits, ledger approved {len(approved)}: "
                        f"bank only {sorted(held - approved)[:5]}, ledger only {sorted(approved - held)[:5]}")
    unknown_seen = {r[0] for r in q("select d.rrn from debits d join debit_attempts a on a.debit_id = "
                                     "d.debit_id and a.event = 'unknown' where d.bank_code = :b", b=bank)}
    not_reversed = [r for r in unknown_seen if bank_status.get(r, "R") != "R"]
    if not_reversed:
        problems.append(f"bank {bank}: debits unknown to the ledger but held by the bank: {not_reversed[:10]}")
    if any(r.sent > 1 for r in rows):
        problems.append(f"bank {bank}: a debit was sent twice")
    return {"unknown_in_ledger": len(unknown_seen), "held": len(held)}, problems


def recon_problems(q, planted: list[tuple], banks: set[str], cheques: list[str] = ()) -> tuple[dict, list[str]]:
    """The bank runs' exceptions are exactly the planted ones; the finance run leaves open exactly the
    stranger's credit and the remittances of the banks whose total holds a planted difference; every
    cheque deposited is matched. Returns (figures, problems)."""
    problems = []
    runs = q("select run_id, kind, bank_code, matched_count, exception_count from recon_runs order by run_id")
    bank_runs = {r.bank_code: r for r in runs if r.kind == "bank"}
    fin_runs = [r for r in runs if r.kind == "finance"]
    if set(bank_runs) != banks or len(fin_runs) != 1:
        problems.append(f"recon runs: {[tuple(r) for r in runs]}")
    items = q("select i.kind, i.bank_code, i.channel, i.rrn, i.status, i.detail, i.bank_amount, "
              "i.ledger_amount, r.kind as run_kind from recon_items i join recon_runs r on r.run_id = i.run_id")
    found = {(i.bank_code, i.kind, i.channel, i.rrn) for i in items if i.run_kind == "bank"}
    planted = set(planted)
    if not planted <= found:
        problems.append(f"planted differences not found: {sorted(planted - found)}")
    unexpected = found - planted
    if unexpected:
        detail = [(i.bank_code, i.kind, i.channel, i.rrn, i.detail) for i in items
                  if i.run_kind == "bank" and (i.bank_code, i.kind, i.channel, i.rrn) in unexpected]
        problems.append(f"{len(unexpected)} unplanned bank-recon exception(s): {detail[:12]}")
    fin = [i for i in items if i.run_kind == "finance"]
    expected_open = {("credit", None)} | {("remittance", b) for b in remittance_open_banks(list(planted))}
    open_found = {(i.kind, i.bank_code if i.kind == "remittance" else None) for i in fin if i.status == "open"}
    if open_found != expected_open:
        problems.append(f"finance open items {sorted(open_found, key=str)} != expected "
                        f"{sorted(expected_open, key=str)}: "
                        f"{[(i.kind, i.bank_code, i.status, i.detail) for i in fin if i.status == 'open']}")
    cheque_items = [i for i in fin if i.kind == "cheque"]
    if len(cheque_items) != len(cheques) or any(i.status != "matched" for i in cheque_items):
        problems.append(f"cheque credits: {len(cheques)} deposited, items "
                        f"{[(i.status, i.detail) for i in cheque_items]}")
    figures = {"bank": {b: {"matched": r.matched_count, "exceptions": r.exception_count} for b, r in bank_runs.items()},
               "planted": sorted(planted), "planted_found": sorted(planted & found),
               "finance": {f"{k}:{st}": n for (k, st), n in Counter((i.kind, i.status) for i in fin).items()}}
    return figures, problems
