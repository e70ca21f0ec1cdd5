"""Imports of the billing system's files at scale: a million customers and a million bills.

    .venv/bin/python -m scripts.bench.imports [--customers 1000000] [--bills 1000000] [--db sqlite|postgresql|both]
                                              [--agreements] [--verify] [--keep DIR]

Set-up (not timed, but reported): the demo set's files (``ledger.demo_data.write_demo_files``,
written a row at a time) with exactly ``--bills`` bills spread over the customers, once for all
databases; for each database a fresh one (an SQLite file in a temporary directory, or a
PostgreSQL schema of its own on GRIDPAY_BENCH_PG_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test), migrated.

Timed: the real ``gridpay ledger import customers FILE`` and then ``gridpay ledger import bills
FILE`` (and ``agreements`` with --agreements), each in a child process of its own, so its wall
time includes the command's start-up and its peak RSS is its own (``os.wait4``'s rusage of that
child). Its progress (plain lines on stderr, not a terminal here) is kept; its last line, the
import's own rate, is shown. ``--verify`` runs ``gridpay ledger verify`` afterwards (not timed in
the figures).

Targets (the issue): SQLite >= 30,000 lines/s and <= 400 MiB peak RSS per file; PostgreSQL
>= 20,000 lines/s. The figures are printed beside them with the machine's speed before and after
(``scripts.bench.machine``); nothing asserts on time.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
AS_OF = date(2026, 11, 1)
TARGET_RATE = {"sqlite": 30_000, "postgresql": 20_000}
TARGET_RSS_MIB = {"sqlite": 400, "postgresql": None}


def gridpay() -> list[str]:
    exe = Path(sys.executable).with_name("gridpay")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gridpay"]


def run_child(args: list[str], workdir: Path, name: str, token: str = "", env: dict | None = None,
              children: dict | None = None) -> dict:
    """Run a command (as the operator of ``token``, or in ``env``); its wall time, peak RSS (its own,
    from wait4), exit status, stdout and stderr. ``children``: the child is listed there (name: pid)
    while it runs, in a process group of its own (for a caller that samples or kills it)."""
    out_path, err_path = workdir / f"{name}.out", workdir / f"{name}.err"
    env = env or {**os.environ, "GRIDPAY_CONFIG": "", "GRIDPAY_OPERATOR_TOKEN": token}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=children is not None)
        if children is not None:
            children[name] = proc.pid
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:   # Ctrl-C: the child's group is its own, so the terminal's signal missed it
            if children is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
        finally:
            if children is not None:
                children.pop(name, None)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": elapsed, "peak_rss_mib": usage.ru_maxrss / 1024, "rc": proc.returncode,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "stdout": out_path.read_text(errors="replace"), "stderr": err_path.read_text(errors="replace")}


def count_lines(path: Path) -> int:
    """Data lines of a demo file (no quoted line breaks in it): newlines less the header."""
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            n += block.count(b"\n")
    return n - 1


def run_db(label: str, url: str, files: dict[str, Path], kinds: list[str], workdir: Path, verify: bool) -> list[dict]:
    from ledger import migrate

    from scripts.operator_session import operator_session

    migrate.upgrade(url)
    token = operator_session(url, "bench", ["operations"])
    out = []
    for kind in kinds:
        lines = count_lines(files[kind])
        res = run_child([*gridpay(), "ledger", "import", kind, str(files[kind]), "--url", url],
                        workdir, f"{label}-{kind}", token)
        if res["rc"] != 0:
            raise SystemExit(f"[{label}] gridpay ledger import {kind} failed ({res['rc']}):\n"
                             f"{res['stdout'][-3000:]}\n{res['stderr'][-3000:]}")
        progress = [ln for ln in res["stderr"].splitlines() if ln.strip()]
        figures = {"db": label, "file": f"{kind}.csv", "lines": lines, "seconds": round(res["seconds"], 1),
                   "lines_per_s": round(lines / res["seconds"]), "peak_rss_mib": round(res["peak_rss_mib"]),
                   "cpu_s": round(res["cpu_s"], 1), "summary": res["stdout"].strip().splitlines()[0],
                   "inside": progress[-1] if progress else "", "progress_lines": len(progress)}
        print(f"[{label}] {json.dumps(figures, ensure_ascii=False)}", flush=True)
        out.append(figures)
    if verify:
        res = run_child([*gridpay(), "ledger", "verify", "--url", url], workdir, f"{label}-verify")
        print(f"[{label}] ledger verify ({res['seconds']:.0f} s): {res['stdout'].strip().splitlines()[-1]}", flush=True)
        for figures in out:
            figures["verify"] = res["rc"] == 0
    return out


def with_schema(server: str, fn, keep: bool = False):
    """``fn(url)`` in a new schema on ``server``, dropped after unless ``keep`` (then its name is
    printed, for EXPLAIN afterwards)."""
    from sqlalchemy import create_engine, text

    schema = f"gp_bench_imports_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    sep = "&" if "?" in server else "?"
    try:
        return fn(f"{server}{sep}options=-csearch_path%3D{schema}")
    finally:
        if keep:
            print(f"schema {schema} kept", flush=True)
        else:
            with admin.connect() as conn:
                conn.execute(text(f'drop schema "{schema}" cascade'))
        admin.dispose()


def for_each_db(args, bench, report) -> dict:
    """``bench(url)`` on each database ``args.db`` names (``sqlite``, ``postgresql`` or ``both``):
    SQLite in a temporary file, PostgreSQL in a schema of its own on ``GRIDPAY_BENCH_PG_URL``, each
    dropped after; ``report(db, result)`` once each is done. The results by database."""
    results = {}
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="gridpay-bench-db-") as tmp:
            results["sqlite"] = bench(f"sqlite:///{Path(tmp) / 'bench.db'}")
        report("sqlite", results["sqlite"])
    if args.db in ("postgresql", "both"):
        results["postgresql"] = with_schema(os.environ.get("GRIDPAY_BENCH_PG_URL", PG_DEFAULT), bench)
        report("postgresql", results["postgresql"])
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--bills", type=int, default=1_000_000)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--agreements", action="store_true", help="import the demo set's agreements file too")
    ap.add_argument("--verify", action="store_true", help="run gridpay ledger verify after the imports")
    ap.add_argument("--keep", help="write the files (and the SQLite database) here and keep them")
    args = ap.parse_args(argv)

    from ledger.demo_data import write_demo_files
    from scripts.bench.machine import describe, speed

    before = speed()
    print(describe(before), flush=True)
    print(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    kinds = ["customers", "bills"] + (["agreements"] if args.agreements else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="gridpay-bench-imports-") as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        files = write_demo_files(workdir / "billing", customers=args.customers, seed=1, as_of=AS_OF, bills=args.bills)
        sizes = {k: f"{p.stat().st_size / 1e6:.0f} MB" for k, p in files.items() if k in kinds}
        print(f"set-up: files written in {time.perf_counter() - t0:.1f} s: {sizes}", flush=True)
        if args.db in ("sqlite", "both"):
            db = workdir / "bench.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            results += run_db("sqlite", f"sqlite:///{db}", files, kinds, workdir, args.verify)
        if args.db in ("postgresql", "both"):
            server = os.environ.get("GRIDPAY_BENCH_PG_URL", PG_DEFAULT)
            results += with_schema(server, lambda url: run_db("postgresql", url, files, kinds, workdir, args.verify))
    after = speed()
    print()
    print(describe(before) + " (before)")
    print(describe(after) + " (after)")
    print(f"\n{'db':11s} {'file':16s} {'lines':>9s} {'wall s':>7s} {'lines/s':>8s} {'target':>9s} "
          f"{'peak RSS':>9s} {'target':>9s}  meets")
    for r in results:
        rate_target, rss_target = TARGET_RATE[r["db"]], TARGET_RSS_MIB[r["db"]]
        meets = r["lines_per_s"] >= rate_target and (rss_target is None or r["peak_rss_mib"] <= rss_target)
        print(f"{r['db']:11s} {r['file']:16s} {r['lines']:9,d} {r['seconds']:7.1f} {r['lines_per_s']:8,d} "
              f"{'>= ' + format(rate_target, ','):>9s} {str(r['peak_rss_mib']) + ' MiB':>9s} "
              f"{('<= ' + str(rss_target) + ' MiB') if rss_target else '-':>9s}  {'yes' if meets else 'NO'}")
    for db in dict.fromkeys(r["db"] for r in results):
        mine = [r for r in results if r["db"] == db and r["file"] in ("customers.csv", "bills.csv")]
        lines, seconds = sum(r["lines"] for r in mine), sum(r["seconds"] for r in mine)
        print(f"{db:11s} {'customers+bills':16s} {lines:9,d} {seconds:7.1f} {round(lines / seconds):8,d} "
              f"{'>= ' + format(TARGET_RATE[db], ','):>9s} {max(r['peak_rss_mib'] for r in mine):5d} MiB")
    for r in results:
        print(f"  {r['db']} {r['file']}: {r['summary']}\n    {r['inside']}")
    print(json.dumps({"bench": "imports", "customers": args.customers, "bills": args.bills,
                      "machine_before": before, "machine_after": after,
                      "results": [{k: v for k, v in r.items() if k not in ("summary", "inside")} for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
