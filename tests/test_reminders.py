"""Overdue reminders (ledger/reminders.py) against a real database, with a clock moved by hand:
reminder days, catch-up, quiet hours, the minimum interval, paid customers, debits in flight,
customers without a mobile, and a second run that enqueues nothing."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from config.clock import ManualClock
from config.notices import outbox_row, payment_received
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
                                        "amount": "300.50", "bills": "2", "due_date": "2026年9月28日", "days": "33",
                                        "template": "reminder", "customer_masked": "1001"}
    with db.connect() as conn:
        audits = conn.execute(select(audit_log).where(audit_log.c.action == "reminders.enqueue")).all()
    assert {a.actor for a in audits} == {"system:reminders"} and len(audits) == 1


def test_run_twice_at_the_same_moment_enqueues_once(db):
    when = at_local(DUE + timedelta(days=3))
    assert run(db, when).enqueued == 2
    again = run(db, when)
    assert (again.candidates, again.enqueued) == (2, 0)     # 1003 (no mobile), 1004 (suspended) are read again
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
    assert run(db, at_local(DUE + timedelta(days=5)), close).enqueued == 0
    assert len(reminders(db)[other]) == 1


def test_a_reminder_day_is_reminded_once_even_when_the_interval_allows_more(db):
    daily = schedule(days=(3, 4), catch_up=3, interval=1)
    assert run(db, at_local(DUE + timedelta(days=3), 10), daily).enqueued == 2
    assert run(db, at_local(DUE + timedelta(days=4), 11), daily).enqueued == 2      # day 4: a reminder day
    report = run(db, at_local(DUE + timedelta(days=5), 12), daily)                 # day 4's, reminded already
    assert (report.enqueued, report.recently) == (0, 2)


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


# ---------------------------------------------------------------------------------------------
# the notifier holds reminders in quiet hours


def test_the_notifier_sends_reminders_only_outside_quiet_hours(db, tmp_path):
    from engines.notifier import Notifier
    from engines.sms import FileSender

    day = DUE + timedelta(days=3)
    assert run(db, at_local(day, 20, 30)).enqueued == 2
    with db.begin() as conn:                          # a payment notice, due now too
        conn.execute(insert(outbox).values(outbox_row("1001", "13800000000", "payment", "payment:1", payment_received("1001", [], 100),
                                                      at_local(day, 20, 45).astimezone(timezone.utc))))
    sink = tmp_path / "sms.jsonl"
    clock = ManualClock(at_local(day, 21, 30))
    notifier = Notifier(db, FileSender(sink), name="n", concurrency=1, clock=clock,
                        quiet=QuietHours.of("21:00", "08:00"))
    assert notifier.run_once().sent == 1              # the payment notice; the reminders wait
    assert [json.loads(line)["kind"] for line in sink.read_text().splitlines()] == ["payment"]
    clock.set(at_local(day + timedelta(days=1), 7, 59))
    assert notifier.run_once().claimed == 0
    clock.set(at_local(day + timedelta(days=1), 8, 0))
    assert notifier.run_once().sent == 2
    sent = [json.loads(line) for line in sink.read_text().splitlines()]
    assert sorted(n["ref"] for n in sent if n["kind"] == "reminder") == ["reminder:1001:20261031",
                                                                       "reminder:1002:20261031"]
    notifier.close()


# ---------------------------------------------------------------------------------------------
# gridpay notifier remind


def test_the_command_dry_runs_without_an_operator_and_enqueues_as_one(sqlite_url):
    from click.testing import CliRunner

    from config.clock import SYSTEM_CLOCK
    from gridpay.cli import gridpay
    from identity_helpers import operator_token

    engine = new_engine(sqlite_url)
    today = SYSTEM_CLOCK.local().date()
    with engine.begin() as conn:
        add_customer(conn, "5001")
        add_bills(conn, [("5001", "202601", 7_000, 0)])
        conn.execute(bills_due(today - timedelta(days=3)))
    env = {"GRIDPAY_DATABASE__URL": sqlite_url, "GRIDPAY_REMINDERS__QUIET_FROM": "00:00",
           "GRIDPAY_REMINDERS__QUIET_UNTIL": "00:00", "GRIDPAY_OPERATOR_TOKEN": ""}
    runner = CliRunner()
    dry = runner.invoke(gridpay, ["notifier", "remind", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout.splitlines()[-1])["enqueued"] == 1 and reminders(engine) == {}
    refused = runner.invoke(gridpay, ["notifier", "remind"], env=env)
    assert refused.exit_code == 1 and reminders(engine) == {}
    env["GRIDPAY_OPERATOR_TOKEN"] = operator_token(engine, "olga", ["operations"])
    done = runner.invoke(gridpay, ["notifier", "remind"], env=env)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout.splitlines()[-1])["enqueued"] == 1 and list(reminders(engine)) == ["5001"]
    with engine.connect() as conn:
        [audit] = conn.execute(select(audit_log).where(audit_log.c.action == "reminders.enqueue")).all()
    assert audit.actor == "operator:olga"
    engine.dispose()


def bills_due(due: date):
    from sqlalchemy import update

    from ledger.schema import bills

    return update(bills).where(bills.c.customer_no == "5001").values(due_date=due)


# ---------------------------------------------------------------------------------------------
# on the notifier's timer


def test_the_timer_loop_reports_a_run_and_a_failure(db):
    from engines.reminder_loop import ReminderLoop
    from ledger.db import make_engine

    loop = ReminderLoop(ReminderJob(db, schedule(), ManualClock(at_local(DUE + timedelta(days=3)))), 600)
    assert loop.run_once().enqueued == 2 and loop.last_error is None
    gone = make_engine("sqlite:////nonexistent-dir/gridpay.db")
    broken = ReminderLoop(ReminderJob(gone, schedule(), ManualClock(at_local(DUE + timedelta(days=3)))), 600)
    assert broken.run_once() is None and "OperationalError" in broken.last_error
    assert broken.start().stop(30) and not broken.running


def test_gridpay_notifier_enqueues_and_sends_reminders_when_enabled(sqlite_url, tmp_path):
    from config.clock import SYSTEM_CLOCK
    from test_notifier_support import NotifierProcess, notifier_env

    engine = new_engine(sqlite_url)
    with engine.begin() as conn:
        add_customer(conn, "5001")
        add_bills(conn, [("5001", "202601", 7_000, 0)])
        conn.execute(bills_due(SYSTEM_CLOCK.local().date() - timedelta(days=10)))
    sink = tmp_path / "sms.jsonl"
    env = notifier_env(sqlite_url, tmp_path, sender="file", file_path=str(sink))
    env.update({"GRIDPAY_REMINDERS__ENABLED": "true", "GRIDPAY_REMINDERS__QUIET_FROM": "00:00",
                "GRIDPAY_REMINDERS__QUIET_UNTIL": "00:00"})
    process = NotifierProcess(env, tmp_path / "notifier.log").start()
    try:
        wait_until(lambda: sink.exists() and "reminder:5001:" in sink.read_text(encoding="utf-8")
                   and json.loads(process.http("/readyz")[1])["reminders"]["last_run"] is not None)
        status, body = process.http("/readyz")
        assert status == 200 and json.loads(body)["reminders"]["last_run"]["enqueued"] == 1
        assert process.terminate() == 0
    finally:
        process.stop_quietly()
    [sent] = [json.loads(line) for line in sink.read_text(encoding="utf-8").splitlines()]
    assert sent["kind"] == "reminder" and "7,000" not in sent["text"] and "70.00元" in sent["text"]
    engine.dispose()


def wait_until(predicate, limit_s: float = 60) -> None:
    import time

    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the notifier did not send the reminder")
        time.sleep(0.1)


def test_the_claim_leaves_held_kinds_pending_on_every_database():
    from sqlalchemy.dialects import oracle, postgresql, sqlite

    from engines.notifier import claim_statement

    for dialect in (postgresql.dialect(), sqlite.dialect(), oracle.dialect()):
        held = str(claim_statement(dialect.name, 10, T_UTC, ("reminder",)).compile(dialect=dialect))
        free = str(claim_statement(dialect.name, 10, T_UTC).compile(dialect=dialect))
        assert "outbox.kind NOT IN" in held and "kind NOT IN" not in free


T_UTC = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("reminders, problem", [
    ({"days_after_due": [3, 3]}, "distinct days"),
    ({"days_after_due": []}, "at least 1"),
    ({"quiet_from": "24:00"}, "quiet_from"),
    ({"min_interval_days": 0}, "min_interval_days"),
])
def test_bad_schedules_are_configuration_errors(reminders, problem):
    from config import ConfigError, load_settings
    from config.settings import Settings, environment_for

    with pytest.raises(ConfigError, match=problem):
        load_settings(environ=environment_for({"reminders": reminders}))
    assert Schedule.of(Settings().reminders) == schedule()
