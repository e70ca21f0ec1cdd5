"""API bench: customer look-ups and single debits through `gridpay api`, beside the gateway's inquiry rate.

    .venv/bin/python -m scripts.bench.api [--customers 100000] [--db postgresql|sqlite] [--clients 8]
                                          [--seconds 10] [--debits 200] [--instances 2]

Set-up (not timed): a fresh database (a PostgreSQL schema of its own on GRIDPAY_BENCH_PG_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test, or an SQLite file), migrated; ``--customers``
customers with a bill each through the real import path (``ledger.demo_data`` files and
``gridpay ledger import``, as scripts/bench/imports.py); ``--debits`` customers with a bill and an
active agreement with the debit bank; a client API key with ``customer.read`` and ``debit.single``.

Timed, in one run, each against its own processes:
- look-ups: `gridpay api` (a process) and ``--clients`` concurrent httpx clients asking
  ``GET /v1/customers/{customer_no}`` of random customers for ``--seconds``: look-ups/s, p50, p99;
  then the same through HAProxy in front of ``--instances`` API processes (config/haproxy/gridpay-api.cfg's
  balancing and health check, without TLS, on local ports), when haproxy is installed;
- single debits: a `gridpay sim bank` and a `gridpay engine` (processes) and the same clients
  each starting ``POST /v1/debits`` with ``wait_s`` for distinct customers until every one has its
  answer: debits/s end to end (API -> database -> engine -> bank -> database -> API), p50, p99;
- the gateway: `gridpay serve` and `gridpay sim counter` for ``--seconds``
  (scripts/bench/gateway.py's ``drive``): inquiries/s, each followed by its payment.
The machine's speed (scripts/bench/machine.py) is printed before and after. The comparison they are
judged by: a look-up is one read of a customer, as an inquiry is; the gateway's inquiry rate is
what this machine does for the banks' counters, and a look-up should not be far below it; a single
debit is an operator's or a voice system's request, a few per second is ample. Nothing asserts on time.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import httpx  # noqa: E402
from sqlalchemy import select  # noqa: E402

from config.settings import environment_for  # noqa: E402
from scripts.bench import gateway, haproxy_local, imports, machine  # noqa: E402
from tests.ledger_helpers import new_engine, setup_customers  # noqa: E402
from tests.packaging_harness import free_port  # noqa: E402
from tests.process_harness import GatewayProcess  # noqa: E402
from tests.test_engine_process import Procs  # noqa: E402
from tests.test_engine_support import BANK, ZMK_ENV, ZMK_HEX, add_agreements, settings_tree  # noqa: E402

AS_OF = date(2026, 11, 1)
DEBIT = {"timeout_s": 10.0}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def figures(name: str, done: int, seconds: float, latencies: list[float], **more) -> dict:
    return {name: done, "seconds": round(seconds, 2), "per_s": round(done / seconds, 1) if seconds else 0.0,
            "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99), **more}


def prepare(url: str, customers: int, debits: int, gateway_customers: int, workdir: Path) -> dict:
    """The customers (imported), the debit customers, the gateway's customers and a client key."""
    from ledger.demo_data import write_demo_files
    from ledger.identity import ChangedBy, add_client, add_key
    from ledger.schema import customers as customers_table
    from ledger_helpers import add_banks
    from identity_helpers import FAST
    from config.clock import SYSTEM_CLOCK

    files = write_demo_files(workdir / "billing", customers=customers, seed=1, as_of=AS_OF, bills=customers)
    imports.run_db("import", url, files, ["customers", "bills"], workdir, verify=False)
    engine = new_engine(url)
    now = SYSTEM_CLOCK.now()
    with engine.begin() as conn:
        add_banks(conn, BANK, "01030000", "01050000")
        # the import made the database's first administrator (scripts/operator_session.py): it adds the client
        admin = ChangedBy("operator:bench-admin", "bench")
        add_client(conn, now, admin, "bench-client", "Bench client")
        key, _ = add_key(conn, now, admin, "bench-client", ["customer.read", "debit.single"], now + timedelta(days=1),
                         FAST)
        numbers = list(conn.execute(select(customers_table.c.customer_no)).scalars())
    debit_customers = setup_customers(engine, debits, bills_each=1, prefix="D")
    add_agreements(engine, debit_customers)
    counter_file = workdir / "counter.txt"
    counter_file.write_text("\n".join(setup_customers(engine, gateway_customers, bills_each=1, prefix="G")))
    engine.dispose()
    return {"key": key, "customers": numbers, "debit_customers": debit_customers, "counter_file": counter_file}


