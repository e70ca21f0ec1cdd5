"""Billing files 1.1 (docs/spec/BILLING-FILES.md): the optional trailing columns `district`,
`collection_type` (customers.csv) and `category` (bills.csv), the bill notice's wording by
collection type, and the notice templates a site configures (`[notices]`)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import pytest_twisted
from sqlalchemy import select

from config import ConfigError, load_settings
from config import notices
from ledger.imports import HEADERS, import_file, import_files
from ledger.schema import audit_log, bills, customer_history, customers, outbox
from ledger.synchronous_posting import post
from ledger_helpers import T0, add_banks, assert_ledger_verifies, new_engine, payment
from test_ledger_imports import ACTOR, BILLS, CUSTOMERS, small_chunks, write_csv  # noqa: F401 - a fixture

GOLDEN = Path(__file__).with_name("golden") / "billing_files_1_0.json"
CUSTOMER_HEADER = (*HEADERS["customers"], "district", "collection_type")
BILL_HEADER = (*HEADERS["bills"], "category")


@pytest.fixture
def engine(db_url):
    engine = new_engine(db_url)
    yield engine
    engine.dispose()


def customer_rows(conn):
    c = customers.c
    return [tuple(r) for r in conn.execute(select(c.customer_no, c.district, c.collection_type, c.version)
                                           .order_by(c.customer_no))]


# --- old files -------------------------------------------------------------------------------------

def _norm(value):
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.isoformat(" ")
    return None if value is None else str(value)


# the columns the tables had before 1.1: an old file must write exactly what it wrote then
_OLD_COLUMNS = {
    "customers": ["customer_no", "customer_name", "customer_type", "status", "prepay_allowed", "mobile", "district",
                  "version", "updated_at"],
    "customer_history": ["customer_no", "version", "customer_name", "customer_type", "status", "prepay_allowed",
                         "mobile", "import_id", "recorded_at"],
    "bills": ["bill_id", "customer_no", "period", "principal", "penalty", "due_date", "kind", "import_id",
              "created_at"],
    "audit_log": ["at", "actor", "action", "object_type", "object_id", "reason", "details"],
    "outbox": ["customer_no", "mobile", "kind", "ref", "text", "state", "attempts", "next_attempt_at", "created_at"],
    "imports": ["kind", "file_name", "file_sha256", "lines", "applied", "skipped", "actor", "imported_at"],
}


def test_old_six_column_files_import_as_before(db_url, engine, tmp_path):
    """tests/golden/billing_files_1_0.json is what the 1.0 importer (commit 18a16dd) wrote for
    these files, on SQLite and PostgreSQL alike (times in UTC)."""
    from gridpay.all_tables import metadata

    assert import_file(engine, "customers", write_csv(tmp_path / "c.csv", "customers", CUSTOMERS), "clerk.li",
                       now=T0).ok
    assert import_file(engine, "bills", write_csv(tmp_path / "b.csv", "bills", BILLS), "clerk.li", now=T0).ok
    changed = [row[:] for row in CUSTOMERS]
    changed[1][5], changed[0][3] = "13700000002", "S"
    assert import_file(engine, "customers", write_csv(tmp_path / "c2.csv", "customers", changed), "clerk.wang",
                       now=T0).ok
    found = {}
    with engine.connect() as conn:
        for name, columns in _OLD_COLUMNS.items():
            table = metadata.tables[name]
            rows = conn.execute(select(*(table.c[n] for n in columns)).order_by(*table.primary_key.columns))
            found[name] = [[_norm(v) for v in row] for row in rows]
        assert set(conn.execute(select(bills.c.category)).scalars()) == {"E"}
        assert set(conn.execute(select(customers.c.collection_type)).scalars()) == {None}
    assert found == json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert_ledger_verifies(db_url)


# --- the optional columns ----------------------------------------------------------------------------

def _customers_1_1(n: int) -> list[list[str]]:
    """n customers with all 8 columns: districts east/west/empty, collection types C/B/D/empty."""
    return [[f"K{i:04d}", f"客户{i}", "R", "A", "Y", f"139{i:08d}" if i % 3 else "",
             ("EAST01", "West2", "")[i % 3], ("C", "B", "D", "")[i % 4]] for i in range(n)]


def test_optional_columns_are_imported_and_stored(db_url, engine, tmp_path, small_chunks):
    rows = _customers_1_1(30)                                  # 5 chunks of 7 lines
    districts_only = [["J1", "甲", "R", "A", "Y", "", "NORTH"], ["J2", "乙", "R", "A", "Y", "", ""]]
    bill_rows = [[row[0], "202610", f"G{i}", str(1_000 + i), "0", "2026-11-20", ("E", "V", "F", "")[i % 4]]
                 for i, row in enumerate(rows)]
    files = {"customers": write_csv(tmp_path / "customers.csv", "customers", rows, header=CUSTOMER_HEADER),
             "bills": write_csv(tmp_path / "bills.csv", "bills", bill_rows, header=BILL_HEADER)}
    results = import_files(engine, files, ACTOR)
    assert all(r.ok for r in results.values()), {k: r.errors[:3] for k, r in results.items()}
    assert results["customers"].created == 30 and results["bills"].created == 30
    r = import_file(engine, "customers", write_csv(tmp_path / "c7.csv", "customers", districts_only,
                                                   header=CUSTOMER_HEADER[:7]), ACTOR)
    assert r.ok and r.created == 2, r.errors
    with engine.connect() as conn:
        stored = {no: (district, ctype) for no, district, ctype, _ in customer_rows(conn)}
        assert stored == {**{row[0]: (row[6] or None, row[7] or None) for row in rows},
                          "J1": ("NORTH", None), "J2": (None, None)}
        assert dict(conn.execute(select(bills.c.bill_id, bills.c.category)).all()) == {
            f"G{i}": ("E", "V", "F", "E")[i % 4] for i in range(30)}
        history = conn.execute(select(customer_history.c.customer_no, customer_history.c.district,
                                      customer_history.c.collection_type)
                               .where(customer_history.c.customer_no.in_(["K0001", "K0002"]))).all()
        assert sorted(map(tuple, history)) == [("K0001", "West2", "B"), ("K0002", None, "D")]
        created = json.loads(conn.execute(select(audit_log.c.details).where(
            audit_log.c.action == "customer.create", audit_log.c.object_id == "K0001")).scalar_one())
        assert (created["district"], created["collection_type"]) == ("West2", "B")
    assert_ledger_verifies(db_url)


def test_a_changed_district_or_collection_type_is_an_update_with_history(db_url, engine, tmp_path):
    first = [["C1", "甲", "R", "A", "Y", "", "EAST", "C"], ["C2", "乙", "R", "A", "Y", "", "EAST", ""]]
    import_file(engine, "customers", write_csv(tmp_path / "c1.csv", "customers", first, header=CUSTOMER_HEADER), ACTOR)
    second = [["C1", "甲", "R", "A", "Y", "", "WEST", "C"], ["C2", "乙", "R", "A", "Y", "", "EAST", "B"]]
    r = import_file(engine, "customers", write_csv(tmp_path / "c2.csv", "customers", second, header=CUSTOMER_HEADER),
                    "clerk.wang")
    assert r.ok and (r.updated, r.skipped) == (2, 0), r.errors
    # an old file (no optional columns) leaves them as they are: nothing to update
    old = [row[:6] for row in second]
    r = import_file(engine, "customers", write_csv(tmp_path / "c3.csv", "customers", old), ACTOR)
    assert r.ok and (r.updated, r.skipped) == (0, 2), r.errors
    # a file that has the column and leaves it empty clears it
    cleared = [row[:6] + [""] for row in second]
    r = import_file(engine, "customers", write_csv(tmp_path / "c4.csv", "customers", cleared,
                                                   header=CUSTOMER_HEADER[:7]), ACTOR)
    assert r.ok and r.updated == 2, r.errors
    with engine.connect() as conn:
        assert customer_rows(conn) == [("C1", None, "C", 3), ("C2", None, "B", 3)]
        h = customer_history.c
        assert [tuple(x) for x in conn.execute(select(h.version, h.district, h.collection_type)
                                               .where(h.customer_no == "C2").order_by(h.version))] == [
            (1, "EAST", None), (2, "EAST", "B"), (3, None, "B")]
        changes = [json.loads(d)["changes"] for d in conn.execute(
            select(audit_log.c.details).where(audit_log.c.action == "customer.update", audit_log.c.object_id == "C2")
            .order_by(audit_log.c.id)).scalars()]
        assert changes == [{"collection_type": [None, "B"]}, {"district": ["EAST", None]}]
    assert_ledger_verifies(db_url)


def test_a_bill_known_with_another_category_is_other_content(engine, tmp_path):
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", "customers", CUSTOMERS), ACTOR)
    rows = [BILLS[0] + ["V"]]
    assert import_file(engine, "bills", write_csv(tmp_path / "b1.csv", "bills", rows, header=BILL_HEADER), ACTOR).ok
    again = import_file(engine, "bills", write_csv(tmp_path / "b2.csv", "bills", rows, header=BILL_HEADER), ACTOR)
    assert again.ok and again.skipped == 1
    other = import_file(engine, "bills", write_csv(tmp_path / "b3.csv", "bills", [BILLS[0] + ["F"]],
                                                   header=BILL_HEADER), ACTOR)
    assert [(e.line, e.column) for e in other.errors] == [(2, "bill_id")]
    assert "category" in other.errors[0].reason
    # an old file's bill is E: the same bill id from one is other content too
    old = import_file(engine, "bills", write_csv(tmp_path / "b4.csv", "bills", [BILLS[0]]), ACTOR)
    assert not old.ok and "category" in old.errors[0].reason


def _bad_cases():
    c, b = CUSTOMER_HEADER, BILL_HEADER
    return {
        "district not ASCII": ("customers", c, [["C1", "甲", "R", "A", "Y", "", "东区", "C"]],
                               [(2, "district")], "1-20 ASCII letters or digits"),
        "district too long": ("customers", c, [["C1", "甲", "R", "A", "Y", "", "D" * 21, ""]],
                              [(2, "district")], "1-20 ASCII letters or digits"),
        "district with a space": ("customers", c[:7], [["C1", "甲", "R", "A", "Y", "", "EAST 1"]],
                                  [(2, "district")], "ASCII letters or digits"),
        "bad collection type": ("customers", c, [["C1", "甲", "R", "A", "Y", "", "EAST", "X"],
                                                 ["C2", "乙", "R", "A", "Y", "", "", "c"]],
                                [(2, "collection_type"), (3, "collection_type")], "C (cash"),
        "bad category": ("bills", b, [["C001", "202612", "B901", "100", "0", "2027-01-20", "Z"],
                                      ["C001", "202612", "B902", "100", "0", "2027-01-20", "e"]],
                         [(2, "category"), (3, "category")], "E (electricity"),
        "collection_type without district": ("customers", (*HEADERS["customers"], "collection_type"),
                                             [["C1", "甲", "R", "A", "Y", "", "C"]], [(1, "collection_type")],
                                             "bad header"),
        "unknown trailing column": ("bills", (*b, "note"),
                                    [["C001", "202612", "B903", "1", "0", "2027-01-20", "", "x"]], [(1, "note")],
                                    "bad header"),
        "a line shorter than the header": ("customers", c, [["C1", "甲", "R", "A", "Y", "", "EAST"]],
                                           [(2, "-")], "expected 8"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_optional_values_reject_the_file_with_line_column_and_reason(engine, tmp_path, case):
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", "customers", CUSTOMERS), ACTOR)
    kind, header, rows, expected, word = _bad_cases()[case]
    result = import_file(engine, kind, write_csv(tmp_path / "bad.csv", kind, rows, header=header), ACTOR)
    assert not result.ok
    assert sorted((e.line, e.column) for e in result.errors) == sorted(expected), result.errors
    assert all(word in e.reason for e in result.errors), result.errors
    assert result.import_id is None


# --- the bill notice's wording -------------------------------------------------------------------------

WORDING = [  # customer, its collection_type in the file, its agreement's account (active) or None
    ("W1", "C", "6222000000001234"),   # cash, though it has an agreement: the file says so
    ("W2", "B", None),
    ("W3", "D", "6222000000005678"),
    ("W4", "", "6222000000009012"),    # empty with an active agreement: D
    ("W5", "", None),                  # empty without one: C
    ("W6", "D", None),                 # D, but no active agreement to name: the bank wording
]


def test_bill_notice_wording_follows_collection_type(db_url, engine, tmp_path):
    cust = [[no, "王五", "R", "A", "Y", f"1380000000{i}", "", ctype] for i, (no, ctype, _) in enumerate(WORDING)]
    agr = [[no, "01020000", account, "王五", "A", "0"] for no, _, account in WORDING if account]
    bill = [[no, "202610", f"X{no}", "12345", "0", "2026-11-20"] for no, _, _ in WORDING]
    files = {"customers": write_csv(tmp_path / "customers.csv", "customers", cust, header=CUSTOMER_HEADER),
             "agreements": write_csv(tmp_path / "agreements.csv", "agreements", agr),
             "bills": write_csv(tmp_path / "bills.csv", "bills", bill)}
    results = import_files(engine, files, ACTOR)   # a set: its agreements count for its bills' notices
    assert all(r.ok for r in results.values()), {k: r.errors for k, r in results.items()}
    with engine.connect() as conn:
        texts = dict(conn.execute(select(outbox.c.customer_no, outbox.c.text)).all())
    cash = "您好，您({})2026年10月的电费为123.45元，请于2026年11月20日前缴纳，谢谢。"
    bank = "您好，您({})2026年10月的电费为123.45元，将由银行从您的账户划扣，请于2026年11月20日前在账户中存足款项，谢谢。"
    debit = ("您好，您({})2026年10月的电费为123.45元，将从您尾号{}的账户扣缴，请于2026年11月20日前在该账户中存足"
             "款项，谢谢。")
    assert texts == {"W1": cash.format("W1"), "W2": bank.format("W2"), "W3": debit.format("W3", "5678"),
                     "W4": debit.format("W4", "9012"), "W5": cash.format("W5"), "W6": bank.format("W6")}
    assert_ledger_verifies(db_url)


def test_an_agreement_cancelled_later_turns_the_default_back_to_cash(engine, tmp_path):
    """The default of an empty collection_type is taken when a notice is written, from the
    agreements then: it follows the customer's agreements instead of the day the customer came."""
    cust = [["V1", "王五", "R", "A", "Y", "13800000001", "", ""]]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", "customers", cust, header=CUSTOMER_HEADER), ACTOR)
    agreement = ["V1", "01020000", "6222000000004321", "王五", "A", "0"]
    import_file(engine, "agreements", write_csv(tmp_path / "a1.csv", "agreements", [agreement]), ACTOR)
    import_file(engine, "bills", write_csv(tmp_path / "b1.csv", "bills",
                                           [["V1", "202610", "Y1", "100", "0", "2026-11-20"]]), ACTOR)
    import_file(engine, "agreements", write_csv(tmp_path / "a2.csv", "agreements", [agreement[:4] + ["C", "0"]]),
                ACTOR)
    import_file(engine, "bills", write_csv(tmp_path / "b2.csv", "bills",
                                           [["V1", "202611", "Y2", "100", "0", "2026-12-20"]]), ACTOR)
    with engine.connect() as conn:
        texts = dict(conn.execute(select(outbox.c.ref, outbox.c.text)).all())
    assert "尾号4321" in texts["bill:Y1"] and "请于2026年12月20日前缴纳" in texts["bill:Y2"]


