"""The report definition's reports over real HTTP (``GET /v1/reports/{name}``): each format's content
type and a figure, a missing parameter as a problem, and ``report.read`` required."""
from __future__ import annotations

import csv
import io

import openpyxl
import pytest

from api.problems import BASE
from api_harness import operator_name, running_service
from ledger.recon.matching import reconcile_bank_file
from report_ledger import K1, build_ledger
from test_recon_support import BANK, DAY, build_world, write_bank_file


@pytest.fixture
def service(db_url):
    build_ledger(db_url).engine.dispose()
    with running_service(db_url) as running:
        yield running


def test_each_format_over_http(service):
    with service.client(service.login(operator_name("finance"))) as http:
        as_json = http.get("/v1/reports/month-end", params={"month": "2026-11", "lang": "en"})
        assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
        summary = as_json.json()["sections"][0]
        assert {r["key"]: r["amount"] for r in summary["rows"]}["end_net"] == 62_000
        assert summary["totals"]["amount"] == 0 and summary["rows"][0]["line"].startswith("receivables at start")
        as_csv = http.get("/v1/reports/arrears", params={"as_of": "2026-11-30", "format": "csv"})
        assert as_csv.status_code == 200 and as_csv.headers["content-type"] == "text/csv; charset=utf-8"
        assert as_csv.content.startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
        assert [f'="{K1}"', "210.00", "21000"] == [rows[7][0], *rows[7][5:7]]
        as_xlsx = http.get("/v1/reports/aging", params={"as_of": "2026-11-30", "format": "xlsx"})
        assert as_xlsx.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        assert 'filename="aging-2026-11-30.xlsx"' in as_xlsx.headers["content-disposition"]
        sheet = openpyxl.load_workbook(io.BytesIO(as_xlsx.content)).worksheets[0]
        assert [row[-1].value for row in sheet.iter_rows()][-1] == 650.0      # owing in total, yuan
        as_html = http.get("/v1/reports/daily", params={"date": "2026-11-23", "format": "html"})
        assert as_html.headers["content-type"] == "text/html; charset=utf-8"
        assert "日收款报表" in as_html.text and "<svg" in as_html.text and "430.00" in as_html.text
        missing = http.get("/v1/reports/monthly")
        assert missing.status_code == 422 and missing.json()["type"] == BASE + "invalid-request"
        year_zero = http.get("/v1/reports/month-end", params={"month": "0000-01"})   # schemathesis found it: a 500
        assert year_zero.status_code == 422 and year_zero.json()["type"] == BASE + "invalid-request"
        receivables = http.get("/v1/reports/receivables", params={"period": "202611", "format": "xlsx"})
        assert 'filename="receivables-202611.xlsx"' in receivables.headers["content-disposition"]
        sheet = openpyxl.load_workbook(io.BytesIO(receivables.content)).worksheets[0]
        assert sheet.title and [row[0].value for row in sheet.iter_rows()][-1] == "合计"
        wrong = http.get("/v1/reports/receivables", params={"period": "202613"})
        assert wrong.status_code == 422 and wrong.json()["type"] == BASE + "invalid-request"
        debits = http.get("/v1/reports/debits", params={"date": "2026-11-23", "format": "text", "lang": "en"})
        assert debits.status_code == 200 and "Direct debits by channel" in debits.text
    with service.client(service.login(operator_name("clerk"))) as http:
        assert http.get("/v1/reports/aging", params={"as_of": "2026-11-30"}).status_code == 403


def test_reconciliation_reports_over_http(db_url, tmp_path):
    """``recon`` (the day across banks) and ``recon-run`` are the catalogue's: every format, either language."""
    world = build_world(db_url)
    run = reconcile_bank_file(world.engine, write_bank_file(tmp_path, world.lines), actor="alice",
                              reports_dir=tmp_path / "reports")
    world.engine.dispose()
    with running_service(db_url) as service, service.client(service.login(operator_name("finance"))) as http:
        day = http.get("/v1/reports/recon", params={"date": DAY.isoformat(), "lang": "en"}).json()
        assert day["title"] == f"Reconciliation of business date {DAY}"
        (banks,) = day["sections"]
        assert [r["bank_code"] for r in banks["rows"]] == [BANK] and banks["totals"]["open"] == 9
        as_xlsx = http.get("/v1/reports/recon", params={"date": DAY.isoformat(), "format": "xlsx"})
        assert f'filename="recon-day-{DAY}.xlsx"' in as_xlsx.headers["content-disposition"]
        sheet = openpyxl.load_workbook(io.BytesIO(as_xlsx.content)).worksheets[0]
        assert sheet["A1"].value == f"{DAY} 各银行对账汇总"
        assert any(row[0].value == BANK and row[0].data_type == "s" for row in sheet.iter_rows())
        as_text = http.get("/v1/reports/recon-day", params={"date": DAY.isoformat(), "format": "text", "lang": "en"})
        assert as_text.headers["content-type"] == "text/plain; charset=utf-8" and "bank total" in as_text.text
        assert f'filename="recon-day-{DAY}.txt"' in as_text.headers["content-disposition"]
        page = http.get("/v1/reports/recon-run", params={"run_id": run.run_id, "format": "html", "lang": "en"})
        assert page.status_code == 200 and '<table id="bridge">' in page.text and "checked by:" in page.text
        as_csv = http.get("/v1/reports/recon-run", params={"run_id": run.run_id, "format": "csv"})
        rows = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
        assert ["项目", "笔数", "金额（元）", "金额（分）", "key", "role"] in rows
        assert http.get("/v1/reports/recon-run", params={"run_id": 999_999}).status_code == 404
        assert http.get("/v1/reports/recon-run").status_code == 422
