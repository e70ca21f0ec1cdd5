"""The attack suite's gateway: a real ``gridpay serve`` set up for an attack, its customers, its
memory watched while it is attacked, and the ledger compared with what the banks were told.

``GRIDPAY_ATTACK_SCALE`` (default 1) multiplies the size of every flood for a longer run.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

import psutil
from sqlalchemy import select

from config.settings import environment_for
from gateway_harness import ZMKS, settings_tree
from ledger.db import make_engine
from ledger.schema import banks, payments
from ledger_helpers import add_banks, new_engine, setup_customers
from process_harness import GatewayProcess

SCALE = max(1, int(os.environ.get("GRIDPAY_ATTACK_SCALE", "1")))
RSS_CEILING_MIB = 400          # the gateway and its database workers together, under any attack here
BANK_CODES = tuple(ZMKS)       # 01020000 and 01030000 (ascii), 01050000 (bcd)


# --- the gateway ------------------------------------------------------------------------

class AttackGateway(GatewayProcess):
    """``gridpay serve`` on a settings tree of the test's making (listeners, banks' limits)."""

    def __init__(self, tmp_path: Path, db_url: str, tree: dict | None = None, **bank_overrides):
        super().__init__(tmp_path, db_url, **bank_overrides)
        self.tree = tree or settings_tree(db_url, **bank_overrides)
        self.tree["gateway"]["log_file"] = str(self.log)
        inherited = {k: v for k, v in self.env.items() if not k.startswith("GRIDPAY_") or "_TEST_" in k}
        self.env = {**inherited, **environment_for(self.tree)}
        self.output: list[str] = []

    def start(self, own_group: bool = False) -> "AttackGateway":
        super().start(own_group)
        # keep reading what it prints, so a chatty process can never block on a full pipe
        threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True).start()
        return self

    def request_timeout(self, bank: str) -> float:
        return float(self.tree["banks"][bank].get("request_timeout_s", 10.0))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_size(self) -> int:
        return self.log.stat().st_size

    def tracebacks(self, since: int = 0) -> list[str]:
        """Log lines announcing an unexpected exception (from byte ``since`` of the log on): hostile
        input must be refused, not crash the handling of a request."""
        with open(self.log, "rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        return [line for line in lines if "Traceback (most recent call last)" in line]


@contextmanager
def serving(tmp_path: Path, db_url: str, tree: dict | None = None, **bank_overrides):
    """The gateway for the length of the block; it must still be alive at the end and stop cleanly."""
    gw = AttackGateway(tmp_path, db_url, tree, **bank_overrides).start()
    try:
        yield gw
        assert gw.alive(), f"the gateway died under attack: {gw.output[-20:]}"
        assert gw.terminate() == 0, gw.output[-20:]
    finally:
        if gw.alive():
            gw.kill9()


def seed(db_url: str, **groups: int) -> dict[str, list[str]]:
    """The three banks, and per prefix that many customers with a bill each: {prefix: numbers}."""
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_banks(conn, *BANK_CODES)
    numbers = {prefix: setup_customers(engine, n, prefix=prefix) for prefix, n in groups.items()}
    engine.dispose()
    return numbers


# --- memory -----------------------------------------------------------------------------

class RssWatch:
    """Samples the resident memory of a process and its children (the database workers)."""

    def __init__(self, pid: int, every_s: float = 0.1):
        self.process = psutil.Process(pid)
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                total = sum(p.memory_info().rss for p in tree if p.is_running())
            except psutil.Error:
                total = 0
            self.peak = max(self.peak, total)
            self._stop.wait(self.every_s)

    @property
    def peak_mib(self) -> float:
        return self.peak / 2 ** 20

    def __enter__(self) -> "RssWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def assert_bounded(self, what: str) -> None:
        print(f"{what}: peak RSS of the gateway's processes {self.peak_mib:.0f} MiB")
        assert 0 < self.peak_mib < RSS_CEILING_MIB, f"{what}: RSS {self.peak_mib:.0f} MiB"


# --- the ledger -------------------------------------------------------------------------

def ledger_payments(db_url: str, bank: str) -> dict[str, tuple[str, int]]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(payments.c.receipt_no, payments.c.customer_no, payments.c.amount)
                            .where(payments.c.bank_code == bank)).all()
    engine.dispose()
    return {r.receipt_no: (r.customer_no, int(r.amount)) for r in rows}


def payments_of(db_url: str, customers) -> dict[str, tuple[str, int]]:
    """The ledger's payments for these customers, by receipt."""
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(payments.c.receipt_no, payments.c.customer_no, payments.c.amount)
                            .where(payments.c.customer_no.in_(list(customers)))).all()
    engine.dispose()
    return {r.receipt_no: (r.customer_no, int(r.amount)) for r in rows}


def assert_ledger_is_what_banks_were_told(db_url: str, told: dict[str, dict[str, tuple[str, int]]]) -> None:
    """Per bank: the ledger's payments are exactly those the banks were answered 00 for."""
    engine = make_engine(db_url)
    with engine.connect() as conn:
        known = set(conn.execute(select(banks.c.bank_code)).scalars())
    engine.dispose()
    for bank in known:
        assert ledger_payments(db_url, bank) == told.get(bank, {}), f"bank {bank}: ledger and answers differ"
