"""Monthly partitions (PostgreSQL): migration 0020 keeps a populated ledger, each month's rows land in
its own partition, ``gridpay db partitions`` may run any number of times, and the ledger's
uniqueness guarantees hold across months. SQLite keeps plain tables."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from config.clock import ManualClock
from config.settings import environment_for
from gridpay.cli import gridpay
from gridpay.operator_auth import TOKEN_ENV
from identity_helpers import operator_token
from ledger import migrate, partitions
from ledger.db import make_engine
from ledger.schema import audit_log, journal_entries, journal_lines, payments
from ledger.synchronous_posting import post
from ledger_helpers import add_banks, add_bill, add_customer, assert_ledger_verifies, lines_dated, payment, reversal
from test_engine_support import settings_tree

NOV = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)   # business dates 2026-11-23 and 2027-01-12
JAN = datetime(2027, 1, 12, 2, 0, tzinfo=timezone.utc)


def _ledger(engine, *customers) -> None:
    with engine.begin() as conn:
        add_banks(conn, "0102")
        for c in customers:
            add_customer(conn, c)
            add_bill(conn, c, "202610", 10_000, 100)


def _rows(conn, table) -> int:
    return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _in(conn, name: str) -> int:
    return conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one()


def _payments_in(conn, name: str) -> int:
    return conn.exec_driver_sql(f"SELECT count(*) FROM {name} WHERE kind = 'payment'").scalar_one()


def test_0020_partitions_a_populated_ledger_and_it_still_verifies(pg_url):
    migrate.upgrade(pg_url, "0019")
    engine = make_engine(pg_url)
    first, second = payment("0102", "M1", 12_000, at=NOV), payment("0102", "M2", 10_100, at=NOV)
    with lines_dated(engine):
        _ledger(engine, "M1", "M2")
        post(engine, [first, second, reversal(second)], ManualClock(NOV))
    tables = (payments, journal_entries, journal_lines, audit_log)
    with engine.connect() as conn:
        before = [_rows(conn, t) for t in tables]
        last_entry = conn.execute(select(func.max(journal_entries.c.entry_id))).scalar_one()
    engine.dispose()
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        assert [_rows(conn, t) for t in tables] == before and before[1] > 0
        for name in partitions.PARTITION_KEYS:
            assert partitions.is_partitioned(conn, name)
        assert not partitions.is_partitioned(conn, "payments")
        november = partitions.monthly_partition(conn, "journal_entries", date(2026, 11, 5))
        assert november == "journal_entries_p202611"
        assert _in(conn, november) == _rows(conn, journal_entries)   # every entry was of 2026-11-23
    assert_ledger_verifies(engine)
    # the sequence goes on from the copied rows: new entries get new ids
    post(engine, [payment("0102", "M1", 500, at=NOV + timedelta(minutes=5))], ManualClock(NOV))
    with engine.connect() as conn:
        assert conn.execute(select(func.min(journal_entries.c.entry_id))
                            .where(journal_entries.c.entry_id > last_entry)).scalar_one() == last_entry + 1
    assert_ledger_verifies(engine)
    engine.dispose()


def test_payments_of_two_months_land_in_two_partitions_and_a_repeat_is_still_a_repeat(pg_url):
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    _ledger(engine, "M1", "M2")
    with engine.begin() as conn:
        partitions.prepare(conn, date(2026, 11, 1), 2)
    nov, jan = payment("0102", "M1", 10_100, at=NOV), payment("0102", "M2", 10_100, at=JAN)
    post(engine, [nov], ManualClock(NOV))
    post(engine, [jan], ManualClock(JAN))
    # the same request again in January (same identity, same RRN): answered from the first, not paid twice
    again = post(engine, [nov], ManualClock(JAN))[0]
    with engine.connect() as conn:
        assert _payments_in(conn, "journal_entries_p202611") == 1 and _payments_in(conn, "journal_entries_p202701") == 1
        assert _in(conn, "journal_entries_default") == 0
        assert _rows(conn, payments) == 2
    assert again.response_code in ("00", "94")
    assert_ledger_verifies(engine)
    engine.dispose()


def test_a_month_not_prepared_goes_to_the_default_partition_and_moves_out_when_prepared(pg_url):
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    _ledger(engine, "M1")
    far = datetime(2031, 3, 10, 2, 0, tzinfo=timezone.utc)
    post(engine, [payment("0102", "M1", 10_100, at=far)], ManualClock(far))
    with engine.begin() as conn:
        assert partitions.monthly_partition(conn, "journal_entries", "203103") is None
        assert _payments_in(conn, "journal_entries_default") == 1
        made = partitions.prepare(conn, date(2031, 3, 1), 0)
        assert made == ["journal_entries_p203103", "journal_lines_p203103", "audit_log_p203103",
                        "debit_attempts_p203103"]
    with engine.connect() as conn:
        assert _payments_in(conn, "journal_entries_default") == 0 and _payments_in(conn, "journal_entries_p203103") == 1
        assert _in(conn, "journal_lines_p203103") == 2      # its lines too, none of that month left in the DEFAULT
        assert conn.exec_driver_sql("SELECT count(*) FROM journal_lines_default "
                                    "WHERE business_date >= '2031-03-01'").scalar_one() == 0
    assert_ledger_verifies(engine)
    engine.dispose()


def _gridpay(url, token, *argv):
    env = {**environment_for(settings_tree(url)), TOKEN_ENV: token}
    return CliRunner().invoke(gridpay, ["db", "partitions", *argv], env=env, catch_exceptions=False)


def test_db_partitions_is_idempotent_audited_and_lists_partitions(pg_url):
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    token = operator_token(engine, "olga", ["operations"])
    first = _gridpay(pg_url, token, "--ahead", "2", "--from-month", "203001")
    assert first.exit_code == 0, first.output
    assert "made 12 partition(s)" in first.output and "journal_entries_p203003" in first.output
    again = _gridpay(pg_url, token, "--ahead", "2", "--from-month", "203001")
    assert again.exit_code == 0 and "made 0 partition(s) (all were there)" in again.output
    assert "audit_log_default" in again.output and "rows are PostgreSQL's estimates" in again.output
    assert re.search(r"journal_entries_p203001 +not analysed", again.output)   # made, never analysed
    with engine.connect() as conn:
        audits = conn.execute(select(audit_log.c.actor, audit_log.c.details)
                              .where(audit_log.c.action == "db.partitions").order_by(audit_log.c.id)).all()
    assert [a.actor for a in audits] == ["operator:olga"] * 2
    assert '"made": []' in audits[1].details
    bad = _gridpay(pg_url, token, "--from-month", "2030-13")
    assert bad.exit_code == 1 and "a month is YYYYMM" in bad.output
    engine.dispose()


def test_db_partitions_lists_estimated_rows_and_counts_them_with_exact(pg_url):
    """The listing reads PostgreSQL's estimate (pg_class.reltuples): a partition never analysed says
    so rather than 0; after ANALYZE (a sample covering every row of a small table) it is the count.
    ``--exact`` counts."""
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    _ledger(engine, "M1", "M2")
    far = datetime(2031, 3, 10, 2, 0, tzinfo=timezone.utc)
    with engine.begin() as conn:
        partitions.prepare(conn, far.date(), 0)           # made empty: never analysed
    post(engine, [payment("0102", "M1", 10_100, at=far), payment("0102", "M2", 10_100, at=far)], ManualClock(far))
    with engine.connect() as conn:
        counted = _in(conn, "journal_entries_p203103")
        before = {p.name: p for p in partitions.partitions(conn)}["journal_entries_p203103"]
        conn.exec_driver_sql("ANALYZE journal_entries_p203103")
        after = {p.name: p for p in partitions.partitions(conn)}["journal_entries_p203103"]
    assert counted > 0 and before.rows is None and not before.exact
    assert after.rows == counted and before.bytes > 0
    token = operator_token(engine, "olga", ["operations"])
    estimated = _gridpay(pg_url, token, "--from-month", "203103", "--ahead", "0")
    assert re.search(rf"journal_entries_p203103 +~{counted} rows", estimated.output), estimated.output
    exact = _gridpay(pg_url, token, "--from-month", "203103", "--ahead", "0", "--exact")
    assert exact.exit_code == 0 and "rows counted (--exact)" in exact.output
    assert re.search(rf"journal_entries_p203103 +{counted} rows", exact.output), exact.output
    engine.dispose()


def test_an_identity_is_refused_twice_across_months(pg_url):
    """payments and bank_requests are not partitioned: a second payment row with a first's identity,
    months apart, is refused by their unique keys as before."""
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    _ledger(engine, "M1")
    post(engine, [payment("0102", "M1", 10_100, at=NOV, stan="000777")], ManualClock(NOV))
    with engine.begin() as conn:
        row = conn.execute(select(payments)).mappings().one()
    copy = {**row, "business_date": date(2027, 1, 12), "receipt_no": "R202701120", "rrn": "X" + row["rrn"][1:]}
    del copy["payment_id"]
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError
    with pytest.raises(IntegrityError, match="uq_payments_identity"):
        with engine.begin() as conn:
            conn.execute(insert(payments), copy)
    engine.dispose()


def test_sqlite_has_no_partitions(sqlite_url):
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        assert not partitions.is_partitioned(conn, "journal_entries")
        assert partitions.monthly_partition(conn, "journal_entries", "202611") is None
        assert partitions.prepare(conn, date(2026, 11, 1), 3) == [] and partitions.partitions(conn) == []
    engine.dispose()


def test_partition_names_are_told_from_tables():
    assert partitions.is_partition_name("audit_log_p202611") and partitions.is_partition_name("audit_log_default")
    assert not partitions.is_partition_name("audit_log") and not partitions.is_partition_name("payments_p202611")
    with pytest.raises(ValueError):
        partitions.first_of_month("202613")


def test_an_entry_id_written_twice_in_two_months_fails_verify(pg_url):
    """The journal's key holds its month, so the database takes an entry id again in another month
    (written behind the ledger's back here): ``ledger verify`` names it."""
    from sqlalchemy import insert

    from ledger.verify import verify

    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    _ledger(engine, "M1")
    with engine.begin() as conn:
        entry = conn.execute(select(journal_entries)).mappings().first()
        conn.execute(insert(journal_entries), {**entry, "business_date": entry["business_date"] + timedelta(days=40)})
    assert any(f"journal entry id {entry['entry_id']} is used more than once" in f for f in verify(engine))
    engine.dispose()
