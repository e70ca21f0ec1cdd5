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
  number of values, so it is prepared too) and an expanding IN elsewhere; ``key_filters``: the
  same for any number of keys, a chunk of them per WHERE clause.
- ``select_many`` and ``Writes``: a transaction's independent statements together. On PostgreSQL
  psycopg's pipeline mode sends them at once and reads their answers at once - one round trip
  instead of one each. A group commit was ~21 round trips, and under load each meant waking the
  server and then the client on two cores shared with everything else: ~10 ms of a small batch.
  Elsewhere the statements simply run one after another.
- ``RowWriter``: rows by the ten thousand (imports): COPY on PostgreSQL, multi-row ``VALUES`` on
  SQLite sized to its parameter limit.
"""
from __future__ import annotations

import functools
import re
from contextlib import contextmanager, nullcontext
from itertools import chain
from typing import Iterable, Iterator, Sequence

from sqlalchemy import String, Table, any_, bindparam, insert, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError


def unsized(kind):
    """A column's type for its values on their way in, a string's without its length: PostgreSQL
    casts a longer string to VARCHAR(n) by cutting it short without a word, so a key one character
    too long would match the key it starts with, and a value would be stored cut. Uncut, a key
    matches only itself and the column's own assignment refuses a value too long."""
    return String() if isinstance(kind, String) and kind.length is not None else kind


def in_list(dialect_name: str, col, name: str):
    if dialect_name == "postgresql":
        return col == any_(bindparam(name, type_=ARRAY(unsized(col.type))))
    return col.in_(bindparam(name, expanding=True))


CHUNK = 900            # keys per IN (...) query


def chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def key_filters(conn, column, keys: Iterable[str]) -> Iterator:
    """WHERE clauses matching ``column`` against the keys, a chunk at a time: ``IN (...)`` of at
    most CHUNK keys, or on PostgreSQL ``= ANY(array)`` of up to 20,000 (one parameter, cheap to parse)."""
    ordered = sorted(set(keys))
    if conn.dialect.name == "postgresql":
        for chunk in chunks(ordered, 20_000):
            yield column == any_(bindparam(None, list(chunk), type_=ARRAY(unsized(column.type))))
    else:
        for chunk in chunks(ordered):
            yield column.in_(chunk)


def cast_type(column, dialect) -> str:
    """The type to CAST a value going into ``column`` to (``unsized``): the column's own assignment
    then refuses a string too long ("value too long"), as a plain INSERT or UPDATE would."""
    return unsized(column.type).compile(dialect=dialect)


@functools.lru_cache(maxsize=512)
def _unnest_sql(table: Table, columns: tuple[str, ...], same: frozenset, dialect) -> str:
    """INSERT ... SELECT FROM unnest(one array per column): ``%(name)b`` has psycopg send each array
    in binary, several times cheaper than its text form. A column whose value is the same in every
    row (a batch's timestamp, bank, channel, the NULLs) goes once, as a scalar, not as an array."""
    def cast(c: str, array: str = "") -> str:
        return f"CAST(%({c})b AS {cast_type(table.c[c], dialect)}{array})"

    q = dialect.identifier_preparer.quote
    varying = [c for c in columns if c not in same]
    source = (f"unnest({', '.join(cast(c, '[]') for c in varying)}) AS v({', '.join(q(c) for c in varying)})"
              if varying else "generate_series(1, %(n_rows)s)")
    values = ", ".join(f"v.{q(c)}" if c not in same else cast(c) for c in columns)
    return (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({', '.join(q(c) for c in columns)}) "
            f"SELECT {values} FROM {source}")


def _pg_insert(conn, table: Table, rows: list[dict]) -> tuple[str, dict]:
    columns, params, same = _pg_columns(rows)
    return _unnest_sql(table, columns, frozenset(same), conn.dialect), params


