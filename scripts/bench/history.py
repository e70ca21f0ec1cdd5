"""A year of history: counter inquiry + payment and a bank's reconciliation, with one month of
history and with twelve, measured in turns in one run on PostgreSQL.

    .venv/bin/python -m scripts.bench.history [--customers 20000] [--months 12] [--rate 100] [--duration 20]
                                              [--day-payments 5000] [--rounds 4]

A sample of the customer base, scaled: ``--customers`` customers (the utility has 4.3 million), one
bill each per month, every bill paid in its month — the same rows per customer as the full base,
so the tables hold ``customers / 4.3 M`` of a real year's rows. All of it made by the ledger's
own paths: the demo set's customers imported by ``gridpay ledger import``, each month's bills by
the ledger's import (``ledger.imports.import_file``) with a manual clock on the month's first day, payments posted by ``ledger.synchronous_posting.post`` with a manual clock on their
days (``--day-payments`` on each round's day, the rest spread over the month), partitions prepared by
``gridpay db partitions``. The bank's daily file is the bank's own record of its payments that day.

Two schemas side by side: "month" holds this month's bills and payments; "year" holds the eleven
months before as well (imported and paid month by month, oldest first). In both, this month's bills
are paid but for the customers kept for the measurements (1.25 x ``rate x duration`` a round),
who owe this month's bill only. Each round measures both phases, in turns (the order swapped each
round, so the machine's drift falls on both alike):
- counter: a fresh ``gridpay serve`` and ``gridpay sim counter`` paced at ``--rate`` payments/s, a
  quarter of ``--duration`` as a warm-up, then ``--duration`` s measured (an inquiry and a payment
  each): latency p50/p99 per message and per payment;
- reconciliation: ``gridpay recon bank`` of bank 01020000's file of the round's day (wall time).

Printed: each figure's median over the rounds for both phases, the ratio year/month (the
geometric mean of the rounds' ratios; target <= 1.20) and each round's ratio; rows per table and per partition; the machine's speed before and
after (scripts.bench.machine). The bench asserts nothing about time. PostgreSQL:
GRIDPAY_BENCH_PG_URL (two schemas are created and dropped).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from scripts.bench import machine  # noqa: E402
from scripts.bench.gateway import drive, settle  # noqa: E402
from scripts.bench.imports import PG_DEFAULT, gridpay, run_child, with_schema  # noqa: E402

BANK, OTHER_BANK = "01020000", "01030000"
TARGET_RATIO = 1.20
POST_BATCH = 500


def months_back(today: date, count: int) -> list[date]:
    """The first days of the ``count`` months ending with today's, oldest first."""
    from ledger.partitions import first_of_month, next_month

    first = first_of_month(today)
    for _ in range(count - 1):
        first = first_of_month(first - timedelta(days=1))
    out = [first]
    while len(out) < count:
        out.append(next_month(out[-1]))
    return out


def split_bills(files: dict[str, Path], workdir: Path) -> dict[str, Path]:
    """The demo set's bills.csv as one file per period (``bills-YYYYMM.csv``), header kept."""
    lines = files["bills"].read_text(encoding="utf-8").splitlines(keepends=True)
    header, by_period = lines[0], {}
    for line in lines[1:]:
        by_period.setdefault(line.split(",")[1], []).append(line)
    out = {}
    for period, rows in by_period.items():
        out[period] = workdir / f"bills-{period}.csv"
        out[period].write_text(header + "".join(rows), encoding="utf-8")
    return out


def import_file(url: str, kind: str, path: Path, workdir: Path, token: str) -> float:
    res = run_child([*gridpay(), "ledger", "import", kind, str(path), "--url", url], workdir, f"import-{path.stem}", token)
    if res["rc"] != 0:
        raise SystemExit(f"gridpay ledger import {kind} {path.name} failed:\n{res['stdout'][-2000:]}{res['stderr'][-2000:]}")
    return res["seconds"]


