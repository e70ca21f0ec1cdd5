"""What every file kind shares as it is applied: database look-ups by key, keys met so far, the
import's context and the base of a file kind."""
from __future__ import annotations

import functools
import json
from datetime import date, datetime
from pathlib import Path
from typing import Iterable

from sqlalchemy import Column, Integer, MetaData, String, Table, case, func, insert, select, update

from ledger.audit import audit_row, command_audit_details, write_audit
from runtime.bulk_sql import CHUNK, RowWriter, in_list, sqlite_max_params
from ledger.schema import (
    agreements, audit_log, bills, customers, imports, journal_entries, prepaid_movements,
)
from ledger.imports.bill_notices import _active_account
from ledger.imports.formats import ImportResult, OPTIONAL
from ledger.imports.reading import _Reader


# ---------------------------------------------------------------------------------------------
# Checks against the database, and applying, a chunk at a time


class _Rejected(Exception):
    pass


_CUSTOMER_FIELDS = ("customer_name", "customer_type", "status", "prepay_allowed", "mobile")
_CUSTOMER_OPTIONAL = OPTIONAL["customers"]
_AGREEMENT_FIELDS = ("account_name", "status", "debit_limit")
_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str)  # as ledger.audit.audit_row


def _lookup(conn, query, keys: Iterable[str]) -> list:
    """The rows of ``query`` (whose WHERE holds ``_keys(column)``) for all the keys: on PostgreSQL
    in one statement (``= ANY(array)``), else in as few ``IN (...)`` as SQLite's parameter limit
    allows. The query is built once by its caller, so its compiled form is cached."""
    keys = list(keys)
    if not keys:
        return []
    if conn.dialect.name == "postgresql":
        return conn.execute(query, {"keys": keys}).all()
    size = sqlite_max_params() - 10 if conn.dialect.name == "sqlite" else CHUNK
    out = []
    for start in range(0, len(keys), size):
        out += conn.execute(query, {"keys": keys[start:start + size]}).all()
    return out


def _keys(column, dialect_name: str):
    return in_list(dialect_name, column, "keys")


@functools.lru_cache(maxsize=64)
def _query(name: str, dialect_name: str):
    """The lookups of a chunk, built once per dialect."""
    c, b, a, s = customers.c, bills.c, agreements.c, _seen_table.c
    if name == "customers":
        query = select(customers).where(_keys(c.customer_no, dialect_name))
        return query.order_by(c.customer_no).with_for_update() if dialect_name != "sqlite" else query
    if name == "mobiles":   # a bill's customer: its mobile, whether it has a prepaid balance, its notice's wording
        m = prepaid_movements.c
        prepaid = select(func.sum(m.amount)).where(m.customer_no == c.customer_no).scalar_subquery()
        # the account only where a notice may name it: a mobile, and no collection type C or B
        account = case((c.mobile.is_(None), None), (c.collection_type.in_(("C", "B")), None),
                       else_=_active_account())
        return (select(c.customer_no, c.mobile, prepaid.label("prepaid"), c.collection_type, account)
                .where(_keys(c.customer_no, dialect_name)))
    if name == "bills":
        return select(b.bill_id, b.customer_no, b.period, b.principal, b.penalty, b.due_date, b.kind,
                      b.import_id, b.category).where(_keys(b.bill_id, dialect_name))
    if name == "seen":
        return select(s.k, s.line, s.content).where(_keys(s.k, dialect_name))
    raise KeyError(name)


_seen_table = Table("gridpay_import_seen", MetaData(),
                    Column("k", String(200), primary_key=True),   # the key of a line
                    Column("line", Integer, nullable=False),      # the first line it is on
                    Column("owner", String(20), nullable=True),   # agreements: the customer
                    Column("content", String(400), nullable=True),
                    prefixes=["TEMPORARY"])


class _Seen:
    """The keys of a file met so far, with the line each was first met on: a temporary table, so
    that a file of any size can be checked for keys given twice in constant memory."""

    def __init__(self, conn):
        self.conn = conn
        _seen_table.drop(conn, checkfirst=True)
        _seen_table.create(conn)
        self.writer = RowWriter(conn, _seen_table, ("k", "line", "owner", "content"))

    def get(self, keys: Iterable[str]) -> dict[str, tuple[int, str | None]]:
        return {k: (line, content) for k, line, content in
                _lookup(self.conn, _query("seen", self.conn.dialect.name), keys)}

    def add(self, rows: list[tuple]) -> None:
        self.writer.write(rows)

    def close(self) -> None:
        _seen_table.drop(self.conn, checkfirst=True)


class _Context:
    def __init__(self, conn, actor: str, at: datetime, business_date: date, known_banks):
        self.conn, self.actor, self.at, self.business_date = conn, actor, at, business_date
        self.known_banks = known_banks
        self.pg = conn.dialect.name == "postgresql"
        # the values of every row's timestamp and business date, as the database takes them
        if conn.dialect.name != "sqlite":
            self.at_db, self.day_db = at, business_date
        else:
            self.at_db = customers.c.updated_at.type._cached_bind_processor(conn.dialect)(at)
            self.day_db = journal_entries.c.business_date.type._cached_bind_processor(conn.dialect)(business_date)


class _File:
    """One file's import: its checks and writes chunk by chunk (``chunk``), then what needs the
    whole file (``finish``). Subclasses per kind."""
    kind = ""

    def __init__(self, ctx: _Context, result: ImportResult, path: Path, reader: _Reader):
        self.ctx, self.conn, self.r, self.path, self.reader = ctx, ctx.conn, result, path, reader
        self.errors = result.errors
        self.seen = _Seen(self.conn)
        r = result
        self.import_id = r.import_id = self.conn.execute(insert(imports).returning(imports.c.id), [{
            "kind": r.kind, "file_name": r.file_name, "file_sha256": r.sha256, "lines": 0, "applied": 0, "skipped": 0,
            "actor": ctx.actor, "imported_at": ctx.at}]).scalar_one()
        self.audits = RowWriter(self.conn, audit_log, ("at", "actor", "action", "object_type", "object_id", "reason",
                                                     "details"))

    def audit(self, action: str, object_type: str, object_id, details: dict) -> tuple:
        return (self.ctx.at_db, self.ctx.actor, action, object_type, str(object_id), f"import {self.import_id}",
                _JSON.encode({**command_audit_details(), **details}))

    def chunk(self, items: list) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """After the last chunk: checks of the whole file; then, if the file is good, its imports row."""
        self.seen.close()

    def record(self) -> None:
        r, ctx = self.r, self.ctx
        self.conn.execute(update(imports).where(imports.c.id == self.import_id)
                          .values(lines=r.lines, applied=r.applied, skipped=r.skipped))
        write_audit(self.conn, [audit_row(ctx.at, ctx.actor, "import.apply", "import", self.import_id,
                                          f"{r.kind} file {r.file_name}", kind=r.kind, file_name=r.file_name,
                                          sha256=r.sha256, lines=r.lines, applied=r.applied, skipped=r.skipped)])


