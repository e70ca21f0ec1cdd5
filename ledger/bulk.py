"""Set-at-a-time statements that stay fast on every database (Core only).

- ``insert_rows``: many rows, one statement. PostgreSQL gets ``INSERT ... SELECT * FROM
  unnest(array, array, ...)`` with one array parameter per column: the SQL text is the same for
  every batch, so psycopg prepares it once, and the server parses one statement instead of one
  per row (psycopg's executemany sends a statement per row). The arrays go in binary.
  SQLite: the Core insert compiled once, the columns' bind processors applied here, and all
  rows in one multi-row ``VALUES`` statement with positional parameters (SQLAlchemy's generic
  per-row parameter handling was a third of the batch's time; see SQLITE_MAX_PARAMS for why
  not executemany). Others (Oracle): a plain Core ``executemany``.
- ``in_list``: ``col IN (...)`` as ``col = ANY(:array)`` on PostgreSQL (one SQL text whatever the
  number of values, so it is prepared too) and an expanding IN elsewhere.
"""
from __future__ import annotations

import functools

from sqlalchemy import Table, any_, bindparam, insert
from sqlalchemy.dialects.postgresql import ARRAY


def in_list(dialect_name: str, col, name: str):
    if dialect_name == "postgresql":
        return col == any_(bindparam(name, type_=ARRAY(col.type)))
    return col.in_(bindparam(name, expanding=True))


@functools.lru_cache(maxsize=256)
def _unnest_sql(table: Table, columns: tuple[str, ...], dialect) -> str:
    # %(name)b: psycopg sends the array in binary, several times cheaper than its text form
    casts = ", ".join(f"CAST(%({c})b AS {table.c[c].type.compile(dialect=dialect)}[])" for c in columns)
    cols = ", ".join(dialect.identifier_preparer.quote(c) for c in columns)
    return f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({cols}) SELECT * FROM unnest({casts})"


def insert_rows(conn, table: Table, rows: list[dict]) -> None:
    """Insert rows (all with the same keys) in one statement."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        columns = tuple(rows[0])
        sql = _unnest_sql(table, columns, conn.dialect)
        conn.exec_driver_sql(sql, {c: [r[c] for r in rows] for c in columns})
        return
    if conn.dialect.name == "sqlite":
        columns = tuple(rows[0])
        head, group, procs = _sqlite_insert(table, columns, conn.dialect)
        per_statement = max(1, SQLITE_MAX_PARAMS // len(procs))
        for start in range(0, len(rows), per_statement):
            chunk = rows[start:start + per_statement]
            values = [p(r[c]) if p else r[c] for r in chunk for c, p in procs]
            conn.exec_driver_sql(_sqlite_values(head, group, len(chunk)), tuple(values))
        return
    conn.execute(insert(table), rows)


# SQLite: one multi-row VALUES statement per table (in chunks of at most this many parameters,
# SQLite's limit before 3.32). The driver lets the interpreter lock go around every step of a
# statement, and executemany steps once per row: with the reactor thread busy, each step meant
# waiting for the lock again. One statement is one step.
SQLITE_MAX_PARAMS = 999


@functools.lru_cache(maxsize=256)
def _sqlite_insert(table: Table, columns: tuple[str, ...], dialect):
    compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
    order = compiled.positiontup
    assert sorted(order) == sorted(columns), (order, columns)
    procs = tuple((c, table.c[c].type._cached_bind_processor(dialect)) for c in order)
    head, group = compiled.string.split(" VALUES ")
    assert group == "(" + ", ".join("?" * len(order)) + ")", group
    return head + " VALUES ", group, procs


@functools.lru_cache(maxsize=1024)
def _sqlite_values(head: str, group: str, rows: int) -> str:
    return head + ", ".join([group] * rows)