def _pg_columns(rows: list[dict]) -> tuple[tuple[str, ...], dict, set]:
    """The rows' columns, their parameters (an array each, or one scalar for a column that holds
    one value in every row - every column of a single row: psycopg's cost of an array is mostly
    per array, not per element) and the names of the scalar ones."""
    columns = tuple(rows[0])
    params, same = {}, set()
    for c in columns:
        values = [r[c] for r in rows]
        first = values[0]
        if all(v == first and type(v) is type(first) for v in values):
            params[c] = first
            same.add(c)
        else:
            params[c] = values
    if len(same) == len(columns):
        params["n_rows"] = len(rows)
    return columns, params, same


@functools.lru_cache(maxsize=16)
def _numbered_sql(table: Table, seq: str, counter: Table, last: str, columns: tuple[str, ...], same: frozenset,
                  dialect) -> str:
    """One statement: the counter row moved on by the number of rows (its lock is held to the
    commit) and the rows inserted numbered from it, in the arrays' order (WITH ORDINALITY)."""
    def cast(c: str, array: str = "") -> str:
        return f"CAST(%({c})b AS {cast_type(table.c[c], dialect)}{array})"

    q = dialect.identifier_preparer.quote
    varying = [c for c in columns if c not in same]
    source = (f"unnest({', '.join(cast(c, '[]') for c in varying)}) WITH ORDINALITY "
              f"AS v({', '.join(q(c) for c in varying)}, n_ord)" if varying
              else "generate_series(1, %(n_numbered)s) AS v(n_ord)")
    values = ", ".join(f"v.{q(c)}" if c not in same else cast(c) for c in columns)
    name = dialect.identifier_preparer.format_table
    return (f"WITH c AS (UPDATE {name(counter)} SET {q(last)} = {q(last)} + %(n_numbered)s RETURNING {q(last)}) "
            f"INSERT INTO {name(table)} ({q(seq)}, {', '.join(q(c) for c in columns)}) "
            f"SELECT c.{q(last)} - %(n_numbered)s + v.n_ord, {values} FROM c, {source}")


def numbered_insert(conn, table: Table, rows: list[dict], seq: str, counter: Table, last: str) -> None:
    """Insert rows numbered on from ``counter``'s one row (column ``last``: the last number given),
    which is moved on by len(rows) in the same statement (PostgreSQL) or the one before (others):
    the rows get last+1 ... last+n in order. A caller sends this last before its COMMIT: the
    counter row's lock is held from here to the commit, so numbers commit in their order."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(*_pg_numbered(conn, table, rows, seq, counter, last))
        return
    taken = conn.execute(update(counter).values({last: counter.c[last] + len(rows)})
                         .returning(counter.c[last])).scalar_one()
    insert_rows(conn, table, [{seq: taken - len(rows) + i, **row} for i, row in enumerate(rows, start=1)])


def _pg_numbered(conn, table: Table, rows: list[dict], seq: str, counter: Table, last: str) -> tuple[str, dict]:
    columns, params, same = _pg_columns(rows)
    params.pop("n_rows", None)
    params["n_numbered"] = len(rows)
    return _numbered_sql(table, seq, counter, last, columns, frozenset(same), conn.dialect), params


def insert_rows(conn, table: Table, rows: list[dict]) -> None:
    """Insert rows (all with the same keys) in one statement."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(*_pg_insert(conn, table, rows))
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


# --- several statements in one round trip ------------------------------------------------------

def select_many(conn, queries: list) -> list[list]:
    """The rows of several SELECTs ``[(statement, params)]``, in order. Statements later in the list
    run after the earlier ones (a lock taken by one holds for those behind it). On PostgreSQL the
    statements go to psycopg compiled once each (``_pg_compiled``: they must be built once and
    kept), past SQLAlchemy's per-call execution (cache key, parameters, result rows): through it a
    counter inquiry's one statement cost the reader about twice the driver's own time."""
    if conn.dialect.name != "postgresql":
        return [conn.execute(stmt, params).all() for stmt, params in queries]
    from psycopg.rows import namedtuple_row

    raw = conn.connection.driver_connection
    sent = []
    with _as_sqlalchemy_error(conn):
        with raw.pipeline() if len(queries) > 1 else nullcontext():
            for stmt, params in queries:
                compiled = _pg_compiled(stmt, conn.dialect)
                cur = raw.cursor(row_factory=namedtuple_row)
                sent.append((cur, compiled.string, _pg_params(compiled, params)))
                _before(conn, *sent[-1])
                cur.execute(sent[-1][1], sent[-1][2])
        _after(conn, sent)
        return [cur.fetchall() for cur, _, _ in sent]


