"""Second reconciliation (docs/spec/INTERFACE.md §7.3): camt.053 (001.02 and 001.08 namespaces, and later), CSV, hostile XML,
remittances, cheques, reversals, tolerances, a 20,000-entry statement."""
from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from ledger.recon.camt import StatementError, read_statement
from ledger.recon.day_reports import day_report, day_text
from ledger.recon.finance import FinanceRules, reconcile_statement
from ledger.recon.matching import reconcile_bank_file
from ledger.recon.report_labels import ReportOptions
from ledger.recon_tables import recon_items, recon_match_members, recon_runs
from ledger.synchronous_posting import post
from ledger_helpers import T0, payment
from identity_helpers import operator_env
from test_recon_support import BANK, DAY, build_world, gridpay, write_bank_file

REMIT = 10_000 + 80_000      # the world's matched S lines: P1 and the approved debit


def ntry(version: int, amount_fen: int, cd: str = "CRDT", *, ref: str = "", cheque: str = "", reversal: bool = False,
         status: str = "BOOK", booked: str = "2026-11-24", acct_ref: str = "", party: str = "国网客户") -> str:
    sts = f"<Sts>{status}</Sts>" if version < 8 else f"<Sts><Cd>{status}</Cd></Sts>"
    dbtr = f"<Dbtr><Nm>{party}</Nm></Dbtr>" if version < 8 else f"<Dbtr><Pty><Nm>{party}</Nm></Pty></Dbtr>"
    refs = f"<Refs><EndToEndId>NOTPROVIDED</EndToEndId>{f'<ChqNb>{cheque}</ChqNb>' if cheque else ''}</Refs>"
    rmt = f"<RmtInf><Ustrd>{ref}</Ustrd></RmtInf>" if ref else ""
    return (f"<Ntry>{f'<NtryRef>{acct_ref}</NtryRef>' if acct_ref else ''}<Amt Ccy=\"CNY\">{amount_fen // 100}.{amount_fen % 100:02d}</Amt>"
            f"<CdtDbtInd>{cd}</CdtDbtInd>{'<RvslInd>true</RvslInd>' if reversal else ''}{sts}"
            f"<BookgDt><Dt>{booked}</Dt></BookgDt><ValDt><Dt>{booked}</Dt></ValDt>"
            f"{f'<AcctSvcrRef>{acct_ref}</AcctSvcrRef>' if acct_ref else ''}"
            f"<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>{'CCHQ' if cheque else 'OTHR'}</SubFmlyCd></Fmly></Domn></BkTxCd>"
            f"<NtryDtls><TxDtls>{refs}<RltdPties>{dbtr}</RltdPties>{rmt}</TxDtls></NtryDtls></Ntry>")


def camt(version: int, entries: list[str]) -> bytes:
    ns = f"urn:iso:std:iso:20022:tech:xsd:camt.053.001.{version:02d}"
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="{ns}"><BkToCstmrStmt>'
            f"<GrpHdr><MsgId>M1</MsgId><CreDtTm>2026-11-24T18:00:00</CreDtTm></GrpHdr>"
            f"<Stmt><Id>S1</Id><CreDtTm>2026-11-24T18:00:00</CreDtTm><Acct><Id><Othr><Id>4401000000001</Id></Othr></Id></Acct>"
            + "\n".join(entries) + "</Stmt></BkToCstmrStmt></Document>").encode()


def standard_entries(version: int) -> list[str]:
    return [ntry(version, REMIT, ref=f"{BANK}{DAY:%Y%m%d}", acct_ref="A1"),
            ntry(version, 120_000, cheque="CHQ123", acct_ref="A2"),
            ntry(version, 5_000, ref="MISC", acct_ref="A3"),
            ntry(version, 3_000, ref="X1", acct_ref="A4"),
            ntry(version, 3_000, "DBIT", ref="X1", reversal=True, acct_ref="A5"),
            ntry(version, 100, "DBIT", ref="FEE", acct_ref="A6"),
            ntry(version, 7_700, ref="PENDING", status="PDNG", acct_ref="A7")]


@pytest.fixture
def reconciled(db_url, tmp_path):
    """The bank world, its bank file reconciled, and a cheque payment (CHQ123, 120,000, customer C12)."""
    w = build_world(db_url)
    assert reconcile_bank_file(w.engine, write_bank_file(tmp_path, w.lines), actor="alice").status == "applied"
    out = post(w.engine, [payment(BANK, "C12", 120_000, method="03", cheque_no="CHQ123", at=T0 + timedelta(hours=1))])[0]
    assert out.ok, out
    yield w
    w.engine.dispose()


def by_kind(result):
    return {(i["kind"], i["status"], i["bank_amount"]) for i in result.items}


