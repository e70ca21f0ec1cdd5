"""Ledger posting bench: counter payments per second through the group commit as production runs it.

    .venv/bin/python -m scripts.bench.ledger [--customers 10000] [--only sqlite|postgresql]

Sets up N customers with one or two bills each (outside the timing), then posts one counter
payment per customer (amount = what is due) through the posting worker the gateway starts
(``runtime.worker_process.BatchProcess`` running ``ledger.group_commit.PostingWorker`` in a process
of its own, submitted from a Twisted reactor as ``gateway.ledger_port`` does); a payment counts
when its answer arrives, i.e. after its commit. Also
measures the floor on each database: a bare single-row INSERT + COMMIT loop with the same
durability settings (ledger.db.make_engine). PostgreSQL: GRIDPAY_BENCH_PG_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test), in a schema created and dropped here.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from runtime.worker_process import BatchProcess  # noqa: E402
from config.clock import Clock  # noqa: E402
from ledger.db import make_engine  # noqa: E402
from ledger.verify import verify  # noqa: E402
from tests.ledger_helpers import add_banks, new_engine, payment, setup_customers  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BANKS = ("0102", "0103", "0104", "0105")


def floor(url: str, n: int) -> float:
    """Single-row INSERT + COMMIT per iteration: durable commits per second."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("create table bench_floor (id integer primary key, v varchar(20))"))
    started = time.perf_counter()
    for i in range(n):
        with engine.begin() as conn:
            conn.execute(text("insert into bench_floor (id, v) values (:i, :v)"), {"i": i, "v": "x"})
    rate = n / (time.perf_counter() - started)
    engine.dispose()
    return rate


async def run(reactor, url: str, customers: int, max_batch: int) -> dict:
    engine = new_engine(url)
    with engine.begin() as conn:
        add_banks(conn, *BANKS)
    half = customers // 2
    one = setup_customers(engine, half, bills_each=1, prefix="A")
    two = setup_customers(engine, customers - half, bills_each=2, prefix="B")
    postings = [payment(BANKS[i % len(BANKS)], c, 10_050, stan=f"{i % 1_000_000:06d}") for i, c in enumerate(one)]
    postings += [payment(BANKS[i % len(BANKS)], c, 20_100, stan=f"{(half + i) % 1_000_000:06d}")
                 for i, c in enumerate(two)]
    sizes: list[int] = []
    clock = Clock()
    config = {"url": url, "statement_timeout_s": 5.0, "timezone": clock.timezone, "cutoff": clock.cutoff}
    committer = BatchProcess(reactor, "ledger.group_commit:PostingWorker", config, name="bench-committer",
                             max_batch=max_batch, max_wait_s=0.001, resend=True, on_batch=lambda n, s: sizes.append(n))
    await committer.start()
    started = time.perf_counter()
    try:
        results = await defer.gatherResults([committer.submit(p) for p in postings])
        elapsed = time.perf_counter() - started
    finally:
        await committer.stop()
    codes: dict[str, int] = {}
    for o in results:
        codes[o.response_code] = codes.get(o.response_code, 0) + 1
    failures = verify(engine)
    engine.dispose()
    return {"rate": len(postings) / elapsed, "elapsed": elapsed, "codes": codes, "batches": len(sizes),
            "mean_batch": sum(sizes) / max(1, len(sizes)), "verify": failures}


def report(name: str, res: dict, floor_rate: float) -> None:
    print(f"{name:10s} {res['rate']:8.0f} payments/s  ({res['elapsed']:.2f} s, {res['batches']} commits, "
          f"mean batch {res['mean_batch']:.1f}, codes {res['codes']}, verify {'OK' if not res['verify'] else res['verify'][:3]})")
    print(f"{'':10s} {floor_rate:8.0f} single-row commits/s (floor); ratio payments/floor = {res['rate'] / floor_rate:.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=8, help="ignored: the reactor submits, as in the gateway")
    ap.add_argument("--max-batch", type=int, default=512)
    ap.add_argument("--floor-n", type=int, default=3_000)
    ap.add_argument("--only", choices=("sqlite", "postgresql"))
    args = ap.parse_args(argv)
    task.react(lambda reactor: defer.ensureDeferred(bench(reactor, args)))


async def bench(reactor, args) -> None:
    """Raises SystemExit(1) (the exit code) when a run's answers or the ledger are not as they must be."""
    ok = True
    print(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"{args.customers} customers, max batch {args.max_batch}")
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            res = await run(reactor, f"sqlite:///{tmp}/bench.db", args.customers, args.max_batch)
            fl = floor(f"sqlite:///{tmp}/floor.db", args.floor_n)
        report("SQLite", res, fl)
        ok &= not res["verify"] and res["codes"] == {"00": args.customers}
    if args.only in (None, "postgresql"):
        server = os.environ.get("GRIDPAY_BENCH_PG_URL", DEFAULT_PG)
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'create schema "{schema}"'))
        url = f"{server}{'&' if '?' in server else '?'}options=-csearch_path%3D{schema}"
        try:
            res = await run(reactor, url, args.customers, args.max_batch)
            fl = floor(url, args.floor_n)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'drop schema "{schema}" cascade'))
            admin.dispose()
        report("PostgreSQL", res, fl)
        ok &= not res["verify"] and res["codes"] == {"00": args.customers}
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
