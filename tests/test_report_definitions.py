"""The finance reports of one definition (ledger/reports): each report's figures on a small ledger built
through the posting paths (tests/report_ledger.py), 实收 after both reconciliations, the month-end
identity on generated ledgers, and the three formats read back: CSV with the csv module, XLSX with
openpyxl, HTML in Debian's headless Chromium; then the command and the API."""
from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from datetime import date, timedelta

import openpyxl
from config.clock import ManualClock
from ledger.recon.finance import reconcile_statement
from ledger.recon.matching import reconcile_bank_file
from ledger.reports.catalogue import ReportParams, build, write
from ledger.reports.context import ReportContext, bank_names
from ledger.reports.definition import ReportDoc, Section, col
from ledger.reports.month_end import by_key
from ledger.reports.render_csv import write_csv
from ledger.reports.render_html import html_text
from ledger.synchronous_posting import post
from ledger_helpers import T0, assert_ledger_verifies, payment
from report_ledger import A, B, K1, K2, K3, K5, NOV23, T_NOV, build_ledger, ledger  # noqa: F401 - a fixture
from test_recon_finance import REMIT, camt, standard_entries
from test_recon_reports import assert_self_contained, chromium, needs_chromium, png_pixels
from test_recon_support import BANK, DAY, build_world, write_bank_file

NOV, NOV30, OCT31 = date(2026, 11, 1), date(2026, 11, 30), date(2026, 10, 31)


def context(engine) -> ReportContext:
    return ReportContext(engine, ManualClock(T_NOV), bank_names(engine))


def rows_of(doc: ReportDoc, section: int = 0) -> list[dict]:
    return list(doc.sections[section].rows)


def plain(rows: list[dict], lang: str = "en") -> list[dict]:
    return [{k: (v(lang) if callable(v) else v) for k, v in r.items()} for r in rows]


def test_daily_and_monthly_collections(ledger):
    ctx = context(ledger.engine)
    daily = build("daily", ctx, ReportParams(date=NOV23))
    assert [(r["bank_code"], r["bank_name"], r["method"], r["payments"], r["collected"], r["reversed"], r["net"])
            for r in plain(rows_of(daily))] == [(A, "工商银行", "cheque", 1, 13_000, 0, 13_000),
                                                (B, "农业银行", "transfer/card", 1, 30_000, 30_000, 0)]
    assert daily.sections[0].totals["net"] == 13_000
    monthly = build("monthly", ctx, ReportParams(month=NOV))
    assert [(r["business_date"], r["payments"], r["collected"], r["reversals"], r["net"]) for r in rows_of(monthly)] == \
        [(NOV23, 2, 43_000, 1, 13_000)]
    assert monthly.sections[1].totals["collected"] == 43_000
    october = build("monthly", ctx, ReportParams(month=date(2026, 10, 12)))
    assert october.sections[0].totals["collected"] == 25_000 and october.parameters[0][1] == "2026-10"
    assert_ledger_verifies(ledger.engine)


def test_month_end_summary_adds_up(ledger):
    figures = by_key(build("month-end", context(ledger.engine), ReportParams(month=NOV)))
    assert figures == {"start_receivable": 52_100, "start_prepaid": 5_000, "start_net": 47_100, "billed_E": 24_000,
                       "billed_V": 3_000, "billed_F": 0, "corrections": -1_100, "collected": -43_000,
                       "reversed": 30_000, "refunded": 2_000, "other": 0, "end_net": 62_000,
                       "end_receivable": 65_000, "end_prepaid": 3_000, "check": 0}
    october = by_key(build("month-end", context(ledger.engine), ReportParams(month=date(2026, 10, 1))))
    assert october["end_net"] == figures["start_net"] and october["billed_F"] == 30_000
    assert october["billed_V"] == 20_000 and october["collected"] == -25_000 and october["check"] == 0