def start_api(env: dict, workdir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*imports.gridpay(), "api", "--log-level", "WARNING"], env=env, stdout=subprocess.PIPE,
                            stderr=open(workdir / "api.err", "wb"), text=True)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"gridpay api did not start: {line}{(workdir / 'api.err').read_text()}")
    base = line.split("listening on ")[1].split()[0]
    if not ready(base):     # the line can come before the server takes connections: a loaded machine saw refusals
        proc.kill()
        raise SystemExit(f"gridpay api did not become ready: {(workdir / 'api.err').read_text()}")
    return proc, base


def ready(base: str) -> bool:
    """Whether ``base``/readyz answers 200 within about ten seconds."""
    for _ in range(100):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def start_haproxy(bases: list[str], workdir: Path) -> tuple[subprocess.Popen, str] | None:
    """HAProxy (foreground) on config/haproxy/gridpay-api.cfg made local (scripts/bench/haproxy_local.py),
    balancing over the API processes at ``bases``; None without haproxy."""
    if not haproxy_local.installed():
        return None
    port = free_port()
    servers = [haproxy_local.Server(f"api{n}", base.split("//")[1]) for n, base in enumerate(bases, 1)]
    config = haproxy_local.local_config(haproxy_local.API_CFG.read_text(), {"gridpay_api": port},
                                        {"gridpay_api": servers})
    proc = haproxy_local.start(config, workdir)
    base = f"http://127.0.0.1:{port}"
    if ready(base):
        return proc, base
    proc.kill()
    raise SystemExit(f"haproxy did not start: {(workdir / 'haproxy.err').read_text()}")


