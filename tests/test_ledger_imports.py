"""Imports of the billing system's files (docs/spec/BILLING-FILES.md), on SQLite and PostgreSQL."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ledger.db import make_engine

from ledger.imports import HEADERS, import_file, import_files
from ledger.synchronous_posting import post
from ledger.schema import (
    agreements, allocations, audit_log, banks, bills, customer_history, customers, imports, journal_entries,
    journal_lines, outbox, prepaid_movements,
)
from gridpay.operator_auth import os_login
from identity_helpers import operator_env
from ledger_helpers import ENTRY_OF_LINE, T0, add_banks, assert_ledger_verifies, new_engine, payment, prepaid_of

ACTOR = "clerk.li"

CUSTOMERS = [
    ["C001", "张三", "R", "A", "Y", "13800000001"],
    ["C002", "李四", "R", "A", "N", ""],
    ["C003", "广州市天河贸易有限公司", "N", "A", "Y", "13900000003"],
]
BILLS = [
    ["C001", "202609", "B001", "12000", "0", "2026-10-20"],
    ["C001", "202610", "B002", "13500", "120", "2026-11-20"],
    ["C002", "202610", "B003", "8000", "0", "2026-11-20"],
    ["C003", "202610", "B004", "250000", "3000", "2026-11-20"],
]
AGREEMENTS = [
    ["C001", "01020000", "6222000000000001", "张三", "A", "0"],
    ["C003", "01020000", "6222000000000003", "广州市天河贸易有限公司", "A", "500000"],
]


def write_csv(path: Path, kind: str, rows, *, header=None, bom: bool = False) -> Path:
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(header or HEADERS[kind])
        writer.writerows(rows)
    return path


@pytest.fixture
def engine(db_url):
    engine = new_engine(db_url)
    yield engine
    engine.dispose()


def counts(engine) -> dict[str, int]:
    tables = (customers, customer_history, bills, agreements, banks, imports, journal_entries, journal_lines,
              outbox, allocations, prepaid_movements, audit_log)
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables}


def good_set(tmp_path) -> dict[str, Path]:
    return {"customers": write_csv(tmp_path / "customers.csv", "customers", CUSTOMERS, bom=True),
            "bills": write_csv(tmp_path / "bills.csv", "bills", BILLS),
            "agreements": write_csv(tmp_path / "agreements.csv", "agreements", AGREEMENTS)}


def test_good_file_set_is_applied_with_journal_notices_and_import_rows(db_url, engine, tmp_path):
    files = good_set(tmp_path)
    results = import_files(engine, files, ACTOR)
    assert all(r.ok for r in results.values()), {k: r.errors for k, r in results.items()}
    assert (results["customers"].applied, results["bills"].applied, results["agreements"].applied) == (3, 4, 2)
    assert results["bills"].notices == 3   # C002 has no mobile
    with engine.connect() as conn:
        rows = conn.execute(select(imports).order_by(imports.c.id)).all()
        # a set applies its agreements before its bills, so that the bills' notices know them
        assert [(r.kind, r.lines, r.applied, r.skipped, r.actor) for r in rows] == [
            ("customers", 3, 3, 0, ACTOR), ("agreements", 2, 2, 0, ACTOR), ("bills", 4, 4, 0, ACTOR)]
        assert rows[0].file_sha256 == hashlib.sha256(files["customers"].read_bytes()).hexdigest()
        c3 = conn.execute(select(customers).where(customers.c.customer_no == "C003")).one()
        assert (c3.customer_name, c3.customer_type, c3.version, c3.mobile) == ("广州市天河贸易有限公司", "N", 1, "13900000003")
        assert conn.execute(select(customers.c.mobile).where(customers.c.customer_no == "C002")).scalar_one() is None
        assert conn.execute(select(func.count()).select_from(customer_history)).scalar_one() == 3
        b4 = conn.execute(select(bills).where(bills.c.bill_id == "B004")).one()
        assert (b4.kind, b4.principal, b4.penalty, b4.due_date, b4.import_id) == ("O", 250000, 3000, date(2026, 11, 20),
                                                                                  rows[2].id)
        lines = conn.execute(select(journal_lines.c.account, journal_lines.c.amount)
                             .select_from(journal_lines.join(journal_entries, ENTRY_OF_LINE))
                             .where(journal_entries.c.ref_type == "bill", journal_entries.c.ref_id == "B004")).all()
        assert sorted(lines) == [("penalty_income", -3000), ("receivable", 253000), ("revenue", -250000)]
        notice = conn.execute(select(outbox).where(outbox.c.ref == "bill:B002")).one()
        assert (notice.kind, notice.mobile, notice.state) == ("bill_notice", "13800000001", "pending")
        # C001 gave no collection type and has an active agreement (of the same set): debited (D)
        assert notice.text == ("您好，您(C001)2026年10月的电费为136.20元，将从您尾号0001的账户扣缴，"
                               "请于2026年11月20日前在该账户中存足款项，谢谢。")
        assert conn.execute(select(func.count()).select_from(agreements).where(agreements.c.status == "A")).scalar_one() == 2
        assert conn.execute(select(banks.c.bank_code)).scalars().all() == ["01020000"]
        actions = conn.execute(select(audit_log.c.action, func.count()).group_by(audit_log.c.action)).all()
        assert dict(actions) == {"import.apply": 3, "customer.create": 3, "agreement.create": 2, "bank.create": 1}
        assert set(conn.execute(select(audit_log.c.actor)).scalars()) == {ACTOR}
    assert_ledger_verifies(db_url)


def test_repeat_import_is_idempotent_and_counts_skips(db_url, engine, tmp_path):
    files = good_set(tmp_path)
    import_files(engine, files, ACTOR)
    before = counts(engine)
    again = import_files(engine, files, "clerk.wang")
    for kind, lines in (("customers", 3), ("bills", 4), ("agreements", 2)):
        r = again[kind]
        assert r.ok and (r.lines, r.applied, r.skipped) == (lines, 0, lines), r
    after = counts(engine)
    # only the three new imports rows and their audit rows
    assert after["imports"] == before["imports"] + 3 and after["audit_log"] == before["audit_log"] + 3
    assert {k: v for k, v in after.items() if k not in ("imports", "audit_log")} == \
        {k: v for k, v in before.items() if k not in ("imports", "audit_log")}
    # a bills file mixing known and new bills: the known ones are skipped, the new one applied
    mixed = write_csv(tmp_path / "bills2.csv", "bills", BILLS + [["C002", "202611", "B005", "9000", "0", "2026-12-20"]])
    r = import_file(engine, "bills", mixed, ACTOR)
    assert r.ok and (r.applied, r.skipped) == (1, 4)
    assert_ledger_verifies(db_url)


def test_customer_update_is_recorded_in_history_and_audit(engine, tmp_path):
    import_file(engine, "customers", write_csv(tmp_path / "c1.csv", "customers", CUSTOMERS), ACTOR)
    changed = [row[:] for row in CUSTOMERS]
    changed[1][1] = "李四娘"
    changed[1][5] = "13700000002"
    r = import_file(engine, "customers", write_csv(tmp_path / "c2.csv", "customers", changed), "clerk.wang")
    assert r.ok and (r.applied, r.updated, r.created, r.skipped) == (1, 1, 0, 2)
    with engine.connect() as conn:
        c2 = conn.execute(select(customers).where(customers.c.customer_no == "C002")).one()
        assert (c2.customer_name, c2.mobile, c2.version) == ("李四娘", "13700000002", 2)
        history = conn.execute(select(customer_history).where(customer_history.c.customer_no == "C002")
                               .order_by(customer_history.c.version)).all()
        assert [(h.version, h.customer_name, h.mobile) for h in history] == [(1, "李四", None), (2, "李四娘", "13700000002")]
        assert history[1].import_id == r.import_id
        audit = conn.execute(select(audit_log).where(audit_log.c.action == "customer.update")).one()
        assert (audit.actor, audit.object_id) == ("clerk.wang", "C002")
        assert json.loads(audit.details)["changes"] == {"customer_name": ["李四", "李四娘"], "mobile": [None, "13700000002"]}


def test_agreements_update_and_switch_of_active_agreement(engine, tmp_path):
    import_files(engine, good_set(tmp_path), ACTOR)
    # cancel the old agreement and add a new active one in the same file: allowed
    switch = [["C001", "01020000", "6222000000000001", "张三", "C", "0"],
              ["C001", "01030000", "6228000000000009", "张三", "A", "100000"]]
    r = import_file(engine, "agreements", write_csv(tmp_path / "a2.csv", "agreements", switch), ACTOR)
    assert r.ok and (r.created, r.updated) == (1, 1), r.errors
    with engine.connect() as conn:
        rows = conn.execute(select(agreements.c.bank_code, agreements.c.status, agreements.c.version)
                            .where(agreements.c.customer_no == "C001").order_by(agreements.c.id)).all()
        assert [tuple(r) for r in rows] == [("01020000", "C", 2), ("01030000", "A", 1)]
        assert conn.execute(select(func.count()).select_from(audit_log)
                            .where(audit_log.c.action == "agreement.update")).scalar_one() == 1


def test_bills_may_name_customers_of_the_same_set_and_a_bad_file_rejects_the_set(engine, tmp_path):
    bad_bills = write_csv(tmp_path / "bills.csv", "bills", BILLS + [["C001", "202611", "B009", "-5", "0", "2026-12-20"]])
    files = {"customers": write_csv(tmp_path / "customers.csv", "customers", CUSTOMERS), "bills": bad_bills}
    before = counts(engine)
    results = import_files(engine, files, ACTOR)
    assert results["customers"].ok and not results["bills"].ok
    assert [(e.line, e.column) for e in results["bills"].errors] == [(6, "principal")]
    assert counts(engine) == before   # the good customers file was not applied either
    # bills alone, without the customers: every line names an unknown customer
    r = import_file(engine, "bills", write_csv(tmp_path / "b.csv", "bills", BILLS), ACTOR)
    assert [(e.line, e.column) for e in r.errors] == [(2, "customer_no"), (3, "customer_no"), (4, "customer_no"),
                                                      (5, "customer_no")]
    assert "unknown customer C001" in r.errors[0].reason


# (file content as bytes or rows, the (line, column) pairs expected, a word of each reason)
def _bad_cases():
    h = {k: ",".join(v) for k, v in HEADERS.items()}
    return {
        "bad customer columns": ("customers", [
            ["C1", "王五", "X", "A", "Y", ""],              # line 2 customer_type
            ["C 2", "王六", "R", "Q", "Y", "1380000000"],   # line 3 customer_no, status, mobile
            ["C3", "", "R", "A", "maybe", "13800000003"],  # line 4 customer_name, prepay_allowed
        ], [(2, "customer_type"), (3, "customer_no"), (3, "mobile"), (3, "status"), (4, "customer_name"),
            (4, "prepay_allowed")], ""),
        "GBK name too long": ("customers", [["C1", "张" * 31, "R", "A", "Y", ""]], [(2, "customer_name")],
                              "62 bytes in GBK"),
        "name not in GBK": ("customers", [["C1", "Zoë 🙂", "R", "A", "Y", ""]], [(2, "customer_name")], "GBK"),
        "duplicate customer": ("customers", [["C1", "甲", "R", "A", "Y", ""], ["C1", "乙", "R", "A", "Y", ""]],
                               [(3, "customer_no")], "appears again"),
        "bad bill columns": ("bills", [
            ["C001", "202613", "B1", "100", "0", "2026-01-01"],      # period
            ["C001", "202601", "B-2", "12.50", "-1", "2026-02-30"],  # bill_id, principal, penalty, due_date
            ["C001", "202601", "B3", "0", "0", "20260101"],          # principal 0, due_date format
        ], [(2, "period"), (3, "bill_id"), (3, "due_date"), (3, "penalty"), (3, "principal"), (4, "due_date"),
            (4, "principal")], ""),
        "unknown customer": ("bills", [["NOBODY", "202610", "B1", "100", "0", "2026-11-20"]],
                             [(2, "customer_no")], "unknown customer"),
        "bill id known with other content": ("bills", [["C001", "202609", "B001", "12001", "0", "2026-10-20"]],
                                             [(2, "bill_id")], "other content"),
        "bill id twice in the file": ("bills", [["C002", "202611", "B7", "100", "0", "2026-12-20"],
                                                ["C002", "202611", "B7", "200", "0", "2026-12-20"]],
                                      [(3, "bill_id")], "other content"),
        "two active agreements in the file": ("agreements", [
            ["C002", "01020000", "6222000000000002", "李四", "A", "0"],
            ["C002", "01030000", "6228000000000002", "李四", "A", "0"]], [(2, "status"), (3, "status")],
            "at most one may be active"),
        "second active agreement beside a known one": ("agreements", [
            ["C001", "01030000", "6228000000000001", "张三", "A", "0"]], [(2, "status")], "already active"),
        "bad agreement columns": ("agreements", [["C001", "BANK1", "62 22", "张三", "X", "1.5"]],
                                  [(2, "account_no"), (2, "bank_code"), (2, "debit_limit"), (2, "status")], ""),
        "bad header": ("bills", f"customer_no,period,bill,principal,penalty,due_date\r\n"
                                f"C001,202611,B8,100,0,2026-12-20\r\n".encode(), [(1, "bill_id")], "bad header"),
        "header missing": ("bills", b"C001,202611,B8,100,0,2026-12-20\r\n", [(1, "customer_no")], "bad header"),
        "empty file": ("customers", b"", [(1, "-")], "header line"),
        "UTF-16 BOM": ("customers", (h["customers"] + "\r\nC1,甲,R,A,Y,\r\n").encode("utf-16"), [(1, "-")], "UTF-16"),
        "GBK bytes": ("customers", (h["customers"] + "\r\nC1,甲,R,A,Y,\r\nC2,乙,R,A,Y,\r\n").encode("gbk"),
                      [(2, "-")], "not UTF-8"),
        "BOM inside": ("customers", ("\ufeff" + h["customers"] + "\r\n\ufeffC1,甲,R,A,Y,\r\n").encode(), [(2, "-")],
                       "byte-order mark"),
        "bad quoting": ("customers", (h["customers"] + '\r\nC1,"甲"乙,R,A,Y,\r\nC2,乙,R,A,Y,\r\n'
                                      'C3,"unterminated,R,A,Y,\r\n').encode(), [(2, "-"), (4, "-")], "quoting"),
        "wrong number of fields": ("customers", [["C1", "甲", "R", "A", "Y"], ["C2", "乙", "R", "A", "Y", "", ""]],
                                   [(2, "-"), (3, "-")], "expected 6"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_a_bad_line_rejects_the_whole_file_and_is_reported(engine, tmp_path, case):
    import_files(engine, good_set(tmp_path), ACTOR)
    kind, content, expected, word = _bad_cases()[case]
    path = tmp_path / f"bad-{kind}.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:  # good lines around the bad ones: they are not applied either
        good = {"customers": [["C900", "赵九", "R", "A", "Y", "13800000900"]],
                "bills": [["C002", "202612", "B900", "100", "0", "2027-01-20"]],
                "agreements": [["C002", "01020000", "6222000000000900", "李四", "C", "0"]]}[kind]
        write_csv(path, kind, good + content)
        expected = [(line + 1, column) for line, column in expected]
    before = counts(engine)
    result = import_file(engine, kind, path, ACTOR)
    assert not result.ok
    assert sorted((e.line, e.column) for e in result.errors) == sorted(expected), result.errors
    assert all(word in e.reason for e in result.errors), result.errors
    assert result.import_id is None and result.applied == 0
    assert counts(engine) == before


def test_quoted_fields_with_commas_newlines_and_quotes_are_read(engine, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_bytes(("\ufeff" + ",".join(HEADERS["customers"]) + "\r\n"
                      'C1,"陈, ""小"" 明",R,A,Y,13800000001\r\n\r\n').encode())
    r = import_file(engine, "customers", path, ACTOR)
    assert r.ok and r.applied == 1, r.errors
    with engine.connect() as conn:
        assert conn.execute(select(customers.c.customer_name)).scalars().all() == ['陈, "小" 明']
    # a quoted field may span lines (RFC 4180); a record is named by its first line, and a line
    # break is no part of a name
    path.write_bytes((",".join(HEADERS["customers"]) + "\r\n"
                      'C2,"two\r\nlines",R,A,Y,\r\n'
                      "C3,丙,X,A,Y,\r\n").encode())
    r = import_file(engine, "customers", path, ACTOR)
    assert [(e.line, e.column) for e in r.errors] == [(2, "customer_name"), (4, "customer_type")]
    assert "control character" in r.errors[0].reason


def test_prepaid_balance_pays_new_bills_oldest_first_whole_bills_only(db_url, engine, tmp_path):
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", "customers", CUSTOMERS), ACTOR)
    with engine.begin() as conn:
        add_banks(conn, "01020000")
    # C001 has nothing due and may prepay: 20,000 fen become prepaid balance
    assert post(engine, [payment("01020000", "C001", 20_000, at=T0)])[0].ok
    new = [["C001", "202610", "N2", "9000", "0", "2026-11-20"],     # newer, listed first
           ["C001", "202609", "N1", "8000", "500", "2026-10-20"],   # oldest: paid first (8,500)
           ["C001", "202611", "N3", "12000", "0", "2026-12-20"]]    # 11,500 - 9,000 = 2,500 left: not paid
    r = import_file(engine, "bills", write_csv(tmp_path / "b.csv", "bills", new), ACTOR)
    assert r.ok and r.prepaid_applied == 2
    with engine.connect() as conn:
        assert prepaid_of(conn, "C001") == 2_500
        moves = conn.execute(select(prepaid_movements).where(prepaid_movements.c.kind == "applied")
                             .order_by(prepaid_movements.c.id)).all()
        assert [(m.bill_id, m.amount) for m in moves] == [("N1", -8_500), ("N2", -9_000)]
        allocs = conn.execute(select(allocations).where(allocations.c.prepaid_movement_id.is_not(None))
                              .order_by(allocations.c.id)).all()
        assert [(a.bill_id, a.amount, a.prepaid_movement_id) for a in allocs] == [
            ("N1", 8_500, moves[0].id), ("N2", 9_000, moves[1].id)]
        assert conn.execute(select(func.count()).select_from(allocations)
                            .where(allocations.c.bill_id == "N3")).scalar_one() == 0
        lines = conn.execute(select(journal_lines.c.account, journal_lines.c.amount)
                             .select_from(journal_lines.join(journal_entries, ENTRY_OF_LINE))
                             .where(journal_entries.c.kind == "prepaid_applied", journal_entries.c.ref_id == "N1")).all()
        assert sorted(lines) == [("prepaid", 8_500), ("receivable", -8_500)]
        texts = dict(conn.execute(select(outbox.c.ref, outbox.c.text).where(outbox.c.kind == "bill_notice")).all())
        assert texts["bill:N1"] == "您好，您(C001)2026年9月的电费为85.00元已缴，谢谢。"
        assert "请于2026年12月20日前缴纳" in texts["bill:N3"]
    # the next bill that fits is not paid while the older N3 stays unpaid
    r = import_file(engine, "bills", write_csv(tmp_path / "b2.csv", "bills",
                                               [["C001", "202612", "N4", "1000", "0", "2027-01-20"]]), ACTOR)
    assert r.ok and r.prepaid_applied == 0
    assert_ledger_verifies(db_url)


def test_gridpay_ledger_import_command(sqlite_url, tmp_path):
    files = good_set(tmp_path)
    gridpay = [sys.executable, "-m", "gridpay"]
    subprocess.run(gridpay + ["db", "upgrade", "--url", sqlite_url], check=True, capture_output=True,
                   env={**os.environ, "GRIDPAY_CONFIG": ""})
    env = operator_env(sqlite_url, "wang", ["operations"], {**os.environ, "GRIDPAY_CONFIG": ""})
    ok = subprocess.run(gridpay + ["ledger", "import", "customers", str(files["customers"]), "--url", sqlite_url],
                       capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "3 applied (3 new, 0 updated), 0 skipped" in ok.stdout
    bad = write_csv(tmp_path / "bad.csv", "bills", BILLS + [["C001", "202611", "B9", "abc", "0", "2026-12-20"],
                                                            ["C404", "202611", "B10", "100", "0", "2026-12-20"]])
    report = tmp_path / "rejections.csv"
    rejected = subprocess.run(gridpay + ["ledger", "import", "bills", str(bad), "--url", sqlite_url,
                                         "--report", str(report)], capture_output=True, text=True, env=env)
    assert rejected.returncode == 1
    assert "REJECTED" in rejected.stdout and "line 6, column principal" in rejected.stdout
    assert "line 7, column customer_no: unknown customer C404" in rejected.stdout
    with open(report, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["file", "line", "column", "reason"]
    assert [r[:3] for r in rows[1:]] == [["bad.csv", "6", "principal"], ["bad.csv", "7", "customer_no"]]
    whole = subprocess.run(gridpay + ["ledger", "import", "set", str(tmp_path), "--url", sqlite_url],
                           capture_output=True, text=True, env=env)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "bills bills.csv: 4 line(s), 4 applied" in whole.stdout
    # the authenticated operator, with the OS login of the command beside it
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.actor, audit_log.c.details)
                            .where(audit_log.c.action.like("import%"))).all()
    engine.dispose()
    assert rows and {actor for actor, _ in rows} == {"operator:wang"}
    assert {json.loads(details)["os_login"] for _, details in rows} == {os_login()}


def test_demo_files_are_deterministic_and_import(db_url, engine, tmp_path):
    from ledger.demo_data import install_demo, write_demo_files

    a = write_demo_files(tmp_path / "a", customers=50, seed=7, as_of=date(2026, 11, 1))
    b = write_demo_files(tmp_path / "b", customers=50, seed=7, as_of=date(2026, 11, 1))
    assert {k: p.read_bytes() for k, p in a.items()} == {k: p.read_bytes() for k, p in b.items()}
    # 300 customers make about 600 bills: enough for the bulk path (COPY on PostgreSQL)
    results = install_demo(engine, tmp_path / "c", customers=300, seed=1, as_of=date(2026, 11, 1))
    assert all(r.ok for r in results.values()), {k: r.errors[:3] for k, r in results.items()}
    n_bills = results["bills"].applied
    assert n_bills > 500
    again = install_demo(engine, tmp_path / "c", customers=300, seed=1, as_of=date(2026, 11, 1))
    assert (again["bills"].applied, again["bills"].skipped, again["customers"].skipped) == (0, n_bills, 300)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(journal_entries)).scalar_one() == n_bills
        types = dict(conn.execute(select(customers.c.customer_type, func.count()).group_by(customers.c.customer_type)).all())
        assert types["R"] + types["N"] == 300 and types["N"] > 0
        assert conn.execute(select(func.count()).select_from(customers).where(customers.c.status == "S")).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(customers).where(customers.c.mobile.is_not(None))).scalar_one() > 50
        assert conn.execute(select(func.count()).select_from(agreements)
                            .where(agreements.c.bank_code == "01020000")).scalar_one() > 5
        assert set(conn.execute(select(bills.c.period).distinct()).scalars()) == {"202608", "202609", "202610"}
        # billing files 1.1: districts, some collection types and bill categories
        districts = dict(conn.execute(select(customers.c.district, func.count()).group_by(customers.c.district)).all())
        assert set(districts) == {None, "TIANHE", "YUEXIU", "HAIZHU", "BAIYUN", "PANYU"} and districts[None] < 60
        types = dict(conn.execute(select(customers.c.collection_type, func.count())
                                  .group_by(customers.c.collection_type)).all())
        assert set(types) == {None, "C", "B"} and types[None] > 200
        categories = dict(conn.execute(select(bills.c.category, func.count()).group_by(bills.c.category)).all())
        assert set(categories) == {"E", "V", "F"} and categories["E"] > 0.9 * n_bills
    # the required columns are those of the 1.0 demo files
    from ledger.demo_data import demo_rows
    assert [row[:6] for row in demo_rows(50, seed=7, as_of=date(2026, 11, 1), optional=True)["customers"]] == \
        demo_rows(50, seed=7, as_of=date(2026, 11, 1))["customers"]
    assert_ledger_verifies(db_url)


@pytest.mark.slow
def test_100k_bills_import_quickly_on_sqlite(sqlite_url, tmp_path):
    from ledger.demo_data import write_demo_files

    engine = new_engine(sqlite_url)
    files = write_demo_files(tmp_path, customers=50_000, seed=3, as_of=date(2026, 11, 1))
    assert import_file(engine, "customers", files["customers"], ACTOR).ok
    started = time.perf_counter()
    r = import_file(engine, "bills", files["bills"], ACTOR)
    elapsed = time.perf_counter() - started
    assert r.ok and r.applied > 99_000
    print(f"\n{r.applied} bills imported in {elapsed:.1f} s ({r.applied / elapsed:,.0f}/s)")
    assert elapsed < 45
    engine.dispose()


# --- streaming: files of many chunks -------------------------------------------------------------

def _many_customers(n: int) -> list[list[str]]:
    return [[f"S{i:04d}", f"客户{i}", "R", "A", "Y", f"138{i:08d}" if i % 3 else ""] for i in range(n)]


def _many_bills(customer_nos: list[str], per: int = 2) -> list[list[str]]:
    rows = []
    for k in range(per):
        period = f"2026{9 + k:02d}"
        for i, no in enumerate(customer_nos):
            rows.append([no, period, f"{period}{no}", str(1_000 + i), str(i % 4 * 10), f"2026-{10 + k:02d}-20"])
    return rows


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 lines: a file of a few dozen lines is read and written in many of them."""
    import ledger.imports.run

    monkeypatch.setattr(ledger.imports.run, "CHUNK_LINES", 7)