def test_aging_and_arrears(ledger):
    ctx = context(ledger.engine)
    aging = build("aging", ctx, ReportParams(as_of=NOV30))
    assert [(r["district"], r["customer_type"], r["bills"], r["not_due"], r["d0_30"], r["d31_60"], r["d61_90"], r["d90"],
             r["owing"]) for r in plain(rows_of(aging))] == [
        ("01", "resident", 3, 0, 15_000, 9_000, 0, 0, 24_000),        # K1's replacement, K1 and K2 November
        ("02", "non-resident", 3, 4_000, 0, 30_000, 0, 7_000, 41_000)]  # K5 not due and July, K3 reversed
    assert aging.sections[0].totals["owing"] == 65_000                  # the month-end's receivables at end
    # as of October 31, before November's payments and the correction
    before = build("aging", ctx, ReportParams(as_of=OCT31))
    assert before.sections[0].totals | {"customer_type": None} == {
        "bills": 4, "not_due": 0, "d0_30": 45_100, "d31_60": 0, "d61_90": 0, "d90": 7_000, "owing": 52_100,
        "customer_type": None}
    arrears = build("arrears", ctx, ReportParams(as_of=NOV30))
    assert [(r["customer_no"], r["bills"], r["owing"], r["days"], r["collection_type"], r["mobile"])
            for r in plain(rows_of(arrears))] == [
        (K1, 2, 21_000, 33, "cash at counters", "yes"), (K2, 1, 3_000, 2, "cash at counters", "no"),
        (K5, 1, 7_000, 125, "direct debit", "yes"), (K3, 1, 30_000, 33, "bank withholds", "yes")]
    assert arrears.sections[0].totals["owing"] == 61_000 and arrears.sections[0].totals["bills"] == 5
    late = build("arrears", ctx, ReportParams(as_of=NOV30, district="02", min_days=40))
    assert late.sections[0].totals | {"customer_name": None} == {
        "customer_no": None, "customer_name": None, "bills": 1, "owing": 7_000, "customers": 1}
    assert [(r["customer_no"], r["owing"]) for r in rows_of(late)] == [(K5, 7_000)]
    # the totals are window sums read from the list's first row: an empty list has zeros, no rows
    none = build("arrears", ctx, ReportParams(as_of=NOV30, min_days=400))
    assert none.sections[0].totals["customers"] == 0 and none.sections[0].totals["owing"] == 0
    assert none.sections[0].title.en == "Customers in arrears (0)" and rows_of(none) == []


def confirmed_figures(engine) -> list[tuple]:
    doc = build("confirmed", ReportContext(engine, ManualClock(T0), {}), ReportParams(date=DAY))
    return [(r["channel"]("en"), r["method"]("en"), r["payments"], r["collected"], r["confirmed"], r["open"])
            for r in rows_of(doc)]


def test_confirmed_collections_count_what_the_second_reconciliation_confirmed(db_url, tmp_path):
    w = build_world(db_url)
    assert reconcile_bank_file(w.engine, write_bank_file(tmp_path, w.lines), actor="alice").status == "applied"
    assert post(w.engine, [payment(BANK, "C12", 120_000, method="03", cheque_no="CHQ123",
                                   at=T0 + timedelta(hours=1))])[0].ok
    # first reconciliation only: nothing is confirmed yet
    assert confirmed_figures(w.engine) == [("counter", "cash", 4, 140_000, 0, 140_000),
                                           ("counter", "cheque", 1, 120_000, 0, 120_000),
                                           ("direct debit", "direct debit", 1, 80_000, 0, 80_000)]
    statement = tmp_path / "statement.xml"
    statement.write_bytes(camt(8, standard_entries(8)))
    assert reconcile_statement(w.engine, statement, actor="fin").status == "applied"
    # the remittance (REMIT: P1 and the approved debit, what the bank run matched) and the cheque;
    # P3, P4 and P6 are the bank run's open exceptions: collected, not confirmed
    assert REMIT == 10_000 + 80_000
    assert confirmed_figures(w.engine) == [("counter", "cash", 4, 140_000, 10_000, 130_000),
                                           ("counter", "cheque", 1, 120_000, 120_000, 0),
                                           ("direct debit", "direct debit", 1, 80_000, 80_000, 0)]
    assert_ledger_verifies(w.engine)
    w.engine.dispose()


def test_csv_is_spreadsheet_safe(ledger, tmp_path):
    doc = build("arrears", context(ledger.engine), ReportParams(as_of=NOV30))
    path = tmp_path / "arrears.csv"
    with open(path, "wb") as fh:
        write(doc, "csv", fh, "zh")
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "a byte-order mark: Excel reads the Chinese labels right"
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["欠费清单"] and rows[1] == ["截至", "2026-11-30"]
    header = rows[rows.index(["欠费客户（4 户）"]) + 1]
    assert header == ["户号", "户名", "供电所/区域", "客户类型", "逾期账单数", "欠费金额（元）", "欠费金额（分）",
                      "最长逾期天数", "缴费方式", "有手机号"]
    first = rows[rows.index(header) + 1]
    assert first[0] == f'="{K1}"' and first[0].strip('="') == "00100001"   # the leading zeros stay
    assert first[2] == '="01"' and first[5:7] == ["210.00", "21000"] and first[9] == "有"
    assert rows[-1][5:7] == ["610.00", "61000"]
    # free text a spreadsheet would take for a formula is neutralised
    hostile = ReportDoc("t", doc.title, [], [Section("s", doc.title, [col("name", "户名", "name"),
                                                                       col("no", "户号", "no", "identifier")],
                                                     [{"name": "=HYPERLINK(\"http://x\")", "no": '1"2'},
                                                      {"name": "-2+3", "no": "0007"}])], doc.generated_at)
    out = io.StringIO(newline="")
    write_csv(hostile, out)
    cells = list(csv.reader(io.StringIO(out.getvalue().lstrip("\ufeff"))))
    assert cells[-2] == ["'=HYPERLINK(\"http://x\")", '="1""2"'] and cells[-1] == ["'-2+3", '="0007"']


