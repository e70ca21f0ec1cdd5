"""Reconciliation reports a finance clerk signs: run CSV + self-contained HTML (checked in a real headless
Chromium, printed to A4 PDF), and the day across banks (text, CSV, HTML) through ``gridpay recon report``.

The first tests are the clerk's complaints (issue 19), one assertion each: finance totals with a
debit line, exceptions as a net difference, yuan everywhere, bank and customer names, local time,
identifiers that stay text in a spreadsheet."""
from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import openpyxl
import pytest
from pypdf import PdfReader

from config.clock import ManualClock
from ledger.recon.day_reports import day_report, day_text
from ledger.recon.finance import reconcile_statement
from ledger.recon.matching import reconcile_bank_file
from ledger.recon.report_labels import ReportOptions, ReportsDir
from ledger.reports.catalogue import ReportParams, build, json_chunks, write
from ledger.reports.render_csv import csv_tables, identifier_value
from ledger.synchronous_posting import post
from ledger_helpers import T0, add_banks, add_bills, add_customers, customer_row, new_engine, payment
from test_recon_finance import REMIT, camt, ntry
from test_recon_support import BANK, DAY, build_world, gridpay, line_of, write_bank_file

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                                                                  "(apt-get install -y chromium)")
NAMES = {BANK: ("中国工商银行广州分行", "ICBC Guangzhou")}
RUN_AT = datetime(2026, 11, 24, 1, 30, tzinfo=timezone.utc)           # 09:30 in the business timezone
INJECTION = "=HYPERLINK(\"http://x.example\",\"pay\")"


def reports_dir(path: Path, lang: str = "zh") -> ReportsDir:
    return ReportsDir(path, ReportOptions(lang, ManualClock(RUN_AT), NAMES))


@pytest.fixture
def reported(sqlite_url, tmp_path):
    """The bank world reconciled at RUN_AT, and a statement: the remittance, an unknown credit from a
    counterparty whose name is a formula, and a bank fee (a debit line)."""
    w = build_world(sqlite_url)
    reports = reports_dir(tmp_path / "reports")
    bank = reconcile_bank_file(w.engine, write_bank_file(tmp_path, w.lines), actor="alice", reports_dir=reports,
                               clock=ManualClock(RUN_AT))
    stmt = tmp_path / "statement.xml"
    stmt.write_bytes(camt(8, [ntry(8, REMIT, ref=f"{BANK}{DAY:%Y%m%d}"), ntry(8, 4_200, ref="UNKNOWN", party=INJECTION),
                              ntry(8, 100, "DBIT", ref="FEE")]))
    fin = reconcile_statement(w.engine, stmt, actor="fin", reports_dir=reports)
    yield w, bank, fin, reports.path
    w.engine.dispose()


def report_file(result, suffix: str) -> Path:
    return next(p for p in result.reports if p.suffix == suffix)


def tables(result) -> dict[str, list[dict]]:
    return csv_tables(report_file(result, ".csv").read_text(encoding="utf-8-sig"))


def bridge_adds_up(rows: list[dict]) -> bool:
    start = int(next(r for r in rows if r["role"] == "start")["amount_fen"])
    end = int(next(r for r in rows if r["role"] == "end")["amount_fen"])
    return start + sum(int(r["amount_fen"]) for r in rows if r["role"] == "step") == end


def amounts(rows: list[dict]) -> dict[str, int]:
    return {r["key"]: int(r["amount_fen"]) for r in rows}


# ------------------------------------------------------------------------------------------ complaints

def test_finance_totals_add_up_when_the_statement_has_a_debit_line(reported):
    w, bank, fin, _ = reported
    bridge = tables(fin)["bridge"]
    lines = amounts(bridge)
    assert lines["statement_credits"] == REMIT + 4_200 and lines["statement_debits"] == -100   # shown apart, signed
    assert lines["statement_net"] == REMIT + 4_200 - 100
    assert (lines["open_credits"], lines["open_debits"], lines["collections"]) == (-4_200, 100, REMIT)
    assert bridge_adds_up(bridge)
    entries = [r for r in tables(fin)["entries"] if r["key"]]                  # matched + open, with signs
    assert sum(int(r["amount_fen"]) for r in entries) == lines["statement_net"]


