"""Removing a month's archived rows from one table: the one place rows leave the database.

``remove_month`` DELETEs the rows its clauses name. Where a table is partitioned by month
(``ledger.partitions``: PostgreSQL), a month's partition, of this month or an older one, whose
every row is named goes whole instead: ``DETACH PARTITION`` and ``DROP TABLE`` (no dead tuples,
nothing to vacuum). A partition holding any row that stays (an open bill's entries, a refund's,
an audit row of the next business month's first hours) keeps its rows but the named ones, which
are DELETEd as elsewhere; it goes whole with a later month once all its rows do.

DETACH takes the partitioned table's ACCESS EXCLUSIVE lock until the month's transaction commits:
the archive removes partitioned tables last (``ledger.archive.run.REMOVAL_ORDER``) and runs in the
maintenance window.
"""
from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import DateTime, Table, and_, delete, func, not_, or_, select, text

from ledger.partitions import PARTITION_KEYS, is_partitioned, partition_name


def remove_month(conn, table: Table, month: str, clauses: list) -> int:
    """Delete ``table``'s rows of the archived ``month`` (YYYY-MM) named by ``clauses`` (each an
    SQL condition; together, the rows written to the month's archive file). Returns the rows removed."""
    removed = sum(_drop_if_all_go(conn, table, name, clauses) for name in _monthly_partitions(conn, table, month))
    for clause in clauses:
        removed += conn.execute(delete(table).where(clause)).rowcount
    return removed


def _monthly_partitions(conn, table: Table, month: str) -> list[str]:
    """The month's partition of ``table`` and those of older months still there (not DEFAULT)."""
    if table.name not in PARTITION_KEYS or not is_partitioned(conn, table.name):
        return []
    names = conn.execute(text("select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
                              "where i.inhparent = to_regclass(:t) and pg_get_expr(c.relpartbound, c.oid) "
                              "<> 'DEFAULT'"), {"t": table.name}).scalars()
    return sorted(n for n in names if n <= partition_name(table.name, month.replace("-", "")))


def _drop_if_all_go(conn, table: Table, name: str, clauses: list) -> int:
    """Detach and drop the partition ``name`` when every row of it is named; its rows, or 0."""
    in_month = _month_range(table, name)
    if conn.execute(select(1).select_from(table).where(in_month, not_(or_(*clauses))).limit(1)).first():
        return 0
    rows = conn.execute(select(func.count()).select_from(table).where(in_month)).scalar_one()
    conn.exec_driver_sql(f"ALTER TABLE {table.name} DETACH PARTITION {name}")
    conn.exec_driver_sql(f"DROP TABLE {name}")
    return rows


def _month_range(table: Table, name: str):
    """SQL: the partition key within the month the partition ``<table>_pYYYYMM`` holds."""
    stamp = name.rsplit("_p", 1)[1]
    first = date(int(stamp[:4]), int(stamp[4:]), 1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    key = table.c[PARTITION_KEYS[table.name]]
    if isinstance(key.type, DateTime):
        first, following = (datetime(d.year, d.month, 1, tzinfo=timezone.utc) for d in (first, following))
    return and_(key >= first, key < following)