# --- templates a site configures ---------------------------------------------------------------------------

SITE = """
[database]
url = "{url}"

[notices]
signature = "【广州供电局】"

[notices.templates]
bill_cash = "{{customer_no}}户{{periods}}电费{{amount}}元，请于{{due_date}}前到营业厅缴纳。{{signature}}"
"""


def test_a_configured_signature_and_template_reach_the_outbox(db_url, engine, tmp_path):
    config = tmp_path / "site.toml"
    config.write_text(SITE.format(url=db_url), encoding="utf-8")
    settings = load_settings(config, environ={})
    assert settings.notices.signature == "【广州供电局】"
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", "customers", CUSTOMERS), ACTOR)
    import_file(engine, "bills", write_csv(tmp_path / "b.csv", "bills", BILLS), ACTOR)
    with engine.begin() as conn:
        add_banks(conn, "0102")
    assert post(engine, [payment("0102", "C003", 253_000, at=T0)])[0].ok
    with engine.connect() as conn:
        texts = dict(conn.execute(select(outbox.c.ref, outbox.c.text)).all())
    assert texts["bill:B002"] == "C001户2026年10月电费136.20元，请于2026年11月20日前到营业厅缴纳。【广州供电局】"
    payment_text = next(text for ref, text in texts.items() if ref.startswith("payment:"))
    assert payment_text == "您好，您(C003)2026年10月的电费为2530.00元已缴，谢谢。【广州供电局】"
    # a configuration without [notices] brings the built-in wording back
    load_settings(None, environ={})
    assert notices.payment_reversed("C1", 100).text == "您好，您(C1)缴纳的电费1.00元已被银行冲正，如有疑问请联系供电营业厅，谢谢。"


