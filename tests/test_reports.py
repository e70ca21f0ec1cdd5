"""The daily collections, receivables and direct debits reports (their figures and their report
definitions), checked against known data."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import date, timedelta

import pytest

from ledger.corrections import correct_bill
from ledger.debits import create_debit, debit_approved, mark_debit_sent
from config.clock import Clock
from ledger.finance_reports import daily_report, receivables_report
from ledger.reports.catalogue import ReportParams, json_chunks, write
from ledger.reports.catalogue import build as build_report
from ledger.reports.cells import yuan
from ledger.reports.context import ReportContext
from ledger.synchronous_posting import post
from ledger_helpers import T0, add_banks, add_bill, add_customer, assert_ledger_verifies, new_engine, payment, reversal

A, B = "01020000", "01030000"
DAY1, DAY2 = date(2026, 11, 23), date(2026, 11, 24)


def build(url: str) -> None:
    """Day 1: A counter cash 10,000 (C1) and 25,000 (C2, 5,000 of it prepaid), A cheque 30,500 (C3),
    B transfer 40,000 (C4) reversed the same day, A direct debit 50,000 (C5). Day 2: C1's payment
    reversed. C2's paid bill corrected from 20,000 to 18,000."""
    engine = new_engine(url)
    with engine.begin() as conn:
        add_banks(conn, A, B)
        for no, ctype in (("C1", "R"), ("C2", "R"), ("C3", "N"), ("C4", "R"), ("C5", "N")):
            add_customer(conn, no, ctype=ctype)
        add_bill(conn, "C1", "202610", 10_000, 0, bill_id="B1")
        add_bill(conn, "C2", "202610", 20_000, 0, bill_id="B2")
        add_bill(conn, "C3", "202610", 30_000, 500, bill_id="B3")
        add_bill(conn, "C4", "202610", 40_000, 0, bill_id="B4")
        add_bill(conn, "C5", "202610", 50_000, 0, bill_id="B5")
        add_bill(conn, "C1", "202609", 7_000, 0, bill_id="B0")   # another period: not in the report
    p1 = payment(A, "C1", 17_000, at=T0)
    p4 = payment(B, "C4", 40_000, at=T0, method="02")
    outcomes = post(engine, [p1, payment(A, "C2", 25_000, at=T0),
                             payment(A, "C3", 30_500, at=T0, method="03", cheque_no="CQ1"), p4])
    assert all(o.ok for o in outcomes), outcomes
    assert post(engine, [reversal(p4)])[0].ok
    with engine.begin() as conn:
        debit_id = create_debit(conn, bank_code=A, customer_no="C5", account_no="6222000000000005",
                                bills_to_pay=[("B5", 50_000)], at=T0)
        mark_debit_sent(conn, debit_id, transmitted="1123100000", stan="000901", rrn="112310000901",
                        business_date=DAY1, at=T0)
    assert debit_approved(engine, debit_id, T0 + timedelta(seconds=5)).ok
    assert post(engine, [reversal(p1, at=T0 + timedelta(days=1))])[0].ok
    correct_bill(engine, "B2", principal=18_000, penalty=0, actor="clerk.li", reason="tariff", now=T0)
    engine.dispose()


@pytest.fixture
def data(db_url):
    build(db_url)
    engine = new_engine(db_url)
    yield db_url, engine
    engine.dispose()


def test_daily_report_figures(data):
    url, engine = data
    day1 = daily_report(engine, DAY1)
    rows = [(r.bank_code, r.channel, r.method, r.payments, r.collected, r.reversals, r.reversed, r.net) for r in day1.rows]
    assert rows == [(A, "C", "01", 2, 42_000, 0, 0, 42_000),
                    (A, "C", "03", 1, 30_500, 0, 0, 30_500),
                    (A, "D", "10", 1, 50_000, 0, 0, 50_000),
                    (B, "C", "02", 1, 40_000, 1, 40_000, 0)]
    t = day1.total
    assert (t.payments, t.collected, t.reversals, t.reversed, t.net) == (5, 162_500, 1, 40_000, 122_500)
    day2 = daily_report(engine, DAY2)
    assert [(r.bank_code, r.channel, r.method, r.payments, r.reversals, r.reversed, r.net) for r in day2.rows] == \
        [(A, "C", "01", 0, 1, 17_000, -17_000)]
    assert daily_report(engine, date(2026, 1, 1)).rows == []
    assert_ledger_verifies(url)


