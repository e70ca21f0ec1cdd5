"""Overdue reminders: one SMS notice per customer whose bills are overdue, through the outbox.

A customer is reminded on a *reminder day*: a bill's due date plus one of ``days_after_due``
(local dates). A day the job missed (it did not run, it was quiet) is still reminded up to
``catch_up_days`` later. A customer is not reminded

- within ``min_interval_days`` of the last reminder, nor again for a reminder day already reminded;
- when nothing overdue is owed any more (paid, corrected, or covered by the prepaid balance);
- while a direct debit of theirs is in flight (any state but a settled one: it may pay the bills);
- without a mobile number, or unless active (a suspended or closed customer cannot pay at a counter).

How it scales: one set-based read finds the customers with an owing bill due on a reminder day
(``bills.due_date`` is indexed); then, ``batch_size`` customers at a time, one transaction reads
what the notice needs (their open bills, prepaid balances, debits in flight, last reminders) and
inserts the notices together, with an audit row. The notice's ref is ``reminder:<customer>:<local
date>`` and ``(kind, ref)`` is unique, so two runs (or two notifiers) on the same day enqueue one.

Quiet hours: the job enqueues nothing while they last (``ReminderReport.quiet``), and the notifier
holds reminders already enqueued (engines/notifier.py), so none is sent between ``quiet_from`` and
``quiet_until``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import Engine, exists, func, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from config import notices
from config.clock import Clock
from ledger.audit import audit_row, write_audit
from ledger.corrections import SETTLED_DEBIT_STATES
from ledger.posting import prepaid_balances
from ledger.posting.queries import open_bill_rows
from ledger.progress import NoProgress
from ledger.schema import allocations, bills, customers, debits, outbox
from runtime.bulk_sql import key_filters

KIND = "reminder"
ACTOR = "system:reminders"


def _clock_time(text: str) -> time:
    hours, minutes = (int(x) for x in text.split(":"))
    return time(hours, minutes)


@dataclass(frozen=True)
class QuietHours:
    """From ``start`` to ``end`` local time (over midnight when ``end`` is earlier); equal: never."""
    start: time
    end: time

    @classmethod
    def of(cls, quiet_from: str, quiet_until: str) -> "QuietHours":
        return cls(_clock_time(quiet_from), _clock_time(quiet_until))

    def covers(self, local: datetime) -> bool:
        t = local.time()
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


@dataclass(frozen=True)
class Schedule:
    days_after_due: tuple[int, ...]
    catch_up_days: int
    min_interval_days: int
    quiet: QuietHours

    @classmethod
    def of(cls, cfg) -> "Schedule":
        """From ``[reminders]`` (config.settings.RemindersConfig)."""
        return cls(tuple(sorted(cfg.days_after_due)), cfg.catch_up_days, cfg.min_interval_days,
                   QuietHours.of(cfg.quiet_from, cfg.quiet_until))

    def due_windows(self, today: date) -> list[tuple[date, date]]:
        """Due dates whose reminder day falls within the catch-up window ending today."""
        return [(today - timedelta(days=k + self.catch_up_days), today - timedelta(days=k))
                for k in self.days_after_due]

    def reminder_day(self, due_dates, today: date) -> date | None:
        """The latest reminder day, within the catch-up window, of bills due on these dates."""
        earliest = today - timedelta(days=self.catch_up_days)
        days = [d + timedelta(days=k) for d in due_dates for k in self.days_after_due]
        return max((d for d in days if earliest <= d <= today), default=None)


@dataclass
class ReminderReport:
    local_date: str
    dry_run: bool = False
    quiet: bool = False
    candidates: int = 0          # customers with an owing bill due on a reminder day
    enqueued: int = 0            # notices written (dry run: that would be written)
    already: int = 0             # reminded today by another run meanwhile
    recently: int = 0            # reminded for this reminder day already (or, meanwhile, within the interval)
    paid: int = 0                # nothing overdue owed any more (paid, or covered by the prepaid balance)
    debit_in_flight: int = 0
    no_mobile: int = 0
    inactive: int = 0
    stopped: bool = False        # asked to stop before the last batch
    refs: list[str] = field(default_factory=list, repr=False)   # the notices written, by ref

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "refs"}


def _candidates(windows: list[tuple[date, date]], today: date, interval_start: datetime):
    """Customers with an owing, uncancelled bill due within one of the windows, not reminded today
    (by the unique key's index) nor since ``interval_start`` (by the customer's notices)."""
    reversing = aliased(bills)
    allocated = (select(func.coalesce(func.sum(allocations.c.amount), 0))
                 .where(allocations.c.bill_id == bills.c.bill_id).scalar_subquery())
    today_ref = literal(f"{KIND}:") + bills.c.customer_no + literal(f":{today:%Y%m%d}")
    # two probes, each on its own index: (kind, ref) unique, and the customer's notices
    reminded_today = exists().where(outbox.c.kind == KIND, outbox.c.ref == today_ref)
    reminded_lately = exists().where(outbox.c.customer_no == bills.c.customer_no, outbox.c.kind == KIND,
                                     outbox.c.created_at > interval_start)
    return (select(bills.c.customer_no).distinct()
            .where(or_(*(bills.c.due_date.between(lo, hi) for lo, hi in windows)), bills.c.kind != "R",
                   ~exists().where(reversing.c.reverses_bill_id == bills.c.bill_id),
                   bills.c.principal + bills.c.penalty > allocated, ~reminded_today, ~reminded_lately))


class ReminderJob:
    """Finds the customers due a reminder and enqueues one notice each (``run``); ``clock`` gives
    now, its zone the local dates and quiet hours."""

    def __init__(self, engine: Engine, schedule: Schedule, clock: Clock, *, actor: str = ACTOR,
                 batch_size: int = 2000, progress=None):
        self.engine, self.schedule, self.clock = engine, schedule, clock
        self.actor, self.batch_size = actor, batch_size
        self.progress = progress or NoProgress()
        self.stopping = None    # a threading.Event: when set, a run stops after the batch in hand

    def run(self, dry_run: bool = False) -> ReminderReport:
        now = self.clock.now()
        local = self.clock.local(now)
        report = ReminderReport(local.date().isoformat(), dry_run)
        if self.schedule.quiet.covers(local):
            report.quiet = True
            return report
        today = local.date()
        interval_start = now - timedelta(days=self.schedule.min_interval_days)
        with self.engine.connect() as conn:
            candidates = conn.execute(_candidates(self.schedule.due_windows(today), today, interval_start)
                                      .order_by(bills.c.customer_no)).scalars().all()
        report.candidates = len(candidates)
        self.progress.start(f"reminders {today}", total=len(candidates), unit="customers")
        for start in range(0, len(candidates), self.batch_size):
            if self.stopping is not None and self.stopping.is_set():
                report.stopped = True       # the rest waits for the next run (same day: same refs)
                break
            chunk = candidates[start:start + self.batch_size]
            with self.engine.begin() as conn:
                rows = self._notices(conn, chunk, now, today, report)
                if rows and not dry_run:
                    self._insert(conn, rows, now, report)
                elif dry_run:
                    report.enqueued += len(rows)
            self.progress.advance(len(chunk))
        self.progress.finish(f"reminders {today}: {report.enqueued} enqueued of {report.candidates} customers")
        return report

    # -- one chunk of customers

    def _notices(self, conn, chunk, now: datetime, today: date, report: ReminderReport) -> list[dict]:
        people, in_flight, last = _read_chunk(conn, chunk)
        open_bills: dict[str, list] = {}
        for row in open_bill_rows(conn, chunk):
            if row.due_date < today:
                open_bills.setdefault(row.customer_no, []).append(row)
        prepaid = prepaid_balances(conn, chunk)
        interval_start = now - timedelta(days=self.schedule.min_interval_days)
        rows = []
        for customer_no in chunk:
            overdue = open_bills.get(customer_no, [])
            amount = sum(int(b.principal) + int(b.penalty) - int(b.allocated) for b in overdue) \
                - max(prepaid.get(customer_no, 0), 0)
            skipped = self._skipped(people[customer_no], overdue, amount, customer_no in in_flight,
                                    last.get(customer_no), today, interval_start)
            if skipped:
                setattr(report, skipped, getattr(report, skipped) + 1)
            else:
                rows.append(_reminder_row(customer_no, people[customer_no][1], overdue, amount, today, now))
        return rows

    def _skipped(self, person: tuple, overdue: list, amount: int, debit_in_flight: bool, last_at: datetime | None,
                 today: date, interval_start: datetime) -> str | None:
        """Why a candidate gets no reminder now (the report's counter), or None."""
        status, mobile = person
        day = self.schedule.reminder_day([b.due_date for b in overdue], today)
        last_day = self.clock.local(last_at).date() if last_at is not None else None
        if status != "A":
            return "inactive"
        if day is None or amount <= 0:
            return "paid"
        if debit_in_flight:
            return "debit_in_flight"
        if not mobile:
            return "no_mobile"
        if last_day == today:
            return "already"
        if last_at is not None and (last_at > interval_start or last_day >= day):
            return "recently"
        return None

    def _insert(self, conn, rows: list[dict], now: datetime, report: ReminderReport) -> None:
        written = _insert_new(conn, rows)
        report.enqueued += len(written)
        report.already += len(rows) - len(written)
        report.refs.extend(written)
        if written:
            write_audit(conn, [audit_row(now, self.actor, "reminders.enqueue", "outbox", f"{KIND}:{report.local_date}",
                                         notices=len(written), first=written[0], last=written[-1])])


def _read_chunk(conn, chunk) -> tuple[dict, set, dict]:
    """The customers' (status, mobile), those with a debit in flight, and their last reminders (UTC)."""
    people, in_flight, last = {}, set(), {}
    for where in key_filters(conn, customers.c.customer_no, chunk):
        for r in conn.execute(select(customers.c.customer_no, customers.c.status, customers.c.mobile).where(where)):
            people[r.customer_no] = (r.status, r.mobile)
    for where in key_filters(conn, debits.c.customer_no, chunk):
        in_flight.update(conn.execute(select(debits.c.customer_no).distinct()
                                      .where(where, debits.c.state.not_in(SETTLED_DEBIT_STATES))).scalars())
    for where in key_filters(conn, outbox.c.customer_no, chunk):
        for customer_no, at in conn.execute(select(outbox.c.customer_no, func.max(outbox.c.created_at))
                                            .where(where, outbox.c.kind == KIND).group_by(outbox.c.customer_no)):
            last[customer_no] = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at
    return people, in_flight, last


def _reminder_row(customer_no: str, mobile: str, overdue: list, amount: int, today: date, now: datetime) -> dict:
    earliest = min(b.due_date for b in overdue)
    values = notices.reminder_values(customer_no, [b.period for b in overdue], amount, len(overdue), earliest,
                                     (today - earliest).days)
    return notices.outbox_row(customer_no, mobile, KIND, f"{KIND}:{customer_no}:{today:%Y%m%d}",
                              notices.reminder(values), now)


def _insert_new(conn, rows: list[dict]) -> list[str]:
    """Insert the rows whose (kind, ref) is new; the refs of those written."""
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = (postgresql if dialect == "postgresql" else sqlite).insert
        stmt = insert(outbox).on_conflict_do_nothing(index_elements=["kind", "ref"]).returning(outbox.c.ref)
        return sorted(conn.execute(stmt, rows).scalars().all())
    from sqlalchemy import insert as plain_insert   # Oracle: the rows were read as new in this transaction

    conn.execute(plain_insert(outbox), rows)
    return sorted(r["ref"] for r in rows)