def test_exceptions_are_the_net_difference_beside_the_gross(sqlite_url, tmp_path):
    """A payment missing at the bank (+1.00) and a line missing in the ledger (−1.00) net to nothing."""
    engine = new_engine(sqlite_url)
    with engine.begin() as conn:
        add_banks(conn, BANK)
        add_customers(conn, [customer_row("C1"), customer_row("C2")])
        add_bills(conn, [("C1", "202610", 100, 0), ("C2", "202610", 100, 0)])
    paid = payment(BANK, "C1", 100, at=T0)
    assert post(engine, [paid])[0].ok
    extra = line_of(payment(BANK, "C2", 100, at=T0 + timedelta(minutes=1)))
    run = reconcile_bank_file(engine, write_bank_file(tmp_path, [extra]), actor="alice",
                              reports_dir=reports_dir(tmp_path / "reports"))
    assert run.counts["ledger_only"] == run.counts["bank_only"] == 1
    found = tables(run)
    total = next(r for r in found["differences"] if r["key"] == "total")
    assert (int(total["gross_fen"]), int(total["net_fen"])) == (200, 0)
    assert amounts(found["bridge"]) == {"bank_total": 100, "bank_only": -100, "ledger_only": 100, "amount_differs": 0,
                                        "status_differs": 0, "debit_unknown": 0, "resolved": 0, "ledger_total": 100}
    (row,) = day_report(engine, DAY).rows
    assert (row["open_gross"], row["open_net"], row["difference"]) == (200, 0, 0)
    engine.dispose()


def test_amounts_are_yuan_with_separators_and_fen_only_in_csv_columns(reported):
    w, bank, fin, _ = reported
    for result in (bank, fin):
        page = report_file(result, ".html").read_text(encoding="utf-8")
        assert not re.search(r"\d\s*fen\b", page), "no amount in fen on the page"
    page = report_file(bank, ".html").read_text(encoding="utf-8")
    assert "3,301.00" in page and "330100" not in page              # the bank file's total, in yuan only
    assert "银行 301.00 元，账务 300.00 元" in page                   # P3's amount difference, in words and yuan
    header = report_file(bank, ".csv").read_text(encoding="utf-8-sig").split("\n\n")[1].splitlines()[0]
    assert header == "table,step,count,amount_yuan,amount_fen,key,role"
    assert amounts(tables(bank)["bridge"])["bank_total"] == 330_100
    text = day_text(w.engine, DAY, ReportOptions("zh", bank_names=NAMES))
    assert "3,301.00" in text and "330100" not in text and not re.search(r"\d\s*fen\b", text)


def test_banks_and_customers_appear_by_name(reported):
    w, bank, fin, _ = reported
    page = report_file(bank, ".html").read_text(encoding="utf-8")
    assert "中国工商银行广州分行（01020000）" in page
    rows = tables(bank)["exceptions"]
    assert {(identifier_value(r["customer_no"]), r["customer_name"]) for r in rows} >= {("C3", "客户C3"), ("C6", "客户C6")}
    day = day_text(w.engine, DAY, ReportOptions("en", bank_names=NAMES))
    assert "ICBC Guangzhou" in day
    unnamed = day_text(w.engine, DAY)           # no configuration: the ledger's banks row
    assert f"bank {BANK}" in unnamed


def test_times_are_local_through_the_clock(reported, tmp_path):
    """Every local time of a report in one format (the console's date and time, the zone as
    ``UTC+08:00``): the run's finish and the report's own time alike, in HTML, CSV and XLSX."""
    w, bank, fin, _ = reported
    page = report_file(bank, ".html").read_text(encoding="utf-8")
    assert "2026-11-24 09:30:00 UTC+08:00" in page and "01:30:00" not in page
    assert "生成时间: 2026-11-24 09:30:00 UTC+08:00" in page and "+0800" not in page
    facts = {r["label"]: r["value"] for r in tables(bank)["report"]}
    assert facts["完成时间"] == facts["生成时间"] == "2026-11-24 09:30:00 UTC+08:00"
    book_path = tmp_path / "run.xlsx"
    with open(book_path, "wb") as fh:
        write(build("recon-run", ReportOptions("zh", ManualClock(RUN_AT), NAMES).context(w.engine),
                    ReportParams(run_id=bank.run_id)), "xlsx", fh, "zh")
    sheet = openpyxl.load_workbook(book_path).worksheets[0]
    cells = {row[0].value: row[1].value for row in sheet.iter_rows(max_col=2) if row[0].value}
    assert cells["完成时间"] == cells["生成时间"] == "2026-11-24 09:30:00 UTC+08:00"


