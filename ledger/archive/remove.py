"""Removing a month's archived rows from one table: the one place rows leave the database.

``remove_month`` DELETEs the rows its clauses name. Where a table is partitioned by month
(``ledger.partitions``) and the month's partition holds only archived rows, this is where a
``DETACH PARTITION`` and ``DROP TABLE`` of the month's partition replace the DELETE; rows kept
(an open bill and what it is tied to) would first have to move out of it.
"""
from __future__ import annotations

from sqlalchemy import Table, delete


def remove_month(conn, table: Table, month: str, clauses: list) -> int:
    """Delete ``table``'s rows of the archived ``month`` (YYYY-MM) named by ``clauses`` (each an
    SQL condition; together, the rows written to the month's archive file). Returns the rows removed."""
    removed = 0
    for clause in clauses:
        removed += conn.execute(delete(table).where(clause)).rowcount
    return removed
