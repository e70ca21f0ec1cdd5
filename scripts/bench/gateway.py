"""Gateway bench: payments per second through `gridpay serve`, driven by `gridpay sim counter` over loopback.

    .venv/bin/python -m scripts.bench.gateway [--customers 40000] [--only sqlite|postgresql]

For each database (embedded SQLite, then PostgreSQL) it seeds distinct customers with one bill
each, starts the gateway as its own process and runs the load generator as another:
- saturation: inquiry + payment pairs for distinct customers as fast as they go (every payment
  durable before its 00), printing payments/s and latency percentiles;
- paced: 500 payments/s for a fixed time, printing the latency percentiles (target p99 <= 50 ms).
In the same run it measures the codec-only rate (scripts/bench/codec.py) as the ceiling: a
payment costs two request/response pairs, so the ceiling in payments/s is half the codec's rate.
Targets on the 2-core machine, load generator included: >= 1,500 payments/s on SQLite,
>= 1,000/s on PostgreSQL. PostgreSQL: GRIDPAY_BENCH_PG_URL (a schema is created and dropped here).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from sqlalchemy import create_engine, text  # noqa: E402

from scripts.bench import codec, machine  # noqa: E402
from tests.ledger_helpers import add_banks, new_engine, setup_customers  # noqa: E402
from tests.process_harness import GatewayProcess  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def seed(url: str, customers: int, history: int, workdir: Path) -> dict[str, Path]:
    engine = new_engine(url)
    with engine.begin() as conn:
        add_banks(conn, "01020000", "01030000", "01050000")
    files = {}
    for name, count, prefix in (("history", history, "H"), ("saturation", customers, "S"), ("paced", 6000, "P")):
        files[name] = workdir / f"{name}.txt"
        files[name].write_text("\n".join(setup_customers(engine, count, bills_each=1, prefix=prefix)))
    engine.dispose()
    return files


def settle(url: str, analyze: bool = False) -> None:
    """Before a measured phase: a checkpoint, so the phase does not pay for the writes of the one
    before it (this machine's PostgreSQL is checkpointing the schemas every test and bench run
    creates and drops; a checkpoint's fsync stalled commits for ~40 ms); and with analyze, table
    statistics as a production database keeps them (autovacuum is off here, and without
    statistics the planner guesses that a lookup of 100 keys returns half the table)."""
    engine = create_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            if analyze:
                conn.exec_driver_sql("ANALYZE")
            conn.exec_driver_sql("CHECKPOINT")
        else:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()


def drive(gw: GatewayProcess, customers: Path, workdir: Path, *args: str) -> dict:
    run = gw.sim("ascii", "01020000", "ascii", customers, workdir / "receipts.csv", *args)
    if run.returncode not in (0, 1) or not run.stdout.strip():
        raise RuntimeError(f"load generator failed: {run.stdout} {run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def bench_database(name: str, url: str, customers: int, history: int, window: int = 24) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"gridpay-bench-{name}-") as tmp:
        workdir = Path(tmp)
        files = seed(url, customers, history, workdir)
        gw = GatewayProcess(workdir, url).start()
        try:
            # warm-up, and a history of payments in the tables before the statistics are taken
            drive(gw, files["history"], workdir, "--count", str(history), "--connections", "8", "--window", "24")
            settle(url, analyze=True)
            saturation = drive(gw, files["saturation"], workdir, "--count", str(customers), "--connections", "8",
                               "--window", str(window))
            settle(url)
            paced = drive(gw, files["paced"], workdir, "--rate", "500", "--duration", "10", "--count", "6000",
                          "--connections", "8", "--window", "16")
        finally:
            gw.terminate()
    return {"saturation": saturation, "paced": paced}


def pg_schema_url(base: str) -> tuple[str, str]:
    schema = f"bench_gw_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    admin.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(base: str, schema: str) -> None:
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'drop schema "{schema}" cascade'))
    admin.dispose()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=40_000)
    parser.add_argument("--history", type=int, default=10_000, help="payments made (and analyzed) before the runs")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--window", type=int, default=24,
                        help="requests each of the 8 load-generator connections keeps outstanding at saturation")
    args = parser.parse_args(argv)
    speed_before = machine.speed()
    print(machine.describe(speed_before), "(before)", flush=True)
    ceiling = codec.run(2.0)["ascii"]["full_per_s"] / 2
    results, targets = {}, {"sqlite": 1500, "postgresql": 1000}
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = bench_database("sqlite", f"sqlite:///{tmp}/bench.db", args.customers,
                                               args.history, args.window)
    if args.only in (None, "postgresql"):
        base = os.environ.get("GRIDPAY_BENCH_PG_URL", DEFAULT_PG)
        url, schema = pg_schema_url(base)
        try:
            results["postgresql"] = bench_database("postgresql", url, args.customers, args.history, args.window)
        finally:
            drop_schema(base, schema)
    speed_after = machine.speed()
    print(machine.describe(speed_before), "(before)")
    print(machine.describe(speed_after), "(after)")
    print(f"codec-only ceiling (ascii, full path of one request/response, halved per payment): "
          f"{ceiling:,.0f} payments/s")
    for name, res in results.items():
        sat, paced = res["saturation"], res["paced"]
        pl = paced["payment_latency_ms"]
        print(f"{name:10s} saturation {sat['payments_per_s']:>8,.1f} payments/s "
              f"(target >= {targets[name]:,}: {'ok' if sat['payments_per_s'] >= targets[name] else 'BELOW'}), "
              f"{sat['payments']} payments, {sat['payments_per_s'] / ceiling:.2f} of the codec ceiling; "
              f"latency per message ms p50 {sat['latency_ms']['p50']} p95 {sat['latency_ms']['p95']} "
              f"p99 {sat['latency_ms']['p99']} max {sat['latency_ms']['max']}; mismatches {sat['mismatches']}")
        print(f"{name:10s} paced at {paced['payments_per_s']:,.1f} payments/s: payment 0200 latency ms "
              f"p50 {pl['p50']} p95 {pl['p95']} p99 {pl['p99']} max {pl['max']} "
              f"(target p99 <= 50: {'ok' if pl['p99'] <= 50 else 'ABOVE'}); mismatches {paced['mismatches']}")
    print(json.dumps({"bench": "gateway", "ceiling_payments_per_s": round(ceiling, 1),
                      "machine": {"before": speed_before, "after": speed_after}, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