def in_threads(clients: int, work) -> float:
    """Run ``work(client_no)`` in ``clients`` threads; the wall time."""
    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def look_ups(base: str, key: str, numbers: list[str], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    failed = []

    def work(n: int) -> None:
        rnd, end = random.Random(n), time.perf_counter() + seconds
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    answer = http.get(f"/v1/customers/{rnd.choice(numbers)}")
                except httpx.HTTPError as exc:
                    failed.append(repr(exc))
                    return
                latencies.append(time.perf_counter() - t0)
                if answer.status_code != 200:
                    failed.append(answer.status_code)

    wall = in_threads(clients, work)
    return figures("look_ups", len(latencies), wall, latencies, failed=len(failed), errors=sorted(map(str, failed))[:3])


def single_debits(base: str, key: str, numbers: list[str], clients: int) -> dict:
    todo, latencies, outcomes = list(numbers), [], {}
    lock = threading.Lock()

    def work(n: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
            while True:
                with lock:
                    if not todo:
                        return
                    customer = todo.pop()
                t0 = time.perf_counter()
                answer = http.post("/v1/debits", json={"customer_no": customer, "channel": "voice", "wait_s": 60},
                                   headers={"Idempotency-Key": uuid.uuid4().hex})
                latencies.append(time.perf_counter() - t0)
                outcome = answer.json().get("outcome", f"http {answer.status_code}")
                with lock:
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1

    wall = in_threads(clients, work)
    return figures("debits", outcomes.get("approved", 0), wall, latencies, outcomes=outcomes)


def bench(url: str, args, workdir: Path) -> dict:
    seeded = prepare(url, args.customers, args.debits, args.gateway_customers, workdir)
    procs = Procs(workdir, url)
    try:
        port = procs.sim({f"A{c}": (10_000_000, 0, "A") for c in seeded["debit_customers"]})
        tree = settings_tree(url, port, str(workdir / "drop"), **DEBIT)
        tree["api"] = {"host": "127.0.0.1", "port": 0, "single_debit_wait_max_s": 60}
        procs.env = {**os.environ, **environment_for(tree), ZMK_ENV: ZMK_HEX, "GRIDPAY_CONFIG": ""}
        api, base = start_api(procs.env, workdir)
        procs.all.append(api)
        gateway.settle(url, analyze=True)
        results = {"look_ups": look_ups(base, seeded["key"], seeded["customers"], args.clients, args.seconds)}
        if api.poll() is not None:
            raise SystemExit(f"gridpay api exited ({api.returncode}): {(workdir / 'api.err').read_text()[-3000:]}")
        if args.instances > 1:
            more = [start_api(procs.env, workdir) for _ in range(args.instances - 1)]
            procs.all.extend(proc for proc, _ in more)
            balanced = start_haproxy([base, *(b for _, b in more)], workdir)
            if balanced is not None:
                procs.all.append(balanced[0])
                results["balanced"] = {"instances": args.instances, **look_ups(
                    balanced[1], seeded["key"], seeded["customers"], args.clients, args.seconds)}
            for proc, _ in more:
                proc.terminate()
        procs.engine("bench-engine")
        results["single_debits"] = single_debits(base, seeded["key"], seeded["debit_customers"], args.clients)
    finally:
        procs.close()
    gw = GatewayProcess(workdir, url).start()
    try:
        counter = gateway.drive(gw, seeded["counter_file"], workdir, "--duration", str(args.seconds), "--count",
                                str(args.gateway_customers), "--connections", str(args.clients), "--window", "8")
    finally:
        gw.terminate()
    results["gateway"] = {"inquiries_per_s": counter["payments_per_s"], "messages_per_s": counter["messages_per_s"],
                          "mismatches": counter["mismatches"]}
    return results


def report(db: str, customers: int, clients: int, results: dict) -> None:
    look, deb, gw = results["look_ups"], results["single_debits"], results["gateway"]
    print(f"{db}, {customers:,} customers, {clients} clients:")
    print(f"  customer look-ups  {look['per_s']:>9,.1f}/s  p50 {look['p50_ms']} ms  p99 {look['p99_ms']} ms  "
          f"({look['look_ups']:,} in {look['seconds']} s, {look['failed']} failed)")
    if "balanced" in results:
        bal = results["balanced"]
        print(f"  look-ups, {bal['instances']} APIs {bal['per_s']:>7,.1f}/s  p50 {bal['p50_ms']} ms  p99 {bal['p99_ms']} ms  "
              f"(through HAProxy; {bal['per_s'] / look['per_s']:.2f}x one API, {bal['failed']} failed)")
    print(f"  single debits      {deb['per_s']:>9,.1f}/s  p50 {deb['p50_ms']} ms  p99 {deb['p99_ms']} ms  "
          f"end to end with wait ({deb['outcomes']})")
    print(f"  gateway inquiries  {gw['inquiries_per_s']:>9,.1f}/s  (each followed by its payment; "
          f"{gw['messages_per_s']:,.1f} messages/s, {gw['mismatches']} mismatches)")
    best = max(look["per_s"], results.get("balanced", {}).get("per_s", 0.0))
    ratio = look["per_s"] / gw["inquiries_per_s"] if gw["inquiries_per_s"] else 0.0
    print(f"  look-ups are {ratio:.2f} of the gateway's inquiry rate (one API), "
          f"{best / gw['inquiries_per_s'] if gw['inquiries_per_s'] else 0.0:.2f} at best")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    ap.add_argument("--clients", type=int, default=8, help="concurrent httpx clients (and counter connections)")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long the look-ups and the gateway run")
    ap.add_argument("--debits", type=int, default=200, help="single debits, one per customer")
    ap.add_argument("--instances", type=int, default=2, help="API processes behind HAProxy for the second look-up run")
    ap.add_argument("--gateway-customers", type=int, default=20_000)
    ap.add_argument("--keep", help="work (logs, SQLite database) in a directory made here and keep it")
    args = ap.parse_args(argv)
    before = machine.speed()
    print(machine.describe(before), "(before)", flush=True)
    with tempfile.TemporaryDirectory(prefix="gridpay-bench-api-", dir=args.keep) as tmp:
        workdir = Path(tmp)
        if args.keep:
            workdir = Path(tempfile.mkdtemp(prefix="gridpay-bench-api-", dir=args.keep))
        if args.db == "sqlite":
            results = bench(f"sqlite:///{workdir}/bench.db", args, workdir)
        else:
            results = imports.with_schema(os.environ.get("GRIDPAY_BENCH_PG_URL", imports.PG_DEFAULT),
                                          lambda url: bench(url, args, workdir))
    after = machine.speed()
    print(machine.describe(before), "(before)")
    print(machine.describe(after), "(after)")
    report(args.db, args.customers, args.clients, results)
    print(json.dumps({"bench": "api", "db": args.db, "customers": args.customers, "clients": args.clients,
                      "machine": {"before": before, "after": after}, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