def import_bills(engine, path: Path, month: date) -> None:
    """A month's bills file, imported by the ledger's import as on the month's first day (its bills'
    journal entries are of that day, as at the site, where each month's bills come in that month)."""
    from config.clock import ManualClock
    from ledger.imports import import_file as ledger_import

    ledger_import(engine, "bills", path, "system:bench-history",
                  clock=ManualClock(datetime(month.year, month.month, month.day, 2, 0, tzinfo=timezone.utc)))


def dues(engine, period: str, customers: list[str]) -> list[tuple[str, int]]:
    """What each customer owes on their bill of ``period`` (principal + penalty)."""
    from sqlalchemy import select

    from ledger.schema import bills

    wanted = set(customers)
    with engine.connect() as conn:
        rows = conn.execute(select(bills.c.customer_no, bills.c.principal + bills.c.penalty)
                            .where(bills.c.period == period)).all()
    return [(c, int(a)) for c, a in rows if c in wanted]


def pay(engine, owed: list[tuple[str, int]], bank_of, day: date) -> int:
    """Post a counter payment of each (customer, amount) on business date ``day``, a second apart
    from 10:00 local time, through the ledger's posting; the number answered 00."""
    from config.clock import ManualClock
    from ledger.synchronous_posting import post
    from ledger_helpers import payment

    start = datetime(day.year, day.month, day.day, 2, 0, tzinfo=timezone.utc)   # 10:00 in Shanghai
    paid = 0
    for lo in range(0, len(owed), POST_BATCH):
        batch = [payment(bank_of(i), c, amount, at=start + timedelta(seconds=i))
                 for i, (c, amount) in enumerate(owed[lo:lo + POST_BATCH], start=lo)]
        outcomes = post(engine, batch, ManualClock(start + timedelta(seconds=lo + len(batch))))
        paid += sum(o.response_code == "00" for o in outcomes)
    return paid


