"""The archive of old months (ledger/archive, ``gridpay ledger archive``): on the reports' small
ledger (July, October and November 2026), the months before November leave the database for files;
``ledger verify`` holds, the customers' balances, the month-end summary of November and the aging
of open bills are what they were, the files hold exactly the removed rows, a second run does
nothing, a dry run and a refusal change nothing, and a crash between file and removal leaves the
month whole."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import func, select

from config.clock import ManualClock
from gridpay.all_tables import metadata
from ledger import customer_view
from ledger.archive import ArchiveRefused, archive, read_month
from ledger.archive.files import ArchiveFileError
from ledger.archive.tables import archive_openings, archived_months
from ledger.journal import Entry
from ledger.reports.aging import open_bills
from ledger.reports.context import ReportContext
from ledger.reports.month_end import month_end_figures
from ledger.schema import bills, payments, prepaid_movements
from ledger.verify import verify
from ledger_helpers import assert_ledger_verifies, write_entries
from report_ledger import K1, K2, K3, K4, K5, build_ledger, ledger  # noqa: F401 - ledger is a fixture

NOW = datetime(2026, 12, 6, 2, 0, tzinfo=timezone.utc)
CLOCK = ManualClock(NOW)


def _archive(ledger, directory, **kw):
    return archive(ledger.engine, kw.pop("before", "2026-11"), directory=str(directory), actor="operator:archivist",
                   clock=CLOCK, retention_months=kw.pop("retention_months", 1), **kw)


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables}


def _figures(engine) -> dict:
    """What a customer and finance see of what remains: balances, bills, the month-end of November,
    the open bills at the start of December."""
    with engine.connect() as conn:
        seen = {no: (customer_view.customer(conn, no)["prepaid_balance"],
                     {b["bill_id"]: dict(b) for b in customer_view.bill_page(conn, no, None, 50)})
                for no in (K1, K2, K3, K4, K5)}
        aging = sorted(tuple(r) for r in conn.execute(
            select(open_bills(ReportContext(engine, CLOCK, {}), date(2026, 12, 1)))))
    november = month_end_figures(engine, date(2026, 11, 1))
    return {"customers": seen, "aging": aging, "month_end": november}


def test_archived_months_leave_verify_balances_and_reports_as_they_were(ledger, tmp_path):
    before, counts = _figures(ledger.engine), _counts(ledger.engine)
    results = _archive(ledger, tmp_path)
    assert [r.month for r in results] == ["2026-07", "2026-08", "2026-09", "2026-10"]
    assert_ledger_verifies(ledger.engine)
    after = _figures(ledger.engine)
    assert after["aging"] == before["aging"] and after["month_end"] == before["month_end"]
    for no, (balance, remaining) in after["customers"].items():
        assert balance == before["customers"][no][0]
        assert remaining == {b: before["customers"][no][1][b] for b in remaining}     # as they were
    assert set(before["customers"][K2][1]) - set(after["customers"][K2][1]) == {"K2-10"}
    with ledger.engine.connect() as conn:
        # October's K2-10 was paid in full by K2's 25,000 (5,000 into prepaid): it went with its payment;
        # the open bills (K5-07, K3-10, K4-10 paid in November, K1-10 corrected in November) stayed
        remaining = set(conn.execute(select(bills.c.bill_id)).scalars())
        assert "K2-10" not in remaining and {"K5-07", "K1-10", "K3-10", "K4-10"} <= remaining
        assert conn.execute(select(func.count()).select_from(payments)
                            .where(payments.c.business_date < date(2026, 11, 1))).scalar_one() == 0
        carried = conn.execute(select(prepaid_movements.c.amount).where(prepaid_movements.c.customer_no == K2,
                                                                        prepaid_movements.c.kind == "opening")).all()
        assert carried == [(5_000,)]
        openings = {(r.figure, r.key): r.amount for r in conn.execute(select(archive_openings))}
    assert openings[("billed", "")] == 20_000 and openings[("allocated", "")] == 20_000
    assert openings[("bank_paid", "01020000")] == 25_000
    # the files hold exactly what left: every table's rows, counted and checksummed
    after = _counts(ledger.engine)
    october = read_month(tmp_path, "2026-10")
    assert {r["bill_id"] for r in october["bills"]} == {"K2-10"}
    assert [(p["customer_no"], p["amount"]) for p in october["payments"]] == [(K2, 25_000)]
    removed = {t: sum(len(read_month(tmp_path, r.month).get(t, [])) for r in results) for t in counts}
    for table, n in counts.items():
        if table == "prepaid_movements":
            assert after[table] == n - removed[table] + 1       # K2's opening movement
        elif table not in ("archive_openings", "archived_months", "audit_log"):
            assert after[table] == n - removed[table], table


def test_after_an_archive_verify_still_finds_payment_entries_that_name_no_payment_or_a_second_one(ledger, tmp_path):
    """Invariant 9 on what remains: an entry naming a payment that went with its month names no
    payment; a second entry for a remaining payment makes two."""
    with ledger.engine.connect() as conn:
        archived = conn.execute(select(payments.c.payment_id).where(payments.c.customer_no == K2)).scalar_one()
    _archive(ledger, tmp_path)
    with ledger.engine.begin() as conn:
        kept = conn.execute(select(func.min(payments.c.payment_id))).scalar_one()
        write_entries(conn, [Entry("payment", "payment", str(p), date(2026, 11, 30), "test") for p in (archived, kept)],
                      NOW)
    assert verify(ledger.engine) == [f"payment {kept} has 2 journal entries, not 1",
                                     "1 journal entries of type payment refer to no payment"]


def test_a_file_that_does_not_match_its_manifest_is_refused_on_reading(ledger, tmp_path):
    import gzip

    _archive(ledger, tmp_path)
    path = tmp_path / "2026-10" / "payments.jsonl.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()).replace(b"25000", b"2500"), mtime=0))
    with pytest.raises(ArchiveFileError, match="SHA-256 differs"):
        read_month(tmp_path, "2026-10")


def test_a_second_run_archives_nothing(ledger, tmp_path):
    _archive(ledger, tmp_path)
    counts = _counts(ledger.engine)
    assert _archive(ledger, tmp_path) == []
    assert _counts(ledger.engine) == counts
    assert_ledger_verifies(ledger.engine)


def test_a_dry_run_changes_nothing(ledger, tmp_path):
    counts = _counts(ledger.engine)
    results = _archive(ledger, tmp_path / "dry", dry_run=True)
    assert results[-1].month == "2026-10" and results[-1].rows["bills"] == 1
    assert _counts(ledger.engine) == counts and not (tmp_path / "dry").exists()


def test_a_cutoff_newer_than_the_retention_allows_is_refused(ledger, tmp_path):
    counts = _counts(ledger.engine)
    with pytest.raises(ArchiveRefused, match="newer than the retention of 84 months"):
        _archive(ledger, tmp_path, retention_months=84)
    with pytest.raises(ArchiveRefused, match=r"at most 2026-11"):
        _archive(ledger, tmp_path, before="2026-12")
    assert _counts(ledger.engine) == counts


def test_a_crash_between_file_and_removal_leaves_the_month_whole(ledger, tmp_path):
    counts = _counts(ledger.engine)

    def crash(month):
        if month == "2026-10":
            raise RuntimeError("crash after the files")

    with pytest.raises(RuntimeError):
        _archive(ledger, tmp_path, before_removal=crash)
    with ledger.engine.connect() as conn:
        done = set(conn.execute(select(archived_months.c.month)).scalars())
        assert "2026-10" not in done
        assert conn.execute(select(func.count()).select_from(bills).where(bills.c.bill_id == "K2-10")).scalar_one() == 1
    assert _counts(ledger.engine)["payments"] == counts["payments"]
    assert_ledger_verifies(ledger.engine)
    assert [r.month for r in _archive(ledger, tmp_path)] == ["2026-10"]     # the rerun rewrites its files
    assert_ledger_verifies(ledger.engine)


def test_with_reconciliation_debits_and_a_refund_paid_out_verify_holds_and_reconciled_payments_stay(db_url, tmp_path):
    """The reconciliation tests' bank day (2026-11-23: payments, reversals, debits approved and
    unknown, the bank file reconciled), C1 paying 50,000 more into prepaid, 3,000 of it refunded and
    paid out, C12's bill debited and approved outside the bank file; archived from January 2027.
    Reconciliation keeps the payments and debits it names, unknown debits stay; C1's payment and
    refund movement go, its balance carried by an opening movement; C12's debit goes with its bill,
    payment and attempts."""
    from datetime import timedelta

    from config.settings import BusinessConfig
    from ledger.debits import create_debit, debit_approved, mark_debit_sent
    from ledger.recon.matching import reconcile_bank_file
    from ledger.recon_tables import recon_items
    from ledger.refunds import record_payout_in, request_refund
    from ledger.synchronous_posting import post
    from ledger_helpers import T0, payment, prepaid_of
    from test_recon_support import BANK, build_world, write_bank_file

    world = build_world(db_url)
    engine = world.engine
    assert reconcile_bank_file(engine, write_bank_file(tmp_path, world.lines), actor="alice").status == "applied"
    paid_at = T0 + timedelta(hours=2)
    assert post(engine, [payment(BANK, "C1", 50_000, at=paid_at)], ManualClock(paid_at))[0].ok
    with engine.begin() as conn:     # C12's bill debited, approved, in no bank file
        debit_id = create_debit(conn, bank_code=BANK, customer_no="C12", account_no="6222000000000012",
                                bills_to_pay=[("BC12202610", 120_000)], at=T0)
        mark_debit_sent(conn, debit_id, transmitted="1123180000", stan="990001", rrn="DRRN99000001",
                        business_date=T0.date(), at=T0)
    assert debit_approved(engine, debit_id, paid_at, "A09999", clock=ManualClock(paid_at)).ok
    refund = request_refund(engine, "C1", 3_000, actor="operator:li", reason="moving out", now=T0)
    with engine.begin() as conn:
        record_payout_in(conn, refund.refund_id, actor="operator:cai", reference="TX-1", now=T0,
                         business=BusinessConfig())
    assert_ledger_verifies(engine)
    with engine.connect() as conn:
        prepaid, items = prepaid_of(conn, "C1"), conn.execute(select(func.count()).select_from(recon_items)).scalar_one()
        reconciled = set(conn.execute(select(recon_items.c.payment_id).where(recon_items.c.payment_id.is_not(None)))
                         .scalars())
    results = archive(engine, "2026-12", directory=str(tmp_path / "archive"), actor="operator:archivist",
                      clock=ManualClock(datetime(2027, 1, 10, 2, 0, tzinfo=timezone.utc)), retention_months=1)
    assert [r.month for r in results] == ["2026-11"]
    assert_ledger_verifies(engine)
    gone = read_month(tmp_path / "archive", "2026-11")
    assert sorted(p["amount"] for p in gone["payments"]) == [50_000, 120_000]
    assert [d["debit_id"] for d in gone["debits"]] == [debit_id] and len(gone["debit_attempts"]) >= 2
    assert [(b["bill_id"], b["amount"]) for b in gone["debit_bills"]] == [("BC12202610", 120_000)]
    assert [b["bill_id"] for b in gone["bills"]] == ["BC12202610"]
    assert [m["kind"] for m in gone["prepaid_movements"]] == ["excess", "refund"]
    with engine.connect() as conn:
        assert prepaid_of(conn, "C1") == prepaid == 47_000
        assert conn.execute(select(func.count()).select_from(recon_items)).scalar_one() == items
        assert reconciled <= set(conn.execute(select(payments.c.payment_id)).scalars())
    engine.dispose()


def test_the_command_archives_as_an_authenticated_operator_and_audits_it(db_url, ledger, tmp_path):
    from identity_helpers import operator_env
    from ledger.schema import audit_log

    env = operator_env(ledger.engine, "fiona", ["finance"], {
        **os.environ, "GRIDPAY_DATABASE__URL": db_url, "GRIDPAY_ARCHIVE__DIRECTORY": str(tmp_path / "archive"),
        "GRIDPAY_ARCHIVE__RETENTION_MONTHS": "1"})
    run = lambda *args: subprocess.run([sys.executable, "-m", "gridpay", "ledger", *args],  # noqa: E731
                                       capture_output=True, text=True, env=env)
    dry = run("archive", "--before", "2026-11", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "2026-10: " in dry.stdout and "4 month(s) would be archived (dry run)" in dry.stdout
    assert not (tmp_path / "archive").exists()
    done = run("archive", "--before", "2026-11")
    assert done.returncode == 0, done.stderr
    assert "4 month(s) archived" in done.stdout and "opening billed -: 200.00" in done.stdout
    assert "2026-10: choosing rows" in done.stderr
    assert run("archive", "--before", "2026-11").stdout.strip() == "nothing to archive"
    refused = run("archive", "--before", "2099-01")
    assert refused.returncode == 1 and "newer than the retention of 1 months allows" in refused.stderr
    assert run("verify").returncode == 0
    with ledger.engine.connect() as conn:
        audited = conn.execute(select(audit_log.c.actor, audit_log.c.object_id)
                               .where(audit_log.c.action == "archive_month").order_by(audit_log.c.id)).all()
    assert audited == [("operator:fiona", m) for m in ("2026-07", "2026-08", "2026-09", "2026-10")]


def _reconciled_day(db_url, tmp_path, *, close_items: bool):
    """The reconciliation tests' bank day, its bank file reconciled and the bank's remittance of it
    matched from the statement of the 24th; with ``close_items`` every exception of the run settled
    or accepted on the 23rd."""
    from datetime import timedelta

    from ledger.recon.finance import reconcile_statement
    from ledger.recon.matching import reconcile_bank_file
    from ledger.recon.resolutions import resolve_item
    from ledger.recon_tables import recon_items
    from ledger.synchronous_posting import post
    from ledger_helpers import T0, payment
    from test_recon_finance import REMIT, camt, ntry
    from test_recon_support import BANK, DAY, OTHER, build_world

    world = build_world(db_url)
    from test_recon_support import write_bank_file
    assert reconcile_bank_file(world.engine, write_bank_file(tmp_path, world.lines), actor="alice").status == "applied"
    statement = tmp_path / "s1.xml"
    statement.write_bytes(camt(8, [ntry(8, REMIT, ref=f"{BANK}{DAY:%Y%m%d}", acct_ref="A1")]))
    assert reconcile_statement(world.engine, statement, actor="operator:fin").status == "applied"
    at = T0 + timedelta(hours=3)
    with world.engine.connect() as conn:
        open_items = conn.execute(select(recon_items.c.item_id, recon_items.c.kind)
                                  .where(recon_items.c.status == "open")).all()
    for item_id, kind in open_items if close_items else ():
        action = "settle" if kind == "debit_unknown" else "accept"
        resolve_item(world.engine, item_id, action, actor="operator:li", reason="checked", now=at,
                      clock=ManualClock(at))
    if close_items:     # the bills a reversal or a failed debit left open paid at the counter
        paid = [payment(OTHER, c, 10_000 * int(c[1:]), at=at) for c in ("C2", "C5", "C10", "C11")]
        assert all(o.ok for o in post(world.engine, paid, ManualClock(at)))
    assert_ledger_verifies(world.engine)
    return world, REMIT, BANK


def _archive_through_this_month(engine, directory) -> dict[str, list[dict]]:
    """Every month up to this one (the reconciliation world posts on the system clock's day), and
    their files' rows by table."""
    today = datetime.now(timezone.utc)
    following = date(today.year + today.month // 12, today.month % 12 + 1, 1)
    results = archive(engine, f"{following:%Y-%m}", directory=str(directory), actor="operator:archivist",
                      clock=ManualClock(datetime(following.year + following.month // 12, following.month % 12 + 1, 10,
                                                 tzinfo=timezone.utc)), retention_months=1)
    gone: dict[str, list[dict]] = {}
    for r in results:
        for table, rows in read_month(directory, r.month).items():
            gone.setdefault(table, []).extend(rows)
    return gone


def test_a_reconciled_day_whose_items_are_closed_goes_with_its_payments_and_remittance(db_url, tmp_path):
    """Every exception of the bank run closed: the run, its items, the statement's remittance credit,
    their matches and the drop of nothing go with the payments they name (but those tied to an open
    bill: C2's payment was reversed); what the remittance moved is carried as an opening, so that
    invariants 6, 13, 15 and 17 hold on what remains."""
    from ledger.recon_tables import recon_items, recon_match_members, recon_matches, recon_runs

    world, remit, bank = _reconciled_day(db_url, tmp_path, close_items=True)
    engine = world.engine
    with engine.connect() as conn:
        runs = conn.execute(select(recon_runs.c.run_id, recon_runs.c.kind)).all()
        items = conn.execute(select(func.count()).select_from(recon_items)).scalar_one()
    gone = _archive_through_this_month(engine, tmp_path / "archive")
    assert_ledger_verifies(engine)
    assert [r["kind"] for r in gone["recon_runs"]] == ["bank"]
    assert "remittance" in {i["kind"] for i in gone["recon_items"]} and gone["recon_matches"]
    with engine.connect() as conn:
        assert conn.execute(select(recon_runs.c.run_id, recon_runs.c.kind)).all() == [r for r in runs
                                                                                       if r.kind == "finance"]
        left = conn.execute(select(func.count()).select_from(recon_items)).scalar_one()
        assert left == items - len(gone["recon_items"])
        named = set(conn.execute(select(recon_match_members.c.match_id)).scalars())
        assert named <= set(conn.execute(select(recon_matches.c.match_id)).scalars())
        openings = {(r.figure, r.key): r.amount for r in conn.execute(select(archive_openings))}
        remaining = set(conn.execute(select(payments.c.customer_no)).scalars())
    assert openings[("remitted", bank)] == remit
    assert {p["customer_no"] for p in gone["payments"]} >= {"C1", "C3", "C5"}
    assert "C1" not in remaining and "C12" not in remaining
    engine.dispose()


def test_an_open_reconciliation_item_keeps_its_run_and_what_the_run_names(db_url, tmp_path):
    from ledger.recon_tables import recon_items, recon_runs

    world, _, _ = _reconciled_day(db_url, tmp_path, close_items=False)
    engine = world.engine
    with engine.connect() as conn:
        before = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                  for t in (recon_runs, recon_items)}
        named = set(conn.execute(select(recon_items.c.payment_id).where(recon_items.c.payment_id.is_not(None)))
                    .scalars())
    _archive_through_this_month(engine, tmp_path / "archive")
    assert_ledger_verifies(engine)
    with engine.connect() as conn:
        assert {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (recon_runs, recon_items)} == before
        assert named <= set(conn.execute(select(payments.c.payment_id)).scalars())
        assert not conn.execute(select(archive_openings).where(archive_openings.c.figure == "remitted")).all()
    engine.dispose()


MONTHS = [date(2026, m, 1) for m in (7, 8, 9, 10)]     # the reports' ledger's months before November


def _partition_months(conn, *tables: str) -> None:
    """A partition for each of ``MONTHS`` in each of ``tables`` (PostgreSQL)."""
    from ledger import partitions

    for name in tables:
        for month in MONTHS:
            partitions.add_month(conn, name, month)


def _rows_in(conn, partition: str) -> int:
    return conn.exec_driver_sql(f"SELECT count(*) FROM {partition}").scalar_one()


def test_on_postgresql_a_month_partition_whose_rows_all_go_is_dropped_and_one_keeping_rows_is_deleted_from(
        pg_url, tmp_path):
    """The reports' ledger with a partition for each month from July to October: the audit log's
    July to October partitions (every row archived) are detached and dropped; the journal's July
    (K5's open bill) and October (K1's, K3's and K4's) partitions keep the entries that stay, the
    others deleted from them; a second archive of the same months finds nothing; verify holds and
    the figures are as they were."""
    from ledger import partitions
    from ledger.schema import audit_log, journal_entries

    built = build_ledger(pg_url)
    engine = built.engine
    with engine.begin() as conn:
        _partition_months(conn, "journal_entries", "audit_log")
        in_july, in_october = _rows_in(conn, "journal_entries_p202607"), _rows_in(conn, "journal_entries_p202610")
        audited = _rows_in(conn, "audit_log_p202610")
    assert in_july and in_october and audited
    before = _figures(engine)
    _archive(built, tmp_path)
    assert_ledger_verifies(engine)
    after = _figures(engine)
    assert (after["aging"], after["month_end"]) == (before["aging"], before["month_end"])
    assert {no: c[0] for no, c in after["customers"].items()} == {no: c[0] for no, c in before["customers"].items()}
    with engine.connect() as conn:
        for month in MONTHS:
            assert partitions.monthly_partition(conn, "audit_log", month) is None      # detached and dropped
            assert conn.execute(select(func.to_regclass(partitions.partition_name("audit_log", month)))
                                ).scalar() is None
        assert partitions.monthly_partition(conn, "journal_entries", MONTHS[0]) == "journal_entries_p202607"
        kept = _rows_in(conn, "journal_entries_p202610")
        assert 0 < kept < in_october
        assert conn.execute(select(func.count()).select_from(audit_log)
                            .where(audit_log.c.at < datetime(2026, 11, 1, tzinfo=timezone.utc))).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(journal_entries)
                            .where(journal_entries.c.business_date < date(2026, 11, 1))).scalar_one() \
            == kept + _rows_in(conn, "journal_entries_p202607")
    assert len(read_month(tmp_path, "2026-10")["audit_log"]) == audited     # the dropped partition's rows, filed
    engine.dispose()