@pytest.mark.parametrize("tree, key, words", [
    ({"templates": {"bill_csh": "x"}}, "notices.templates.bill_csh", "unknown key"),
    ({"templates": {"bill_cash": "{customer_no} {balance}"}}, "notices.templates.bill_cash",
     "unknown placeholder {balance}"),
    ({"templates": {"debit_ok": "{reason}"}}, "notices.templates.debit_ok", "unknown placeholder {reason}"),
    ({"templates": {"payment": "欠费 {amount"}}, "notices.templates.payment", "not a template"),
    ({"templates": {"reversal": "{amount:>10}"}}, "notices.templates.reversal", "plain {name}"),
    ({"templates": {"reversal": ""}}, "notices.templates.reversal", "empty"),
    ({"signature": "广州\n供电局"}, "notices.signature", "control character"),
])
def test_notice_configuration_errors_name_the_key(tmp_path, tree, key, words):
    config = tmp_path / "bad.toml"
    def pairs(table):   # a TOML basic string is a JSON string
        return [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in table.items() if isinstance(v, str)]

    lines = ["[notices]", *pairs(tree)]
    for section, table in tree.items():
        if isinstance(table, dict):
            lines += [f"[notices.{section}]", *pairs(table)]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert info.value.key == key and words in info.value.problem, str(info.value)