@pytest.mark.parametrize("version", [2, 8])
def test_camt_statement_matches_remittance_cheque_and_reversal(reconciled, tmp_path, version):
    path = tmp_path / "statement.xml"
    path.write_bytes(camt(version, standard_entries(version)))
    r = reconcile_statement(reconciled.engine, path, actor="fin", reports_dir=tmp_path / "reports")
    assert r.status == "applied", r.message
    assert r.statement.format == f"camt.053.001.{version:02d}" and r.statement.skipped == 1
    assert by_kind(r) == {("remittance", "matched", REMIT), ("cheque", "matched", 120_000), ("credit", "open", 5_000),
                          ("reversal", "matched", 3_000), ("debit", "open", 100)}
    assert sum(1 for i in r.items if i["kind"] == "reversal") == 2
    cheque = next(i for i in r.items if i["kind"] == "cheque")
    assert cheque["customer_no"] == "C12" and cheque["counterparty"] == "国网客户"
    with reconciled.engine.connect() as conn:
        members = conn.execute(select(recon_match_members)).all()
        assert {m.side for m in members} == {"file", "ledger"}
        assert any(m.run_id is not None and m.amount == REMIT for m in members)   # one credit, the whole bank run
    # the same statement again changes nothing
    again = reconcile_statement(reconciled.engine, path, actor="fin")
    assert again.status == "duplicate" and "nothing changed" in again.message


def test_csv_statement(reconciled, tmp_path):
    path = tmp_path / "statement.csv"
    path.write_text("booking_date,value_date,amount,direction,method,cheque_no,reference,counterparty\n"
                    f"2026-11-24,2026-11-24,{REMIT},C,,,{BANK}{DAY:%Y%m%d},{BANK}\n"
                    "2026-11-24,2026-11-24,120000,C,03,CHQ123,CHQ123,客户C12\n"
                    "2026-11-24,,4000,C,,,UNKNOWN,someone\n", encoding="utf-8")
    r = reconcile_statement(reconciled.engine, path, actor="fin")
    assert r.status == "applied" and r.statement.format == "csv"
    assert by_kind(r) == {("remittance", "matched", REMIT), ("cheque", "matched", 120_000), ("credit", "open", 4_000)}


def test_csv_statement_with_bad_lines_is_rejected_whole(reconciled, tmp_path):
    path = tmp_path / "statement.csv"
    path.write_text("booking_date,value_date,amount,direction,method,cheque_no,reference,counterparty\n"
                    "2026-11-24,2026-11-24,100,C,,,R1,x\n"
                    "2026-13-01,2026-11-24,12.5,X,03,,R2,x\n", encoding="utf-8")
    r = reconcile_statement(reconciled.engine, path, actor="fin")
    assert r.status == "rejected"
    assert {(line, field) for line, field, _ in r.errors} == {(3, "booking_date"), (3, "amount"), (3, "direction"), (3, "cheque_no")}
    with reconciled.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(recon_runs).where(recon_runs.c.kind == "finance")).scalar_one() == 0


def test_remittance_that_differs_stays_open_unless_within_tolerance(reconciled, tmp_path):
    path = tmp_path / "s1.xml"
    path.write_bytes(camt(8, [ntry(8, REMIT + 5, ref=f"{BANK}{DAY:%Y%m%d}")]))
    r = reconcile_statement(reconciled.engine, path, actor="fin")
    item = r.items[0]
    assert (item["kind"], item["status"], item["ledger_amount"]) == ("remittance", "open", REMIT)
    assert "difference 5" in item["detail"] and "open exception" in item["detail"]
    assert "more than remains of the run, nothing posted" in item["detail"] and item["remits_run_id"] is None
    path2 = tmp_path / "s2.xml"
    path2.write_bytes(camt(8, [ntry(8, REMIT + 5, ref=f"{BANK}{DAY:%Y%m%d}", booked="2026-11-25")]))
    r2 = reconcile_statement(reconciled.engine, path2, actor="fin", rules=FinanceRules(amount_tolerance_fen=10))
    assert r2.items[0]["status"] == "matched" and "within tolerance" in r2.items[0]["detail"]


def test_the_day_report_shows_a_partly_remitted_run_with_what_came_and_what_is_outstanding(reconciled, tmp_path):
    """A credit for less than the run expects claims it (posted, the item open): the day report says
    partly remitted, received and outstanding in yuan, in both languages; the rest arriving matches it."""
    part = tmp_path / "s1.xml"
    part.write_bytes(camt(8, [ntry(8, 60_000, ref=f"{BANK}{DAY:%Y%m%d}", acct_ref="P1")]))
    first = reconcile_statement(reconciled.engine, part, actor="fin")
    assert (first.items[0]["status"], first.items[0]["ledger_amount"]) == ("open", REMIT)
    (row,) = day_report(reconciled.engine, DAY).rows
    assert (row["expected_remittance"], row["remitted"], row["outstanding"]) == (REMIT, 60_000, REMIT - 60_000)
    assert row["remittance"]("zh") == "部分到账：已到 600.00 元，未到 300.00 元"
    assert "部分到账：已到 600.00 元，未到 300.00 元" in day_text(reconciled.engine, DAY)
    english = day_text(reconciled.engine, DAY, ReportOptions("en"))
    assert "partly remitted: 600.00 yuan received, 300.00 yuan outstanding" in english and "not matched" not in english
    rest = tmp_path / "s2.xml"
    rest.write_bytes(camt(8, [ntry(8, REMIT - 60_000, ref=f"{BANK}{DAY:%Y%m%d}", booked="2026-11-25", acct_ref="P2")]))
    assert reconcile_statement(reconciled.engine, rest, actor="fin").items[0]["status"] == "matched"
    (row,) = day_report(reconciled.engine, DAY).rows
    assert row["remittance"]("zh").startswith("已到账（匹配") and (row["remitted"], row["outstanding"]) == (REMIT, 0)


