"""The banks' end-of-day files as a whole-system run builds them from what each bank saw
(scripts/e2e_day.py, scripts/bench/fullscale.py): the docs/spec/INTERFACE.md §7.1 transaction file
(its counter lines from the bank's counter system, its debit lines from the bank host's day file),
the differences a run plants in them, and the finance statement (§7.3) of the banks' remittances."""
from __future__ import annotations

import csv
import io
import random
from datetime import date
from pathlib import Path

STATEMENT_HEADER = ["booking_date", "value_date", "amount", "direction", "method", "cheque_no", "reference",
                    "counterparty"]


def counter_lines_from_journal(journal: dict, bank: str, year: int) -> list[dict]:
    """The counter lines of a bank whose counter system is scripts.e2e.bank_counter (its journal)."""
    return [{"channel": "C", "tx": f"{year:04d}{r['f7']}", "stan": r["stan"], "rrn": r["rrn"],
             "customer": r["customer"], "amount": int(r["amount"]), "status": r["status"], "term": f"T{bank[-4:]}001",
             "method": r["method"], "cheque": r["cheque"]} for r in journal["payments"]]


def counter_lines_from_receipts(path: Path, bank: str, business_date: date, stan_base: int = 0) -> list[dict]:
    """The counter lines of a bank whose counter system is ``gridpay sim counter --receipts``: every
    approved payment, status R when the run reversed it. The receipts file has no transmission time
    nor STAN (reconciliation matches by channel + RRN): the business date at noon, a running number."""
    rows = list(csv.DictReader(open(path, newline="")))
    reversed_receipts = {r["receipt"] for r in rows if r["kind"] == "reversed"}
    out = []
    for n, r in enumerate(r for r in rows if r["kind"] == "paid"):
        out.append({"channel": "C", "tx": f"{business_date:%Y%m%d}120000", "stan": f"{(stan_base + n) % 1_000_000:06d}",
                    "rrn": r["rrn"], "customer": r["customer"], "amount": int(r["amount"]),
                    "status": "R" if r["receipt"] in reversed_receipts else "S", "term": f"T{bank[-4:]}001",
                    "method": "01", "cheque": None})
    return out


def debit_lines_online(day_file: str | Path) -> list[dict]:
    """The debit lines of a bank host's day file (``gridpay sim bank --day-file-dir``)."""
    out = []
    for line in Path(day_file).read_text(encoding="gbk").strip().split("\n")[1:]:
        _, ch, tx, stan, rrn, cust, amount, status, term = line.split("|")
        out.append({"channel": ch, "tx": tx, "stan": stan, "rrn": rrn, "customer": cust, "amount": int(amount),
                    "status": status, "term": term})
    return out


def plant(lines: dict[str, list[dict]], banks: tuple[str, str, str], seed: int) -> list[tuple]:
    """One planted difference of each kind in the banks' lines (cash counter payments only);
    returns the expected (bank, kind, channel, rrn). ``banks``: where the bank-only and
    status-differs lines go, the ledger-only one, the amount-differs one."""
    first, second, third = banks
    planted = []
    rng = random.Random(seed)

    def pick(bank, status="S"):
        cands = [ln for ln in lines[bank] if ln["channel"] == "C" and ln["status"] == status and not ln.get("planted")
                 and ln.get("method") == "01"]
        ln = rng.choice(cands)
        ln["planted"] = True
        return ln
    # bank only: a counter payment the ledger never saw
    src = pick(first)
    extra = dict(src, rrn="999900000001", stan="999001", amount=12345, customer=src["customer"], planted=True)
    lines[first].append(extra)
    planted.append((first, "bank_only", "C", extra["rrn"]))
    # status differs: the bank shows reversed what the ledger has as paid
    ln = pick(first)
    ln["status"] = "R"
    planted.append((first, "status_differs", "C", ln["rrn"]))
    # ledger only: a payment missing from the bank's file
    ln = pick(second)
    lines[second].remove(ln)
    planted.append((second, "ledger_only", "C", ln["rrn"]))
    # amount differs
    ln = pick(third)
    ln["amount"] += 100
    planted.append((third, "amount_differs", "C", ln["rrn"]))
    return planted


def remittance_open_banks(planted: list[tuple]) -> set[str]:
    """The banks whose remittance cannot match: the bank's S total holds a planted bank-only or
    amount-differs line that reconciliation did not match."""
    return {b for (b, kind, _c, _r) in planted if kind in ("bank_only", "amount_differs")}


def bank_file(bank: str, business_date: date, lines: list[dict]) -> tuple[str, bytes, int]:
    """(file name, content, S total) of the bank's §7.1 file."""
    lines = sorted(lines, key=lambda ln: (ln["tx"], ln["channel"], ln["rrn"]))
    total = sum(ln["amount"] for ln in lines if ln["status"] == "S")
    body = [f"H|{bank}|{business_date:%Y%m%d}|{len(lines)}|{total}"]
    body += [f"D|{ln['channel']}|{ln['tx']}|{ln['stan']}|{ln['rrn']}|{ln['customer']}|{ln['amount']}|"
             f"{ln['status']}|{ln['term']}" for ln in lines]
    return f"{bank}_{business_date:%Y%m%d}.txt", ("\n".join(body) + "\n").encode("gbk"), total


def finance_statement(business_date: date, remittances: dict[str, int], lines: dict[str, list[dict]]
                      ) -> tuple[str, bytes, list[str]]:
    """(file name, content, cheque numbers) of the finance statement (§7.3): one remittance per bank
    (its S total), a credit per unreversed cheque, and one credit from a stranger (planted)."""
    bd = business_date.isoformat()
    rows = [[bd, bd, str(total), "C", "02", "", f"{b}{business_date:%Y%m%d}", f"bank {b}"]
            for b, total in remittances.items()]
    cheques = []
    for b in remittances:
        for ln in lines[b]:
            if ln.get("method") == "03" and ln["status"] == "S":
                rows.append([bd, bd, str(ln["amount"]), "C", "03", ln["cheque"], ln["cheque"], ln["customer"]])
                cheques.append(ln["cheque"])
    rows.append([bd, bd, "77777", "C", "02", "", "UNKNOWN-REMITTER", "somebody"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(STATEMENT_HEADER)
    w.writerows(rows)
    return f"finance_{business_date:%Y%m%d}.csv", buf.getvalue().encode("utf-8"), cheques