def test_an_environment_override_sets_a_template():
    settings = load_settings(None, environ={"GRIDPAY_NOTICES__TEMPLATES__DEBIT_OK": "{customer_no} 扣款成功{signature}",
                                            "GRIDPAY_NOTICES__SIGNATURE": "[供电局]"})
    assert settings.notices.templates.debit_ok == "{customer_no} 扣款成功{signature}"
    assert notices.debit_succeeded("C1", ["202610"], 100).text == "C1 扣款成功[供电局]"


@pytest_twisted.ensureDeferred
async def test_the_gateways_posting_process_writes_the_configured_wording(db_url):
    """Postings are made in a worker process (runtime.worker_process): it is given its parent's wording."""
    from test_ledger_batch_process import posting_worker
    from test_ledger_group_commit import setup

    nos = setup(new_engine(db_url), 1)
    notices.configure({"payment": "{customer_no}缴费{amount}元。{signature}"}, signature="【广州供电局】")
    worker = posting_worker(db_url)
    await worker.start()
    try:
        outcome = await worker.submit(payment("0102", nos[0], 10_000))
    finally:
        await worker.stop()
    assert outcome.response_code == "00"
    engine = new_engine(db_url)
    with engine.connect() as conn:
        texts = conn.execute(select(outbox.c.text).where(outbox.c.kind == "payment")).scalars().all()
    engine.dispose()
    assert texts and texts[0].endswith("元。【广州供电局】") and texts[0].startswith(nos[0])


