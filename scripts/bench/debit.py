"""Debit engine throughput: one batch of N debits against ``gridpay sim bank`` (20 ms mean
latency, exponential), first with 1 engine process, then with 2, on PostgreSQL.

    .venv/bin/python -m scripts.bench.debit [--debits 100000] [--engines 1,2] [--latency-ms 20]
        [--in-flight 32] [--chunk 1000] [--refuse-mac-rate 0.01] [--profile DIR]

The bank's window: each engine opens 2 connections to the bank and keeps at most 32 debits
outstanding (``max_in_flight``: 16 a connection, what a bank host typically agrees to). That is
what one engine can do against a bank whatever its CPU - 32 / 20 ms = 1,600 debits/s at best -
and what a second engine adds to: its own connections and window. ``--in-flight 512`` lifts the
window; then on this 2-core machine every engine, the simulator and PostgreSQL share two cores
and the figures measure the machine rather than the engines.

Each run gets a fresh PostgreSQL schema (GRIDPAY_TEST_PG_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test), N customers with one bill and an agreement,
a fresh simulator process and N debits in one batch. The clock runs from the moment every engine
is up to the moment every chunk is done. Printed per run: debits/s, and where the CPU went
(seconds of CPU per 1,000 debits for the engines' reactor processes, their writer processes, the
simulator and PostgreSQL, read with psutil); then the ratio. With --profile DIR each engine writes
a cProfile of its reactor thread (GRIDPAY_WORKER_PROFILE=DIR profiles the writers). At the end it
checks exactly-once: every debit approved, the bank applied each once, and the ledger verifies.

The simulator follows docs/spec/INTERFACE.md §4.7 to the letter (it answers a repeated identity
from its cache, and a different request under a known identity or a known RRN with 94); each run
prints the 94s it gave (there must be none), the A0s, and the debits the engines sent again under
a new identity after an A0. ``--refuse-mac-rate R`` makes the simulator answer that share of new
debits A0, as a key race between engines would, to exercise that path.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

import psutil  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from config.clock import SYSTEM_CLOCK, Clock  # noqa: E402
from engines.tables import debit_chunks  # noqa: E402
from ledger.schema import debits  # noqa: E402
from ledger.verify import verify  # noqa: E402
from scripts.bench import machine  # noqa: E402

BANK = "01020000"
ZMK = "0123456789ABCDEFFEDCBA9876543210"
PG = os.environ.get("GRIDPAY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def gridpay(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridpay", *args]


def env_for(url: str, port: int, drop: str, in_flight: int) -> dict[str, str]:
    from config.settings import environment_for

    tree = {"database": {"url": url, "pool_size": 8}, "drop_dir": drop, "engines": {"metrics_port_base": 0},
            "banks": {BANK: {"name": "bench", "dialect": "ascii", "zmk_env": "BENCH_ZMK", "channels": ["debit"],
                             "debit": {"mode": "online", "host": "127.0.0.1", "port": port, "connections": 2,
                                       "timeout_s": 30.0, "max_in_flight": in_flight,
                                       "max_per_second": 100000.0}}}}
    return {**os.environ, **environment_for(tree), "BENCH_ZMK": ZMK, "PYTHONPATH": str(ROOT)}


def cpu_seconds(procs) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def postgres_cpu() -> float:
    return cpu_seconds(p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres"))


def cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of a process, and of its children (an engine's writer process)."""
    try:
        root = psutil.Process(pid)
        return cpu_seconds([root]), cpu_seconds(root.children(recursive=True))
    except psutil.Error:
        return 0.0, 0.0