def test_a_good_multi_chunk_file_set_imports_fully(db_url, engine, tmp_path, small_chunks):
    cust = _many_customers(40)
    nos = [row[0] for row in cust]
    files = {"customers": write_csv(tmp_path / "customers.csv", "customers", cust),
             "bills": write_csv(tmp_path / "bills.csv", "bills", _many_bills(nos))}
    results = import_files(engine, files, ACTOR)
    assert all(r.ok for r in results.values()), {k: r.errors[:3] for k, r in results.items()}
    assert (results["customers"].lines, results["customers"].created) == (40, 40)
    assert (results["bills"].lines, results["bills"].created, results["bills"].skipped) == (80, 80, 0)
    assert results["bills"].notices == sum(2 for row in cust if row[5])
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(bills)).scalar_one() == 80
        assert conn.execute(select(func.count()).select_from(customer_history)).scalar_one() == 40
        entries = conn.execute(select(journal_entries.c.kind, func.count()).group_by(journal_entries.c.kind)).all()
        assert dict(entries) == {"bill": 80}
        assert conn.execute(select(func.sum(journal_lines.c.amount))).scalar_one() == 0
        # every bill's entry: Dr receivable principal+penalty, Cr revenue, Cr penalty_income (when any)
        lines = conn.execute(select(journal_lines.c.account, journal_lines.c.amount)
                             .select_from(journal_lines.join(journal_entries, ENTRY_OF_LINE))
                             .where(journal_entries.c.ref_id == f"202610{nos[3]}")).all()
        assert sorted(lines) == [("penalty_income", -30), ("receivable", 1_033), ("revenue", -1_003)]
        imported = conn.execute(select(imports.c.kind, imports.c.lines, imports.c.applied, imports.c.skipped)
                                .order_by(imports.c.id)).all()
        assert [tuple(r) for r in imported] == [("customers", 40, 40, 0), ("bills", 80, 80, 0)]
        assert conn.execute(select(imports.c.file_sha256).where(imports.c.kind == "bills")).scalar_one() == \
            hashlib.sha256(files["bills"].read_bytes()).hexdigest()
    assert_ledger_verifies(db_url)
    # again: everything known, skipped; a bills file repeating a line chunks apart skips it too
    again = import_files(engine, files, ACTOR)
    assert (again["customers"].skipped, again["bills"].skipped, again["bills"].applied) == (40, 80, 0)
    more = _many_bills(nos[:10], per=1)
    more = [["S0001", "202611", "N1", "500", "0", "2026-12-20"]] + more + [["S0001", "202611", "N1", "500", "0",
                                                                              "2026-12-20"]]
    r = import_file(engine, "bills", write_csv(tmp_path / "more.csv", "bills", more), ACTOR)
    assert r.ok and (r.lines, r.created, r.skipped) == (12, 1, 11), r.errors
    assert_ledger_verifies(db_url)