def test_the_example_configurations_notices_load(tmp_path):
    """site.example.toml signs its notices; gridpay.example.toml's commented [notices], uncommented, loads."""
    root = Path(__file__).resolve().parent.parent / "config"
    site = load_settings(root / "site.example.toml", environ={}).notices
    assert site.signature == "【广州供电局】" and "营业厅或银行网点" in site.templates.bill_cash
    lines = (root / "gridpay.example.toml").read_text(encoding="utf-8").splitlines()
    start = lines.index("# [notices]")
    body = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        body.append(line[2:])
    path = tmp_path / "notices.toml"
    path.write_text("\n".join(body) + "\n", encoding="utf-8")
    dev = load_settings(path, environ={}).notices
    assert dev.signature == "【广州供电局】" and "{account_tail}" in dev.templates.bill_debit
    assert notices.debit_succeeded("C1", ["202610"], 100).text.endswith("谢谢。【广州供电局】")


def test_0007_gives_existing_rows_valid_values_and_checks_new_ones(db_url):
    """Customers and bills made before 0007 keep every row: no collection type (the default
    wording), category E; the CHECK constraints refuse values outside the spec."""
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    from ledger import migrate
    from ledger.db import make_engine
    from ledger_helpers import add_bills, add_customer, lines_dated

    migrate.upgrade(db_url, "0006")
    engine = make_engine(db_url)
    with lines_dated(engine), engine.begin() as conn:
        add_customer(conn, "M1")
        add_bills(conn, [("M1", "202610", 10_000, 0)])
    engine.dispose()
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert customer_rows(conn) == [("M1", None, None, 1)]
        assert conn.execute(select(bills.c.category)).scalars().all() == ["E"]
    for table, values in ((customers, {"collection_type": "X"}), (bills, {"category": "Z"})):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(update(table).values(**values))
    with engine.begin() as conn:   # an insert that names no category (as 1.0 code made them) gets E
        add_bills(conn, [("M1", "202611", 1, 0, "M1X")])
        assert conn.execute(select(bills.c.category).where(bills.c.bill_id == "M1X")).scalar_one() == "E"
    engine.dispose()
    assert_ledger_verifies(db_url)


def test_a_corrections_bills_keep_the_category_of_the_bill_they_correct(db_url, engine, tmp_path):
    from ledger.corrections import correct_bill

    cust = [["C001", "张三", "R", "A", "Y", "13800000001", "", "B"]]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", "customers", cust, header=CUSTOMER_HEADER), ACTOR)
    import_file(engine, "bills", write_csv(tmp_path / "b.csv", "bills", [BILLS[1] + ["V"]], header=BILL_HEADER), ACTOR)
    result = correct_bill(engine, "B002", principal=10_000, penalty=0, actor="clerk.li", reason="meter misread", now=T0)
    with engine.connect() as conn:
        categories = dict(conn.execute(select(bills.c.bill_id, bills.c.category)).all())
        text = conn.execute(select(outbox.c.text).where(outbox.c.ref == f"bill:{result.new_bill_id}")).scalar_one()
    assert categories == {"B002": "V", result.reversing_bill_id: "V", result.new_bill_id: "V"}
    assert "将由银行从您的账户划扣" in text   # the replacement's notice in the customer's wording (B)
    assert_ledger_verifies(db_url)
