"""The collection rate's read (``ledger.collection_rate.collection_figures``) on a ledger of 100,000 customers.

    .venv/bin/python -m scripts.bench.collection_rate [--customers 100000] [--months 3] [--db sqlite|postgresql|both]

Set-up (not timed, but reported): a fresh database (an SQLite file in a temporary directory, or a
PostgreSQL schema of its own on GRIDPAY_BENCH_PG_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test), migrated; customers in 20 districts, one bill a
month each for ``--months`` months, bulk-inserted with Core (``runtime.bulk_sql.insert_rows``; no
journal entries: the bench ledger is not meant to verify). Earlier months are paid in full; the
current one is paid at counters (60 %), by batch debits (15 %), by single debits of every channel
(5 %), from prepaid (3 %), at a counter and reversed (2 %), corrected after a counter payment
(0.5 %: reversing bill, replacement paid from prepaid), and the rest is unpaid.

Timed: ``collection_figures`` of the current period (what ``gridpay collection-rate`` reads once a
minute), best and median of 5, beside the receivables report of the same period (the same billed and
collected queries, by customer type). Judged by: at most 1 s at 100,000 customers, so that 4.3 M
customers (43 times as many rows of the period, the read growing linearly with them) stay well within
the 60 s between reads.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date, datetime, timezone

from scripts.bench import imports

BANK = "01020000"
AT = datetime(2026, 12, 6, 2, 0, tzinfo=timezone.utc)
SINGLE = ("call_centre", "voice", "online_banking", "district_office", "counter")
TARGET_S = 1.0
CHUNK = 20_000


class Rows:
    """The rows of every table, with the ids they reference given here (Identity columns take them)."""

    def __init__(self, first_id: int):
        self.tables: dict[str, list[dict]] = {"bills": [], "debits": [], "payments": [], "reversals": [],
                                              "allocations": []}
        self.ids = {"payments": first_id, "debits": first_id, "reversals": first_id, "allocations": first_id}

    def next_id(self, table: str) -> int:
        self.ids[table] += 1
        return self.ids[table]

    def bill(self, bill_id, cust, period, principal, kind="O", reverses=None, replaces=None):
        self.tables["bills"].append({
            "bill_id": bill_id, "customer_no": cust, "period": period, "principal": principal, "penalty": 0,
            "due_date": date(int(period[:4]), int(period[4:]), 28), "kind": kind, "reverses_bill_id": reverses,
            "replaces_bill_id": replaces, "import_id": None, "created_at": AT, "category": "E"})

    def payment(self, cust, amount, channel="C", debit_channel=None) -> int:
        n = self.next_id("payments")
        debit_id = None
        if channel == "D":
            debit_id = self.next_id("debits")
            self.tables["debits"].append({
                "debit_id": debit_id, "batch_id": None, "chunk_no": None, "bank_code": BANK, "customer_no": cust,
                "account_no": f"A{cust}", "amount": amount, "state": "approved", "created_at": AT,
                "updated_at": AT, "channel": debit_channel})
        self.tables["payments"].append({
            "payment_id": n, "channel": channel, "bank_code": BANK, "customer_no": cust, "id_year": 2026,
            "transmitted": f"12{n // 1_000_000:08d}", "stan": f"{n % 1_000_000:06d}", "rrn": f"{n:012d}",
            "business_date": AT.date(), "amount": amount, "method": "10" if channel == "D" else "01",
            "cheque_no": None, "receipt_no": f"R{n:011d}", "terminal_id": None, "branch_id": None,
            "debit_id": debit_id, "source": "B", "created_at": AT})
        return n

    def allocation(self, bill_id, amount, payment=None, reversal=None, move=None, correction=None):
        self.tables["allocations"].append({
            "id": self.next_id("allocations"), "bill_id": bill_id, "amount": amount, "payment_id": payment,
            "reversal_id": reversal, "prepaid_movement_id": move, "correction_bill_id": correction,
            "created_at": AT})

    def reversal(self, payment_id, amount) -> int:
        n = self.next_id("reversals")
        self.tables["reversals"].append({
            "reversal_id": n, "payment_id": payment_id, "bank_code": BANK, "id_year": None, "transmitted": None,
            "stan": None, "amount": amount, "business_date": AT.date(), "source": "B", "reason": "",
            "created_at": AT})
        return n


def current_month(rows: Rows, i: int, cust: str, bill_id: str, amount: int, period: str) -> None:
    share = i % 200                                   # in 0.5 % steps
    if share < 120:
        rows.allocation(bill_id, amount, payment=rows.payment(cust, amount))
    elif share < 150:
        rows.allocation(bill_id, amount, payment=rows.payment(cust, amount, "D", "batch"))
    elif share < 160:
        rows.allocation(bill_id, amount, payment=rows.payment(cust, amount, "D", SINGLE[i % len(SINGLE)]))
    elif share < 166:
        rows.allocation(bill_id, amount, move=i)      # prepaid applied (movement ids are not referenced)
    elif share < 170:
        pay = rows.payment(cust, amount)
        rows.allocation(bill_id, amount, payment=pay)
        rows.allocation(bill_id, -amount, payment=pay, reversal=rows.reversal(pay, amount))
    elif share < 171:
        rows.allocation(bill_id, amount, payment=rows.payment(cust, amount))
        red, new = f"R{bill_id}", f"N{bill_id}"
        rows.bill(red, cust, period, -amount, kind="R", reverses=bill_id)
        rows.bill(new, cust, period, amount - 500, kind="N", replaces=bill_id)
        rows.allocation(bill_id, -amount, move=i, correction=red)
        rows.allocation(new, amount - 500, move=i)


def setup(url: str, n_customers: int, months: int) -> tuple[str, float, dict]:
    from sqlalchemy import insert

    from ledger import migrate, schema
    from ledger.db import make_engine
    from ledger.schema import banks, customers
    from runtime.bulk_sql import insert_rows

    t0 = time.perf_counter()
    migrate.upgrade(url)
    engine = make_engine(url)
    periods = [f"2026{m:02d}" for m in range(13 - months, 13)]
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        conn.execute(insert(banks), [{"bank_code": BANK, "name": "bench bank", "created_at": AT}])
    for start in range(0, n_customers, CHUNK):
        rows, custs = Rows(start * (months + 3)), []   # a customer makes at most months + 3 rows of a table
        for i in range(start, min(n_customers, start + CHUNK)):
            cust = f"C{i:08d}"
            custs.append({"customer_no": cust, "customer_name": f"客户{cust}", "customer_type": "RN"[i % 7 == 0],
                          "status": "A", "prepay_allowed": "Y", "mobile": None, "district": f"D{i % 20:02d}",
                          "collection_type": None, "version": 1, "updated_at": AT})
            for period in periods:
                bill_id, amount = f"B{cust}{period}", 10_000 + (i % 50) * 100
                rows.bill(bill_id, cust, period, amount)
                if period != periods[-1]:
                    rows.allocation(bill_id, amount, payment=rows.payment(cust, amount, *(
                        ("D", "batch") if i % 4 == 0 else ("C",))))
                else:
                    current_month(rows, i, cust, bill_id, amount, period)
        with engine.begin() as conn:
            insert_rows(conn, customers, custs)
            for name in ("bills", "debits", "payments", "reversals", "allocations"):
                insert_rows(conn, getattr(schema, name), rows.tables[name])
                counts[name] = counts.get(name, 0) + len(rows.tables[name])
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("analyze")
    engine.dispose()
    counts["customers"] = n_customers
    return periods[-1], time.perf_counter() - t0, counts


def timed(fn, runs: int = 5) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def bench(url: str, args) -> dict:
    from ledger.collection_rate import collection_figures
    from ledger.db import make_engine
    from ledger.finance_reports import receivables_report

    period, setup_s, counts = setup(url, args.customers, args.months)
    engine = make_engine(url)
    try:
        def figures():
            with engine.connect() as conn:
                return collection_figures(conn, period)

        f = figures()
        best, median = timed(figures)
        rep_best, rep_median = timed(lambda: receivables_report(engine, period))
        total = receivables_report(engine, period).total
        assert (f.total_billed, f.total_collected) == (total.billed, total.collected), "figures differ from the report"
    finally:
        engine.dispose()
    return {"setup_s": round(setup_s, 1), "rows": counts, "period": period,
            "rate": round(f.total_collected / f.total_billed, 4), "channels": len(f.by_channel),
            "districts": len(f.billed), "figures_best_s": round(best, 3), "figures_median_s": round(median, 3),
            "receivables_best_s": round(rep_best, 3), "receivables_median_s": round(rep_median, 3)}


def report(db: str, r: dict) -> None:
    verdict = "ok" if r["figures_median_s"] <= TARGET_S else "TOO SLOW"
    print(f"{db}: {r['rows']['customers']:,} customers, {r['rows']['bills']:,} bills, "
          f"{r['rows']['allocations']:,} allocations, {r['rows']['payments']:,} payments (set-up {r['setup_s']} s)")
    print(f"  collection figures of {r['period']}: best {r['figures_best_s']} s, median {r['figures_median_s']} s "
          f"(judged: <= {TARGET_S} s) {verdict}; rate {r['rate']:.2%}, {r['districts']} districts, "
          f"{r['channels']} channels")
    print(f"  receivables report of {r['period']}: best {r['receivables_best_s']} s, "
          f"median {r['receivables_median_s']} s (the same queries by customer type, for comparison)")
    print(f"  at 4.3 M customers, linearly: ~{r['figures_median_s'] * 4_300_000 / r['rows']['customers']:.1f} s "
          "a read, once a minute")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--months", type=int, default=3, help="bills of this many months (the last one watched)")
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = ap.parse_args(argv)
    results = imports.for_each_db(args, lambda url: bench(url, args), report)
    print(json.dumps({"bench": "collection_rate", "customers": args.customers, "months": args.months,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
