"""A seeded, deterministic fault simulation of the posting path (docs/ledger.md, "Fault simulation").

One integer seed drives a ``random.Random`` that chooses the customers and their bills, then
every step: a batch of bank requests (``posting_sim_bank``) through the group committer; the
same with a fault in its transaction (``posting_sim_faults``); an inquiry; a new bill; a
restart (the process dropped and started again on the same database); the clock moved on; and
on PostgreSQL two committers racing on one database in a known order (the first holds its
COMMIT until the second has started, so the result must be the first's then the second's).
The model (``posting_sim_model``) decides what each request should get; after every step the
checks (``posting_sim_checks``) compare every answer and the whole ledger with it, and run
``ledger verify``. The ledger's clock is the simulation's, so the same seed gives the same
steps and the same answers, receipt numbers included.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import event, text

from ledger.business_date import BusinessCalendar
from ledger.db import make_engine
from ledger.group_commit import GroupCommitter, Poster
from ledger.inquiry import inquire
from ledger_helpers import add_banks, add_bills, add_customers, customer_row
from posting_sim_bank import BANKS, UNKNOWN_CUSTOMER, Bank, Clock
from posting_sim_checks import answer_problems, describe, inquiry_problems, ledger_problems
from posting_sim_faults import Fault, FaultyEngine, Killed
from posting_sim_model import NO_ANSWER, NOT_APPLIED, Bill, Customer, Model

CAL = BusinessCalendar()
STEPS = {"batch": 50, "fault": 24, "inquiry": 8, "bill": 6, "restart": 3, "later": 3, "race": 10}
FAULTS = {"error": 4, "busy": 2, "integrity": 2, "lost before": 2, "lost after": 3, "lost unknown": 2,
          "worker kill": 4, "gateway kill": 3, "resent then error": 2}
SETTLE_S = 10.0      # an unknown commit's deadline (the bank's timeout)
DOWN_S = 0.2         # the deadline when the database stays away: it passes, the outcome stays unknown


class Committer:
    """One process's posting path: its engine (with fault hooks), a Poster as the committer worker
    runs it, and a GroupCommitter for the plain batches."""

    def __init__(self, url: str, clock: Clock, group: bool = True):
        self.engine = make_engine(url, pool_size=2, pre_ping=False)
        self.faults = FaultyEngine(self.engine)
        self.poster = Poster(self.engine, CAL, clock)
        self.group = GroupCommitter(self.engine, CAL, max_batch=1, max_wait_s=0.5, clock=clock).start() \
            if group else None
        self.pids: set[int] = set()    # PostgreSQL backends of this process's connections
        if self.engine.dialect.name == "postgresql":
            event.listen(self.engine, "connect", lambda dbapi_conn, _: self.pids.add(dbapi_conn.info.backend_pid))

    def post(self, postings: list) -> list:
        self.group.max_batch = len(postings)        # the batch goes whole as soon as it is all queued
        futures = [self.group.submit(p) for p in postings]
        return [f.result(timeout=120) for f in futures]

    def close(self) -> None:
        """Stopped, or killed: either way its connections are gone and its transaction with them."""
        if self.group is not None:
            self.group.stop(drain=False, timeout=30)
        self.engine.dispose()


def start_time(rng: random.Random) -> datetime:
    if rng.random() < 0.1:   # across New Year (a December field 7 repeated in January keeps its identity)
        return datetime(2026, 12, 31, 13, 30, tzinfo=timezone.utc) + timedelta(minutes=rng.randrange(60))
    return datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=rng.randrange(360),
                                                                  seconds=rng.randrange(86_400))


def world(rng: random.Random, url: str, clock: Clock) -> Model:
    """Banks, 3-7 customers (some without prepayment, now and then one suspended) with 0-3 bills."""
    customers = []
    for i in range(rng.randint(3, 7)):
        status = "S" if rng.random() < 0.08 else "A"
        customers.append(Customer(f"C{i:04d}", status, "Y" if rng.random() < 0.7 else "N"))
    model = Model(set(BANKS), customers, CAL)
    bills = []
    for c in customers:
        for m in range(rng.randint(0, 3)):
            bills.append(new_bill(rng, model, c.customer_no, f"2026{m + 1:02d}"))
    engine = make_engine(url)
    with engine.begin() as conn:
        add_banks(conn, *BANKS, at=clock.now)
        add_customers(conn, [customer_row(c.customer_no, status=c.status, prepay=c.prepay, at=clock.now)
                             for c in customers])
        add_bills(conn, bills, at=clock.now)
    engine.dispose()
    return model


def new_bill(rng: random.Random, model: Model, customer_no: str, period: str) -> tuple:
    principal, penalty = rng.randint(1, 400) * 100, rng.choice((0, 0, 50, 120))
    bill_id = f"B{customer_no}{period}"
    model.add_bill(customer_no, Bill(bill_id, period, date(int(period[:4]), int(period[4:]), 28), principal, penalty))
    return (customer_no, period, principal, penalty, bill_id)


class Simulation:
    def __init__(self, seed: int, url: str, verbose: bool = False):
        self.seed, self.url, self.verbose = seed, url, verbose
        self.rng = random.Random(seed)
        self.clock = Clock(start_time(self.rng))
        self.model = world(self.rng, url, self.clock)
        self.bank = Bank(self.rng, self.model, self.clock)
        self.postgresql = url.startswith("postgresql")
        self.committer = Committer(url, self.clock)
        self.other = Committer(url, self.clock, group=False) if self.postgresql else None
        self.transcript: list[str] = []
        self.found: list[str] = []         # a step's problems other than its answers
        self.stats: Counter = Counter()
        self.steps = 0

    def run(self, steps: int) -> list[str]:
        """Problems found (empty: every check held after every step); stops at the first failing step."""
        try:
            for n in range(steps):
                kinds = {k: w for k, w in STEPS.items() if k != "race" or self.postgresql}
                kind = self.rng.choices(list(kinds), list(kinds.values()))[0]
                self.log(f"step {n}: {kind}")
                problems = self.step(kind)
                self.steps += 1
                self.stats[f"step {kind}"] += 1
                if problems:
                    return [f"step {n} ({kind}): {p}" for p in problems]
            return []
        finally:
            self.committer.close()
            if self.other is not None:
                self.other.close()

    def step(self, kind: str) -> list[str]:
        checked = getattr(self, kind)()
        problems, self.found = self.found, []
        problems += ledger_problems(self.committer.engine, self.model)   # learns the new receipts first
        for postings, outcomes, expected in checked:
            problems += answer_problems(self.model, postings, outcomes, expected)
        return problems

    def log(self, line: str) -> None:
        self.transcript.append(line)
        if self.verbose:
            print(line, flush=True)

    # ------------------------------------------------------------------ steps
    def requests(self, race_safe: bool = False) -> list:
        n = self.rng.choice((1, 1, 1, 1, 2, 2, 3, 4, 6))
        made = self.bank.requests(n, race_safe)
        self.stats.update(f"request {label}" for label, _ in made)
        return [(label, sent, sent.posting) for label, sent in made]

    def answered(self, made: list, outcomes: list | None) -> None:
        for (label, sent, p), out in zip(made, outcomes or [None] * len(made)):
            code = "" if out is None else out.response_code
            sent.answers.append(code)
            self.stats[f"answer {code or 'none'}"] += 1
            self.log(f"  {label}: {describe(p)} -> {code or 'no answer'} {out.fields if out else ''}"
                     f"{' replayed' if out is not None and out.replayed else ''}")

    def batch(self):
        made = self.requests()
        postings = [p for _, _, p in made]
        outcomes = self.committer.post(postings)
        self.answered(made, outcomes)
        return [(postings, outcomes, [self.model.decide(p) for p in postings])]

    def fault(self):
        kind = self.rng.choices(list(FAULTS), list(FAULTS.values()))[0]
        made = self.requests()
        postings = [p for _, _, p in made]
        fault = self.make_fault(kind)
        self.log(f"  fault {kind}: {fault}")
        outcomes, fired = self.process(self.committer, postings, fault)
        self.stats[f"fault {kind} ({fired[1]})"] += 1
        landed = fired[1] == "after commit"
        if fault.kind in ("busy", "integrity"):
            expected = [self.model.decide(p) for p in postings]
        elif fault.kind == "error" and fired[1] == "statement":
            expected = [NOT_APPLIED] * len(postings)
        elif fault.kind in ("error", "lost"):
            if landed:
                for p in postings:
                    self.model.decide(p)
            expected = [NO_ANSWER if fault.down else self.model.lookup(p) for p in postings]
        else:   # killed: the batch is answered by the successor (worker) or never (gateway)
            if landed:
                for p in postings:
                    self.model.decide(p)
            return self.after_kill(kind, made, postings)
        self.answered(made, outcomes)
        return [(postings, outcomes, expected)]

    def make_fault(self, kind: str) -> Fault:
        at = self.rng.randint(1, 26)
        if kind in ("error", "busy", "integrity"):
            return Fault(kind, at)
        if kind.startswith("lost"):
            return Fault("lost", after=kind == "lost after" or (kind == "lost unknown" and self.rng.random() < 0.5),
                         down=kind == "lost unknown")
        where = self.rng.choice(("statement", "before", "after"))
        return Fault("kill", at if where == "statement" else 1_000_000, after=where == "after")

    def process(self, committer: Committer, postings: list, fault: Fault | None, resent: bool = False):
        deadline = time.monotonic() + (DOWN_S if fault is not None and fault.down else SETTLE_S)
        committer.faults.arm(fault)
        try:
            outcomes = committer.poster.process(postings, [deadline] * len(postings),
                                                [True] * len(postings) if resent else None)
        except Killed:
            outcomes = None
        finally:
            fired = committer.faults.fired
            committer.faults.disarm()
        assert fault is None or fired is not None, f"{fault} did not strike"
        return outcomes, fired

    def after_kill(self, kind: str, made: list, postings: list):
        """A killed process is replaced on the same database; a worker's batch goes to its successor."""
        self.restart()
        if kind == "gateway kill":
            self.answered(made, None)
            return []
        if kind == "worker kill":
            outcomes, _ = self.process(self.committer, postings, None, resent=True)
            expected = [self.model.decide(p) for p in postings]
        else:   # the successor's run fails too: each resent posting is looked up, never a blind 96
            outcomes, fired = self.process(self.committer, postings, Fault("error", self.rng.randint(1, 26)),
                                           resent=True)
            self.stats[f"fault resent run error ({fired[1]})"] += 1
            expected = [self.model.lookup(p) for p in postings]
        self.answered(made, outcomes)
        return [(postings, outcomes, expected)]

    def inquiry(self):
        customer = UNKNOWN_CUSTOMER if self.rng.random() < 0.1 else self.rng.choice(sorted(self.model.customers))
        result = inquire(self.committer.engine, customer, self.clock.now, CAL)
        self.log(f"  inquiry {customer} -> {result.response_code} due {result.total_due} "
                 f"prepaid {result.prepaid_balance}")
        self.found += inquiry_problems(self.model, customer, result)
        return []

    def bill(self):
        customer = self.rng.choice(sorted(self.model.customers))
        periods = [b.period for b in self.model.customers[customer].bills]
        last = max(periods, default="202600")
        year, month = int(last[:4]), int(last[4:]) + 1
        period = f"{year + month // 13}{(month - 1) % 12 + 1:02d}"
        item = new_bill(self.rng, self.model, customer, period)
        with self.committer.engine.begin() as conn:
            add_bills(conn, [item], at=self.clock.now)
        self.log(f"  new bill {item}")
        return []

    def restart(self):
        self.committer.close()
        self.committer = Committer(self.url, self.clock)
        self.log("  restarted")
        return []

    def later(self):
        self.clock.tick(self.rng.randint(1, 10) * 3600)
        self.log(f"  clock {self.clock.now.isoformat()}")
        return []

    def race(self):
        """Two committers on one database, the first holding its COMMIT until the second has started
        (and, when it must, is waiting for the first's locks): the first's answers, then the second's."""
        first, second = self.requests(race_safe=True), self.requests(race_safe=True)
        xs, ys = [p for _, _, p in first], [p for _, _, p in second]
        got: dict[str, object] = {}

        def run(name, committer, postings):
            try:
                got[name] = committer.poster.process(postings)
            except BaseException as exc:  # noqa: BLE001 - reported as the step's problem
                got[name] = exc

        at_commit = self.committer.faults.hold()
        a = threading.Thread(target=run, args=("a", self.committer, xs))
        a.start()
        while not at_commit.wait(0.01) and a.is_alive():
            pass
        b = threading.Thread(target=run, args=("b", self.other, ys))
        b.start()
        if self.blocked(b):
            self.stats["race: second waited for the first's locks"] += 1
        self.committer.faults.release()
        a.join(120)
        b.join(120)
        errors = [f"committer {k} raised {v!r}" for k, v in got.items() if isinstance(v, BaseException)]
        if errors or len(got) != 2:
            self.found += errors or ["a racing committer did not finish"]
            return []
        self.log("  first committer:")
        self.answered(first, got["a"])
        self.log("  second committer:")
        self.answered(second, got["b"])
        expected = [self.model.decide(p) for p in xs] + [self.model.decide(p) for p in ys]
        return [(xs + ys, got["a"] + got["b"], expected)]

    def blocked(self, thread: threading.Thread) -> bool:
        """Whether the second committer's backend waits for a lock (polled until it ends, at most 1 s)."""
        with self.committer.engine.connect() as conn:
            for _ in range(200):
                if not thread.is_alive():
                    return False
                if conn.execute(text("select count(*) from pg_stat_activity where pid = any(:pids) "
                                     "and wait_event_type = 'Lock'"), {"pids": sorted(self.other.pids)}).scalar_one():
                    return True
                conn.rollback()
                time.sleep(0.005)
        return False