def pay_month(engine, owed: list[tuple[str, int]], days: list[date], special: dict[date, int]) -> int:
    """A month's payments: on ``special`` days that many of bank 01020000's own each, the rest spread
    over ``days``, both banks."""
    paid, at = 0, 0
    for day, count in special.items():
        paid += pay(engine, owed[at:at + count], lambda i: BANK, day)
        at += count
    rest = owed[at:]
    per_day = -(-len(rest) // len(days)) if rest else 0
    for d, day in enumerate(days):
        chunk = rest[d * per_day:(d + 1) * per_day]
        if chunk:
            paid += pay(engine, chunk, lambda i: OTHER_BANK if i % 2 else BANK, day)
    return paid


def days_of(first: date, before: date, count: int = 25, skip: tuple = ()) -> list[date]:
    """Up to ``count`` days from ``first`` on, before ``before`` (at least ``first``), but ``skip``."""
    days = [first + timedelta(days=d) for d in range(count) if first + timedelta(days=d) < before]
    return [d for d in days if d not in skip] or [first]


def write_bank_file(engine, day: date, workdir: Path) -> Path:
    """Bank 01020000's daily file of ``day``: its record of the payments it made that day."""
    from sqlalchemy import select

    from ledger.schema import payments

    p = payments.c
    with engine.connect() as conn:
        rows = conn.execute(select(p.id_year, p.transmitted, p.stan, p.rrn, p.customer_no, p.amount, p.terminal_id)
                            .where(p.bank_code == BANK, p.business_date == day).order_by(p.payment_id)).all()
    path = workdir / f"{BANK}_{day:%Y%m%d}.txt"
    with open(path, "w", encoding="gbk", newline="\n") as fh:
        fh.write(f"H|{BANK}|{day:%Y%m%d}|{len(rows)}|{sum(r.amount for r in rows)}\n")
        for r in rows:
            fh.write(f"D|C|{r.id_year}{r.transmitted}|{r.stan}|{r.rrn}|{r.customer_no}|{r.amount}|S|{r.terminal_id}\n")
    return path


def reconcile(url: str, path: Path, workdir: Path, token: str) -> dict:
    res = run_child([*gridpay(), "recon", "bank", str(path), "--url", url, "--json",
                     "--reports", str(workdir / "reports")], workdir, f"recon-{path.stem}", token)
    if res["rc"] != 0:
        raise SystemExit(f"gridpay recon bank failed:\n{res['stdout'][-2000:]}{res['stderr'][-2000:]}")
    out = json.loads(res["stdout"])
    return {"seconds": round(res["seconds"], 2), "lines": out["totals"].get("bank_count"),
            "matched": out["totals"].get("matched_count"), "counts": out["counts"]}


def served(args) -> tuple[int, int]:
    """Customers a phase's gateway serves: (measured, warm-up before them)."""
    measured = args.rate * args.duration
    return measured, max(1, measured // 4)


def serve_and_pay(url: str, customers: list[str], workdir: Path, args, name: str) -> dict:
    """A fresh gateway; a warm-up (its pool, caches: unmeasured) at the same pace, then the measured run."""
    from process_harness import GatewayProcess

    measured, _ = served(args)
    gw = GatewayProcess(workdir, url).start()
    try:
        figures = {}
        for part, listed in (("warm-up", customers[measured:]), ("measured", customers[:measured])):
            path = workdir / f"paced-{name}-{part}.txt"
            path.write_text("\n".join(listed))
            figures = drive(gw, path, workdir, "--rate", str(args.rate), "--count", str(len(listed)),
                            "--connections", "8", "--window", "16")
        return figures
    finally:
        gw.terminate()


def measure(ledger: "Ledger", customers: list[str], day: date, workdir: Path, args, name: str) -> dict:
    settle(ledger.url, analyze=True)
    counter = serve_and_pay(ledger.url, customers, workdir, args, name)
    settle(ledger.url)
    recon = reconcile(ledger.url, write_bank_file(ledger.engine, day, workdir), workdir, ledger.clerk)
    load = round(os.getloadavg()[0], 2)   # the machine is shared: what else ran during the phase
    print(f"[{name}] counter {json.dumps(counter)}\n[{name}] recon {json.dumps(recon)}\n[{name}] load {load}", flush=True)
    return {"counter": counter, "recon": recon, "load_average": load}


def table_rows(engine) -> dict:
    from sqlalchemy import func, select

    from ledger.schema import audit_log, debit_attempts, journal_entries, journal_lines, outbox, payments

    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (payments, journal_entries, journal_lines, outbox, audit_log, debit_attempts)}


class Ledger:
    """One phase's schema: migrated, partitioned for the year, the demo set's customers imported."""

    def __init__(self, url: str, months: list[date], customers: Path, workdir: Path):
        from ledger import migrate
        from ledger.db import make_engine
        from ledger_helpers import add_banks
        from scripts.operator_session import operator_session

        self.url = url
        migrate.upgrade(url)
        self.engine = make_engine(url)
        with self.engine.begin() as conn:
            add_banks(conn, BANK, OTHER_BANK)
        ops = self.clerk = operator_session(url, "bench", ["operations", "clerk"])
        prepared = run_child([*gridpay(), "db", "partitions", "--url", url, "--from-month", f"{months[0]:%Y%m}",
                              "--ahead", str(len(months))], workdir, "partitions", ops)
        if prepared["rc"] != 0:
            raise SystemExit(f"gridpay db partitions failed: {prepared['stdout']}{prepared['stderr']}")
        import_file(url, "customers", customers, workdir, ops)


def without(path: Path, customers: set[str], workdir: Path) -> Path:
    """A bills file without the bills of ``customers``."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out = workdir / f"{path.stem}-history.csv"
    out.write_text(lines[0] + "".join(ln for ln in lines[1:] if ln.split(",")[0] not in customers), encoding="utf-8")
    return out


def run(month_url: str, year_url: str, args, workdir: Path) -> dict:
    from ledger import partitions
    from ledger.demo_data import write_demo_files
    from ledger.verify import verify

    today = datetime.now(timezone.utc).date()
    months = months_back(today, args.months)
    files = write_demo_files(workdir / "billing", customers=args.customers, seed=1, as_of=partitions.next_month(today),
                             bills=args.customers * args.months)
    bills_of = split_bills(files, workdir)
    periods = sorted(bills_of)
    assert periods == [f"{m:%Y%m}" for m in months], (periods, months)
    numbers = [f"0140{580000 + i:06d}" for i in range(args.customers) if i != args.customers // 2]  # one is suspended
    kept = sum(served(args))
    rounds = [numbers[r * kept:(r + 1) * kept] for r in range(args.rounds)]
    measured = {c for listed in rounds for c in listed}
    history = numbers[args.rounds * kept:]
    days = [today - timedelta(days=2 + r) for r in range(args.rounds)]   # each round reconciles a day of its own
    setup = {}
    phases = {"month": Ledger(month_url, months, files["customers"], workdir),
              "year": Ledger(year_url, months, files["customers"], workdir)}

    # both: this month's bills, paid but for the customers kept for the measurements, who owe this
    # month's bill only; the year's schema has the eleven months before too, each imported on its
    # first day and paid in it, first
    t0 = time.perf_counter()
    paid = 0
    for period, first in zip(periods[:-1], months[:-1]):
        import_bills(phases["year"].engine, without(bills_of[period], measured, workdir), first)
        paid += pay_month(phases["year"].engine, dues(phases["year"].engine, period, history),
                          days_of(first, months[-1]), {})
        print(f"set-up {period}: {paid:,} payments so far, {time.perf_counter() - t0:.0f} s", flush=True)
    setup["year_before_s"], setup["year_before_payments"] = round(time.perf_counter() - t0, 1), paid
    for name, ledger in phases.items():
        t0 = time.perf_counter()
        import_bills(ledger.engine, bills_of[periods[-1]], months[-1])
        paid = pay_month(ledger.engine, dues(ledger.engine, periods[-1], history),
                         days_of(months[-1], today, skip=tuple(days)), {d: args.day_payments for d in days})
        setup[f"{name}_this_month_s"], setup[f"{name}_this_month_payments"] = round(time.perf_counter() - t0, 1), paid
        print(f"set-up {name}, this month: {paid:,} payments, {setup[f'{name}_this_month_s']} s", flush=True)

    # measured in turns, the order swapped each round: the machine's drift between the phases falls
    # on both alike
    out = {"month": [], "year": []}
    for r, customers in enumerate(rounds):
        order = ("month", "year") if r % 2 == 0 else ("year", "month")
        for name in order:
            out[name].append(measure(phases[name], customers, days[r], workdir, args, f"{name} {r + 1}"))
    year = phases["year"].engine
    with year.connect() as conn:
        parts = [p.__dict__ for p in partitions.partitions(conn, exact=True)]
    t0 = time.perf_counter()
    failures = verify(year) + verify(phases["month"].engine)
    setup["verify_s"], setup["verify_failures"] = round(time.perf_counter() - t0, 1), failures[:5]
    res = {**out, "rows_month": table_rows(phases["month"].engine), "rows_year": table_rows(year),
           "partitions": parts, "setup": setup}
    for ledger in phases.values():
        ledger.engine.dispose()
    return res


FIGURES = (("counter message latency p50 ms", ("counter", "latency_ms", "p50")),
           ("counter message latency p99 ms", ("counter", "latency_ms", "p99")),
           ("counter payment 0200 latency p50 ms", ("counter", "payment_latency_ms", "p50")),
           ("counter payment 0200 latency p99 ms", ("counter", "payment_latency_ms", "p99")),
           ("reconciliation, s", ("recon", "seconds")))


def figure(phase: dict, path: tuple) -> float:
    for key in path:
        phase = phase[key]
    return phase


def verdict(r: float) -> str:
    """A year/month ratio against the target."""
    return f"{r:5.2f}x {'ok' if r <= TARGET_RATIO else 'ABOVE'}"


def report(res: dict, args, before: dict, after: dict) -> None:
    ms, ys = res["month"], res["year"]
    print(f"\n{machine.describe(before)} (before)\n{machine.describe(after)} (after)")
    print(f"sample: {args.customers:,} customers x {args.months} months, one bill each a month, all paid "
          f"(the utility: 4,300,000 customers; scale {args.customers / 4_300_000:.4f})")
    print(f"{len(ms)} rounds, month and year in turns, the order swapped each round; month and year: the "
          f"medians of the rounds; ratio: the geometric mean of the rounds' year/month (an even number of "
          f"rounds cancels which phase ran second), then each round's")
    print(f"{'operation':44s} {'month':>10s} {'year':>10s}   ratio (target <= {TARGET_RATIO:.2f}x)   rounds")
    for name, path in FIGURES:
        a = statistics.median(figure(m, path) for m in ms)
        b = statistics.median(figure(y, path) for y in ys)
        each = [figure(y, path) / figure(m, path) for m, y in zip(ms, ys) if figure(m, path)]
        mean = statistics.geometric_mean(each) if each else float("inf")
        print(f"{name:44s} {a:10.2f} {b:10.2f}   {verdict(mean)}            {' '.join(f'{r:.2f}' for r in each)}")
    print(f"{'load average (1 min) after the phases':44s} {max(m['load_average'] for m in ms):10.2f} "
          f"{max(y['load_average'] for y in ys):10.2f}   the highest, on {os.cpu_count()} CPUs")
    print(f"paced at {args.rate} payments/s for {args.duration} s a round: "
          f"{sum(m['counter']['payments'] for m in ms)} / {sum(y['counter']['payments'] for y in ys)} payments; "
          f"mismatches {sum(m['counter']['mismatches'] for m in ms)} / {sum(y['counter']['mismatches'] for y in ys)}; "
          f"reconciled {ms[0]['recon']['lines']:,} / {ys[0]['recon']['lines']:,} lines a round, items "
          f"{[m['recon']['counts'] for m in ms]} / {[y['recon']['counts'] for y in ys]}")
    print("rows:  " + ", ".join(f"{t} {res['rows_month'][t]:,} / {n:,}" for t, n in res["rows_year"].items()))
    print("partitions of the year (rows): " + ", ".join(f"{p['name']} {p['rows']:,}" for p in res["partitions"] if p["rows"]))
    print(f"set-up and ledger verify: {json.dumps(res['setup'])}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--rate", type=int, default=100, help="counter payments per second, paced")
    ap.add_argument("--duration", type=int, default=20, help="seconds of paced counter payments per phase")
    ap.add_argument("--day-payments", type=int, default=5_000, help="payments in each reconciled day's file")
    ap.add_argument("--rounds", type=int, default=4, help="measurements of each phase, in turns (even: each "
                                                          "phase runs first as often as second)")
    ap.add_argument("--keep-schema", action="store_true", help="keep the PostgreSQL schemas (their names are printed)")
    args = ap.parse_args(argv)
    if args.customers < args.rounds * (sum(served(args)) + args.day_payments) + 2:
        ap.error("--customers must cover, each round, 1.25 x rate x duration and --day-payments")
    before = machine.speed()
    print(f"{machine.describe(before)}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    server = os.environ.get("GRIDPAY_BENCH_PG_URL", PG_DEFAULT)
    with tempfile.TemporaryDirectory(prefix="gridpay-bench-history-") as tmp:
        res = with_schema(server, lambda month: with_schema(
            server, lambda year: run(month, year, args, Path(tmp)), keep=args.keep_schema), keep=args.keep_schema)
    after = machine.speed()
    report(res, args, before, after)
    print(json.dumps({"bench": "history", "customers": args.customers, "months": args.months,
                      "machine": {"before": before, "after": after, "load_average": os.getloadavg()[0]}, **res},
                     default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
