"""A seeded, deterministic fault simulation of the posting path (docs/ledger.md, "Fault simulation").

One integer seed drives a ``random.Random`` that chooses the customers and their bills, then
every step: a batch of bank requests (``posting_sim_bank``) through the group commit; the
same with faults in its transactions (``posting_sim_fault_steps``); requests the bank's timeout
cancels; an inquiry; a new bill; a business date reconciled (closed); a restart (the process
dropped and started again on the same database); the clock moved on; and on PostgreSQL two
committers racing on one database in a known order (``posting_sim_race``).
The model (``posting_sim_model``) decides what each request should get; after every step the
checks (``posting_sim_checks``) compare every answer and the whole ledger with it, and run
``ledger verify``. The ledger's clock is the simulation's, so the same seed gives the same
steps and the same answers, receipt numbers included.
"""
from __future__ import annotations

import random
from collections import Counter
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import event, insert, select

from config.clock import Clock, ManualClock
from ledger.db import make_engine
from ledger.group_commit import Poster
from ledger.posting import apply_prepaid, lock_customers
from ledger.inquiry import inquire
from ledger.schema import banks, business_day_closures
from ledger_helpers import add_banks, add_bills, add_customers, customer_row
from posting_sim_bank import BANKS, UNKNOWN_CUSTOMER, Bank
from posting_sim_checks import answer_problems, describe, inquiry_problems, ledger_problems
from posting_sim_fault_steps import fault_step
from posting_sim_faults import FaultyEngine
from posting_sim_model import Bill, Customer, Model
from posting_sim_race import race
from poster_thread import PosterThread

CAL = Clock()
STEPS = {"batch": 50, "fault": 24, "timeout": 4, "inquiry": 8, "bill": 6, "close": 4, "restart": 3, "later": 5,
         "race": 10}


class Committer:
    """One process's posting path: its engine (with fault hooks), a Poster as the committer worker
    runs it, and the same in a thread of its own for the plain batches (``poster_thread``)."""

    def __init__(self, url: str, clock: ManualClock, group: bool = True):
        self.engine = make_engine(url, pool_size=2, pre_ping=False)
        self.faults = FaultyEngine(self.engine)
        self.poster = Poster(self.engine, clock)
        self.group = PosterThread(self.engine, clock) if group else None
        self.pids: set[int] = set()    # PostgreSQL backends of this process's connections
        if self.engine.dialect.name == "postgresql":
            event.listen(self.engine, "connect", lambda dbapi_conn, _: self.pids.add(dbapi_conn.info.backend_pid))

    def post(self, postings: list) -> list:
        return [f.result(timeout=120) for f in self.submit(postings)]

    def submit(self, postings: list) -> list:
        return self.group.submit(postings)          # one batch

    def close(self) -> None:
        """Stopped, or killed: either way its connections are gone and its transaction with them."""
        if self.group is not None:
            self.group.stop(timeout=30)
        self.engine.dispose()


def start_time(rng: random.Random) -> datetime:
    if rng.random() < 0.1:   # across New Year (a December field 7 repeated in January keeps its identity)
        return datetime(2026, 12, 31, 13, 30, tzinfo=timezone.utc) + timedelta(minutes=rng.randrange(60))
    return datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=rng.randrange(360),
                                                                  seconds=rng.randrange(86_400))


def world(rng: random.Random, url: str, clock: ManualClock) -> Model:
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
        add_banks(conn, *BANKS, at=clock.now())
        add_customers(conn, [customer_row(c.customer_no, status=c.status, prepay=c.prepay, at=clock.now())
                             for c in customers])
        add_bills(conn, bills, at=clock.now())
    engine.dispose()
    return model


def new_bill(rng: random.Random, model: Model, customer_no: str, period: str) -> tuple:
    principal, penalty = rng.randint(1, 400) * 100, rng.choice((0, 0, 50, 120))
    bill_id = f"B{customer_no}{period}"
    model.add_bill(customer_no, Bill(bill_id, period, date(int(period[:4]), int(period[4:]), 28), principal, penalty))
    return (customer_no, period, principal, penalty, bill_id)


