"""Reports for finance: run CSV + self-contained HTML (checked in a real headless Chromium), and the
day across banks (text table, CSV, HTML) through ``gridpay recon report``."""
from __future__ import annotations

import csv
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from ledger.recon.finance import reconcile_statement
from ledger.recon.matching import reconcile_bank_file
from ledger.recon.run_reports import day_report, render_day_text
from test_recon_finance import REMIT, camt, ntry
from test_recon_support import BANK, DAY, build_world, gridpay, write_bank_file

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                                                                  "(apt-get install -y chromium)")


@pytest.fixture
def reported(sqlite_url, tmp_path):
    w = build_world(sqlite_url)
    reports = tmp_path / "reports"
    bank = reconcile_bank_file(w.engine, write_bank_file(tmp_path, w.lines), actor="alice", reports_dir=reports)
    stmt = tmp_path / "statement.xml"
    stmt.write_bytes(camt(8, [ntry(8, REMIT, ref=f"{BANK}{DAY:%Y%m%d}"), ntry(8, 4_200, ref="UNKNOWN")]))
    fin = reconcile_statement(w.engine, stmt, actor="fin", reports_dir=reports)
    yield w, bank, fin, reports
    w.engine.dispose()


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


@needs_chromium
def test_run_report_renders_in_chromium(reported, tmp_path):
    w, bank, fin, reports = reported
    html_path = next(p for p in bank.reports if p.suffix == ".html")
    html = html_path.read_text(encoding="utf-8")
    assert_self_contained(html)
    shot = tmp_path / "run.png"
    proc = chromium([f"--screenshot={shot}", html_path.as_uri()], tmp_path)
    assert shot.exists(), proc.stderr[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 900)
    colours = {row[i:i + 3] for row in rows[::7] for i in range(0, len(row), 3 * 11)}
    assert len(colours) > 8, "the screenshot is blank or a single colour"
    assert any(c[0] > 150 and c[1] < 80 and c[2] < 80 for c in colours), "the red 'open' bar of the chart is drawn"
    dom = chromium(["--dump-dom", html_path.as_uri()], tmp_path).stdout
    table = dom[dom.index('<table id="exceptions">'):]
    table = table[:table.index("</table>")]
    assert table.count('<tr class="open">') == len(bank.items) == 9
    for item in bank.items:
        assert f"<td>{item['kind']}</td>" in table
    assert '<table id="totals">' in dom and "<svg" in dom


@needs_chromium
def test_finance_and_day_reports_render(reported, tmp_path):
    w, bank, fin, reports = reported
    fin_html = next(p for p in fin.reports if p.suffix == ".html")
    dom = chromium(["--dump-dom", fin_html.as_uri()], tmp_path).stdout
    assert dom.count('<tr class="open">') == 1 and "UNKNOWN" in dom
    out = gridpay("recon", "report", "--date", str(DAY), "--url", w.url, "--reports", reports, check=True).stdout
    assert f"Reconciliation of business date {DAY}" in out
    assert re.search(rf"{BANK}\s+{bank.run_id}\s+10\b", out), out
    assert "matched (match" in out                      # the remittance was matched
    day_html = reports / f"recon_day_{DAY:%Y%m%d}.html"
    assert_self_contained(day_html.read_text(encoding="utf-8"))
    shot = tmp_path / "day.png"
    chromium([f"--screenshot={shot}", day_html.as_uri()], tmp_path)
    _, _, rows = png_pixels(shot.read_bytes())
    assert len({row[i:i + 3] for row in rows[::9] for i in range(0, len(row), 39)}) > 8
    dom = chromium(["--dump-dom", day_html.as_uri()], tmp_path).stdout
    assert f"<td>{BANK}</td>" in dom and "<td>total</td>" in dom


def test_run_csv_and_day_report_contents(reported):
    w, bank, fin, reports = reported
    text = next(p for p in bank.reports if p.suffix == ".csv").read_text(encoding="utf-8-sig")
    summary, _, items = text.partition("\n\n")
    summary_rows = {r[0]: r[1:] for r in csv.reader(summary.splitlines())}
    assert summary_rows["matched"] == [str(bank.totals["matched_count"]), str(bank.totals["matched_sum"])]
    assert summary_rows["bank file lines"] == ["10", str(bank.totals["bank_sum"])]
    item_rows = list(csv.DictReader(items.splitlines()))
    assert len(item_rows) == 9 and {r["kind"] for r in item_rows} == {"bank_only", "ledger_only", "amount_differs",
                                                                      "status_differs", "debit_unknown"}
    rep = day_report(w.engine, DAY)
    (row,) = rep.rows
    assert (row["bank_code"], row["open"], row["expected_remittance"]) == (BANK, 9, REMIT)
    assert "matched" in row["remittance"] and rep.unreconciled_banks == []
    assert "total" in render_day_text(rep)