class Analyzer(threading.Thread):
    """Statistics as a production database has them. There the tables hold millions of rows and
    autovacuum keeps their statistics; here they start empty, and a table without statistics
    gets default estimates: a lookup of 75 RRNs looked like a third of ``payments`` and was a
    scan of all of it, once per writer batch. So a table is analyzed as soon as it holds 1,000
    rows (checked every 2 s): from then on its statistics scale with it (a unique column's
    distinct count is stored as a fraction of the rows). After that, autovacuum's own default
    rule and interval (autoanalyze is off on this machine's PostgreSQL): every 60 s, each table
    changed by more than 50 rows + 10 % since its last analysis. Analyzing every table that grew
    10 % every 15 s, as this bench once did, was a sixth of PostgreSQL's CPU in the run."""

    FIRST = ("SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
             "WHERE s.schemaname = current_schema() AND c.reltuples < 1000 AND s.n_live_tup >= 1000")
    DUE = ("SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() "
           "AND n_mod_since_analyze > 50 + 0.1 * n_live_tup")

    def __init__(self, url: str, check_s: float = 2.0, naptime_s: float = 60.0):
        super().__init__(daemon=True, name="bench-analyze")
        self.url, self.check_s, self.naptime_s, self.stop = url, check_s, naptime_s, threading.Event()

    def run(self) -> None:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        next_round = time.monotonic()
        try:
            while True:
                due = next_round <= time.monotonic()
                with engine.connect() as conn:
                    for table in conn.exec_driver_sql(self.DUE if due else self.FIRST).scalars().all():
                        conn.exec_driver_sql(f'ANALYZE "{table}"')
                if due:
                    next_round += self.naptime_s
                if self.stop.wait(self.check_s):
                    return
        finally:
            engine.dispose()