def test_csv_keeps_identifiers_as_text_and_runs_no_formula(reported):
    w, bank, fin, _ = reported
    raw = report_file(bank, ".csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "UTF-8 with a BOM: spreadsheet programs read the Chinese right"
    rows = tables(bank)["exceptions"]
    assert {r["bank_code"] for r in rows} == {f'="{BANK}"'}                  # a text cell: Excel/WPS keep the zero
    assert {identifier_value(r["bank_code"]) for r in rows} == {BANK}         # read back: the leading zero is there
    assert identifier_value(next(r for r in rows if r["customer_no"] == '="C3"')["rrn"]) == w.pays["P3"].rrn
    entries = tables(fin)["exceptions"]
    assert next(r for r in entries if r["counterparty"]).get("counterparty") == "'" + INJECTION
    for result in (bank, fin):
        for cells in tables(result).values():
            for row in cells:
                for cell in row.values():
                    if cell[:1] in ("=", "+", "-", "@"):
                        assert re.fullmatch(r'="[^"]*"|-\d+(\.\d\d)?', cell), f"a cell a spreadsheet would run: {cell!r}"
def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,900", *args],
                          capture_output=True, text=True, timeout=120)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG with the standard library: (width, height, rows of raw pixels)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def assert_self_contained(html: str) -> None:
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=""", html, re.I), "no external resources"
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html), "no links out except the SVG namespace"
    assert "<style>" in html and "<svg" in html




# ------------------------------------------------------------------------------------------ in a browser

def page_colours(shot: Path, step: int = 5) -> set[bytes]:
    width, _, rows = png_pixels(shot.read_bytes())
    bpp = len(rows[0]) // width
    return {row[i:i + 3] for row in rows[::step] for i in range(0, len(row), bpp * step)}


@needs_chromium
def test_run_report_in_chromium_shows_the_bridge_chart_and_totals(reported, tmp_path):
    w, bank, fin, _ = reported
    html_path = report_file(bank, ".html")
    assert_self_contained(html_path.read_text(encoding="utf-8"))
    shot = tmp_path / "run.png"
    proc = chromium([f"--screenshot={shot}", "--window-size=1200,1800", html_path.as_uri()], tmp_path)
    assert shot.exists(), proc.stderr[-2000:]
    colours = page_colours(shot)
    assert len(colours) > 8, "the screenshot is blank or a single colour"
    assert bytes((0xe8, 0xee, 0xf6)) in colours, "the tables' header row is drawn"
    assert bytes((0x2e, 0x7d, 0x32)) in colours, "the chart's bars are drawn"
    dom = chromium(["--dump-dom", html_path.as_uri()], tmp_path).stdout
    bridge = dom[dom.index('<table id="bridge">'):]
    bridge = bridge[:bridge.index("</table>")]
    assert '<tr class="end">' in bridge and "2,200.00" in bridge               # = the ledger's total, visible
    table = dom[dom.index('<table id="exceptions">'):]
    assert table[:table.index("</table>")].count('<tr class="open">') == len(bank.items) == 9
    assert '<tr class="totals">' in dom and 'id="chart-differences"' in dom and 'id="chart-totals"' in dom
    assert "调节相符" in dom


def cjk_font() -> bool:
    found = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True) if shutil.which("fc-list") else None
    return bool(found and found.stdout.strip())


@needs_chromium
@pytest.mark.skipif(not cjk_font(), reason="no CJK font (apt-get install -y fonts-wqy-microhei): the page count depends on it")
def test_reports_print_on_a4(reported, tmp_path):
    w, bank, fin, _ = reported
    # the bank run: the bridges, differences and charts, then the exceptions and sign-off; the statement: one page
    for result, pages in ((bank, 2), (fin, 1)):
        pdf = tmp_path / f"{report_file(result, '.html').stem}.pdf"
        proc = chromium([f"--print-to-pdf={pdf}", "--no-pdf-header-footer", report_file(result, ".html").as_uri()], tmp_path)
        assert pdf.exists(), proc.stderr[-2000:]
        reader = PdfReader(pdf)
        assert len(reader.pages) == pages
        for page in reader.pages:         # A4: 210 × 297 mm = 595 × 842 points
            assert abs(float(page.mediabox.width) - 595.3) < 2 and abs(float(page.mediabox.height) - 841.9) < 2
        assert "复核人" in reader.pages[-1].extract_text()                    # the sign-off is printed


@needs_chromium
def test_finance_and_day_reports_render_in_both_languages(reported, tmp_path):
    w, bank, fin, reports = reported
    dom = chromium(["--dump-dom", report_file(fin, ".html").as_uri()], tmp_path).stdout
    assert dom.count('<tr class="open">') == 2 and "UNKNOWN" in dom and "-1.00" in dom
    out = gridpay("recon", "report", "--date", str(DAY), "--url", w.url, "--reports", reports, check=True).stdout
    assert f"{DAY} 各银行对账汇总" in out and "合计" in out
    assert re.search(rf"{BANK}\s+bank {BANK}\s+{bank.run_id}\s+10\b", out), out
    assert "已到账（匹配" in out                                               # the remittance was matched
    day_html = reports / f"recon_day_{DAY:%Y%m%d}.html"
    assert_self_contained(day_html.read_text(encoding="utf-8"))
    shot = tmp_path / "day.png"
    chromium([f"--screenshot={shot}", day_html.as_uri()], tmp_path)
    assert len(page_colours(shot, 9)) > 8
    dom = chromium(["--dump-dom", day_html.as_uri()], tmp_path).stdout
    assert f'<td class="identifier">{BANK}</td>' in dom and "<td class=\"identifier\">合计</td>" in dom
    env = {**__import__("os").environ, "GRIDPAY_BANKS__01020000__NAME_EN": "ICBC Guangzhou"}
    english = gridpay("recon", "run-report", bank.run_id, "--lang", "en", "--url", w.url, "--reports",
                      tmp_path / "en", env=env, check=True).stdout
    page = (tmp_path / "en" / report_file(bank, ".html").name).read_text(encoding="utf-8")
    assert "report:" in english and "Reconciliation run" in page and "ICBC Guangzhou (01020000)" in page
    assert "missing in the ledger (bank only)" in page and "银行" not in page
    assert gridpay("recon", "run-report", "999999", "--url", w.url, "--reports", tmp_path / "en", env=env).returncode == 1


def test_recon_reports_are_the_catalogues_in_every_format(reported, tmp_path):
    """The run and day reports are documents of the one report model: XLSX with typed cells, JSON in
    fen, text for the terminal, in either language from the same document; the command serves them."""
    w, bank, fin, _ = reported
    ctx = ReportOptions("zh", ManualClock(RUN_AT), NAMES).context(w.engine)
    run = build("recon-run", ctx, ReportParams(run_id=bank.run_id))
    book_path = tmp_path / "run.xlsx"
    with open(book_path, "wb") as fh:
        write(run, "xlsx", fh, "en")
    book = openpyxl.load_workbook(book_path)
    bridge = book.worksheets[0]
    assert bridge["A1"].value.startswith("Reconciliation run") and "ICBC Guangzhou (01020000)" in bridge["A1"].value
    header_at = next(r for r in bridge.iter_rows() if r[0].value == "item")
    first = next(bridge.iter_rows(min_row=header_at[0].row + 1))
    assert (first[0].value, first[1].data_type, first[2].value) == ("bank file total (S lines)", "n", 3301.0)
    assert first[2].number_format == "#,##0.00" and first[3].value == "bank_total"        # the machine key kept
    exceptions = next(s for s in book.worksheets if s.title.startswith("Exceptions"))
    rows = list(exceptions.iter_rows())
    at = next(i for i, r in enumerate(rows) if r[0].value == "item")
    bank_code = [c.value for c in rows[at]].index("bank_code")
    assert all(r[0].data_type == "s" and r[bank_code].value == BANK for r in rows[at + 1:])   # identifiers as text
    assert len(rows) - at - 1 == 9
    as_json = json.loads("".join(json_chunks(run, "zh")))
    sections = {s["key"]: s for s in as_json["sections"]}
    assert {r["key"]: r["amount"] for r in sections["bridge"]["rows"]}["bank_total"] == 330_100   # fen
    assert sections["bridge"]["paragraphs"] == ["调节相符"] and as_json["sign_off"][1] == "复核人："
    assert len(sections["exceptions"]["rows"]) == 9 and sections["exceptions"]["rows"][0]["bank_code"] == BANK
    day = build("recon-day", ctx, ReportParams(date=DAY))
    text = io.BytesIO()
    write(day, "text", text, "en")
    assert "Reconciliation of business date" in text.getvalue().decode() and "ICBC Guangzhou" in text.getvalue().decode()
    page = tmp_path / "run-en.html"
    done = gridpay("report", "recon-run", bank.run_id, "--lang", "en", "--out", page, "--url", w.url, check=True)
    assert done.returncode == 0 and "missing in the ledger (bank only)" in page.read_text(encoding="utf-8")
    day_book = tmp_path / "day.xlsx"
    gridpay("report", "recon-day", "--date", DAY, "--format", "xlsx", "--out", day_book, "--url", w.url, check=True)
    sheet = openpyxl.load_workbook(day_book).worksheets[0]
    assert any(row[0].value == BANK and row[0].data_type == "s" for row in sheet.iter_rows())   # the code stays text
    assert gridpay("report", "recon-run", "999999", "--url", w.url).returncode != 0
