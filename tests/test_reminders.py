"""Overdue reminders (ledger/reminders.py) against a real database, with a clock moved by hand:
reminder days, catch-up, quiet hours, the minimum interval, paid customers, debits in flight,
customers without a mobile, and a second run that enqueues nothing."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from config.clock import ManualClock
from ledger.debits import create_debit, debit_declined, mark_debit_sent
from ledger.reminders import QuietHours, ReminderJob, Schedule
from ledger.schema import audit_log, outbox
from ledger.synchronous_posting import post
from ledger_helpers import add_banks, add_bills, add_customer, assert_ledger_verifies, new_engine, payment

SHANGHAI = timezone(timedelta(hours=8))
DUE = date(2026, 10, 28)       # add_bills: a bill of period 202610 is due on the 28th


def at_local(day: date, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI)


def schedule(days=(3, 10), catch_up=3, interval=7, quiet=("21:00", "08:00")) -> Schedule:
    return Schedule(tuple(days), catch_up, interval, QuietHours.of(*quiet))


@pytest.fixture
def db(db_url):
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_banks(conn, "0102")
        add_customer(conn, "1001")                       # owes 2026-09 and 2026-10
        add_customer(conn, "1002")                       # owes 2026-10
        add_customer(conn, "1003", mobile=None)          # owes 2026-10, no mobile
        add_customer(conn, "1004", status="S")           # suspended
        add_bills(conn, [("1001", "202609", 10_000, 50), ("1001", "202610", 20_000, 0),
                         ("1002", "202610", 15_000, 0), ("1003", "202610", 9_000, 0),
                         ("1004", "202610", 9_000, 0)])
    yield engine
    assert_ledger_verifies(engine)
    engine.dispose()


def run(engine, when: datetime, sched: Schedule | None = None, dry_run: bool = False):
    return ReminderJob(engine, sched or schedule(), ManualClock(when), batch_size=2).run(dry_run=dry_run)


def reminders(engine) -> dict[str, list]:
    with engine.connect() as conn:
        rows = conn.execute(select(outbox).where(outbox.c.kind == "reminder").order_by(outbox.c.id)).all()
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r.customer_no, []).append(r)
    return out


def test_reminded_on_the_third_day_after_the_due_date_with_the_bills_and_amount(db):
    assert run(db, at_local(DUE + timedelta(days=2))).candidates == 0
    report = run(db, at_local(DUE + timedelta(days=3)))
    assert (report.candidates, report.enqueued, report.no_mobile, report.inactive) == (4, 2, 1, 1)
    got = reminders(db)
    assert sorted(got) == ["1001", "1002"]
    [first] = got["1001"]
    assert first.ref == "reminder:1001:20261031" and first.state == "pending" and first.mobile == "13800000000"
    # 1001's September bill is 33 days overdue: the reminder names both months and what they owe
    assert first.text.startswith("您好，您(1001)2026年9月、2026年10月的电费共300.50元已逾期33天未缴")
    assert json.loads(first.params) == {"customer_no": "1001", "periods": "2026年9月、2026年10月",
                                        "amount": "300.50", "bills": "2", "due_date": "2026年9月28日", "days": "33"}
    with db.connect() as conn:
        audits = conn.execute(select(audit_log).where(audit_log.c.action == "reminders.enqueue")).all()
    assert {a.actor for a in audits} == {"system:reminders"} and len(audits) == 1


def test_run_twice_at_the_same_moment_enqueues_once(db):
    when = at_local(DUE + timedelta(days=3))
    assert run(db, when).enqueued == 2
    again = run(db, when)
    assert (again.enqueued, again.already) == (0, 2)
    assert {c: len(rows) for c, rows in reminders(db).items()} == {"1001": 1, "1002": 1}


def test_the_unique_key_holds_when_two_runs_race(db):
    """Two jobs that both read the customers as not yet reminded: the second insert writes nothing."""
    when = at_local(DUE + timedelta(days=3))
    job = ReminderJob(db, schedule(), ManualClock(when))
    from ledger.reminders import ReminderReport, _insert_new

    with db.begin() as conn:
        rows = job._notices(conn, ["1002"], when.astimezone(timezone.utc), when.date(), ReminderReport("x"))
    with db.begin() as conn:
        assert _insert_new(conn, rows) == ["reminder:1002:20261031"]
    with db.begin() as conn:
        assert _insert_new(conn, rows) == []


def test_second_reminder_day_and_minimum_interval(db):
    run(db, at_local(DUE + timedelta(days=3)))
    # day 5 is no reminder day; day 10 is, and 7 days have passed
    assert run(db, at_local(DUE + timedelta(days=5))).enqueued == 0
    assert run(db, at_local(DUE + timedelta(days=10))).enqueued == 2
    # reminder days 3 and 5 with at most one in 7 days: the second waits for the interval, then is too old
    close = schedule(days=(3, 5), catch_up=1)
    other = new_customer_with_bill(db, "2001")
    assert run(db, at_local(DUE + timedelta(days=3)), close).enqueued >= 1
    report = run(db, at_local(DUE + timedelta(days=5)), close)
    assert report.enqueued == 0 and report.recently >= 1
    assert len(reminders(db)[other]) == 1


def new_customer_with_bill(engine, customer_no: str) -> str:
    with engine.begin() as conn:
        add_customer(conn, customer_no)
        add_bills(conn, [(customer_no, "202610", 5_000, 0)])
    return customer_no


def test_a_missed_reminder_day_is_caught_up_within_catch_up_days_only(db):
    assert run(db, at_local(DUE + timedelta(days=6))).enqueued == 2           # day 3 + 3
    db2 = new_customer_with_bill(db, "3001")
    report = run(db, at_local(DUE + timedelta(days=7)))                      # day 3 + 4: too late for 3001
    assert report.enqueued == 0 and db2 not in reminders(db)


@pytest.mark.parametrize("hour, minute", [(21, 0), (23, 30), (2, 0), (7, 59)])
def test_nothing_is_enqueued_in_quiet_hours(db, hour, minute):
    day = DUE + timedelta(days=3) + (timedelta(days=1) if hour < 8 else timedelta())
    report = run(db, at_local(day, hour, minute))
    assert report.quiet and report.enqueued == 0 and reminders(db) == {}
    assert run(db, at_local(day, 8, 0)).enqueued == 2


def test_quiet_hours_within_a_day_and_never():
    assert QuietHours.of("12:00", "14:00").covers(at_local(DUE, 13)) and not QuietHours.of("12:00", "14:00").covers(
        at_local(DUE, 14))
    assert not QuietHours.of("00:00", "00:00").covers(at_local(DUE, 3))


def test_a_customer_who_paid_is_not_reminded(db):
    post(db, [payment("0102", "1002", 15_000)])
    report = run(db, at_local(DUE + timedelta(days=3)))
    assert "1002" not in reminders(db) and report.candidates == 3     # its bill owes nothing: not even read


def test_a_customer_whose_prepaid_balance_covers_the_bills_is_not_reminded(db):
    with db.begin() as conn:
        add_customer(conn, "4001")
    post(db, [payment("0102", "4001", 20_000)])      # no bill yet: all of it to the prepaid balance
    with db.begin() as conn:
        add_bills(conn, [("4001", "202610", 15_000, 0)])
    report = run(db, at_local(DUE + timedelta(days=3)))
    assert "4001" not in reminders(db) and report.paid == 1


def test_no_reminder_while_a_debit_is_in_flight_then_one_after_it_is_declined(db):
    with db.begin() as conn:
        debit_id = create_debit(conn, bank_code="0102", customer_no="1002", account_no="6222000011112222",
                                bills_to_pay=[("B1002202610", 15_000)], at=at_local(DUE).astimezone(timezone.utc))
        mark_debit_sent(conn, debit_id, transmitted="1030100000", stan="900001", rrn="DRRN00000001",
                        business_date=DUE, at=at_local(DUE).astimezone(timezone.utc))
    report = run(db, at_local(DUE + timedelta(days=3)))
    assert report.debit_in_flight == 1 and "1002" not in reminders(db)
    debit_declined(db, debit_id, at_local(DUE + timedelta(days=3), 11).astimezone(timezone.utc), "51")
    assert run(db, at_local(DUE + timedelta(days=3), 12)).enqueued == 1
    assert len(reminders(db)["1002"]) == 1


def test_dry_run_counts_and_writes_nothing(db):
    report = run(db, at_local(DUE + timedelta(days=3)), dry_run=True)
    assert (report.dry_run, report.enqueued) == (True, 2) and reminders(db) == {}