def pg_fetch_one(conn, sql: str, params: dict) -> tuple:
    """PostgreSQL: the one row of a driver-level statement (``%(name)s`` parameters), sent to
    psycopg past SQLAlchemy's execution context (a tenth of a millisecond a call, on every group
    commit), with SQLAlchemy's cursor events and errors all the same."""
    raw = conn.connection.driver_connection
    with _as_sqlalchemy_error(conn):
        cursor = raw.cursor()
        _before(conn, cursor, sql, params)
        row = cursor.execute(sql, params).fetchone()
        _after(conn, [(cursor, sql, params)])
    return row


class Writes:
    """The row writes of one transaction, sent together by ``flush()`` in the order given, but the
    numbered ones (``numbered``) last."""

    def __init__(self, conn):
        self.conn = conn
        self.items: list[tuple] = []

    def insert(self, table: Table, rows: list[dict]) -> None:
        if rows:
            self.items.append(("insert", table, rows, None))

    def numbered(self, table: Table, rows: list[dict], seq: str, counter: Table, last: str) -> None:
        """``numbered_insert``: give it last, so the counter's lock is held the shortest time."""
        if rows:
            self.items.append(("numbered", table, rows, (seq, counter, last)))

    def update(self, table: Table, key: str, rows: list[dict], *, in_key_order: bool = False) -> None:
        """rows: the key column and the columns to set, the same keys in each row. ``in_key_order``
        (PostgreSQL): the rows are locked in key order first, so that two transactions updating
        the same rows wait for each other rather than deadlock; the update's own join takes them in
        whatever order its plan reads them."""
        if rows:
            if in_key_order and self.conn.dialect.name == "postgresql":
                self.items.append(("lock", table, rows, key))
            self.items.append(("update", table, rows, key))

    def flush(self, *, commit: bool = False) -> None:
        """Send the writes. With ``commit``, the transaction ends here: on PostgreSQL its COMMIT goes
        in the same round trip (elsewhere the caller's commit sends it), and nothing may follow in
        it - the caller's own commit then finds it done. The numbered rows' counter is then locked
        only while the server writes them and commits, not while this process reads the answers
        and sends the COMMIT: a niced process, or a thread waiting for the interpreter lock, held
        every other posting process that long. A failure once the COMMIT was sent has
        ``commit_sent`` set: if the connection was lost, it may have landed."""
        items, self.items = self.items, []
        # numbered rows last, whatever the order given: their counter's lock is held from that
        # statement to the COMMIT
        items = [i for i in items if i[0] != "numbered"] + [i for i in items if i[0] == "numbered"]
        if self.conn.dialect.name != "postgresql":
            for kind, table, rows, key in items:
                if kind == "insert":
                    insert_rows(self.conn, table, rows)
                elif kind == "numbered":
                    numbered_insert(self.conn, table, rows, *key)
                elif kind == "update":
                    self.conn.execute(_update_by_key(table, key, tuple(rows[0])),
                                      [{f"b_{c}": v for c, v in row.items()} for row in rows])
            return
        raw = self.conn.connection.driver_connection
        statements = [_pg_insert(self.conn, table, rows) if kind == "insert" else
                      _pg_numbered(self.conn, table, rows, *key) if kind == "numbered" else
                      _pg_lock(self.conn, table, key, rows) if kind == "lock" else
                      _pg_update(self.conn, table, key, rows) for kind, table, rows, key in items]
        if not statements:
            return
        # The foreign-key checks these writes fire (customers, banks, bills, debits) are one cached
        # lookup each; under the session's force_custom_plan (ledger.db) every one was planned
        # again, row after row. Generic plans for the writes, custom ones again after them (but
        # for a commit, which ends the setting with the transaction): a debit's writer batch went
        # from ~310 to ~260 us a debit.
        statements = [(GENERIC_PLANS, None), *statements, *([] if commit else [(CUSTOM_PLANS, None)])]
        sent = []
        with _as_sqlalchemy_error(self.conn) as errors:
            with raw.pipeline():
                for sql, params in statements:
                    sent.append((raw.cursor(), sql, params))
                    _before(self.conn, *sent[-1])
                    sent[-1][0].execute(sql, params)
                if commit:   # through the dialect, as SQLAlchemy's own commit goes (and tests' faults)
                    errors.commit_sent = True
                    self.conn.dialect.do_commit(self.conn.connection)
            _after(self.conn, sent)


