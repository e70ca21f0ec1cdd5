"""Shared set-up for the reconciliation tests (no tests here): a ledger with counter payments,
reversals and debits of one bank and business date, and writers for bank files and statements."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from ledger.debits import create_debit, debit_approved, debit_unknown, mark_debit_sent
from ledger.schema import audit_log
from ledger.synchronous_posting import post
from ledger_helpers import T0, add_banks, add_bills, add_customers, customer_row, new_engine, payment, reversal

BANK = "01020000"
OTHER = "01030000"
DAY = date(2026, 11, 23)
GRIDPAY = str(Path(sys.executable).with_name("gridpay"))


@dataclass
class World:
    engine: object
    url: str
    pays: dict = field(default_factory=dict)      # name -> CounterPayment
    debits: dict = field(default_factory=dict)    # name -> debit_id
    lines: list = field(default_factory=list)     # bank file D lines (text)


def line_of(p, status: str = "S", amount: int | None = None, channel: str = "C") -> str:
    return (f"D|{channel}|{DAY.year}{p.transmitted}|{p.stan}|{p.rrn}|{p.customer_no}|"
            f"{p.amount if amount is None else amount}|{status}|{p.terminal_id}")


def write_bank_file(directory: Path, lines: list[str], *, bank: str = BANK, day: date = DAY, count: int | None = None,
                    total: int | None = None, name: str | None = None) -> Path:
    s_sum = sum(int(ln.split("|")[6]) for ln in lines if ln.split("|")[7:8] == ["S"])
    header = f"H|{bank}|{day:%Y%m%d}|{len(lines) if count is None else count}|{s_sum if total is None else total}"
    path = Path(directory) / (name or f"{bank}_{day:%Y%m%d}.txt")
    path.write_bytes(("\n".join([header, *lines]) + "\n").encode("gbk"))
    return path


def build_world(url: str) -> World:
    """Bank BANK, business date DAY:
    - matched: P1 (S); P2 reversed on both sides (R); DA debit approved (D, S)
    - amount_differs: P3 (bank 100 fen more); status_differs: P4 (bank R, ledger S), P5 (bank S, ledger R)
    - ledger_only: P6; bank_only: a counter line for customer C7 (its bill's amount) and an R line
    - debit_unknown: DS (bank S), DR (bank R), DX (absent)
    """
    engine = new_engine(url)
    w = World(engine, url)
    custs = [f"C{i}" for i in range(1, 13)]
    with engine.begin() as conn:
        add_banks(conn, BANK, OTHER)
        add_customers(conn, [customer_row(c) for c in custs])
        add_bills(conn, [(c, "202610", 10_000 * i, 0) for i, c in enumerate(custs, start=1)])
    for i in range(1, 7):
        w.pays[f"P{i}"] = payment(BANK, f"C{i}", 10_000 * i, at=T0 + timedelta(minutes=i))
    out = post(engine, list(w.pays.values()))
    assert [o.response_code for o in out] == ["00"] * 6, out
    out = post(engine, [reversal(w.pays["P2"]), reversal(w.pays["P5"])])
    assert [o.response_code for o in out] == ["00", "00"], out
    for n, cust in (("DA", "C8"), ("DS", "C9"), ("DR", "C10"), ("DX", "C11")):
        amount = 10_000 * int(cust[1:])
        with engine.begin() as conn:
            did = create_debit(conn, bank_code=BANK, customer_no=cust, account_no="6222000000000001",
                               bills_to_pay=[(f"B{cust}202610", amount)], at=T0)
            mark_debit_sent(conn, did, transmitted=f"11231{len(w.debits)}0000", stan=f"90000{len(w.debits)}",
                            rrn=f"DRRN{len(w.debits):08d}", business_date=DAY, at=T0)
        w.debits[n] = did
    assert debit_approved(engine, w.debits["DA"], T0, "A00001").ok
    for n in ("DS", "DR", "DX"):
        assert debit_unknown(engine, w.debits[n], T0).ok
    p = w.pays
    w.lines = [line_of(p["P1"]), line_of(p["P2"], "R"), line_of(p["P3"], amount=p["P3"].amount + 100),
               line_of(p["P4"], "R"), line_of(p["P5"], "S"),
               "D|C|20261123101500|777001|BANKONLY0001|C7|70000|S|T0000009",
               "D|C|20261123101600|777002|BANKONLY0002|C12|5000|R|T0000009",
               f"D|D|20261123100000|900000|DRRN00000000|C8|80000|S|A00001",
               f"D|D|20261123100000|900001|DRRN00000001|C9|90000|S|A00002",
               f"D|D|20261123100000|900002|DRRN00000002|C10|100000|R|A00003"]
    return w


def audit_rows(engine, action: str):
    with engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.id)).all()


def gridpay(*args, cwd=None, check=False, env=None) -> subprocess.CompletedProcess:
    env = dict(os.environ) if env is None else env
    proc = subprocess.run([GRIDPAY, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"gridpay {' '.join(map(str, args))} failed {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def world(db_url):
    """``build_world`` on SQLite and on PostgreSQL (``db_url``), its engine closed after."""
    w = build_world(db_url)
    yield w
    w.engine.dispose()