def test_other_versions_and_unsupported_ones():
    for version in (2, 4, 8, 13):
        st = read_statement("x.xml", camt(version, [ntry(version, 1234, ref="R")]))
        assert [(e.amount, e.direction, e.reference) for e in st.entries] == [(1234, "C", "R")]
    with pytest.raises(StatementError, match="001.02 and later"):
        read_statement("x.xml", camt(1, [ntry(2, 1234)]))
    bad = camt(8, [ntry(8, 1234).replace("12.34", "12.345")])
    st = read_statement("x.xml", bad)
    assert st.errors and st.errors[0].field == "Amt"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt><Stmt>
<Ntry><Amt Ccy="CNY">1.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><AddtlNtryInf>&lol9;</AddtlNtryInf></Ntry></Stmt></BkToCstmrStmt></Document>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt><Stmt>
<Ntry><Amt Ccy="CNY">1.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><AddtlNtryInf>&xxe;</AddtlNtryInf></Ntry></Stmt></BkToCstmrStmt></Document>"""

PARAMETER = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"/>"""


@pytest.mark.parametrize("hostile", [BILLION_LAUGHS, EXTERNAL, PARAMETER], ids=["billion-laughs", "external-entity", "parameter-entity"])
def test_hostile_xml_is_refused_safely(reconciled, tmp_path, hostile):
    started = time.perf_counter()
    with pytest.raises(StatementError, match="hostile XML"):
        read_statement("evil.xml", hostile)
    path = tmp_path / "evil.xml"
    path.write_bytes(hostile)
    r = reconcile_statement(reconciled.engine, path, actor="fin")
    assert r.status == "rejected" and "nothing was applied" in r.message
    assert time.perf_counter() - started < 5
    with reconciled.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(recon_runs).where(recon_runs.c.kind == "finance")).scalar_one() == 0


def test_size_limit_and_garbage():
    with pytest.raises(StatementError, match="larger than"):
        read_statement("big.xml", camt(8, [ntry(8, 100)]), max_bytes=100)
    with pytest.raises(StatementError, match="not well-formed"):
        read_statement("bad.xml", camt(8, [ntry(8, 100)])[:-20])
    with pytest.raises(StatementError, match="neither camt.053"):
        read_statement("x.txt", b"hello")


def test_a_20000_entry_statement_parses_quickly(sqlite_url, tmp_path, capsys):
    from ledger_helpers import new_engine

    entries = [ntry(8, 100 + i, ref=f"REF{i:06d}", acct_ref=f"E{i:07d}") for i in range(20_000)]
    data = camt(8, entries)
    started = time.perf_counter()
    st = read_statement("big.xml", data)
    parse_s = time.perf_counter() - started
    assert len(st.entries) == 20_000 and st.ok
    assert st.entries[-1].amount == 100 + 19_999 and st.entries[-1].reference == "REF019999"
    engine = new_engine(sqlite_url)
    path = tmp_path / "big.xml"
    path.write_bytes(data)
    started = time.perf_counter()
    r = reconcile_statement(engine, path, actor="fin")
    run_s = time.perf_counter() - started
    assert r.status == "applied" and len(r.items) == 20_000
    engine.dispose()
    with capsys.disabled():
        print(f"\n20,000-entry camt.053 ({len(data) / 1e6:.1f} MB): parsed in {parse_s:.2f} s "
              f"({20_000 / parse_s:,.0f} entries/s); reconciled and stored in {run_s:.2f} s")


def test_finance_cli(reconciled, tmp_path):
    path = tmp_path / "statement.xml"
    path.write_bytes(camt(8, standard_entries(8)))
    fin = operator_env(reconciled.engine, "fin", ["finance"])
    out = gridpay("recon", "finance", path, "--url", reconciled.url, "--reports", tmp_path / "reports", check=True,
                  env=fin)
    assert "7 entries" not in out.stdout and "6 entries, 4 matched, 2 open" in out.stdout
    assert "1 not booked" in out.stdout
    again = gridpay("recon", "finance", path, "--url", reconciled.url, "--json", env=fin)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "duplicate"
    evil = tmp_path / "evil.xml"
    evil.write_bytes(BILLION_LAUGHS)
    refused = gridpay("recon", "finance", evil, "--url", reconciled.url, "--reports", tmp_path / "reports",
                      env=fin)
    assert refused.returncode == 1 and "hostile XML" in refused.stdout
    with reconciled.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(recon_items).where(recon_items.c.direction.is_not(None))).scalar_one() == 6