def test_xlsx_has_typed_cells(ledger, tmp_path):
    ctx = context(ledger.engine)
    path = tmp_path / "arrears.xlsx"
    with open(path, "wb") as fh:
        write(build("arrears", ctx, ReportParams(as_of=NOV30)), "xlsx", fh, "en")
    sheet = openpyxl.load_workbook(path).worksheets[0]
    values = [[c for c in row] for row in sheet.iter_rows()]
    header_at = next(i for i, row in enumerate(values) if row[0].value == "customer number")
    first = values[header_at + 1]
    assert first[0].value == K1 and first[0].data_type == "s"                 # text: leading zeros kept
    assert first[4].value == 2 and first[4].data_type == "n"
    assert first[5].value == 210.0 and first[5].number_format == "#,##0.00"
    assert first[6].value == 33 and first[8].value == "yes"
    assert values[-1][5].value == 610.0
    book_path = tmp_path / "monthly.xlsx"
    with open(book_path, "wb") as fh:
        write(build("monthly", ctx, ReportParams(month=NOV)), "xlsx", fh, "zh")
    book = openpyxl.load_workbook(book_path)
    assert len(book.worksheets) == 2
    by_day = list(book.worksheets[0].iter_rows())
    day_row = next(row for row in by_day if row[0].is_date)
    assert day_row[0].value.date() == NOV23 and day_row[2].value == 430.0


@needs_chromium
def test_html_renders_in_chromium(ledger, tmp_path):
    ctx = context(ledger.engine)
    for name, params in (("month-end", ReportParams(month=NOV)), ("aging", ReportParams(as_of=NOV30))):
        html = html_text(build(name, ctx, params))
        assert_self_contained(html)
        assert "@page{size:A4" in html and "@media print" in html
        page = tmp_path / f"{name}.html"
        page.write_text(html, encoding="utf-8")
        shot = tmp_path / f"{name}.png"
        proc = chromium([f"--screenshot={shot}", page.as_uri()], tmp_path)
        assert shot.exists(), proc.stderr[-2000:]
        width, height, rows = png_pixels(shot.read_bytes())
        colours = {row[i:i + 3] for row in rows[::7] for i in range(0, len(row), 3 * 11)}
        assert len(colours) > 8, "the screenshot is blank or a single colour"
        assert any(c[2] > 150 and c[0] < 90 for c in colours), "the chart's blue bars are drawn"
        dom = chromium(["--dump-dom", page.as_uri()], tmp_path).stdout
        assert "<svg" in dom and "<rect" in dom and "<table" in dom
        pdf = tmp_path / f"{name}.pdf"
        chromium(["--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri()], tmp_path)
        boxes = re.findall(rb"/MediaBox \[0 0 ([0-9.]+) ([0-9.]+)\]", pdf.read_bytes())
        assert len(boxes) == 1, "printed on one page"
        assert [round(float(x)) for x in boxes[0]] == [595, 842], "an A4 page (595 x 842 pt)"
        footer = dom[dom.index('<tr class="totals">'):]
        footer = footer[:footer.index("</tr>")]
        if name == "month-end":
            assert "核对差额（应为 0）" in footer and ">0.00<" in footer
            assert "620.00" in dom and "-430.00" in dom
        else:
            assert "650.00" in footer and "390.00" in footer and "合计" in footer


def test_command_writes_each_format(sqlite_url, tmp_path):
    ledger = build_ledger(sqlite_url)
    ledger.engine.dispose()
    env = {**os.environ, "GRIDPAY_CONFIG": ""}

    def gridpay(*args):
        done = subprocess.run([sys.executable, "-m", "gridpay", "report", *args, "--url", ledger.url],
                              capture_output=True, env=env)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout

    html = gridpay("month-end", "--month", "2026-11").decode("utf-8")
    assert html.startswith("<!DOCTYPE html>") and "月末应收汇总表" in html and "620.00" in html
    out = tmp_path / "aging.xlsx"
    gridpay("aging", "--as-of", "2026-11-30", "--format", "xlsx", "--out", str(out))
    assert openpyxl.load_workbook(out).worksheets[0]["A1"].value == "应收账款账龄分析"
    text = gridpay("confirmed", "--from", "2026-11-01", "--to", "2026-11-30", "--format", "csv", "--lang", "en")
    rows = list(csv.reader(io.StringIO(text.decode("utf-8-sig"))))
    assert rows[0] == ["Confirmed collections (second reconciliation)"]
    assert [r[1] for r in rows if r and r[0] == "2026-11-23"] == [f'="{A}"']   # B's payment was reversed
    daily = gridpay("daily", "--date", "2026-11-23", "--format", "csv")
    assert "日收款报表" in daily.decode("utf-8-sig")