def test_prepaid_pays_the_oldest_bill_even_when_a_later_chunk_brings_it(db_url, engine, tmp_path, small_chunks):
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", "customers", CUSTOMERS), ACTOR)
    with engine.begin() as conn:
        add_banks(conn, "01020000")
    assert post(engine, [payment("01020000", "C001", 10_000, at=T0)])[0].ok   # prepaid 10,000
    filler = [["C002", "202610", f"F{i}", "100", "0", "2026-11-20"] for i in range(20)]
    rows = ([["C001", "202610", "NEW", "9000", "0", "2026-11-20"]] + filler +
            [["C001", "202609", "OLD", "8000", "0", "2026-10-20"]])               # 3 chunks later
    r = import_file(engine, "bills", write_csv(tmp_path / "b.csv", "bills", rows), ACTOR)
    assert r.ok and r.prepaid_applied == 1, r.errors
    with engine.connect() as conn:
        assert prepaid_of(conn, "C001") == 2_000
        paid = conn.execute(select(prepaid_movements.c.bill_id).where(prepaid_movements.c.kind == "applied")).scalars()
        assert list(paid) == ["OLD"]
        texts = dict(conn.execute(select(outbox.c.ref, outbox.c.text).where(outbox.c.kind == "bill_notice")).all())
        assert texts["bill:OLD"].endswith("已缴，谢谢。") and "请于" in texts["bill:NEW"]
        assert len(texts) == 2   # C002 has no mobile
    assert_ledger_verifies(db_url)


