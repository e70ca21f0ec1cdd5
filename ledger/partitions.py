"""Monthly partitions of the ledger's growing history tables (PostgreSQL only; docs/runbook.md "Partitions").

Partitioned by RANGE of a date column, one partition ``<table>_pYYYYMM`` per month and a DEFAULT
partition ``<table>_default`` that takes a row of a month not prepared yet (nothing is ever refused):

- ``journal_entries`` and ``journal_lines`` by ``business_date`` (a line's is its entry's: 0023);
- ``audit_log`` and ``debit_attempts`` by ``at`` (UTC months).

Their primary key is ``(id, <key>)`` on PostgreSQL (it must hold the partition key); the id stays
unique on its own as every id comes from the table's one identity sequence, and nothing refers to
these tables by foreign key (a line names its entry without one: migration 0005). Payments, debits
and outbox are not partitioned: docs say why. SQLite and Oracle keep the plain tables; every
function here answers "not partitioned" there, so callers (the archive) fall back to DELETE.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Table, text
from sqlalchemy.schema import AddConstraint, CreateIndex

# table -> its partition key
PARTITION_KEYS: dict[str, str] = {"journal_entries": "business_date", "journal_lines": "business_date",
                                  "audit_log": "at", "debit_attempts": "at"}

# keys whose column is a timestamp: a month's bounds are UTC midnights
_TIMESTAMP_KEYS = {"at"}


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    bounds: str       # PostgreSQL's words: FOR VALUES FROM (...) TO (...) | DEFAULT
    rows: int | None  # counted, or PostgreSQL's estimate; None: an estimate of a partition never analysed
    bytes: int
    exact: bool       # rows were counted, not estimated


def first_of_month(month: date | str) -> date:
    """A month as the date of its first day; ``month`` is a date in it or ``YYYYMM``."""
    if isinstance(month, str):
        if len(month) != 6 or not month.isdigit() or not 1 <= int(month[4:]) <= 12:
            raise ValueError(f"a month is YYYYMM, not {month!r}")
        return date(int(month[:4]), int(month[4:]), 1)
    return month.replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def months_from(month: date, count: int) -> list[date]:
    """``count`` months starting with the one ``month`` is in."""
    out = [first_of_month(month)]
    while len(out) < count:
        out.append(next_month(out[-1]))
    return out


def partition_name(table_name: str, month: date | str) -> str:
    return f"{table_name}_p{first_of_month(month):%Y%m}"


def default_partition_name(table_name: str) -> str:
    return f"{table_name}_default"


def is_partitioned(conn, table_name: str) -> bool:
    """Whether ``table_name`` (in the connection's search path) is a partitioned table."""
    if conn.dialect.name != "postgresql":
        return False
    return conn.execute(text("select c.relkind = 'p' from pg_class c "
                             "where c.oid = to_regclass(:t)"), {"t": table_name}).scalar() or False


def monthly_partition(conn, table_name: str, month: date | str) -> str | None:
    """The partition holding exactly ``month`` of ``table_name`` (every row of that month, no other),
    or None: not partitioned, or that month has no partition of its own (its rows, if any, are in
    the DEFAULT partition)."""
    if not is_partitioned(conn, table_name):
        return None
    name = partition_name(table_name, month)
    found = conn.execute(text("select 1 from pg_inherits i where i.inhparent = to_regclass(:t) "
                              "and i.inhrelid = to_regclass(:p)"), {"t": table_name, "p": name}).scalar()
    return name if found else None


def _bound(key: str, day: date) -> str:
    return f"'{day:%Y-%m-%d} 00:00:00+00'" if key in _TIMESTAMP_KEYS else f"'{day:%Y-%m-%d}'"


def _range(key: str, month: date) -> str:
    return f"FROM ({_bound(key, month)}) TO ({_bound(key, next_month(month))})"


def add_month(conn, table_name: str, month: date) -> bool:
    """Give ``month`` a partition of its own unless it has one; True when it was made. Rows of that
    month already in the DEFAULT partition move into it (a move within the table: none is lost)."""
    if monthly_partition(conn, table_name, month):
        return False
    key, name = PARTITION_KEYS[table_name], partition_name(table_name, month)
    lo, hi = _bound(key, first_of_month(month)), _bound(key, next_month(first_of_month(month)))
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {table_name} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    conn.exec_driver_sql(f"WITH moved AS (DELETE FROM {default_partition_name(table_name)} "
                         f"WHERE {key} >= {lo} AND {key} < {hi} RETURNING *) INSERT INTO {name} SELECT * FROM moved")
    conn.exec_driver_sql(f"ALTER TABLE {table_name} ATTACH PARTITION {name} FOR VALUES {_range(key, month)}")
    return True


def prepare(conn, today: date, ahead: int) -> list[str]:
    """Partitions for this month and the ``ahead`` next ones, in every partitioned table; the names
    of those made (none when all were there: it may run any number of times)."""
    made = []
    for table_name in PARTITION_KEYS:
        if not is_partitioned(conn, table_name):
            continue
        for month in months_from(today, ahead + 1):
            if add_month(conn, table_name, month):
                made.append(partition_name(table_name, month))
    return made


def partitions(conn, exact: bool = False) -> list[Partition]:
    """Every partition of the partitioned tables, with its rows and its size on disk. The rows are
    PostgreSQL's estimate as of the partition's last ANALYZE or VACUUM (``pg_class.reltuples``: a
    catalogue read, where counting tens of millions of rows reads them all), or with ``exact`` a count."""
    out = []
    for table_name in PARTITION_KEYS:
        if not is_partitioned(conn, table_name):
            continue
        rows = conn.execute(text("select c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples, "
                                 "pg_total_relation_size(c.oid) from pg_inherits i join pg_class c "
                                 "on c.oid = i.inhrelid where i.inhparent = to_regclass(:t) order by c.relname"),
                            {"t": table_name}).all()
        for name, bounds, estimate, size in rows:
            if exact:
                count = conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one()
            else:
                count = None if estimate < 0 else round(estimate)   # -1: never analysed (PostgreSQL 14+)
            out.append(Partition(table_name, name, bounds, count, size, exact))
    return out


def convert(execute, table: Table, today: date, ahead: int, rows: str | None = None,
            first_month_of: str | None = None) -> None:
    """Make ``table`` partitioned by month, its rows kept (ids included) — for the migration, in its
    transaction; ``execute`` runs a statement (``alembic.op.execute``: the statements read no data
    in Python, so ``gridpay db sql`` prints them too). A new partitioned table gets a partition per
    month from its first row's to ``ahead`` months after ``today``, and the DEFAULT; the rows are
    copied; the old table is dropped and the new one takes its name, keys, indexes, foreign keys and
    sequence position. ``rows``: a SELECT of the rows in the table's column order, when they are
    not the table's own (a key column filled from another table); ``first_month_of``: the table whose
    oldest key opens the partitions, when not this one. The key is NOT NULL (a row without one is
    refused: the migration fails, nothing changed)."""
    name, key = table.name, PARTITION_KEYS[table.name]
    (pk,) = table.primary_key.columns
    new = f"{name}_by_month"
    execute(f"CREATE TABLE {new} (LIKE {name} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            f"INCLUDING IDENTITY INCLUDING STORAGE) PARTITION BY RANGE ({key})")
    execute(f"ALTER TABLE {new} ALTER COLUMN {key} SET NOT NULL")
    months = months_from(today, ahead + 1)
    execute(_past_months_block(first_month_of or name, name, new, key, months[0]))
    for month in months:
        execute(f"CREATE TABLE {partition_name(name, month)} PARTITION OF {new} FOR VALUES {_range(key, month)}")
    execute(f"CREATE TABLE {default_partition_name(name)} PARTITION OF {new} DEFAULT")
    execute(f"INSERT INTO {new} {rows or f'SELECT * FROM {name}'}")
    execute(f"DROP TABLE {name}")
    execute(f"ALTER TABLE {new} RENAME TO {name}")
    execute(f"ALTER SEQUENCE {new}_{pk.name}_seq RENAME TO {name}_{pk.name}_seq")
    execute(f"ALTER TABLE {name} ADD CONSTRAINT pk_{name} PRIMARY KEY ({pk.name}, {key})")
    _keys_and_indexes(execute, table)


def _past_months_block(dated: str, name: str, new: str, key: str, first_ahead: date) -> str:
    """A DO block: a partition ``<name>_pYYYYMM`` of ``new`` for each month from ``dated``'s first
    row's to the month before ``first_ahead`` (none for an empty table)."""
    month_of_first = f"min({key} AT TIME ZONE 'UTC')" if key in _TIMESTAMP_KEYS else f"min({key})"
    suffix = " || ' 00:00:00+00'" if key in _TIMESTAMP_KEYS else ""
    return (f"DO $$ DECLARE m date; BEGIN "
            f"SELECT date_trunc('month', {month_of_first})::date INTO m FROM {dated}; "
            f"WHILE m < DATE '{first_ahead:%Y-%m-%d}' LOOP "
            f"EXECUTE format('CREATE TABLE %I PARTITION OF {new} FOR VALUES FROM (%L) TO (%L)', "
            f"'{name}_p' || to_char(m, 'YYYYMM'), to_char(m, 'YYYY-MM-DD'){suffix}, "
            f"to_char(m + interval '1 month', 'YYYY-MM-DD'){suffix}); "
            f"m := m + interval '1 month'; END LOOP; END $$")


def _keys_and_indexes(execute, table: Table) -> None:
    """The metadata's indexes and foreign keys of a rebuilt table, and its sequence after its ids."""
    (pk,) = table.primary_key.columns
    for index in table.indexes:
        execute(CreateIndex(index))
    for fk in table.foreign_key_constraints:
        execute(AddConstraint(fk))
    execute(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{pk.name}'), "
            f"coalesce(max({pk.name}), 0) + 1, false) FROM {table.name}")


def unconvert(execute, table: Table) -> None:
    """The migration's downgrade: the plain table again, rows, ids and sequence position kept."""
    name = table.name
    (pk,) = table.primary_key.columns
    old = f"{name}_by_month"
    execute(f"ALTER TABLE {name} RENAME TO {old}")
    execute(f"ALTER SEQUENCE {name}_{pk.name}_seq RENAME TO {old}_{pk.name}_seq")
    execute(f"ALTER TABLE {old} RENAME CONSTRAINT pk_{name} TO pk_{old}")
    for index in table.indexes:
        execute(f"ALTER INDEX {index.name} RENAME TO {index.name}_by_month")
    execute(f"CREATE TABLE {name} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            f"INCLUDING IDENTITY INCLUDING STORAGE)")
    execute(f"INSERT INTO {name} SELECT * FROM {old}")
    execute(f"DROP TABLE {old}")
    execute(f"ALTER TABLE {name} ADD CONSTRAINT pk_{name} PRIMARY KEY ({pk.name})")
    _keys_and_indexes(execute, table)


def is_partition_name(name: str) -> bool:
    """Whether a table name is one of a partitioned table's partitions (``<table>_pYYYYMM``, ``<table>_default``)."""
    table, _, month = name.rpartition("_")
    return table in PARTITION_KEYS and (month == "default" or (month[:1] == "p" and month[1:].isdigit()))


def include_name(name, type_, parent_names) -> bool:
    """Alembic's ``include_name``: partitions are the tables' storage, not tables of the schema."""
    return not (type_ == "table" and name and is_partition_name(name))


def prepare_audited(engine, today: date, ahead: int, actor: str, now) -> list[str]:
    """``prepare`` as an operator's action: the partitions made and the audit row that says so, in
    one transaction."""
    from ledger.audit import audit_row, write_audit

    if ahead < 0:
        raise ValueError("--ahead is a number of months, 0 or more")
    with engine.begin() as conn:
        made = prepare(conn, today, ahead)
        write_audit(conn, [audit_row(now, actor, "db.partitions", "database", "partitions",
                                     first_month=f"{first_of_month(today):%Y%m}", ahead=ahead, made=made)])
    return made