def _before(conn, cursor, sql: str, params: dict) -> None:
    """SQLAlchemy's cursor events for statements sent past it: listeners (timing, fault injection
    in tests) see every statement, pipelined or not."""
    for listener in conn.dispatch.before_cursor_execute:
        listener(conn, cursor, sql, params, None, False)


def _after(conn, sent: list) -> None:
    for cursor, sql, params in sent:
        for listener in conn.dispatch.after_cursor_execute:
            listener(conn, cursor, sql, params, None, False)


GENERIC_PLANS = "SET LOCAL plan_cache_mode = force_generic_plan"
CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"


@contextmanager
def generic_plans(conn):
    """PostgreSQL: generic plans for the statements inside (elsewhere nothing). Our sessions plan
    every statement afresh (``ledger.db``), and so the foreign-key check each written row fires was
    planned again, row after row: an import's chunk took 2.4 times its COPY's time, a batch build's
    insert of 116,000 debits 11 s. Their generic plans are index lookups whatever a table's size.
    Custom plans again after (the reads that follow want them); not after a failure, which has
    ended the transaction's use."""
    postgresql = conn.dialect.name == "postgresql"
    if postgresql:
        conn.exec_driver_sql(GENERIC_PLANS)
    yield
    if postgresql:
        conn.exec_driver_sql(CUSTOM_PLANS)


@functools.lru_cache(maxsize=64)
def _update_by_key(table: Table, key: str, columns: tuple[str, ...]):
    return (update(table).where(table.c[key] == bindparam(f"b_{key}"))
            .values({c: bindparam(f"b_{c}") for c in columns if c != key}))


@functools.lru_cache(maxsize=64)
def _pg_update_sql(table: Table, key: str, columns: tuple[str, ...], dialect) -> str:
    q = dialect.identifier_preparer.quote
    casts = ", ".join(f"CAST(%({c})b AS {cast_type(table.c[c], dialect)}[])" for c in columns)
    sets = ", ".join(f"{q(c)} = v.{q(c)}" for c in columns if c != key)
    name = dialect.identifier_preparer.format_table(table)
    return (f"UPDATE {name} SET {sets} FROM unnest({casts}) AS v({', '.join(q(c) for c in columns)}) "
            f"WHERE {name}.{q(key)} = v.{q(key)}")


def _pg_update(conn, table: Table, key: str, rows: list[dict]) -> tuple[str, dict]:
    rows = list({row[key]: row for row in rows}.values())  # one row per key, the last: as if run in turn
    columns = tuple(rows[0])
    return _pg_update_sql(table, key, columns, conn.dialect), {c: [r[c] for r in rows] for c in columns}


def _pg_lock(conn, table: Table, key: str, rows: list[dict]) -> tuple[str, dict]:
    """The rows' locks taken in key order: the locking step sits above the sort in the plan. FOR NO
    KEY UPDATE, the lock the UPDATE that follows takes itself (it changes no key): FOR UPDATE would
    also wait for every foreign-key check on the rows by other transactions."""
    q, name = conn.dialect.identifier_preparer.quote, conn.dialect.identifier_preparer.format_table(table)
    kind = cast_type(table.c[key], conn.dialect)
    return (f"SELECT 1 FROM {name} WHERE {q(key)} = ANY(CAST(%(keys)s AS {kind}[])) ORDER BY {q(key)} FOR NO KEY UPDATE",
            {"keys": sorted({row[key] for row in rows})})


