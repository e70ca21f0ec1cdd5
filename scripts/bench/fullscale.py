"""The utility at full size on PostgreSQL (docs/fullscale.md): its month imported, its peak day played by
separate processes, its month-end reports and ``ledger verify`` - each phase's figures beside its target.

    .venv/bin/python -m scripts.bench.fullscale --pg-url URL [--scale 1.0] [--customers N] [--payments N]
        [--debits N] [--counter-seconds S] [--seed N] [--work-dir DIR] [--summary FILE]
        [--keep-schema NAME | --reuse-schema NAME] [--stop-after-import]

Sizes come from ``--scale`` (1.0: 4,300,000 customers, 200,000 counter payments, 500,000 debits; 0.01:
43,000 / 2,000 / 5,000), each overridable. Phases:

1. imports: the month's files (``ledger.demo_data.iter_utility_rows``: 12 districts, 11 banks, 30 % with a
   debit agreement, 60 % with a mobile number, one bill each of mixed categories, written streaming),
   imported by ``gridpay ledger import customers|bills|agreements`` (each a child process: lines/s, wall
   time, peak RSS). Then ANALYZE (this machine's PostgreSQL does not autoanalyze).
2. the peak day: two ``gridpay serve`` behind HAProxy (config/haproxy/gridpay.cfg made local), one
   ``gridpay sim bank`` per bank (20 ms mean exponential latency, 1 % declines, a few dropped answers),
   two ``gridpay engine``; one batch per bank (a plan of due_days 0 run now: together ``--debits``
   debits) while ``gridpay sim counter`` (one per bank, ascii and bcd banks) pays the counter customers
   paced over ``--counter-seconds``; counter traffic also runs before and after the batch, so its
   latency is reported before, during and after.
3. end of day: each bank's docs/spec/INTERFACE.md §7.1 file from what it saw (the counter runs' receipts,
   the bank host's day file: scripts/e2e/day_files.py, as scripts/e2e_day.py builds them, with the same
   planted differences) and the finance statement (§7.3), through the drop directory and ``gridpay watch``.
4. reports: ``gridpay report month-end``, ``confirmed`` and ``aging`` (child processes: wall time, RSS).
5. ``gridpay ledger verify``; the database's size per table.

Correctness makes the exit status (1 on any failure): exactly-once debits (each bank applied each RRN
once, what it holds is what the ledger approved), the reconciliation exceptions exactly the planted ones,
the counter runs clean, ``ledger verify`` true. Time never does: figures are printed beside the targets,
with the machine's speed before and after (scripts/bench/machine.py). Every process's log stays in the
work directory; on an error or Ctrl-C every child's process group is killed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil
from sqlalchemy import text

from config.clock import SYSTEM_CLOCK, Clock
from config.settings import environment_for
from ledger.demo_data import UTILITY_BANKS
from scripts.bench import haproxy_local, machine
from scripts.bench.imports import count_lines, run_child
from scripts.e2e import day_checks, day_files
from scripts.e2e.processes import (ROOT, Proc, SchemaOfItsOwn, drop_file, free_port, gridpay, log, make_drop_dir,
                                   wait_dropped)

FULL = {"customers": 4_300_000, "payments": 200_000, "debits": 500_000}
TARGETS = {"imports_s": 600, "rss_mib": 1024, "debits_s": 600, "counter_p99_ms": 100, "reports_s": 60,
           "verify_s": 300}
SHARES = {"before": 0.05, "after": 0.10}          # of the counter payments; the rest run during the batch
ACTOR = "system:fullscale-bench"


def zmk(bank: str) -> str:
    return hashlib.sha256(f"fullscale {bank}".encode()).hexdigest()[:32].upper()


def dialect(i: int) -> str:
    return "ascii" if i % 2 == 0 else "bcd"


AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


class RssSampler(threading.Thread):
    """The peak RSS of every child process (and of its own children: an engine's or a gateway's
    workers), sampled every half second with psutil, by the child's name; and the CPU seconds each
    has used so far, with PostgreSQL's (every ``postgres`` process), so that a phase's CPU can be
    split by kind of process (``cpu_mark``)."""

    def __init__(self, bench: "Bench"):
        super().__init__(daemon=True, name="rss-sampler")
        self.bench, self.peaks, self.stop_event = bench, {}, threading.Event()
        self.cpu: dict[int, tuple[str, float]] = {}     # pid: (kind, CPU seconds at its last sample)
        self.waits: Counter = Counter()                  # (process, what its session did): samples
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_event.wait(0.5):
            self.sample()

    def sample(self) -> None:
        seen: dict[int, tuple[str, float]] = {}
        for name, pid in list(self.bench.pids().items()):
            try:
                root = psutil.Process(pid)
                for n, p in [(name, root)] + [(f"{name}/{c.pid}", c) for c in root.children(recursive=True)]:
                    rss = p.memory_info().rss / 2**20
                    key = name if n == name else f"{name} (child)"
                    self.peaks[key] = max(self.peaks.get(key, 0.0), rss)
                    t = p.cpu_times()
                    seen[p.pid] = (cpu_kind(name), t.user + t.system)
            except psutil.Error:
                pass
        for p in psutil.process_iter(["name", "cpu_times"]):
            if p.info["name"] == "postgres" and p.info["cpu_times"] is not None:
                seen[p.pid] = ("postgresql", p.info["cpu_times"].user + p.info["cpu_times"].system)
        waits = self.db_waits()
        with self.lock:
            self.cpu.update(seen)
            self.waits.update(waits)

    def db_waits(self) -> Counter:
        """What each gridpay process's database sessions are doing now (PGAPPNAME names them):
        running, or waiting - for a lock (and behind whom: the holder's process and the start of
        its statement), the WAL flush, or their client in an open transaction."""
        db = getattr(self.bench, "db", None)
        if db is None:
            return Counter()
        try:
            with db.connect() as conn:
                rows = conn.execute(text(
                    "select a.application_name, a.state, a.wait_event_type, a.wait_event, "
                    "case when a.wait_event_type = 'Lock' then (select b.application_name || ': ' "
                    "|| left(regexp_replace(b.query, '\\s+', ' ', 'g'), 48) from pg_stat_activity b "
                    "where b.pid = any(pg_blocking_pids(a.pid)) limit 1) end "
                    "from pg_stat_activity a "
                    "where a.datname = current_database() and a.application_name like :gridpay "
                    "and a.state in ('active', 'idle in transaction')"), {"gridpay": "gridpay %"}).all()
        except Exception:  # noqa: BLE001 - a sample missed is not a failure
            return Counter()
        return Counter((app, "running" if state == "active" and not kind else
                        "client, in a transaction" if state == "idle in transaction" else
                        f"{kind}:{event}" + (f" behind {holder}" if holder else ""))
                       for app, state, kind, event, holder in rows)

    def wait_mark(self) -> Counter:
        with self.lock:
            return Counter(self.waits)

    def cpu_mark(self) -> dict[str, float]:
        """CPU seconds used so far by kind of process (a process that ended keeps its last sample)."""
        self.sample()
        out: dict[str, float] = {}
        with self.lock:
            for kind, seconds in self.cpu.values():
                out[kind] = out.get(kind, 0.0) + seconds
        return out


def cpu_kind(name: str) -> str:
    """gw1 -> gateways, e2 -> engines, simbank_01020000 -> bank hosts, counter_during_... -> counter systems."""
    for prefix, kind in (("gw", "gateways"), ("e1", "engines"), ("e2", "engines"), ("simbank", "bank hosts"),
                         ("counter", "counter systems"), ("build", "batch build")):
        if name.startswith(prefix):
            return kind
    return name.split("-")[0]


def wait_split(a: Counter, b: Counter) -> dict:
    """Between two marks: per gridpay process, the share of its sessions' samples in each state
    (a gateway's sessions waiting on a lock while the batch runs, or running)."""
    by_app: dict[str, Counter] = {}
    for (app, what), n in (b - a).items():
        by_app.setdefault(app, Counter())[what] += n
    return {"db_sessions": {app: {what: f"{n / sum(c.values()):.0%}" for what, n in c.most_common(5)}
                            for app, c in sorted(by_app.items())}}


def cpu_split(a: dict[str, float], b: dict[str, float], seconds: float) -> dict:
    """Between two marks: CPU seconds by kind, and the cores they kept busy on average."""
    used = {k: round(b.get(k, 0.0) - a.get(k, 0.0), 1) for k in b if b.get(k, 0.0) - a.get(k, 0.0) > 0.05}
    return {"cpu_s": dict(sorted(used.items(), key=lambda kv: -kv[1])),
            "cores_busy": round(sum(used.values()) / seconds, 2) if seconds else None}


class AutoAnalyze(threading.Thread):
    """What a site's autovacuum does for the planner, on this machine's PostgreSQL that has it off
    (CI's conf.d): every ``naptime`` seconds, ANALYZE each of the schema's tables changed by more than
    50 rows + 10 % since its last analyze (autovacuum_analyze_threshold / _scale_factor's defaults).
    Without it the peak day's tables (debits, debit_bills, debit_chunks: empty at the import's ANALYZE)
    keep statistics that say they are empty, and the engines' look-ups of a chunk's bills ran for
    seconds holding their bank's STAN row."""

    def __init__(self, bench: "Bench", naptime: float = 30.0):
        super().__init__(daemon=True, name="auto-analyze")
        self.bench, self.naptime, self.stop_event, self.runs = bench, naptime, threading.Event(), []

    def run(self) -> None:
        while not self.stop_event.wait(self.naptime):
            try:
                self.once()
            except Exception as exc:  # noqa: BLE001 - a missed round is what autovacuum would shrug off too
                log(f"auto-analyze: {type(exc).__name__}: {exc}")

    def once(self) -> None:
        due = [name for name, in self.bench.q(
            "select s.relname from pg_stat_user_tables s join pg_class c on c.oid = s.relid "
            "where s.schemaname = current_schema() and s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0)")]
        if due:
            t0 = time.perf_counter()
            with self.bench.db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for name in due:
                    conn.exec_driver_sql(f'ANALYZE "{name}"')
            self.runs.append({"at": datetime.now().strftime("%H:%M:%S"), "tables": due,
                              "s": round(time.perf_counter() - t0, 1)})


def histogram_p(samples: dict[float, float], q: float) -> float | None:
    """The q-quantile (ms, a bucket's upper bound) of a cumulative histogram {le: count}."""
    total = samples.get(float("inf"), 0)
    if not total:
        return None
    for le in sorted(samples):
        if samples[le] >= q * total:
            return round(le * 1000, 1) if le != float("inf") else None
    return None


@dataclass
class GatewayMark:
    """The gateways' metrics at one moment: cumulative histograms {le: count} by name, and the
    group commits made so far with the postings they carried."""
    histograms: dict[str, dict[float, float]]
    commits: float = 0.0
    postings: float = 0.0


class Bench(SchemaOfItsOwn):
    def __init__(self, args):
        self.args = args
        scale = args.scale
        self.n = {k: getattr(args, k) or max(1, round(v * scale)) for k, v in FULL.items()}
        self.banks = list(UTILITY_BANKS)
        self.work = Path(args.work_dir or tempfile.mkdtemp(prefix="gridpay-fullscale-"))
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.drop = make_drop_dir(self.work / "drop")
        self.procs: dict[str, Proc] = {}
        self.children: dict[str, int] = {}          # run_child processes of the moment
        self.failures: list[str] = []
        self.counter_seconds = args.counter_seconds or max(30.0, 600 * scale)
        # a full-size target scaled by the largest size asked: the bench's waits give a phase four
        # times it, and two minutes more, before calling it stuck
        ratio = max(self.n[k] / v for k, v in FULL.items())
        self.slack = lambda target: 4 * target * max(ratio, 0.01) + 120
        self.summary: dict = {"scale": scale, "sizes": self.n, "seed": args.seed, "work_dir": str(self.work),
                              "targets": TARGETS, "phases": {},
                              "niceness": {"batch_processes": args.batch_nice, "engines_db_sessions": args.batch_db_nice}}
        # the run is one business day: the cutoff is set a minute behind the local time now, so the
        # next one is a day away (at the default 23:00 a run started at 22:50 would span two days)
        zone = Clock().timezone
        self.cutoff = (datetime.now(ZoneInfo(zone)) - timedelta(minutes=1)).strftime("%H:%M")
        self.clock = Clock(zone, self.cutoff)
        self.business_date = self.as_of = self.clock.business_date(SYSTEM_CLOCK.now())
        os.environ.update({f"GRIDPAY_FULLSCALE_ZMK_{b}": zmk(b) for b in self.banks})

    def pids(self) -> dict[str, int]:
        out = {n: p.p.pid for n, p in self.procs.items() if p.alive()}
        out.update(self.children)
        return out

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
            log(f"CHECK FAILED: {what}")
        return ok

    def phase(self, name: str, **figures) -> dict:
        self.summary["phases"].setdefault(name, {}).update(figures)
        log(f"phase {name}: {json.dumps(figures, ensure_ascii=False, default=str)}")
        return self.summary["phases"][name]

    # --- database --------------------------------------------------------------------------

    def db_mark(self) -> tuple[int, int, float]:
        """The server's WAL position (bytes), its database's commits so far, and the time: two marks
        give the WAL written and the commits per second between them (what the disk and the
        commit path carry)."""
        (lsn, commits), = self.q("select pg_current_wal_lsn() - '0/0'::pg_lsn, xact_commit from pg_stat_database "
                                 "where datname = current_database()")
        return int(lsn), int(commits), time.perf_counter()

    @staticmethod
    def db_split(a: tuple[int, int, float], b: tuple[int, int, float]) -> dict:
        seconds = b[2] - a[2]
        return {"wal_mib": round((b[0] - a[0]) / 2**20), "wal_mib_per_s": round((b[0] - a[0]) / 2**20 / seconds, 2),
                "db_commits": b[1] - a[1], "db_commits_per_s": round((b[1] - a[1]) / seconds)}

    # --- configuration ---------------------------------------------------------------------

    def settings_tree(self, sim_ports: dict[str, int]) -> dict:
        debit = {"timeout_s": 5.0, "reversal_interval_s": 1.0, "reversal_max": 5, "connections": 2,
                 "max_in_flight": 32, "echo_interval_s": 30.0}
        banks = {}
        for i, code in enumerate(self.banks):
            banks[code] = {"name": f"Bank {code}", "dialect": dialect(i), "zmk_env": f"GRIDPAY_FULLSCALE_ZMK_{code}",
                           "channels": ["counter", "debit"], "idle_timeout_s": 600,
                           "debit": {"mode": "online", "host": "127.0.0.1", "port": sim_ports.get(code, 1), **debit}}
        return {
            "database": {"url": self.url, "pool_size": 5, "group_commit_wait_ms": self.args.group_commit_wait_ms},
            "business": {"cutoff": self.cutoff},
            "engines": {"metrics_port_base": 0, "database_nice": self.args.batch_db_nice},
            "scheduler": {"metrics_port": 0},
            "watch": {"metrics_port": 0, "hold_bank_files_until_day_ended": False},
            "gateway": {"metrics_port": 0, "echo_interval_s": 60, "key_grace_s": 60, "listeners": [
                {"name": "ascii", "port": 0, "dialect": "ascii",
                 "banks": [b for i, b in enumerate(self.banks) if dialect(i) == "ascii"]},
                {"name": "bcd", "port": 0, "dialect": "bcd",
                 "banks": [b for i, b in enumerate(self.banks) if dialect(i) == "bcd"]}]},
            "banks": banks,
        }

    def configure(self, sim_ports: dict[str, int]) -> None:
        config = self.work / "gridpay.toml"     # drop_dir is top level: no GRIDPAY_* variable sets it
        config.write_text(f'drop_dir = {json.dumps(str(self.drop))}\n')
        os.environ["GRIDPAY_CONFIG"] = str(config)
        self.env = {**os.environ, **environment_for(self.settings_tree(sim_ports)),
                    "GRIDPAY_OPERATOR_TOKEN": getattr(self, "token", "")}

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        r = subprocess.run(gridpay(*args), env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"gridpay {' '.join(args)} failed ({r.returncode}): {r.stdout[-1500:]} {r.stderr[-3000:]}")
        return r

    def timed(self, name: str, args: list[str]) -> dict:
        """A gridpay command as a child process of its own: wall time, peak RSS (wait4), output."""
        res = run_child(gridpay(*args), self.logs, name, env=self.env, children=self.children)
        # wait4's ru_maxrss survives exec on Linux: a child forked from this process (itself ~150 MiB)
        # reports at least that; the sampler's figure is the child's own
        res["wait4_rss_mib"] = round(res["peak_rss_mib"])
        res["peak_rss_mib"] = self.sampler.peaks.get(name, 0.0)
        if res["rc"] != 0:
            raise RuntimeError(f"gridpay {' '.join(args)} failed ({res['rc']}): {res['stdout'][-1500:]} "
                               f"{res['stderr'][-3000:]}")
        return res

    # --- phase 1: the month's files ----------------------------------------------------------

    def rows(self):
        from ledger.demo_data import iter_utility_rows

        return iter_utility_rows(self.n["customers"], self.args.seed, self.as_of, debits_due=self.n["debits"],
                                 counter=self.n["payments"], banks=tuple(self.banks))

    def collect(self, kind: str, row: list[str]) -> None:
        if kind == "counter":
            self.counter_customers.setdefault(row[0], []).append(row[1])
        elif kind == "debit_account":
            self.accounts.setdefault(row[0], []).append(row[1])

    def import_month(self) -> None:
        from ledger.demo_data import write_rows

        self.counter_customers, self.accounts = {}, {}
        t0 = time.perf_counter()
        files = write_rows(self.work / "billing", self.rows(), other=self.collect)
        self.phase("files", wall_s=round(time.perf_counter() - t0, 1),
                   mb={k: round(p.stat().st_size / 1e6) for k, p in files.items()})
        total_s = 0.0
        for kind in ("customers", "bills", "agreements"):
            lines = count_lines(files[kind])
            log(f"importing {kind}: {lines:,} lines (its progress: {self.logs}/import-{kind}.err)")
            res = self.timed(f"import-{kind}", ["ledger", "import", kind, str(files[kind])])
            total_s += res["seconds"] if kind != "agreements" else 0
            self.phase(f"import_{kind}", lines=lines, wall_s=round(res["seconds"], 1),
                       lines_per_s=round(lines / res["seconds"]), peak_rss_mib=round(res["peak_rss_mib"]),
                       wait4_rss_mib=res["wait4_rss_mib"],
                       result=res["stdout"].strip().splitlines()[0] if res["stdout"].strip() else "")
        self.phase("imports", customers_and_bills_s=round(total_s, 1), target_s=TARGETS["imports_s"])
        t0 = time.perf_counter()
        with self.db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
        self.phase("analyze", wall_s=round(time.perf_counter() - t0, 1))

    def regenerate_lists(self) -> None:
        """A reused schema: the counter customers and debit accounts from the same generator (no files),
        for the business date it was imported on (its earliest due date)."""
        self.as_of = self.q("select min(due_date) from bills")[0][0]
        if isinstance(self.as_of, str):
            self.as_of = date.fromisoformat(self.as_of)
        self.counter_customers, self.accounts = {}, {}
        t0 = time.perf_counter()
        for kind, row in self.rows():
            self.collect(kind, row)
        log(f"counter customers and debit accounts regenerated in {time.perf_counter() - t0:.0f} s")

    # --- phase 2: the peak day ---------------------------------------------------------------

    def start_bank_sims(self) -> dict[str, int]:
        ports = {}
        for i, bank in enumerate(self.banks):
            path = self.work / f"accounts_{bank}.csv"
            with open(path, "w") as fh:
                fh.write("account_no,balance,limit,status\n")
                fh.writelines(f"{a},1000000000,0,A\n" for a in self.accounts.get(bank, []))
            name = f"simbank_{bank}"
            # the banks' hosts stand for other machines that only the batch talks to: the batch side
            self.procs[name] = Proc(name, self.batch_side(gridpay(
                "sim", "bank", "--bank", bank, "--dialect", dialect(i), "--zmk-env", f"GRIDPAY_FULLSCALE_ZMK_{bank}",
                "--accounts", str(path), "--business-date", self.business_date.isoformat(),
                "--day-file-dir", str(self.work / f"dayfile_{bank}"), "--seed", str(self.args.seed + i),
                "--latency-ms", "20", "--latency-dist", "exponential", "--decline", "51=0.01",
                "--drop-after-apply", str(self.args.drop_rate), "--drop-before-apply", str(self.args.drop_rate))),
                dict(os.environ), self.logs, r'"port"')
            self.procs[name].launch()
        for bank in self.banks:
            p = self.procs[f"simbank_{bank}"].wait_ready(120)
            ports[bank] = json.loads(p.first_line)["port"]
        return ports

    def start_gateways(self) -> None:
        self.gw = {}
        for gw in ("gw1", "gw2"):
            ports = {"ascii": free_port(), "bcd": free_port(), "metrics": free_port()}
            self.gw[gw] = ports
            env = {**self.env, "GRIDPAY_GATEWAY__LISTENERS__0__PORT": str(ports["ascii"]),
                   "GRIDPAY_GATEWAY__LISTENERS__1__PORT": str(ports["bcd"]),
                   "GRIDPAY_GATEWAY__METRICS_PORT": str(ports["metrics"]),
                   "GRIDPAY_GATEWAY__LOG_FILE": json.dumps(str(self.logs / f"{gw}.log"))}
            self.procs[gw] = Proc(gw, gridpay("serve"), env, self.logs, r"gridpay serving:")
            self.procs[gw].launch()
        for gw in ("gw1", "gw2"):
            self.procs[gw].wait_ready(180)
        self.front = {"ascii": free_port(), "bcd": free_port()}
        servers = {f"gateways_{d}": [haproxy_local.Server(gw, f"127.0.0.1:{p[d]}", p["metrics"])
                                     for gw, p in self.gw.items()] for d in ("ascii", "bcd")}
        config = haproxy_local.local_config(haproxy_local.COUNTER_CFG.read_text(),
                                            {f"counter_{d}": port for d, port in self.front.items()}, servers)
        self.haproxy = haproxy_local.start(config, self.logs)
        self.children["haproxy"] = self.haproxy.pid
        for port in self.front.values():
            haproxy_local.wait_listening(port, self.haproxy)
        time.sleep(4.5)     # rise 2 at inter 2s: both gateways up in HAProxy's eyes

    def start_engines(self) -> None:
        self.prioritize()
        for e in ("e1", "e2"):
            args = gridpay("engine", "--id", e, "--poll", "0.2", "--lease", "10", "--log-level", "WARNING",
                           "--log-file", str(self.logs / f"{e}.log"))
            self.procs[e] = Proc(e, self.batch_side(args), self.env, self.logs, r"running")
            self.procs[e].launch()
        for e in ("e1", "e2"):
            self.procs[e].wait_ready(180)
        if self.args.batch_db_nice:
            log(f"database sessions' niceness: {self.sessions_niceness() or 'not set (no prioritize extension)'}")

    def sessions_niceness(self) -> list[tuple]:
        """(application, niceness, sessions) of this database's gridpay sessions, as the kernel has them."""
        if not self.prioritized:
            return []
        try:
            return [tuple(r) for r in self.q(
                "select application_name, get_backend_priority(pid), count(*) from pg_stat_activity "
                "where datname = current_database() and application_name like 'gridpay%' group by 1, 2 order by 1, 2")]
        except Exception as exc:  # noqa: BLE001 - a session gone between the two reads: only a log line lost
            return [("unread", type(exc).__name__)]

    def prioritize(self) -> None:
        """The engines' database sessions below the gateways' (engines.database_nice), where this
        PostgreSQL has the prioritize extension (Debian: postgresql-NN-prioritize)."""
        self.prioritized = False
        if self.args.batch_db_nice and self.q("select 1 from pg_available_extensions where name = 'prioritize'"):
            with self.db.begin() as conn:
                conn.exec_driver_sql("create extension if not exists prioritize")
            self.prioritized = True
        self.summary["niceness"]["db_sessions_prioritized"] = self.prioritized

    def start_watcher(self) -> None:
        self.procs["watcher"] = Proc("watcher", gridpay("watch", "--dir", str(self.drop), "--interval", "0.5",
                                                        "--actor", "system:fullscale-watch"),
                                     self.env, self.logs, None).start()

    def counter_run(self, window: str, share: float, seconds: float | None) -> dict[str, Proc]:
        """One ``gridpay sim counter`` per bank through HAProxy, for its share of the bank's counter customers."""
        runs = {}
        for i, bank in enumerate(self.banks):
            everyone = self.counter_customers.get(bank, [])
            lo = round(len(everyone) * self.cut[window][0])
            hi = round(len(everyone) * self.cut[window][1])
            mine = everyone[lo:hi]
            if not mine:
                continue
            path = self.work / f"counter_{window}_{bank}.txt"
            path.write_text("\n".join(mine) + "\n")
            rate = len(mine) / seconds if seconds else 0.0
            name = f"counter_{window}_{bank}"
            runs[bank] = Proc(name, gridpay(
                "sim", "counter", "--port", str(self.front[dialect(i)]), "--bank", bank, "--dialect", dialect(i),
                "--zmk-env", f"GRIDPAY_FULLSCALE_ZMK_{bank}", "--customers", str(path), "--count", str(len(mine)),
                "--connections", "2", "--window", "4", "--rate", f"{rate:.3f}", "--timeout", "30",
                "--seed", str(self.args.seed * 100 + i), "--json",
                "--receipts", str(self.work / f"receipts_{window}_{bank}.csv")), self.env, self.logs, None)
            runs[bank].launch()
        self.procs.update({p.name: p for p in runs.values()})
        return runs

    def finish_counter_run(self, window: str, runs: dict[str, Proc], timeout: float) -> None:
        end = time.monotonic() + timeout
        for p in runs.values():
            try:
                p.p.wait(max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill_group()
                self.check(False, f"{p.name} did not finish in {timeout:.0f} s")
        results = {}
        for bank, p in runs.items():
            out = p.output().strip().splitlines()
            r = json.loads(out[-1]) if out else {}
            results[bank] = r
            self.check(p.p.returncode == 0, f"{p.name} exited {p.p.returncode}: mismatches {r.get('mismatches')}, "
                       f"unanswered {r.get('unanswered')}, lost {r.get('connections_lost')} (see {p.err_path})")
        payments = sum(r.get("payments", 0) for r in results.values())
        seconds = max((r.get("seconds", 0) for r in results.values()), default=0)
        worst = lambda key, q: max((r.get(key, {}).get(q, 0) for r in results.values()), default=0)  # noqa: E731
        self.phase(f"counter_{window}", payments=payments, wall_s=seconds,
                   payments_per_s=round(payments / seconds, 1) if seconds else None,
                   payment_p50_ms_worst_bank=worst("payment_latency_ms", "p50"),
                   payment_p99_ms_worst_bank=worst("payment_latency_ms", "p99"),
                   message_p99_ms_worst_bank=worst("latency_ms", "p99"), target_p99_ms=TARGETS["counter_p99_ms"],
                   codes=dict(sum((Counter(r.get("codes", {})) for r in results.values()), Counter())))

    def gateway_histogram(self) -> GatewayMark:
        """The two gateways' histograms, summed: ``all`` (gridpay_transaction_seconds, every bank and
        MTI), ``mti 0100``/``mti 0200``... (by MTI) and ``commit`` (gridpay_db_commit_seconds: one
        group commit); with the group commits' count and the postings they carried
        (gridpay_db_batch_size's count and sum)."""
        from prometheus_client.parser import text_string_to_metric_families

        mark = GatewayMark(histograms={"all": {}, "commit": {}})

        def add(key: str, le: float, value: float) -> None:
            bucket = mark.histograms.setdefault(key, {})
            bucket[le] = bucket.get(le, 0) + value

        for p in self.gw.values():
            with urllib.request.urlopen(f"http://127.0.0.1:{p['metrics']}/metrics", timeout=10) as r:
                text = r.read().decode()
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    if fam.name == "gridpay_transaction_seconds" and s.name.endswith("_bucket"):
                        add("all", float(s.labels["le"]), s.value)
                        add(f"mti {s.labels['mti']}", float(s.labels["le"]), s.value)
                    elif fam.name == "gridpay_db_commit_seconds" and s.name.endswith("_bucket"):
                        add("commit", float(s.labels["le"]), s.value)
                    elif fam.name == "gridpay_db_batch_size" and s.name.endswith("_count"):
                        mark.commits += s.value
                    elif fam.name == "gridpay_db_batch_size" and s.name.endswith("_sum"):
                        mark.postings += s.value
        return mark

    def gateway_window(self, name: str, a: GatewayMark, b: GatewayMark) -> None:
        """The gateways' latency between two ``gateway_histogram`` marks: every request's, each MTI's
        and one group commit's (where a payment's time goes), and the postings a commit carried."""
        diff = {key: {le: h.get(le, 0) - a.histograms.get(key, {}).get(le, 0) for le in h}
                for key, h in b.histograms.items()}
        every = diff["all"]
        by_mti = {key.split()[1]: f"{histogram_p(h, 0.5)} / {histogram_p(h, 0.99)}"
                  for key, h in sorted(diff.items()) if key.startswith("mti ") and h.get(float("inf"))}
        commits, postings = b.commits - a.commits, b.postings - a.postings
        self.phase(f"counter_{name}", gateway_requests=int(every.get(float("inf"), 0)),
                   gateway_p50_ms=histogram_p(every, 0.5), gateway_p99_ms=histogram_p(every, 0.99),
                   gateway_p50_p99_ms_by_mti=by_mti,
                   group_commit_p50_p99_ms=f"{histogram_p(diff['commit'], 0.5)} / {histogram_p(diff['commit'], 0.99)}",
                   postings_per_commit=round(postings / commits, 2) if commits else None)

    def make_batches(self) -> dict:
        """One plan per bank, run now by ``gridpay plan run-now`` - a process of its own, at the
        default CPU priority, as the scheduler's unit runs it (config/systemd): the builds are the
        batch's critical path (the engines wait for them), and mostly PostgreSQL's work."""
        from engines.plans import add_plan

        made = {"debits": 0, "chunks": 0, "skipped": 0}
        now = SYSTEM_CLOCK.now()
        # the bills due on the import's business date (today's, unless the schema is reused on a later day)
        due_days = (self.as_of - self.business_date).days
        for bank in self.banks:
            add_plan(self.db, name=f"peak-{bank}", bank_code=bank, cron="0 9 1 1 *", now=now, actor=ACTOR,
                     due_days=due_days, chunk_size=1000, time_zone=self.clock.timezone, paused=True)
            res = run_child(gridpay("plan", "run-now", f"peak-{bank}"), self.logs, f"build_{bank}",
                            env=self.env, children=self.children)
            m = re.match(r"batch \d+: (\d+) debits, \d+ fen, (\d+) chunks, mode \w+, (\d+) skipped", res["stdout"])
            if res["rc"] != 0 or not m:
                raise RuntimeError(f"plan run-now peak-{bank} failed ({res['rc']}): {res['stdout'][-800:]} "
                                   f"{res['stderr'][-2000:]}")
            for key, value in zip(("debits", "chunks", "skipped"), m.groups()):
                made[key] += int(value)
        return made

    def batch_side(self, args: list[str]) -> list[str]:
        """The batch's processes (the engines; and the banks' hosts, which stand for machines of their
        own) run below the gateways' CPU priority, as config/systemd's engine unit sets it (Nice=,
        CPUWeight=): sharing cores, the counter's answers come first and the engines take the rest
        (docs/scale-out.md). The counter systems stay at the gateways' priority: they measure."""
        return ["nice", "-n", str(self.args.batch_nice), *args] if self.args.batch_nice else args

    def wait_batches(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        last = 0.0
        while True:
            left = self.q("select count(*) from debit_chunks where state <> 'done'")[0][0]
            if not left:
                return
            if time.monotonic() - last > 15:
                states = dict(self.q("select state, count(*) from debits group by state"))
                log(f"debits: {states}; chunks not done {left}")
                last = time.monotonic()
            if time.monotonic() > end:
                raise RuntimeError(f"the batch did not finish in {timeout:.0f} s: {left} chunks not done")
            for name in ("e1", "e2", "gw1", "gw2"):
                if not self.procs[name].alive():
                    raise RuntimeError(f"{name} died (exit {self.procs[name].p.poll()}); see {self.logs}")
            time.sleep(1.0)

    def peak_day(self) -> None:
        n = len(self.banks)
        log(f"starting {n} bank hosts, two gateways behind HAProxy, two engines, the watcher")
        sim_ports = self.start_bank_sims()
        self.configure(sim_ports)
        self.start_gateways()
        self.start_engines()
        self.start_watcher()
        before, after = SHARES["before"], SHARES["after"]
        self.cut = {"before": (0, before), "during": (before, 1 - after), "after": (1 - after, 1)}
        pace = self.counter_seconds
        # before and after: at the batch window's rate, but a tenth of its time at least, so that the
        # processes' start is not all they measure
        side = {w: max(pace * share / (1 - before - after), pace / 10) for w, share in SHARES.items()}
        self.checkpoint()
        h0, c0, s0 = self.gateway_histogram(), self.sampler.cpu_mark(), self.sampler.wait_mark()
        w0 = time.perf_counter()
        log(f"counter traffic before the batch ({before:.0%} of {self.n['payments']:,} payments)")
        runs = self.counter_run("before", before, side["before"])
        self.finish_counter_run("before", runs, 4 * side["before"] + 120)
        h1 = self.gateway_histogram()
        self.gateway_window("before", h0, h1)
        self.phase("counter_before", **cpu_split(c0, self.sampler.cpu_mark(), time.perf_counter() - w0),
                   **wait_split(s0, self.sampler.wait_mark()))
        self.checkpoint()
        log(f"the batch: one plan per bank run now; counter traffic paced over {pace:.0f} s")
        t0 = time.perf_counter()
        h1, c1, d1, s1 = self.gateway_histogram(), self.sampler.cpu_mark(), self.db_mark(), self.sampler.wait_mark()
        during = self.counter_run("during", 1 - before - after, pace)
        made = self.make_batches()
        built = time.perf_counter() - t0
        log(f"batches built in {built:.1f} s: {made}")
        self.wait_batches(self.slack(TARGETS["debits_s"]))
        debit_s = time.perf_counter() - t0
        h2, c2, d2, s2 = self.gateway_histogram(), self.sampler.cpu_mark(), self.db_mark(), self.sampler.wait_mark()
        self.gateway_window("during", h1, h2)
        states = dict(self.q("select state, count(*) from debits group by state"))
        self.phase("debits", debits=made["debits"], skipped=made["skipped"], build_s=round(built, 1),
                   wall_s=round(debit_s, 1), debits_per_s=round(made["debits"] / debit_s, 1),
                   target_s=TARGETS["debits_s"], states=states, counter_runs_still_running=sum(
                       1 for p in during.values() if p.alive()), **self.debit_latency(), **cpu_split(c1, c2, debit_s),
                   **self.db_split(d1, d2), **wait_split(s1, s2))
        self.finish_counter_run("during", during, 4 * pace + 120)
        h3 = self.gateway_histogram()
        self.gateway_window("between", h2, h3)
        runs = self.counter_run("after", after, side["after"])
        self.finish_counter_run("after", runs, 4 * side["after"] + 120)
        self.gateway_window("after", h3, self.gateway_histogram())

    def checkpoint(self) -> None:
        """Between windows, as scripts/bench/gateway.py's ``settle``: a window does not pay for the
        writes of the one before it."""
        with self.db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CHECKPOINT")

    def debit_latency(self) -> dict:
        rows = self.q("select min(updated_at), max(updated_at) from debits")
        first, last = rows[0]
        return {"first_to_last_final_s": round((last - first).total_seconds(), 1) if first and last else None}

    # --- phase 3: the banks' files and the statement -------------------------------------------

    def end_of_day(self) -> None:
        for name in ("e1", "e2"):
            self.check(self.procs[name].stop(120) == 0, f"{name} did not stop cleanly")
        self.sims = {}
        lines = {}
        for i, bank in enumerate(self.banks):
            p = self.procs[f"simbank_{bank}"]
            self.check(p.stop(120) == 0, f"bank host {bank} did not stop cleanly")
            self.sims[bank] = json.loads(p.output().strip().splitlines()[-1])
            lines[bank] = []
            for window in ("before", "during", "after"):
                path = self.work / f"receipts_{window}_{bank}.csv"
                if path.exists():
                    lines[bank] += day_files.counter_lines_from_receipts(path, bank, self.business_date,
                                                                         len(lines[bank]))
            lines[bank] += day_files.debit_lines_online(self.sims[bank]["day_file"])
        self.lines = lines
        self.planted = day_files.plant(lines, tuple(self.banks[:3]), self.args.seed + 7)
        names, remit = [], {}
        t0 = time.perf_counter()
        for bank in self.banks:
            name, data, remit[bank] = day_files.bank_file(bank, self.business_date, lines[bank])
            (self.work / name).write_bytes(data)
            drop_file(self.drop, name, data)
            names.append(name)
        wait_dropped(self.drop, names, self.slack(120))
        bank_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        name, data, _cheques = day_files.finance_statement(self.business_date, remit, lines)
        (self.work / name).write_bytes(data)
        drop_file(self.drop, name, data)
        wait_dropped(self.drop, [name], self.slack(60))
        n_lines = sum(len(v) for v in lines.values())
        self.phase("bank_files", files=len(names), lines=n_lines, wall_s=round(bank_s, 1),
                   lines_per_s=round(n_lines / bank_s), statement_s=round(time.perf_counter() - t0, 1))

    # --- phases 4 and 5 --------------------------------------------------------------------------

    def reports(self) -> None:
        month = f"{self.business_date:%Y-%m}"
        day = self.business_date.isoformat()
        total = 0.0
        for name, args in (("month-end", ["--month", month]), ("confirmed", ["--date", day]),
                           ("aging", ["--as-of", day])):
            res = self.timed(f"report-{name}", ["report", name, *args, "--format", "csv",
                                                 "--out", str(self.work / f"report-{name}.csv")])
            total += res["seconds"]
            self.phase(f"report_{name}", wall_s=round(res["seconds"], 1), peak_rss_mib=round(res["peak_rss_mib"]))
        self.phase("reports", wall_s=round(total, 1), target_s=TARGETS["reports_s"])

    def verify(self) -> None:
        res = run_child(gridpay("ledger", "verify"), self.logs, "verify", env=self.env, children=self.children)
        self.phase("verify", wall_s=round(res["seconds"], 1), peak_rss_mib=round(self.sampler.peaks.get("verify", 0)),
                   ok=res["rc"] == 0, target_s=TARGETS["verify_s"],
                   output=(res["stdout"] + res["stderr"]).strip()[-300:])
        self.check(res["rc"] == 0, f"gridpay ledger verify exit {res['rc']}: {res['stdout'][-1500:]}")

    def table_sizes(self) -> None:
        rows = self.q("select c.relname, pg_total_relation_size(c.oid) as size, c.reltuples from pg_class c "
                      "join pg_namespace n on n.oid = c.relnamespace where n.nspname = :s and c.relkind in ('r', 'p') "
                      "order by size desc", s=self.schema)
        self.summary["table_mib"] = {r.relname: round(r.size / 2**20, 1) for r in rows if r.size > 2**20}
        self.summary["database_mib"] = round(sum(r.size for r in rows) / 2**20, 1)

    # --- checks ------------------------------------------------------------------------------

    def check_debits(self) -> None:
        final = dict(self.q("select state, count(*) from debits group by state"))
        self.check(set(final) <= {"approved", "declined", "reversed"}, f"debit states at the end: {final}")
        for bank in self.banks:
            day = day_files.debit_lines_online(self.sims[bank]["day_file"])
            figures, problems = day_checks.debit_problems(self.q, bank, day)
            self.summary.setdefault("bank_hosts", {})[bank] = {
                "applied": self.sims[bank]["applied"], "reversed": self.sims[bank]["reversed"], **figures}
            for p in problems:
                self.check(False, p)

    def check_recon(self) -> None:
        found, problems = day_checks.recon_problems(self.q, self.planted, set(self.banks))
        self.summary["recon"] = found
        for p in problems:
            self.check(False, p)

    # --- run -------------------------------------------------------------------------------

    def run(self) -> int:
        t_start = time.monotonic()
        self.summary["machine_before"] = machine.speed()
        log(machine.describe(self.summary["machine_before"]) + " (before)")
        log(f"sizes: {self.n}; work dir {self.work}")
        self.sampler = sampler = RssSampler(self)
        sampler.start()
        self.analyzer = analyzer = AutoAnalyze(self)
        a = self.args
        self.open_schema(a.reuse_schema or a.keep_schema or f"fullscale_{uuid.uuid4().hex[:8]}",
                         create=not a.reuse_schema)
        analyzer.start()
        self.summary["postgresql"] = dict(self.q(
            "select name, current_setting(name) from pg_settings where name in ('server_version', "
            "'shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'autovacuum', 'synchronous_commit', "
            "'wal_compression', 'max_connections')"))
        log(f"PostgreSQL: {self.summary['postgresql']}")
        self.summary["group_commit_wait_ms"] = self.args.group_commit_wait_ms
        log(f"the gateways' committers wait up to {self.args.group_commit_wait_ms:g} ms for company")
        autogroup_was = self.autogroup_off()
        try:
            self.configure({})
            if self.args.reuse_schema:
                # a schema kept by an older checkout: brought to this code's migrations first (timed:
                # at full size a migration that rebuilds a table is a maintenance window's length)
                res = self.timed("db-upgrade", ["db", "upgrade"])
                self.phase("db_upgrade", wall_s=round(res["seconds"], 1))
                from scripts.operator_session import another_session
                self.token = another_session(self.url, "fullscale", ["operations", "finance"])
                self.configure({})
                self.regenerate_lists()
            else:
                self.cli("db", "upgrade")
                from scripts.operator_session import operator_session
                self.token = operator_session(self.url, "fullscale", ["operations", "finance"])
                self.configure({})
                self.import_month()
            if not self.args.stop_after_import:
                self.peak_day()
                self.end_of_day()
                self.reports()
                self.verify()
                self.check_debits()
                self.check_recon()
            self.table_sizes()
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every child stops, the figures so far print
            self.failures.append(f"{type(exc).__name__}: {exc}")
            log(f"ABORTED: {type(exc).__name__}: {exc}")
        finally:
            self.stop_all()
            if autogroup_was is not None:
                AUTOGROUP.write_text(autogroup_was)
            sampler.stop_event.set()
            analyzer.stop_event.set()
            try:
                self.close_schema(keep=bool(self.args.reuse_schema or self.args.keep_schema))
            except Exception as exc:  # noqa: BLE001
                log(f"could not drop schema {self.schema}: {exc}")
        self.summary["machine_after"] = machine.speed()
        self.summary["peak_rss_mib"] = {k: round(v) for k, v in sorted(sampler.peaks.items())}
        self.summary["seconds"] = round(time.monotonic() - t_start, 1)
        self.summary["failures"] = self.failures
        self.summary["auto_analyze"] = analyzer.runs
        self.print_summary()
        path = Path(self.args.summary) if self.args.summary else self.work / "summary.json"
        path.write_text(json.dumps(self.summary, indent=1, default=str, ensure_ascii=False))
        return 1 if self.failures else 0

    def autogroup_off(self) -> str | None:
        """The kernel's autogroup puts each session in a CPU group of its own, and every process
        here starts one (as does every PostgreSQL backend: each calls setsid), so a niceness would
        reach no other process. A server's services run in cgroups instead, where the engine unit's
        CPUWeight= and Nice= apply (docs/scale-out.md). For the run, autogroup is turned off when the
        batch side is niced; the setting it had is returned, to be put back."""
        if not (self.args.batch_nice or self.args.batch_db_nice) or self.args.keep_autogroup:
            was = AUTOGROUP.read_text().strip() if AUTOGROUP.exists() else "absent"
            self.summary["niceness"]["autogroup"] = f"left as it was ({was})"
            return None
        try:
            was = AUTOGROUP.read_text()
            AUTOGROUP.write_text("0")
        except OSError as exc:
            self.summary["niceness"]["autogroup"] = f"could not be turned off ({exc}): niceness reaches nothing"
            log(f"autogroup: {self.summary['niceness']['autogroup']}")
            return None
        self.summary["niceness"]["autogroup"] = f"off for the run (was {was.strip()})"
        log(f"autogroup: {self.summary['niceness']['autogroup']}")
        return was

    def stop_all(self) -> None:
        for name in ("watcher", "gw1", "gw2"):
            p = self.procs.get(name)
            if p is not None and p.alive():
                rc = p.stop(60)
                self.check(rc == 0 or self.failures, f"{name} exited {rc} on SIGTERM")
        for p in self.procs.values():
            if p.alive():
                p.kill_group()
        if getattr(self, "haproxy", None) is not None and self.haproxy.poll() is None:
            os.killpg(self.haproxy.pid, signal.SIGKILL)
            self.haproxy.wait()
        for pid in list(self.children.values()):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def print_summary(self) -> None:
        s = self.summary
        print("\n===== gridpay at full size: the utility's month and peak day =====")
        print(f"scale {s['scale']}: {s['sizes']}; {s['seconds']} s in all; work dir {s['work_dir']}")
        print(machine.describe(s["machine_before"]) + " (before)")
        print(machine.describe(s["machine_after"]) + " (after)")
        for name, f in s["phases"].items():
            print(f"  {name:22s} {json.dumps(f, ensure_ascii=False, default=str)}")
        print(f"targets: {json.dumps(TARGETS)}")
        print(f"database {s.get('database_mib')} MiB; per table (MiB): {json.dumps(s.get('table_mib'))}")
        print(f"peak RSS (MiB, target <= {TARGETS['rss_mib']}; the largest of each kind): "
              f"{json.dumps(by_kind(s['peak_rss_mib']))}")
        if "recon" in s:
            print(f"reconciliation: {json.dumps(s['recon'], default=str)}")
        if self.failures:
            print(f"FAILED ({len(self.failures)}):")
            for f in self.failures:
                print(f"  - {f}")
        else:
            print("ALL CHECKS PASSED")


def by_kind(peaks: dict[str, float]) -> dict[str, float]:
    """{name: MiB} with the per-bank processes (simbank_01020000, counter_during_01020000, ...) taken
    together: the largest of each kind."""
    out: dict[str, float] = {}
    for name, mib in peaks.items():
        kind = name.rsplit("_", 1)[0] + "_*" if name.split(" ")[0][-8:].isdigit() else name
        out[kind] = max(out.get(kind, 0), mib)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.fullscale", description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-url", default=os.environ.get("GRIDPAY_BENCH_PG_URL",
                                                      "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    p.add_argument("--scale", type=float, default=1.0, help="1.0 = the utility; 0.01 = the CI test's size")
    p.add_argument("--customers", type=int, default=None)
    p.add_argument("--payments", type=int, default=None, help="counter payments (each with its inquiry)")
    p.add_argument("--debits", type=int, default=None, help="debits in the peak day's batch (all banks)")
    p.add_argument("--counter-seconds", type=float, default=None,
                   help="the counter traffic's pace (default: the batch's target scaled, at least 30 s)")
    p.add_argument("--drop-rate", type=float, default=0.0005, help="bank hosts: answers lost before/after applying")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch-nice", type=int, default=10, metavar="N",
                   help="the niceness of the engines and the banks' hosts (0: as the gateways; default 10, "
                        "as config/systemd's engine unit)")
    p.add_argument("--keep-autogroup", action="store_true",
                   help="leave the kernel's autogroup on (then no niceness reaches across processes)")
    p.add_argument("--batch-db-nice", type=int, default=10, metavar="N",
                   help="engines.database_nice: the niceness of the engines' database sessions, through the "
                        "prioritize extension, created in the database when PostgreSQL has it (0: as the gateways')")
    p.add_argument("--group-commit-wait-ms", type=float, default=1.0, metavar="MS",
                   help="database.group_commit_wait_ms of the gateways: how long an idle committer waits for "
                        "more postings (larger batches, less CPU per payment, that much more latency)")
    p.add_argument("--work-dir", default=None, help="logs, files, reports (default: a new temporary directory)")
    p.add_argument("--summary", default=None, help="write the JSON summary here (default: WORK_DIR/summary.json)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--keep-schema", default=None, metavar="NAME", help="make the schema NAME and keep it")
    g.add_argument("--reuse-schema", default=None, metavar="NAME",
                   help="start from this already imported schema (same sizes and seed; it is changed, not dropped)")
    p.add_argument("--stop-after-import", action="store_true", help="imports only (with --keep-schema: a start for "
                                                                      "--reuse-schema)")
    args = p.parse_args(argv)
    bench = Bench(args)

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    # SIGINT too: a job started in the background of a script has SIGINT ignored, and Python keeps that
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, interrupted)
    return bench.run()


if __name__ == "__main__":
    sys.exit(main())
