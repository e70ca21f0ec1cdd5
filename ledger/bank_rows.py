"""Bank rows: the configuration names the banks; the ledger needs a row for each it records."""
from __future__ import annotations

from typing import Mapping

from sqlalchemy import insert, select

from config.clock import SYSTEM_CLOCK, Clock
from ledger.schema import banks


def ensure_banks(conn, names: Mapping[str, str], clock: Clock = SYSTEM_CLOCK) -> list[str]:
    """Add the banks not yet known (code -> name); returns the codes added. Existing rows are kept."""
    known = set(conn.execute(select(banks.c.bank_code).where(banks.c.bank_code.in_(list(names)))).scalars())
    missing = [code for code in names if code not in known]
    if missing:
        now = clock.now()
        conn.execute(insert(banks), [{"bank_code": c, "name": names[c], "created_at": now} for c in missing])
    return missing