class Simulation:
    def __init__(self, seed: int, url: str, verbose: bool = False, close_today: bool = False):
        self.seed, self.url, self.verbose, self.close_today = seed, url, verbose, close_today
        self.rng = random.Random(seed)
        self.clock = ManualClock(start_time(self.rng))
        self.model = world(self.rng, url, self.clock)
        self.bank = Bank(self.rng, self.model, self.clock)
        self.postgresql = url.startswith("postgresql")
        self.committer = Committer(url, self.clock)
        self.other = Committer(url, self.clock, group=False) if self.postgresql else None
        self.observer = make_engine(url, pool_size=1) if self.postgresql else None   # watches the races
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
                self.observer.dispose()

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
        return fault_step(self)

    def timeout(self):
        """The bank's timeout passes while requests wait behind a slow commit: the gateway cancels
        them, and the committer drops them unposted (the bank gets no answer)."""
        first, second = self.requests(), self.requests()
        at_commit = self.committer.faults.hold()
        futures = self.committer.submit([p for _, _, p in first])
        at_commit.wait(30)
        waiting = self.committer.submit([p for _, _, p in second])
        dropped = {i for i in range(len(second)) if self.rng.random() < 0.5}
        assert all(waiting[i].cancel() for i in sorted(dropped)), "a queued request could not be cancelled"
        self.committer.faults.release()
        outcomes = [f.result(timeout=120) for f in futures]
        self.answered(first, outcomes)
        kept = [i for i in range(len(second)) if i not in dropped]
        later = [waiting[i].result(timeout=120) for i in kept]
        self.answered([second[i] for i in kept], later)
        self.answered([second[i] for i in sorted(dropped)], None)
        self.stats["timeout: requests dropped unposted"] += len(dropped)
        postings = [p for _, _, p in first] + [second[i][2] for i in kept]
        return [(postings, outcomes + later, [self.model.decide(p) for p in postings])]

    def inquiry(self):
        customer = UNKNOWN_CUSTOMER if self.rng.random() < 0.1 else self.rng.choice(sorted(self.model.customers))
        result = inquire(self.committer.engine, customer, self.clock.now(), CAL)
        self.log(f"  inquiry {customer} -> {result.response_code} due {result.total_due} "
                 f"prepaid {result.prepaid_balance}")
        self.found += inquiry_problems(self.model, customer, result)
        return []

    def bill(self):
        """A new bill imported; the customer's prepaid balance pays what it covers at once."""
        customer = self.rng.choice(sorted(self.model.customers))
        periods = [b.period for b in self.model.customers[customer].bills]
        last = max(periods, default="202600")
        year, month = int(last[:4]), int(last[4:]) + 1
        period = f"{year + month // 13}{(month - 1) % 12 + 1:02d}"
        item = new_bill(self.rng, self.model, customer, period)
        with self.committer.engine.begin() as conn:   # as a billing import does (ledger.imports)
            add_bills(conn, [item], at=self.clock.now())
            lock_customers(conn, [customer])
            paid = apply_prepaid(conn, [customer], at=self.clock.now(), business_date=CAL.business_date(self.clock.now()),
                                 actor="import:sim")
        self.model.apply_prepaid(customer)
        self.log(f"  new bill {item}, paid from prepaid {paid}")
        return []

    def close(self):
        """Reconciliation closes a bank's business date of some payments, as ledger.recon does: under
        the bank row's lock. Their reversals get 12 from now on. A date closes once the bank's file
        for it has come, after it ended; ``close_today`` closes the current one too (which the
        ledger does not refuse either)."""
        today = CAL.business_date(self.clock.now())
        days = sorted({(p.identity[0], p.business_date) for p in self.model.payments
                       if p.business_date < today or self.close_today} - self.model.closed)
        if not days:
            return []
        bank, day = self.rng.choice(days)
        with self.committer.engine.begin() as conn:
            conn.execute(select(banks.c.bank_code).where(banks.c.bank_code == bank).with_for_update()).all()
            conn.execute(insert(business_day_closures), {"bank_code": bank, "business_date": day,
                                                         "closed_at": self.clock.now(), "closed_by": "sim"})
        self.model.close(bank, day)
        self.log(f"  closed {bank} {day}")
        return []

    def restart(self):
        self.committer.close()
        self.committer = Committer(self.url, self.clock)
        self.log("  restarted")
        return []

    def later(self):
        self.clock.advance(self.rng.randint(1, 10) * 3600)
        self.log(f"  clock {self.clock.now().isoformat()}")
        return []

    def race(self):
        return race(self)
