"""Reading what archived months carried forward (``archive_openings``): verify and the reports add
these to what remains."""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select

from ledger.archive.tables import archive_openings

O = archive_openings.c


def openings(conn, figure: str) -> dict[str, int]:
    """key -> the sum over every archived month of ``figure`` (``account``, ``bank_paid``, ...)."""
    out: dict[str, int] = defaultdict(int)
    for key, total in conn.execute(select(O.key, func.sum(O.amount)).where(O.figure == figure).group_by(O.key)):
        out[key] = int(total)
    return out


def opening(conn, figure: str) -> int:
    """A figure without key (``billed``, ``allocated``, ``feed_rows``), summed over archived months."""
    return openings(conn, figure).get("", 0)