def run(n: int, engines: int, latency_ms: float, chunk: int, profile: str | None, in_flight: int,
        chunks_ahead: int = 3, refuse_mac_rate: float = 0.0) -> dict:
    from test_engine_support import add_agreements
    from engines.plans import build_batch
    from ledger_helpers import add_banks, new_engine, setup_customers

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    url = f"{PG}{'&' if '?' in PG else '?'}options=-csearch_path%3D{schema}"
    tmp = Path(tempfile.mkdtemp(prefix="gridpay-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        t = time.perf_counter()
        db = new_engine(url)
        with db.begin() as conn:
            add_banks(conn, BANK)
        numbers = setup_customers(db, n, bills_each=1, prefix="B")
        add_agreements(db, numbers, bank=BANK)
        (tmp / "accounts.csv").write_text("account_no,balance,limit,status\n"
                                          + "".join(f"A{c},100000000,0,A\n" for c in numbers))
        with db.begin() as conn:
            s = build_batch(conn, bank_code=BANK, at=SYSTEM_CLOCK.now(), clock=Clock(), chunk_size=chunk)
        print(f"  set-up: {n} customers, batch {s.batch_id} of {s.debits} debits in {s.chunks} chunks "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
        env = env_for(url, 0, str(tmp / "drop"), in_flight)
        sim = subprocess.Popen(gridpay("sim", "bank", "--bank", BANK, "--zmk-env", "BENCH_ZMK", "--accounts",
                                       str(tmp / "accounts.csv"), "--latency-ms", str(latency_ms),
                                       "--latency-dist", "exponential", "--seed", "5",
                                       "--refuse-mac-rate", str(refuse_mac_rate)),
                               env=env, stdout=subprocess.PIPE, text=True)
        procs.append(sim)
        port = json.loads(sim.stdout.readline())["port"]
        env = env_for(url, port, str(tmp / "drop"), in_flight)
        if profile:
            os.makedirs(profile, exist_ok=True)
        eng_procs = []
        for i in range(engines):
            e = dict(env)
            if profile:
                e["GRIDPAY_ENGINE_PROFILE"] = str(Path(profile) / f"engine{engines}-{i}.prof")
            p = subprocess.Popen(gridpay("engine", "--id", f"bench-{i}", "--poll", "0.2", "--log-level", "WARNING",
                                         "--chunks-ahead", str(chunks_ahead),
                                         "--log-file", str(tmp / f"engine{i}.log")),
                                 env=e, stdout=subprocess.PIPE, text=True)
            procs.append(p)
            eng_procs.append(p)
        for p in eng_procs:
            line = p.stdout.readline()
            if "running" not in line:
                raise RuntimeError(f"engine did not start: {line!r}; see {tmp}")
        analyzer = Analyzer(url)
        analyzer.start()
        cpu0 = {p.pid: cpu(p.pid) for p in eng_procs + [sim]}
        pg0 = postgres_cpu()
        t0 = time.perf_counter()
        with db.connect() as conn:
            # the batch's 100 chunks, not its 100,000 debits: the bench's own polling must not
            # load the database it measures (a chunk is done once every debit in it is final)
            while conn.execute(select(func.count()).select_from(debit_chunks)
                               .where(debit_chunks.c.state != "done")).scalar_one():
                conn.commit()
                time.sleep(0.2)
            left = conn.execute(select(func.count()).select_from(debits)
                                .where(debits.c.state.in_(("pending", "sent")))).scalar_one()
            assert left == 0, f"{left} debits pending or sent with every chunk done"
        elapsed = time.perf_counter() - t0
        analyzer.stop.set()
        cpu_used = {pid: tuple(now - then for now, then in zip(cpu(pid), c)) for pid, c in cpu0.items()}
        pg_used = postgres_cpu() - pg0
        stats = []
        for p in eng_procs:
            p.send_signal(signal.SIGTERM)
            out, _ = p.communicate(timeout=120)
            stats.append(json.loads(out.strip().splitlines()[-1]))
        sim.send_signal(signal.SIGTERM)
        sim_out, _ = sim.communicate(timeout=60)
        summary = json.loads(sim_out.strip().splitlines()[-1])
        with db.connect() as conn:
            final = dict(conn.execute(select(debits.c.state, func.count()).group_by(debits.c.state)).all())
        problems = verify(db)
        k = n / 1000.0
        result = {
            "engines": engines, "debits": s.debits, "seconds": round(elapsed, 2), "per_second": round(s.debits / elapsed),
            "states": final, "bank_applied": summary["applied"], "ledger_verifies": not problems,
            "bank_94": sum(summary["counters"].get(k, 0) for k in ("duplicate_identity_94", "duplicate_rrn_94")),
            "bank_A0": sum(summary["counters"].get(k, 0) for k in ("mac_refused", "mac_failures")),
            "resent_after_A0": sum(st["stats"].get("resent_after_A0", 0) for st in stats),
            "cpu_s_per_1000": {"engines": round(sum(cpu_used[p.pid][0] for p in eng_procs) / k, 3),
                               "writers": round(sum(cpu_used[p.pid][1] for p in eng_procs) / k, 3),
                               "simulator": round(sum(cpu_used[sim.pid]) / k, 3), "postgresql": round(pg_used / k, 3)},
            "engine_stats": [{"chunks": st["stats"].get("chunks"), "approved": st["stats"].get("approved"),
                              "writer_batches": st["writer_batches"], "writer_busy_s": st["writer_busy_s"]}
                             for st in stats],
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        db.dispose()
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        with admin.connect() as conn:
            conn.execute(text(f'drop schema "{schema}" cascade'))
        admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debits", type=int, default=100_000)
    ap.add_argument("--engines", default="1,2")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=32,
                    help="max_in_flight per engine and bank: the bank's window (512 lifts it)")
    ap.add_argument("--chunks-ahead", type=int, default=3, help="chunks each engine holds at once")
    ap.add_argument("--refuse-mac-rate", type=float, default=0.0,
                    help="share of new debits the simulator answers A0 (sent again under a new identity)")
    ap.add_argument("--profile", default=None, help="directory for each engine's cProfile")
    args = ap.parse_args()
    results = []
    for k in [int(x) for x in args.engines.split(",")]:
        print(f"{k} engine(s), {args.debits} debits, {args.latency_ms:g} ms mean latency:", flush=True)
        before = machine.speed()
        print(f"  {machine.describe(before)} (before)", flush=True)
        r = run(args.debits, k, args.latency_ms, args.chunk, args.profile, args.in_flight, args.chunks_ahead,
                args.refuse_mac_rate)
        r["machine"] = {"before": before, "after": machine.speed()}
        print(f"  {machine.describe(r['machine']['after'])} (after)")
        print(f"  {r['per_second']} debits/s in {r['seconds']} s; the bank answered 94 {r['bank_94']} times, "
              f"A0 {r['bank_A0']} times; {r['resent_after_A0']} debits sent again under a new identity; "
              f"{json.dumps(r)}", flush=True)
        results.append(r)
    if len(results) >= 2:
        ratio = results[1]["per_second"] / results[0]["per_second"]
        print(f"1 engine: {results[0]['per_second']} debits/s; {results[1]['engines']} engines: "
              f"{results[1]['per_second']} debits/s; ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