@functools.lru_cache(maxsize=256)
def _pg_compiled(stmt, dialect):
    return stmt.compile(dialect=dialect)  # statements given here are built once and kept


def _pg_params(compiled, params: dict) -> dict:
    values = compiled.construct_params(params)
    for name, process in compiled._bind_processors.items():
        if values.get(name) is not None:
            values[name] = process(values[name])
    return values


class _as_sqlalchemy_error:
    """psycopg's own errors from a pipeline, raised as SQLAlchemy's (IntegrityError, OperationalError,
    with the connection invalidated when it is gone), as every caller's retry rules expect."""

    def __init__(self, conn):
        self.conn, self.commit_sent = conn, False

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        import psycopg

        if exc is None or not isinstance(exc, psycopg.Error):
            return False
        dialect = self.conn.dialect
        gone = dialect.is_disconnect(exc, self.conn.connection.dbapi_connection, None)
        if gone:
            self.conn.invalidate(exc)
        error = DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True,
                                    connection_invalidated=gone, dialect=dialect)
        error.commit_sent = self.commit_sent
        raise error from exc


# --- rows at bulk speed (imports) -------------------------------------------------------------

class RowWriter:
    """Rows (tuples in ``columns`` order, values as the database takes them) into a table:
    COPY on PostgreSQL; on SQLite multi-row ``INSERT ... VALUES`` statements of as many rows as
    its parameter limit allows (half the cost of an executemany's step per row); else Core."""

    def __init__(self, conn, table: Table, columns: Sequence[str]):
        self.conn, self.table, self.columns = conn, table, tuple(columns)
        self.dialect = conn.dialect.name
        prep = conn.dialect.identifier_preparer
        names = ", ".join(prep.quote(table.c[c].name) for c in self.columns)
        if self.dialect == "postgresql":
            # binary: the server parses no timestamps, dates or numbers (a fifth of a COPY's time)
            self.sql = f"COPY {prep.format_table(table)} ({names}) FROM STDIN (FORMAT BINARY)"
            self.types = [re.sub(r"\(.*\)", "", table.c[c].type.compile(dialect=conn.dialect)).lower()
                          for c in self.columns]
        elif self.dialect == "sqlite":
            self.head = f"INSERT INTO {prep.format_table(table)} ({names}) VALUES "
            self.group = f"({', '.join('?' * len(self.columns))})"
            self.per_statement = max(1, sqlite_max_params() // len(self.columns))
            self.full = self.head + ", ".join([self.group] * self.per_statement)

    def write(self, rows: Sequence[tuple]) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            with self.conn.connection.driver_connection.cursor() as cur:
                with cur.copy(self.sql) as copy:
                    copy.set_types(self.types)
                    write_row = copy.write_row
                    for row in rows:
                        write_row(row)
        elif self.dialect == "sqlite":
            per, execute = self.per_statement, self.conn.exec_driver_sql
            for start in range(0, len(rows), per):
                part = rows[start:start + per]
                sql = self.full if len(part) == per else self.head + ", ".join([self.group] * len(part))
                execute(sql, tuple(chain.from_iterable(part)))
        else:   # values as the database takes them are Python's here (Oracle)
            self.conn.execute(insert(self.table), [dict(zip(self.columns, row)) for row in rows])


# SQLite: parameters per statement. Its limit is 32,766 (999 before 3.32), but the sqlite3 module
# keeps its statements prepared, and one of 30,000 parameters holds several MiB: 100 MiB more peak
# RSS for a bills file, for no speed.
SQLITE_PARAMS = 4_000


@functools.lru_cache(maxsize=1)
def sqlite_max_params() -> int:
    import sqlite3

    return SQLITE_PARAMS if sqlite3.sqlite_version_info >= (3, 32) else 999