def test_on_postgresql_a_month_of_journal_lines_that_all_go_leaves_as_its_partition(pg_url, tmp_path):
    """A September whose bill is paid in full the same month: every line of it is archived, so the
    lines' September partition is detached and dropped, its rows in the month's file; October keeps
    the lines of the entries that stay, each dated as its entry; verify holds."""
    from ledger import partitions
    from ledger.schema import journal_entries, journal_lines
    from ledger.synchronous_posting import post
    from ledger_helpers import add_bills, add_customer, payment
    from report_ledger import A

    built = build_ledger(pg_url)
    engine = built.engine
    september, k6 = datetime(2026, 9, 14, 2, 0, tzinfo=timezone.utc), "00100006"
    with engine.begin() as conn:
        add_customer(conn, k6)
        add_bills(conn, [(k6, "202609", 6_000, 0)], at=september)
    post(engine, [payment(A, k6, 6_000, at=september)], ManualClock(september))
    with engine.begin() as conn:
        _partition_months(conn, "journal_entries", "journal_lines")
        in_september, in_october = _rows_in(conn, "journal_lines_p202609"), _rows_in(conn, "journal_lines_p202610")
    assert in_september == 4 and in_october   # the bill's two lines, the payment's two
    _archive(built, tmp_path)
    assert_ledger_verifies(engine)
    with engine.connect() as conn:
        assert partitions.monthly_partition(conn, "journal_lines", MONTHS[2]) is None
        assert conn.execute(select(func.to_regclass("journal_lines_p202609"))).scalar() is None
        kept = _rows_in(conn, "journal_lines_p202610")
        assert 0 < kept < in_october
        entries_kept = select(journal_entries.c.entry_id).where(journal_entries.c.business_date >= date(2026, 10, 1),
                                                                journal_entries.c.business_date < date(2026, 11, 1))
        assert conn.execute(select(func.count()).select_from(journal_lines)
                            .where(journal_lines.c.entry_id.in_(entries_kept))).scalar_one() == kept
    filed = read_month(tmp_path, "2026-09")["journal_lines"]
    assert len(filed) == in_september and {r["business_date"] for r in filed} == {"2026-09-14"}
    engine.dispose()