def test_receivables_report_figures(data):
    _, engine = data
    rep = receivables_report(engine, "202610")
    by_type = {r.customer_type: r for r in rep.rows}
    r, n = by_type["R"], by_type["N"]
    # residents: B1 10,000 (payment reversed: unpaid), B2 corrected to 18,000 (paid from prepaid), B4 40,000 (reversed)
    assert (r.bills, r.principal, r.penalty, r.billed, r.collected, r.outstanding) == (3, 68_000, 0, 68_000, 18_000, 50_000)
    # non-residents: B3 30,500 by cheque, B5 50,000 by direct debit
    assert (n.bills, n.principal, n.penalty, n.billed, n.collected, n.outstanding) == (2, 80_000, 500, 80_500, 80_500, 0)
    t = rep.total
    assert (t.bills, t.billed, t.collected, t.outstanding) == (5, 148_500, 98_500, 50_000)
    assert receivables_report(engine, "202609").total.billed == 7_000
    with pytest.raises(ValueError):
        receivables_report(engine, "202613")


def test_yuan_formatting_is_exact():
    assert [yuan(x, grouped=False) for x in (0, 5, -5, 100, 123_456, -123_456, 10 ** 14 + 1)] == \
        ["0.00", "0.05", "-0.05", "1.00", "1234.56", "-1234.56", "1000000000000.01"]
    assert yuan(123_456_789) == "1,234,567.89"
    with pytest.raises(AssertionError):
        yuan(1.5)


def written(doc, fmt: str, lang: str = "en") -> str:
    out = io.BytesIO()
    write(doc, fmt, out, lang)
    return out.getvalue().decode("utf-8-sig")


def test_receivables_and_debits_as_definitions(data):
    _, engine = data
    ctx = ReportContext(engine, Clock(), {A: "工商银行"})
    receivables = build_report("receivables", ctx, ReportParams(period="202610"))
    (section,) = receivables.sections
    assert [(r["customer_type"]("en"), r["billed"], r["collected"], r["outstanding"]) for r in section.rows] == \
        [("resident", 68_000, 18_000, 50_000), ("non-resident", 80_500, 80_500, 0)]
    assert section.totals["outstanding"] == 50_000
    text = written(receivables, "text").splitlines()
    assert text[0] == "Receivables of a billing period"
    assert text[-1].split() == ["total", "5", "1,480.00", "5.00", "1,485.00", "985.00", "500.00"]
    debits = build_report("debits", ctx, ReportParams(date=DAY1))
    (section,) = debits.sections
    assert [(r["bank_code"], r["bank_name"], r["channel"]("en"), r["state"]("en"), r["debits"], r["amount"])
            for r in section.rows] == [(A, "工商银行", "batch", "approved", 1, 50_000)]
    sheet = list(csv.reader(io.StringIO(written(debits, "csv"))))
    assert sheet[-2][:7] == [f'="{A}"', "工商银行", "batch", "approved", "1", "500.00", "50000"]
    head = "".join(json_chunks(build_report("daily", ctx, ReportParams(date=DAY1)), "en"))
    assert '"totals": {"payments": 5, "collected": 162500' in head


def test_report_commands(sqlite_url, tmp_path):
    build(sqlite_url)
    env = {**os.environ, "GRIDPAY_CONFIG": ""}

    def gridpay(*args):
        done = subprocess.run([sys.executable, "-m", "gridpay", "report", *args, "--url", sqlite_url],
                              capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    table = gridpay("daily", "--date", "2026-11-23")                 # text unless told otherwise
    assert table.startswith("日收款报表") and "1,625.00" in table
    assert gridpay("daily", "--date", "2026-11-23", "--format", "table") == table
    out = gridpay("receivables", "--period", "202610", "--format", "csv", "--lang", "en")
    rows = list(csv.reader(io.StringIO(out.lstrip("\ufeff"))))
    assert rows[-3:] == [
        ["resident", "3", "680.00", "68000", "0.00", "0", "680.00", "68000", "180.00", "18000", "500.00", "50000"],
        ["non-resident", "2", "800.00", "80000", "5.00", "500", "805.00", "80500", "805.00", "80500", "0.00", "0"],
        ["total", "5", "1480.00", "148000", "5.00", "500", "1485.00", "148500", "985.00", "98500", "500.00", "50000"]]
    target = tmp_path / "daily.csv"
    gridpay("daily", "--date", "2026-11-24", "--csv", str(target), "--lang", "en")   # the report definition's CSV
    rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8-sig"))))
    assert rows[6] == [f'="{A}"', f"bank {A}", "counter", "cash", "0", "0.00", "0", "1", "170.00", "17000", "-170.00", "-17000"]
    table = gridpay("receivables", "--period", "202610", "--lang", "en")
    assert "non-resident" in table and "1,485.00" in table
    assert "batch" in gridpay("debits", "--date", "2026-11-23", "--lang", "en")
