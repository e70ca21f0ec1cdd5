"""Helpers for the debit engine tests (no tests here): settings, seeding, bank truth vs ledger."""
from __future__ import annotations

import os
from datetime import datetime, timezone

from sqlalchemy import func, insert, select

from config.settings import Settings
from gateway.sim.bank import Account
from ledger_helpers import T0, add_banks, new_engine, setup_customers
from ledger.schema import agreements, customers, debits, payments, reversals

BANK = "01020000"
FILE_BANK = "01030000"
ZMK_HEX = "0123456789ABCDEFFEDCBA9876543210"
ZMK = bytes.fromhex(ZMK_HEX)
ZMK_ENV = "GRIDPAY_TEST_DEBIT_ZMK"


def settings_tree(db_url: str, port: int = 0, drop_dir: str = "", **debit) -> dict:
    os.environ[ZMK_ENV] = ZMK_HEX
    return {
        "database": {"url": db_url},
        "drop_dir": drop_dir or "var/drop",
        "engines": {"metrics_port_base": 0}, "scheduler": {"metrics_port": 0}, "watch": {"metrics_port": 0},
        "banks": {
            BANK: {"name": "debit bank", "dialect": "ascii", "zmk_env": ZMK_ENV, "channels": ["counter", "debit"],
                   "debit": {"mode": "online", "host": "127.0.0.1", "port": port, "timeout_s": 5.0,
                             "reversal_interval_s": 10.0, "reversal_max": 2, "max_in_flight": 256,
                             "max_per_second": 20000.0, **debit}},
            FILE_BANK: {"name": "file bank", "dialect": "ascii", "zmk_env": ZMK_ENV, "channels": ["debit"],
                        "debit": {"mode": "file", "result_deadline_h": 24}},
        },
    }


def make_settings(db_url: str, port: int = 0, drop_dir: str = "", **debit) -> Settings:
    return Settings.model_validate(settings_tree(db_url, port, drop_dir, **debit))


def seed(url: str, n: int, *, bank: str = BANK, limit: int = 0, bills_each: int = 1, principal: int = 10_000,
         penalty: int = 50, prefix: str = "C", with_banks: bool = True):
    """n customers with bills and an active agreement with ``bank`` (account A<customer>).
    Returns (engine, customer numbers)."""
    engine = new_engine(url)
    with engine.begin() as conn:
        if with_banks:
            add_banks(conn, BANK, FILE_BANK)
    numbers = setup_customers(engine, n, bills_each=bills_each, prefix=prefix, principal=principal, penalty=penalty)
    add_agreements(engine, numbers, bank=bank, limit=limit)
    return engine, numbers


def add_agreements(engine, numbers, *, bank: str = BANK, limit: int = 0, at: datetime = T0) -> None:
    with engine.begin() as conn:
        for start in range(0, len(numbers), 5000):
            conn.execute(insert(agreements), [{"customer_no": c, "bank_code": bank, "account_no": f"A{c}",
                                               "account_name": f"acct {c}", "status": "A", "debit_limit": limit,
                                               "version": 1, "updated_at": at} for c in numbers[start:start + 5000]])


def accounts_for(numbers, balance: int = 10_000_000, **special) -> dict[str, Account]:
    out = {f"A{c}": Account(balance) for c in numbers}
    out.update(special)
    return out


def set_district(engine, numbers, district: str) -> None:
    from sqlalchemy import update
    with engine.begin() as conn:
        conn.execute(update(customers).where(customers.c.customer_no.in_(numbers)).values(district=district))


def states(engine, batch_id: int | None = None) -> dict[str, int]:
    q = select(debits.c.state, func.count()).group_by(debits.c.state)
    if batch_id is not None:
        q = q.where(debits.c.batch_id == batch_id)
    with engine.connect() as conn:
        return dict(conn.execute(q).all())


def bank_vs_ledger(engine, host) -> dict:
    """Compare the bank's truth with the ledger: every debit the bank holds (applied and not
    reversed) must be an approved, unreversed debit payment in the ledger and vice versa; no
    identity applied twice."""
    with engine.connect() as conn:
        rows = conn.execute(select(debits.c.debit_id, debits.c.transmitted, debits.c.stan, debits.c.state,
                                   debits.c.amount, debits.c.rrn)).all()
        paid = {r.debit_id for r in conn.execute(select(payments.c.debit_id).where(payments.c.debit_id.is_not(None)))}
        reversed_pay = {r.debit_id for r in conn.execute(
            select(payments.c.debit_id).join(reversals, reversals.c.payment_id == payments.c.payment_id)
            .where(payments.c.debit_id.is_not(None)))}
    by_identity = {(r.transmitted, r.stan): r for r in rows if r.transmitted}
    bank_held = {}
    for key, rec in host.applied.items():
        d = by_identity.get((key[1], key[2]))
        assert d is not None, f"the bank applied {key} which the ledger never sent"
        if not rec.reversed:
            bank_held[d.debit_id] = rec.amount
    ledger_held = {i for i in paid if i not in reversed_pay}
    rrns = [rec.rrn for rec in host.applied.values()]
    return {"bank_held": set(bank_held), "ledger_held": ledger_held, "rrn_dupes": len(rrns) - len(set(rrns)),
            "states": dict(sorted(__import__("collections").Counter(r.state for r in rows).items()))}


class FakeClock:
    """A twisted task.Clock that reads ``start`` at first: the engine's timer and, through it, its
    clock's now() (``config.clock.Clock(timer=fc.clock)``)."""

    def __init__(self, start: datetime = T0):
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.clock.advance(start.timestamp())

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


UTC = timezone.utc
