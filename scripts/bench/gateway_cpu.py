"""Where a payment's CPU goes (a profiling aid, not a target): the gateway's reactor process,
its database worker processes and the load generator, in ms of CPU per payment, plus the
group commit's batches.

    .venv/bin/python -m scripts.bench.gateway_cpu [--url URL] [--window 24] [--count N] [--rate PER_S]
        [--group-commit-wait-ms MS] [--py-spy FILE]

One short run (7,500 inquiry + payment pairs over 8 connections; as fast as they go, or at --rate). With --py-spy the
gateway's reactor and its workers are sampled for 6 s into FILE (raw collapsed stacks; py-spy must be installed).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import psutil  # noqa: E402
from sqlalchemy import select  # noqa: E402

from ledger.schema import banks  # noqa: E402

from tests.ledger_helpers import add_banks, new_engine, setup_customers  # noqa: E402
from tests.process_harness import GatewayProcess  # noqa: E402


def cpu_s(procs) -> float:
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="database URL (default: SQLite in a temporary directory)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--window", type=int, default=24)
    ap.add_argument("--count", type=int, default=7500, help="inquiry + payment pairs")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="pairs per second (0: as fast as it goes); CPU per payment grows as batches shrink")
    ap.add_argument("--group-commit-wait-ms", type=float, default=1.0,
                    help="database.group_commit_wait_ms: how long the idle committer waits for company")
    ap.add_argument("--py-spy", dest="py_spy", default=None, help="write py-spy's raw samples of the gateway here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gridpay-gwcpu-"))
    url = args.url or f"sqlite:///{tmp}/gridpay.db"
    engine = new_engine(url)
    with engine.begin() as conn:   # a database used before keeps its banks
        known = set(conn.execute(select(banks.c.bank_code)).scalars())
        missing = sorted({"01020000", "01030000", "01050000"} - known)
        if missing:
            add_banks(conn, *missing)
    customers = setup_customers(engine, 8000, bills_each=1, prefix=f"Q{int(time.time()) % 100000}")
    engine.dispose()
    (tmp / "customers.txt").write_text("\n".join(customers))
    gw = GatewayProcess(tmp, url)
    gw.env["GRIDPAY_DATABASE__GROUP_COMMIT_WAIT_MS"] = str(args.group_commit_wait_ms)
    gw.start()
    try:
        run(gw, tmp, args)
    finally:
        gw.terminate()


def run(gw: GatewayProcess, tmp: Path, args) -> None:
    proc = psutil.Process(gw.proc.pid)
    gw.sim("ascii", "01020000", "ascii", tmp / "customers.txt", tmp / "warm.csv", "--count", "200")
    workers = sorted(proc.children(recursive=True), key=lambda p: p.create_time())  # the committer first
    reactor0, workers0 = cpu_s([proc]), [cpu_s([w]) for w in workers]
    sim = gw.sim("ascii", "01020000", "ascii", tmp / "customers.txt", tmp / "run.csv", "--count", str(args.count),
                 "--connections", str(args.connections), "--window", str(args.window), "--rate", str(args.rate),
                 background=True)
    sim_proc, sim_cpu = psutil.Process(sim.pid), 0.0
    spy = None
    if args.py_spy:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        spy = subprocess.Popen([py_spy, "record", "-p", str(gw.proc.pid), "-o", args.py_spy, "-f", "raw",
                                "-r", "200", "-d", "6", "--subprocesses"])
    while sim.poll() is None:
        try:
            sim_cpu = cpu_s([sim_proc])
        except psutil.Error:
            pass
        time.sleep(0.05)
    result = json.loads(sim.stdout.read().strip().splitlines()[-1])
    if spy is not None:
        spy.wait()
    n = result["payments"]
    per = lambda seconds: seconds / n * 1000  # noqa: E731
    print(f"{n} payments at {result['payments_per_s']}/s, p99 {result['latency_ms']['p99']} ms; CPU ms per payment: "
          f"gateway reactor {per(cpu_s([proc]) - reactor0):.3f}, its database workers (committer, reader) "
          + ", ".join(f"{per(cpu_s([w]) - w0):.3f}" for w, w0 in zip(workers, workers0))
          + f", load generator {per(sim_cpu):.3f} (with its start-up)")
    _, body = gw.http("/metrics")
    figures = {line.split()[0]: float(line.split()[1]) for line in body.splitlines()
               if line.startswith(("gridpay_db_commit_seconds_", "gridpay_db_batch_size_"))
               and line.split()[0].endswith(("_sum", "_count"))}
    commits = figures.get("gridpay_db_commit_seconds_count", 0)
    if commits:
        print(f"group commits {commits:.0f} (with the warm-up): {figures['gridpay_db_batch_size_sum'] / commits:.1f} "
              f"postings each, {figures['gridpay_db_commit_seconds_sum'] / commits * 1000:.1f} ms each")


if __name__ == "__main__":
    main()
