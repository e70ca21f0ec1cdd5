"""The end-to-end business day on PostgreSQL (docs/e2e-day.md).

    .venv/bin/python -m scripts.e2e_day --pg-url URL [--kill PROCESS|random|none] [--seed N] [--customers N]

Separate processes: two ``gridpay serve``, two ``gridpay engine``, ``gridpay scheduler``, ``gridpay notifier``
(file sender), ``gridpay watch``, ``gridpay sim bank`` for banks A (ascii) and B (bcd), and a counter system per
bank (``scripts.e2e.bank_counter``); this script plays bank C's batch-file department and finance. A full day:
billing files through the watcher, counter payments / reversals / repeats, a scheduled debit batch per bank
(A, B online, C by file), then the banks' docs/spec/INTERFACE.md §7.1 files with planted differences and a finance statement. The
day must end with exactly the planted differences found, ``gridpay ledger verify`` holding, every notice sent
once, every process alive until its clean stop and exiting 0 — also when one process is killed (-9) at a
random moment during the day and restarted. Exit status 0 when every check holds, 1 otherwise.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from config.clock import SYSTEM_CLOCK
from config.settings import environment_for
from scripts.e2e import day_checks, day_files
from scripts.e2e.processes import (Proc, SchemaOfItsOwn, drop_file, free_port, gridpay, log, make_drop_dir,
                                   wait_dropped)

ROOT = Path(__file__).resolve().parents[1]
SHANGHAI = ZoneInfo("Asia/Shanghai")
A, B, C = "01020000", "01050000", "01030000"
DIALECT = {A: "ascii", B: "bcd", C: "ascii"}
ZMKS = {A: "0123456789ABCDEFFEDCBA9876543210", B: "FEDCBA9876543210F0E1D2C3B4A59687",
        C: "00112233445566778899AABBCCDDEEFF"}
ZMK_ENV = {b: f"GRIDPAY_E2E_ZMK_{b}" for b in ZMKS}
KILLABLE = ("gw1", "gw2", "e1", "e2", "scheduler", "notifier", "watcher")
DAY_TIMEOUT_S = 150


class Day(SchemaOfItsOwn):
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(args.work_dir or tempfile.mkdtemp(prefix="gridpay-e2e-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs = self.work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.drop = make_drop_dir(self.work / "drop")
        self.procs: dict[str, Proc] = {}
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.summary: dict = {"seed": args.seed, "customers": args.customers, "work_dir": str(self.work)}
        os.environ.update({ZMK_ENV[b]: z for b, z in ZMKS.items()})

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
            log(f"CHECK FAILED: {what}")
        return ok

    # --- configuration -------------------------------------------------------------------------

    def settings_tree(self, sim_ports: dict[str, int]) -> dict:
        debit = {"timeout_s": 2.0, "reversal_interval_s": 1.0, "reversal_max": 5, "connections": 2,
                 "max_in_flight": 64, "echo_interval_s": 30.0}
        banks = {}
        for code, name in ((A, "Bank A (ascii, online debits)"), (B, "Bank B (bcd, online debits)"),
                           (C, "Bank C (ascii, file debits)")):
            banks[code] = {"name": name, "dialect": DIALECT[code], "zmk_env": ZMK_ENV[code],
                           "channels": ["counter", "debit"], "idle_timeout_s": 300,
                           "debit": ({"mode": "online", "host": "127.0.0.1", "port": sim_ports[code], **debit}
                                     if code in sim_ports else {"mode": "file", "result_deadline_h": 24})}
        return {
            "database": {"url": self.url, "pool_size": 5, "group_commit_wait_ms": 1},
            "engines": {"metrics_port_base": 0}, "scheduler": {"metrics_port": 0},
            # the day is played in minutes: its bank files are reconciled before its cut-off
            "watch": {"metrics_port": 0, "hold_bank_files_until_day_ended": False},
            "gateway": {"metrics_port": 0, "echo_interval_s": 60, "key_grace_s": 60, "listeners": [
                {"name": "ascii", "port": 0, "dialect": "ascii", "banks": [A, C]},
                {"name": "bcd", "port": 0, "dialect": "bcd", "banks": [B]}]},
            "notifier": {"sender": "file", "file_path": str(self.work / "sms.jsonl"), "metrics_port": 0,
                         "poll_interval_s": 0.3, "http_timeout_s": 1.0, "lease_s": 5.0, "sweep_interval_s": 1.0,
                         "backoff_base_s": 1.0, "backoff_max_s": 5.0},
            "banks": banks,
        }

    # --- steps ---------------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run(gridpay(*args), env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"gridpay {' '.join(args)} failed ({r.returncode}): {r.stdout[-1500:]} {r.stderr[-3000:]}")
        return r

    def drop_file(self, name: str, data: bytes) -> None:
        drop_file(self.drop, name, data)

    def wait_dropped(self, names: list[str], timeout: float = 90) -> None:
        wait_dropped(self.drop, names, timeout)

    def billing_files(self) -> None:
        """Demo customers and bills; agreements spread over the three banks (half the active customers)."""
        from ledger.demo_data import demo_rows
        from ledger.imports import HEADERS

        rows = demo_rows(self.args.customers, seed=self.args.seed, as_of=datetime.now(SHANGHAI).date())
        active = [r[0] for r in rows["customers"] if r[3] == "A"]
        self.rng.shuffle(active)
        half = len(active) // 2
        debit_customers, counter_customers = active[:half], active[half:]
        names = {r[0]: r[1] for r in rows["customers"]}
        agreements, self.accounts = [], {A: {}, B: {}}
        for i, c in enumerate(sorted(debit_customers)):
            bank = (A, B, C)[i % 3]
            account = f"62{bank[-4:]}{int(c[-6:]):010d}"
            limit = self.rng.choice(("0", "0", "0", "300000"))
            agreements.append([c, bank, account, names[c], "A", limit])
            if bank in self.accounts:
                draw = self.rng.random()
                status, balance = ("C", 10_000_000) if draw < 0.02 else ("A", 100) if draw < 0.06 else ("A", 50_000_000)
                self.accounts[bank][account] = (balance, 0, status)
        rows["agreements"] = agreements
        self.counter_customers = {b: sorted(counter_customers[i::3]) for i, b in enumerate((A, B, C))}
        self.summary["agreements"] = len(agreements)
        for kind in ("customers", "bills", "agreements"):
            import io
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\r\n")
            w.writerow(HEADERS[kind])
            w.writerows(rows[kind])
            name = f"{kind}.csv"
            self.drop_file(name, buf.getvalue().encode("utf-8"))
            self.wait_dropped([name])
        log(f"billing files imported through the watcher: {len(rows['customers'])} customers, "
            f"{len(rows['bills'])} bills, {len(agreements)} agreements")

    def start_bank_sims(self) -> dict[str, int]:
        from config.clock import Clock

        self.business_date = Clock().business_date(SYSTEM_CLOCK.now())
        ports = {}
        for bank, extra in ((A, ["--decline", "05=0.02", "--drop-after-apply", str(self.args.drop_after),
                                 "--drop-before-apply", str(self.args.drop_before), "--latency-ms", "3",
                                 "--latency-dist", "exponential"]),
                            (B, ["--decline", "05=0.02", "--drop-after-apply", str(self.args.drop_after),
                                 "--drop-before-apply", str(self.args.drop_before), "--latency-ms", "3",
                                 "--latency-dist", "exponential"])):
            path = self.work / f"accounts_{bank}.csv"
            path.write_text("account_no,balance,limit,status\n" + "".join(
                f"{a},{bal},{lim},{st}\n" for a, (bal, lim, st) in self.accounts[bank].items()))
            name = f"simbank_{bank}"
            p = Proc(name, gridpay("sim", "bank", "--bank", bank, "--dialect", DIALECT[bank], "--zmk-env", ZMK_ENV[bank],
                                   "--accounts", str(path), "--business-date", self.business_date.isoformat(),
                                   "--day-file-dir", str(self.work / f"dayfile_{bank}"),
                                   "--seed", str(self.args.seed), *extra),
                     dict(os.environ), self.logs, r'"port"').start()
            self.procs[name] = p
            ports[bank] = json.loads(p.first_line)["port"]
        return ports

    def start_daemons(self) -> None:
        self.gw_ports = {}
        for gw in ("gw1", "gw2"):
            ascii_port, bcd_port = free_port(), free_port()
            self.gw_ports[gw] = {"ascii": ascii_port, "bcd": bcd_port}
            env = {**self.env, "GRIDPAY_GATEWAY__LISTENERS__0__PORT": str(ascii_port),
                   "GRIDPAY_GATEWAY__LISTENERS__1__PORT": str(bcd_port),
                   "GRIDPAY_GATEWAY__LOG_FILE": json.dumps(str(self.logs / f"{gw}.log"))}
            self.procs[gw] = Proc(gw, gridpay("serve"), env, self.logs, r"gridpay serving:")
        for e in ("e1", "e2"):
            self.procs[e] = Proc(e, gridpay("engine", "--id", e, "--poll", "0.2", "--lease", "4",
                                         "--log-file", str(self.logs / f"{e}.log")),
                                 self.env, self.logs, r"running")
        self.procs["scheduler"] = Proc("scheduler", gridpay("scheduler", "--interval", "1"), self.env, self.logs,
                                       r"scheduler running")
        self.procs["notifier"] = Proc("notifier", gridpay("notifier"), self.env, self.logs, r"gridpay notifier:")
        names = ("gw1", "gw2", "e1", "e2", "scheduler", "notifier")
        for n in names:
            self.procs[n].launch()
        for n in names:
            self.procs[n].wait_ready()
        log("started: " + ", ".join(f"{n} pid {p.p.pid}" for n, p in self.procs.items()))

    def start_watcher(self) -> None:
        self.procs["watcher"] = Proc("watcher", gridpay("watch", "--dir", str(self.drop), "--interval", "0.3",
                                                        "--actor", "system:e2e-watch"), self.env, self.logs, None).start()

    def add_plans(self) -> None:
        now = datetime.now(SHANGHAI)
        at = (now + timedelta(seconds=self.args.batch_after + 8)).replace(microsecond=0)
        cron = f"{at.minute} {at.hour} * * * {at.second}"      # croniter's sixth field: seconds
        # the plans are added in-process (engines.plans.add_plan, what `gridpay plan add` calls): the
        # cron time is seconds away and a CLI start takes seconds on a loaded 2-core machine
        from engines.plans import add_plan
        for bank in (A, B, C):
            add_plan(self.db, name=f"day-{bank}", bank_code=bank, cron=cron, now=SYSTEM_CLOCK.now(), actor="e2e", due_days=60,
                     chunk_size=25, time_zone="Asia/Shanghai")
        self.plan_list = self.cli("plan", "list").stdout
        now = datetime.now(SHANGHAI)
        self.batch_time = at
        log(f"plans added: cron '{cron}' (Asia/Shanghai), due in {(at - now).total_seconds():.0f} s")

    def start_counters(self) -> None:
        self.counters = {}
        for i, bank in enumerate((A, B, C)):
            listener = "ascii" if DIALECT[bank] == "ascii" else "bcd"
            order = ("gw1", "gw2") if i % 2 == 0 else ("gw2", "gw1")
            ports = ",".join(str(self.gw_ports[g][listener]) for g in order)
            path = self.work / f"counter_customers_{bank}.txt"
            path.write_text("\n".join(self.counter_customers[bank]) + "\n")
            name = f"counter_{bank}"
            p = Proc(name, [sys.executable, "-m", "scripts.e2e.bank_counter", "--ports", ports, "--bank", bank,
                            "--dialect", DIALECT[bank], "--zmk-env", ZMK_ENV[bank], "--customers", str(path),
                            "--connections", "3", "--window", "2", "--rate", str(self.args.counter_rate),
                            "--seed", str(self.args.seed * 10 + i), "--journal", str(self.work / f"journal_{bank}.json")],
                     self.env, self.logs, None).start()
            self.counters[bank] = p

    # --- bank C: the batch-file department -------------------------------------------------------

    def play_bank_c(self) -> None:
        self.c_results = getattr(self, "c_results", {})
        for req in sorted((self.drop / "outgoing").glob(f"{C}_*.req")):
            if req.name in self.c_results:
                continue
            lines = req.read_bytes().decode("gbk").rstrip("\n").split("\n")
            _, bank, batch, count, total = lines[0].split("|")
            out, approved, declined = [], [0, 0], [0, 0]
            results = []
            for line in lines[1:]:
                _, seq, customer, account, amount, _periods = line.split("|")
                draw = self.rng.random()
                code = "00" if draw < 0.9 else "51" if draw < 0.96 else "14"
                ref = f"C{int(batch) % 10**5:05d}{int(seq):06d}"   # its RRN in the day file (§7.1): 12 at most
                (approved if code == "00" else declined)[0] += 1
                (approved if code == "00" else declined)[1] += int(amount)
                out.append(f"D|{seq}|{customer}|{account}|{amount}|{code}|{ref}")
                results.append({"seq": int(seq), "customer": customer, "amount": int(amount), "code": code, "ref": ref})
            head = f"H|{bank}|{batch}|{count}|{total}|{approved[0]}|{approved[1]}|{declined[0]}|{declined[1]}"
            name = req.name[:-4] + ".ret"
            self.drop_file(name, ("\n".join([head, *out]) + "\n").encode("gbk"))
            self.c_results[req.name] = {"batch": int(batch), "ret": name, "lines": results,
                                        "answered_at": datetime.now(SHANGHAI)}
            log(f"bank C answered {req.name}: {approved[0]} approved, {declined[0]} declined -> {name}")

    # --- the day -------------------------------------------------------------------------------

    def day_state(self) -> dict:
        s = {}
        s["batches"] = self.q("select count(*) from debit_batches where plan_id is not null")[0][0]
        s["open_debits"] = self.q("select count(*) from debits where state in ('pending','sent')")[0][0]
        s["open_reversals"] = self.q("select count(*) from debit_reversals where state = 'pending'")[0][0]
        s["files_unapplied"] = self.q("select count(*) from debit_files where state <> 'applied'")[0][0]
        s["outbox_busy"] = self.q("select count(*) from outbox where state in ('pending','sending')")[0][0]
        s["counters_running"] = sum(1 for p in self.counters.values() if p.alive())
        return s

    def day_done(self, s: dict) -> bool:
        return (s["batches"] >= 3 and s["open_debits"] == 0 and s["open_reversals"] == 0
                and s["files_unapplied"] == 0 and s["counters_running"] == 0 and s["outbox_busy"] == 0
                and len(getattr(self, "c_results", {})) >= 1)

    def run_day(self) -> None:
        victim = self.args.kill
        if victim == "random":
            victim = self.rng.choice(KILLABLE)
        kill_at = None
        if victim and victim != "none":
            # a moment during the day: counter traffic runs from the start; the batch from its cron time
            # a moment when the victim has work: gateways and notifier during the counter traffic (and
            # the notices of the batch), engines, scheduler and watcher around the batch's time
            batch_in = (self.batch_time - datetime.now(SHANGHAI)).total_seconds()
            lo, hi = (1.0, batch_in + 3) if victim in ("gw1", "gw2", "notifier") else (batch_in - 1, batch_in + 4)
            kill_at = time.monotonic() + self.rng.uniform(max(0.5, lo), hi)
        self.summary["kill"] = {"process": victim or "none"}
        t0 = time.monotonic()
        self.start_counters()
        last = None
        while True:
            if kill_at is not None and time.monotonic() >= kill_at:
                p = self.procs[victim]
                state = self.day_state()
                p.kill9()
                log(f"KILL -9 {victim} (pid {p.p.pid}) at +{time.monotonic() - t0:.1f} s; day so far: {state}")
                time.sleep(self.rng.uniform(0.5, 2.0))
                p.start()
                log(f"restarted {victim} (pid {p.p.pid})")
                self.summary["kill"].update(at_s=round(time.monotonic() - t0, 1), state=state)
                kill_at = None
            self.play_bank_c()
            s = self.day_state()
            if s != last:
                log(f"day: {s}")
                last = s
            if self.day_done(s) and kill_at is None:
                break
            if time.monotonic() - t0 > DAY_TIMEOUT_S:
                raise RuntimeError(f"the day did not finish in {DAY_TIMEOUT_S} s: {s}")
            time.sleep(0.3)
        self.summary["day_s"] = round(time.monotonic() - t0, 1)
        log(f"day traffic done in {self.summary['day_s']} s")

    # --- end of day: files ---------------------------------------------------------------------

    def counter_lines(self, bank: str) -> list[dict]:
        j = json.loads((self.work / f"journal_{bank}.json").read_text())
        self.journals[bank] = j
        return day_files.counter_lines_from_journal(j, bank, self.business_date.year)

    def debit_lines_file(self) -> list[dict]:
        """Bank C's debits as its §7.1 file lists them (see docs/e2e-day.md, 'file debits')."""
        out = []
        for req, res in self.c_results.items():
            tx = res["answered_at"].strftime("%Y%m%d%H%M%S")
            for ln in res["lines"]:
                if ln["code"] != "00":
                    continue
                # §7.1: the RRN of a file debit is the bank reference of its result-file line
                out.append({"channel": "D", "tx": tx, "stan": f"{ln['seq'] % 1_000_000:06d}", "rrn": ln["ref"],
                            "customer": ln["customer"], "amount": ln["amount"], "status": "S", "term": ln["ref"][:6]})
        return out

    def end_of_day(self) -> None:
        # every process still up before the clean stop
        for name, p in self.procs.items():
            self.check(p.alive(), f"{name} is not running at the end of the day (exit {p.p.poll()})")
        # the debit side is done: engines and scheduler stop cleanly; the bank hosts write their day files
        for name in ("e1", "e2", "scheduler"):
            rc = self.procs[name].stop()
            self.check(rc == 0, f"{name} exited {rc} on SIGTERM")
        self.sims = {}
        for bank in (A, B):
            p = self.procs[f"simbank_{bank}"]
            rc = p.stop()
            self.check(rc == 0, f"bank host {bank} exited {rc}")
            self.sims[bank] = json.loads(p.output().strip().splitlines()[-1])
        self.journals = {}
        lines = {bank: self.counter_lines(bank) for bank in (A, B, C)}
        for bank in (A, B):
            lines[bank] += day_files.debit_lines_online(self.sims[bank]["day_file"])
        lines[C] += self.debit_lines_file()
        self.bank_lines = lines
        self.planted = day_files.plant(lines, (A, B, C), self.args.seed + 7)
        names, self.remit = [], {}
        for bank in (A, B, C):
            name, data, total = day_files.bank_file(bank, self.business_date, lines[bank])
            self.remit[bank] = total
            (self.work / name).write_bytes(data)
            self.drop_file(name, data)
            names.append(name)
        self.wait_dropped(names)
        log(f"bank files reconciled by the watcher: {', '.join(names)}")
        name, data, self.cheques = day_files.finance_statement(self.business_date, self.remit, lines)
        (self.work / name).write_bytes(data)
        self.drop_file(name, data)
        self.wait_dropped([name])
        log(f"finance statement reconciled: {len(data.splitlines()) - 1} entries")
        self.wait_outbox()

    def wait_outbox(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while self.q("select count(*) from outbox where state in ('pending','sending')")[0][0]:
            if time.monotonic() > end:
                self.check(False, "outbox not drained")
                return
            time.sleep(0.3)

    def stop_rest(self) -> None:
        for name in ("notifier", "watcher", "gw1", "gw2"):
            p = self.procs[name]
            alive = p.alive()
            self.check(alive, f"{name} died before its clean stop (exit {p.p.poll()})")
            rc = p.stop()
            self.check(rc == 0, f"{name} exited {rc} on SIGTERM")

    # --- checks --------------------------------------------------------------------------------

    def checks(self) -> None:
        s = self.summary
        # counter systems: no mismatch, every unanswered payment settled
        s["counter"] = {}
        for bank, p in self.counters.items():
            j = self.journals[bank]
            self.check(p.p.returncode == 0 and not j["mismatches"],
                       f"counter system {bank}: exit {p.p.returncode}, mismatches {j['mismatches'][:5]}")
            st = Counter(r["status"] for r in j["payments"])
            s["counter"][bank] = {"paid": st.get("S", 0), "reversed": st.get("R", 0),
                                  "unanswered": len(j["unanswered"]),
                                  "unanswered_outcomes": dict(Counter(u.get("outcome") for u in j["unanswered"])),
                                  "reconnects": j["stats"].get("reconnects", 0), "seconds": j["seconds"]}
        # reconciliation: the bank runs' exceptions are exactly the planted ones
        recon, problems = day_checks.recon_problems(self.q, self.planted, {A, B, C}, self.cheques)
        s["bank_recon"], s["planted"], s["planted_found"] = recon["bank"], recon["planted"], recon["planted_found"]
        s["finance"] = recon["finance"]
        for problem in problems:
            self.check(False, problem)
        # ledger verify
        r = self.cli("ledger", "verify", check=False)
        s["ledger_verify"] = {"exit": r.returncode, "output": (r.stdout + r.stderr).strip()[-300:]}
        self.check(r.returncode == 0, f"gridpay ledger verify exit {r.returncode}: {r.stdout[-1500:]}{r.stderr[-1500:]}")
        # debits: bank truth vs ledger
        self.check_debits()
        # notices: every one sent, each in the sender's file exactly once
        self.check_notices()

    def check_debits(self) -> None:
        s = self.summary
        states = dict(self.q("select state, count(*) from debits group by state"))
        s["debits"] = states
        self.check(set(states) <= {"approved", "declined", "reversed"}, f"debit states at the end: {states}")
        for bank in (A, B):
            figures, problems = day_checks.debit_problems(self.q, bank, day_files.debit_lines_online(
                self.sims[bank]["day_file"]))
            for problem in problems:
                self.check(False, problem)
            s.setdefault("bank_hosts", {})[bank] = {"applied": self.sims[bank]["applied"],
                                                    "reversed": self.sims[bank]["reversed"],
                                                    "unknown_in_ledger": figures["unknown_in_ledger"]}

    def check_notices(self) -> None:
        s = self.summary
        states = dict(self.q("select state, count(*) from outbox group by state"))
        s["outbox"] = states
        path = self.work / "sms.jsonl"
        sent_lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        by_id = Counter(n["id"] for n in sent_lines)
        twice = [i for i, n in by_id.items() if n > 1]
        self.check(not twice, f"notices sent more than once: {twice[:10]}")
        sent_ids = {r[0] for r in self.q("select id from outbox where state = 'sent'")}
        self.check(sent_ids == set(by_id), f"outbox sent {len(sent_ids)} vs file {len(by_id)}: "
                   f"missing {sorted(sent_ids - set(by_id))[:5]}, unrecorded {sorted(set(by_id) - sent_ids)[:5]}")
        dead = self.q("select id, last_error from outbox where state = 'dead'")
        killed_notifier = self.summary["kill"]["process"] == "notifier"
        allowed = [d for d in dead if killed_notifier and "unknown" in (d.last_error or "").lower()]
        if dead and len(allowed) == len(dead):
            self.notes.append(f"{len(dead)} notice(s) in flight when the notifier was killed are dead "
                              f"(outcome unknown: at most once); {sum(1 for d in dead if d.id in by_id)} of them "
                              "reached the file")
        self.check(len(allowed) == len(dead), f"dead notices: {[tuple(d) for d in dead][:5]}")
        self.check(sum(states.values()) > 0 and states.get("pending", 0) == 0 and states.get("sending", 0) == 0,
                   f"outbox states {states}")
        s["sms_file_lines"] = len(sent_lines)

    # --- run -----------------------------------------------------------------------------------

    def run(self) -> int:
        t0 = time.monotonic()
        self.open_schema(self.args.schema or f"e2e_{uuid.uuid4().hex[:10]}")
        try:
            # drop_dir is top level: no GRIDPAY_* variable can set it (config/settings.py only applies
            # names with a "__"), so it goes into a configuration file (docs/e2e-day.md, "bugs")
            self.config = self.work / "gridpay.toml"
            self.config.write_text(f'drop_dir = {json.dumps(str(self.drop))}\n')
            os.environ["GRIDPAY_CONFIG"] = str(self.config)
            self.env = {**os.environ, **environment_for(self.settings_tree({}))}
            self.cli("db", "upgrade")
            self.start_watcher()
            self.billing_files()
            sim_ports = self.start_bank_sims()
            self.env = {**os.environ, **environment_for(self.settings_tree(sim_ports))}
            self.procs["watcher"].env = self.env
            self.start_daemons()
            self.add_plans()
            self.run_day()
            self.end_of_day()
            self.stop_rest()
            self.checks()
        except Exception as exc:  # noqa: BLE001
            self.failures.append(f"{type(exc).__name__}: {exc}")
            log(f"ABORTED: {type(exc).__name__}: {exc}")
        finally:
            for p in list(self.procs.values()) + list(getattr(self, "counters", {}).values()):
                if p.alive():
                    p.p.kill()
                    p.p.wait()
            try:
                self.close_schema(keep=self.args.keep_schema)
            except Exception as exc:  # noqa: BLE001
                log(f"could not drop schema {self.schema}: {exc}")
        s = self.summary
        s["processes"] = {n: {"starts": p.starts, "kills": p.kills, "exit": p.p.returncode if p.p else None}
                          for n, p in self.procs.items()}
        s["seconds"] = round(time.monotonic() - t0, 1)
        s["notes"] = self.notes
        s["failures"] = self.failures
        self.print_summary()
        (self.work / "summary.json").write_text(json.dumps(s, indent=1, default=str))
        return 1 if self.failures else 0

    def print_summary(self) -> None:
        s = self.summary
        print("\n===== gridpay end-to-end business day =====")
        print(f"seed {s['seed']}, {s['customers']} customers, work dir {s['work_dir']}, {s.get('seconds')} s "
              f"(day traffic {s.get('day_s')} s)")
        k = s.get("kill", {})
        print(f"kill: {k.get('process')}" + (f" at +{k['at_s']} s" if "at_s" in k else ""))
        for n, p in s.get("processes", {}).items():
            print(f"  {n:18} starts {p['starts']}  kills {p['kills']}  exit {p['exit']}")
        for b, c in s.get("counter", {}).items():
            print(f"  counter {b}: {c}")
        print(f"debits: {s.get('debits')}  bank hosts: {s.get('bank_hosts')}")
        print(f"bank recon: {s.get('bank_recon')}")
        print(f"planted {len(s.get('planted', []))}, found {len(s.get('planted_found', []))}: {s.get('planted')}")
        print(f"finance: {s.get('finance')}")
        print(f"ledger verify: {s.get('ledger_verify')}")
        print(f"outbox: {s.get('outbox')}  sms file lines: {s.get('sms_file_lines')}")
        for n in s.get("notes", []):
            print(f"note: {n}")
        if self.failures:
            print(f"FAILED ({len(self.failures)}):")
            for f in self.failures:
                print(f"  - {f}")
        else:
            print("ALL CHECKS PASSED")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.e2e_day", description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-url", required=True, help="PostgreSQL server URL (a fresh schema is made in it)")
    p.add_argument("--kill", default="none", help=f"none | random | one of {', '.join(KILLABLE)}")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--customers", type=int, default=450)
    p.add_argument("--batch-after", type=float, default=5.0, help="seconds into the day the debit plans are due")
    p.add_argument("--counter-rate", type=float, default=10.0, help="operations per second per bank")
    p.add_argument("--drop-after", type=float, default=0.04, help="bank hosts: answers lost after applying")
    p.add_argument("--drop-before", type=float, default=0.02, help="bank hosts: requests lost before applying")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--schema", default=None)
    p.add_argument("--keep-schema", action="store_true")
    args = p.parse_args(argv)
    if args.kill not in ("none", "random", *KILLABLE):
        p.error(f"--kill: none, random or one of {', '.join(KILLABLE)}")
    return Day(args).run()


if __name__ == "__main__":
    sys.exit(main())