def test_a_bad_line_near_the_end_of_a_multi_chunk_file_rejects_it_whole(db_url, engine, tmp_path, small_chunks):
    cust = _many_customers(30)
    nos = [row[0] for row in cust]
    import_file(engine, "customers", write_csv(tmp_path / "customers.csv", "customers", cust), ACTOR)
    before = counts(engine)
    rows = _many_bills(nos)                                      # 60 good lines, 9 chunks
    rows[50][3] = "12.5"                                         # line 52: principal
    rows.append([nos[0], "202609", f"202609{nos[0]}", "999", "0", "2026-10-20"])   # line 62: first on line 2
    rows.append(["NOBODY", "202609", "X1", "100", "0", "2026-10-20"])             # line 63: unknown customer
    rows.append([nos[5], "202612", "X1", "100", "0", "2026-10-20"])               # line 64: X1 again, other content
    r = import_file(engine, "bills", write_csv(tmp_path / "bills.csv", "bills", rows), ACTOR)
    assert not r.ok and r.lines == 63 and r.import_id is None and r.applied == 0
    assert [(e.line, e.column) for e in r.errors] == [(52, "principal"), (62, "bill_id"), (63, "customer_no"),
                                                      (64, "bill_id")]
    assert "appears again with other content (first on line 2)" in r.errors[1].reason
    assert "first on line 63" in r.errors[3].reason
    assert counts(engine) == before                              # the 59 good lines were not applied
    # customers: a number given again chunks after its first line, and a bad line at the very end
    rows = _many_customers(30) + [["S0003", "又一个", "R", "A", "Y", ""], ["S9999", "末", "X", "A", "Y", ""]]
    r = import_file(engine, "customers", write_csv(tmp_path / "c2.csv", "customers", rows), ACTOR)
    assert [(e.line, e.column) for e in r.errors] == [(32, "customer_no"), (33, "customer_type")]
    assert "S0003 appears again (first on line 5)" in r.errors[0].reason
    assert counts(engine) == before
    # agreements: two active ones for a customer, chunks apart
    add = [[no, "01020000", f"62220000{i:08d}", "户名", "C", "0"] for i, no in enumerate(nos[:20])]
    add[1][4] = "A"
    add.append([nos[1], "01030000", "6228000000000001", "户名", "A", "0"])
    r = import_file(engine, "agreements", write_csv(tmp_path / "a.csv", "agreements", add), ACTOR)
    assert [(e.line, e.column) for e in r.errors] == [(3, "status"), (22, "status")]
    assert "01020000/6222000000000001 (line 3), 01030000/6228000000000001 (line 22)" in r.errors[0].reason
    assert counts(engine) == before
    assert_ledger_verifies(db_url)


def test_import_shows_progress_lines_off_a_terminal_and_a_summary(engine, tmp_path, small_chunks):
    import io

    from ledger.progress import Progress

    out = io.StringIO()
    files = {"customers": write_csv(tmp_path / "customers.csv", "customers", _many_customers(30))}
    results = import_files(engine, files, ACTOR, progress=Progress(out, every_s=0))
    assert results["customers"].ok
    lines = out.getvalue().splitlines()
    assert len(lines) >= 5, lines                               # a line a chunk (every_s=0), then the summary
    assert lines[0].startswith("customers.csv: checking and applying: ") and "/31 lines (" in lines[0]
    assert "lines/s" in lines[0]
    assert "31/31 lines (100%)" in lines[-2]
    assert lines[-1].startswith("customers.csv: checking and applying: 31 lines in ")
