"""Imports of the billing system's files: customers, bills and debit agreements (docs/spec/BILLING-FILES.md).

A file's header names its columns: the required ones (``HEADERS``), then, in that order, as many of
the optional trailing ones (``OPTIONAL``) as the file has: customers ``district`` and
``collection_type``, bills ``category``. A column the file does not have is not given: a known
customer keeps its stored district or collection type (an empty value in a column the file has
clears it); a bill is category ``E``. So a 1.0 file of the required columns imports as it always did.

A file is applied whole or not at all. Every line is checked: the encoding (UTF-8, optional BOM),
the quoting (RFC 4180), the header, every field, and the facts in the database (known customers,
bill ids already imported, active agreements). Any bad line rejects the file and the result lists
every bad line with its column and the reason; nothing is written. A good file is applied in one
transaction, and an ``imports`` row records it (sha256, counts, actor).

Imports stream: memory stays flat whatever the file's size. A file is read twice:
- pass 0 reads its bytes: the sha256, the encoding (UTF-8, a byte-order mark only at the start)
  and its number of lines (the progress's total); a file that is not UTF-8 is rejected here.
- pass 1 reads its CSV records, checks each line's fields, and takes the good ones
  ``CHUNK_LINES`` at a time: the facts the chunk needs are looked up in the database in a few
  queries (its customers, its bill ids, ...) and its rows are written at once (COPY on
  PostgreSQL, one executemany per table elsewhere), in the one transaction of the file (set).
  Lines after a bad one are still checked and their good rows still written, so that later
  checks see the same database a good file would have made; at the end a rejected file (set) is
  rolled back: nothing of it stays. A file's keys met so far (customer numbers, bill ids,
  agreements) and the line each was first met on go to a temporary table, so that a key seen
  again is reported with its first line however far back that was.
Only the current chunk, the errors and, for bills, the new bills of customers with a prepaid
balance (usually few) are held in memory.

Repeat imports are idempotent:
- customers: an identical row is skipped; a known customer_no with other values (in the columns
  the file has) is updated, its version goes up by one, and the update is recorded
  (``customer_history``, which keeps every column of each version, + ``audit_log``).
- bills: a bill_id already imported with the same content is skipped and counted; with other
  content it is an error (a correction is an operator's command, see ``ledger.corrections``).
- agreements: keyed by (customer_no, bank_code, account_no); identical rows skipped, changed
  ones updated and audited. After the file, a customer has at most one active agreement.

Every new bill writes a journal entry (Dr receivable principal+penalty; Cr revenue principal;
Cr penalty_income penalty) and, when the customer has a mobile number, an SMS notice worded after
the customer's collection type (``config.notices.bill_notice``). A customer's collection type as
stored is what the billing system gave; an empty one is decided when the notice is written: D while
the customer has an active agreement, else C. A file set applies its agreements before its bills,
so that a new customer's first bills are worded after the agreement that comes with them.

Prepaid balances pay bills as they arrive (``ledger.posting.apply_prepaid``, the posting kind
``PrepaidApplication``), once the whole file is written: the
customer's unpaid bills are taken oldest first (period, due date, bill id), and a bill is paid
only when the balance covers it entirely, since bills are paid whole; the first bill the balance
does not cover stops the run, so a newer bill is never paid while an older one stays unpaid. Each
bill so paid gets a prepaid movement (kind ``applied``, negative), an allocation pointing at it,
and a journal entry (Dr prepaid / Cr receivable); its SMS says it has been paid instead of asking
for payment.

Progress: ``import_file``/``import_files`` take a ``ledger.progress.Progress`` (default: none)
and advance it a chunk at a time.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import hashlib
import json
import operator
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from sqlalchemy import (
    Column, Engine, Integer, MetaData, String, Table, bindparam, case, func, insert, select, update,
)

from config import notices
from ledger.audit import audit_row, write_audit
from config.clock import SYSTEM_CLOCK, Clock
from ledger.ids import reserve_ids_for_bulk
from ledger.money import fits
from ledger.posting import apply_prepaid, lock_customers
from ledger.posting.writes import BillJournal
from ledger.progress import NoProgress
from runtime.bulk_sql import CHUNK, CUSTOM_PLANS, GENERIC_PLANS, RowWriter, in_list, key_filters, sqlite_max_params
from ledger.schema import (
    agreements, audit_log, banks, bills, customer_history, customers, imports, journal_entries, outbox, prepaid_movements,
)

# The order a file set is applied in: bills last, so that their notices know the set's agreements.
KINDS = ("customers", "agreements", "bills")
HEADERS = {  # the required columns: a 1.0 file has these only
    "customers": ("customer_no", "customer_name", "customer_type", "status", "prepay_allowed", "mobile"),
    "bills": ("customer_no", "period", "bill_id", "principal", "penalty", "due_date"),
    "agreements": ("customer_no", "bank_code", "account_no", "account_name", "status", "debit_limit"),
}
OPTIONAL = {  # billing files 1.1: optional trailing columns, in this order
    "customers": ("district", "collection_type"),
    "bills": ("category",),
    "agreements": (),
}
SET_FILE_NAMES = {kind: f"{kind}.csv" for kind in KINDS}

CHUNK_LINES = 5_000    # records checked against the database and written together
READ_BLOCK = 1 << 20   # bytes read at a time in pass 0
SQLITE_CACHE_KIB = 65_536  # SQLite's page cache during an import (its default is 2 MiB): a million
                           # rows' index pages stay in memory instead of being read back and again

_CUSTOMER_NO = re.compile(r"[A-Za-z0-9]{1,20}")
_BILL_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_PERIOD = re.compile(r"(\d{4})(0[1-9]|1[0-2])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FEN = re.compile(r"\d{1,15}")
_MOBILE = re.compile(r"\d{11}")
_DISTRICT = re.compile(r"[A-Za-z0-9]{0,20}")
_BANK_CODE = re.compile(r"\d{1,11}")
_ACCOUNT_NO = re.compile(r"[\x21-\x7e]{1,28}")  # printable ASCII, no spaces
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, order=True)
class LineError:
    line: int        # 1 = the header line; a record spanning lines is named by its first line
    column: str      # the column's name, or "-" for the whole line
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.reason}"


@dataclass
class ImportResult:
    kind: str
    file_name: str
    sha256: str = ""
    lines: int = 0                 # data records in the file (the header and blank lines not counted)
    applied: int = 0               # rows created or updated
    skipped: int = 0               # rows already known with the same content
    errors: list[LineError] = field(default_factory=list)
    import_id: int | None = None
    created: int = 0
    updated: int = 0
    prepaid_applied: int = 0       # bills paid from prepaid balances (bills imports)
    notices: int = 0               # SMS notices queued
    banks_added: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.errors:
            return (f"{self.kind} {self.file_name}: REJECTED, {len(self.errors)} error(s) in "
                    f"{self.lines} line(s); nothing was applied")
        text = (f"{self.kind} {self.file_name}: {self.lines} line(s), {self.applied} applied "
                f"({self.created} new, {self.updated} updated), {self.skipped} skipped; import {self.import_id}")
        if self.kind == "bills":
            text += f"; {self.prepaid_applied} paid from prepaid; {self.notices} SMS queued"
        if self.banks_added:
            text += f"; banks added: {', '.join(self.banks_added)}"
        return text


# ---------------------------------------------------------------------------------------------
# Reading a file: pass 0 (its bytes) and pass 1 (its records)


@dataclass
class _Scan:
    sha256: str
    size: int
    lines: int          # physical lines (the progress's total)


def _scan(path: Path, errors: list[LineError]) -> _Scan:
    """Pass 0: the file's sha256 and number of lines, and whether it is UTF-8 with at most a
    byte-order mark at its start (an error is appended if not; the caller then reads no further)."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    offset = newlines = 0
    last = b""
    failed = False
    with open(path, "rb") as fh:
        while True:
            block = fh.read(READ_BLOCK)
            digest.update(block)
            if offset == 0 and block.startswith((b"\xff\xfe", b"\xfe\xff")):
                errors.append(LineError(1, "-", "UTF-16 byte-order mark: the file must be UTF-8"))
                failed = True
            if not failed:
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(block, not block)
                except UnicodeDecodeError as exc:
                    at = offset - pending + exc.start   # in the whole file
                    bad = (bytes(exc.object)[exc.start:exc.start + 1] or b"\0")[0]
                    line = newlines + block.count(b"\n", 0, max(0, at - offset)) + 1
                    errors.append(LineError(line, "-", f"not UTF-8 (byte 0x{bad:02x} at offset {at}); "
                                                       "the file must be UTF-8, e.g. not GBK"))
                    failed = True
                else:
                    stray = text.find("\ufeff")
                    if stray >= 0:
                        errors.append(LineError(newlines + text.count("\n", 0, stray) + 1, "-",
                                                "byte-order mark inside the file"))
                        failed = True
            if not block:
                break
            newlines += block.count(b"\n")
            offset += len(block)
            last = block[-1:]
    return _Scan(digest.hexdigest(), offset, newlines + (1 if last not in (b"", b"\n") else 0))


class _Reader:
    """Pass 1: a file's data records ``(line, fields)`` with the number of fields of the header;
    errors of quoting, header and field count are appended. ``line_num``: lines read so far.
    ``columns``: the columns the header names (known once the first record is yielded); a record
    is cut to them when a bad header names more."""

    def __init__(self, path: Path, kind: str, errors: list[LineError]):
        self.path, self.kind, self.errors = path, kind, errors
        self.records = 0
        self.reader = None
        self.columns = HEADERS[kind]

    def _header(self, line: int, row: list[str]) -> int:
        """Check the header line; the number of fields a record must have."""
        errors, header, optional = self.errors, HEADERS[self.kind], OPTIONAL[self.kind]
        n = len(header)
        found = ",".join(row)
        if tuple(row[:n]) != header:
            for i, name in enumerate(header):
                if i >= len(row) or row[i] != name:
                    errors.append(LineError(line, name, f"bad header {found!r}: expected {','.join(header)!r}"))
                    break
            return n
        extra = tuple(row[n:])
        known = 0
        while known < len(extra) and known < len(optional) and extra[known] == optional[known]:
            known += 1
        self.columns = header + extra[:known]
        if known < len(extra):
            expected = (f"optionally followed by {','.join(optional)!r}, in this order (a file may stop after "
                        f"any of them)") if optional else "and no more columns"
            errors.append(LineError(line, extra[known] or "-", f"bad header {found!r}: expected "
                                                               f"{','.join(header)!r} {expected}"))
        return len(row)

    @property
    def line_num(self) -> int:
        return self.reader.line_num if self.reader is not None else 0

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        errors, header = self.errors, HEADERS[self.kind]
        width = cut = len(header)
        with open(self.path, encoding="utf-8-sig", newline="") as fh:
            self.reader = reader = csv.reader(fh, strict=True)
            previous_end = 0
            header_seen = False
            while True:
                start = previous_end + 1
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    message = str(exc)
                    if "unexpected end of data" in message:
                        message = "a quoted field is not closed before the end of the file"
                    errors.append(LineError(start, "-", f"bad CSV quoting: {message}"))
                    previous_end = reader.line_num
                    header_seen = True
                    continue
                previous_end = reader.line_num
                if not header_seen:
                    header_seen = True
                    width = self._header(start, row)
                    cut = len(self.columns)
                    continue
                if not row or row == [""]:
                    continue  # blank line
                self.records += 1
                if len(row) != width:
                    errors.append(LineError(start, "-", f"{len(row)} field(s), expected {width}"))
                    continue
                yield start, (row if cut == width else row[:cut])
        if not header_seen:
            errors.append(LineError(1, "-", f"empty file: the header line {','.join(header)!r} is required"))


# ---------------------------------------------------------------------------------------------
# Checking a line's fields


def _gbk_name(value: str, column: str, line: int, errors: list[LineError], limit: int = 60) -> None:
    if not value.strip():
        errors.append(LineError(line, column, "empty"))
        return
    if _CONTROL.search(value):
        errors.append(LineError(line, column, "contains a control character"))
        return
    try:
        size = len(value.encode("gbk"))
    except UnicodeEncodeError as exc:
        errors.append(LineError(line, column, f"character {value[exc.start]!r} cannot be written in GBK"))
        return
    if size > limit:
        errors.append(LineError(line, column, f"{size} bytes in GBK, at most {limit} allowed"))


def _choice(value: str, allowed: tuple[str, ...], column: str, line: int, errors: list[LineError], what: str) -> None:
    if value not in allowed:
        errors.append(LineError(line, column, f"{value!r} is not {what}"))


def _fen(value: str, column: str, line: int, errors: list[LineError], *, positive: bool) -> int | None:
    if not _FEN.fullmatch(value):
        errors.append(LineError(line, column, f"{value!r} is not an amount in whole fen (digits only)"))
        return None
    amount = int(value)
    if positive and amount <= 0:
        errors.append(LineError(line, column, "must be greater than 0"))
        return None
    if not fits(amount):   # field 48 BI carries principal and penalty in 12 digits each
        errors.append(LineError(line, column, "more than 12 digits"))
        return None
    return amount


def _customer_no(no: str, line: int, errors: list[LineError]) -> bool:
    if _CUSTOMER_NO.fullmatch(no):
        return True
    errors.append(LineError(line, "customer_no", f"{no!r} is not 1-20 ASCII letters or digits"))
    return False


def _check_customer(line: int, row: list[str], errors: list[LineError]) -> tuple[str | None, tuple | None]:
    """(the customer_no if valid, the row's values if the whole line is): the required columns',
    then district and collection_type (None when empty) if the file has them."""
    n = len(errors)
    if len(row) == 6:
        no, name, ctype, status, prepay, mobile = row
        optional = ()
    else:
        no, name, ctype, status, prepay, mobile, *optional = row
    key = no if _customer_no(no, line, errors) else None
    _gbk_name(name, "customer_name", line, errors)
    _choice(ctype, ("R", "N"), "customer_type", line, errors, "R (resident) or N (non-resident)")
    _choice(status, ("A", "S", "C"), "status", line, errors, "A (active), S (suspended) or C (closed)")
    _choice(prepay, ("Y", "N"), "prepay_allowed", line, errors, "Y or N")
    if mobile and not _MOBILE.fullmatch(mobile):
        errors.append(LineError(line, "mobile", f"{mobile!r} is not empty or 11 digits"))
    if optional:
        if not _DISTRICT.fullmatch(optional[0]):
            errors.append(LineError(line, "district", f"{optional[0]!r} is not empty or 1-20 ASCII letters or "
                                                      f"digits"))
        if len(optional) > 1:
            _choice(optional[1], ("C", "B", "D", ""), "collection_type", line, errors,
                    "C (cash at counters), B (the bank withholds), D (debited under an agreement) or empty")
    if len(errors) != n:
        return key, None
    if not optional:
        return key, (no, name, ctype, status, prepay, mobile or None)
    if len(optional) == 1:
        return key, (no, name, ctype, status, prepay, mobile or None, optional[0] or None)
    return key, (no, name, ctype, status, prepay, mobile or None, optional[0] or None, optional[1] or None)


def _check_bill(line: int, row: list[str], errors: list[LineError]) -> tuple | None:
    """(customer_no, period, bill_id, principal, penalty, due_date as YYYY-MM-DD, category) if the
    line is good; the category is E when the file has no such column or leaves it empty."""
    n = len(errors)
    if len(row) == 6:
        no, period, bill_id, principal, penalty, due = row
        category = "E"
    else:
        no, period, bill_id, principal, penalty, due, category = row
        if category not in _CATEGORIES:
            errors.append(LineError(line, "category", f"{category!r} is not E (electricity charges), V (charges "
                                                      f"for irregular use), F (penalties for illegal use) or empty"))
        category = category or "E"
    _customer_no(no, line, errors)
    if not _PERIOD.fullmatch(period):
        errors.append(LineError(line, "period", f"{period!r} is not a month YYYYMM"))
    if not _BILL_ID.fullmatch(bill_id):
        errors.append(LineError(line, "bill_id", f"{bill_id!r} is not 1-32 ASCII letters or digits"))
    p = _fen(principal, "principal", line, errors, positive=True)
    q = _fen(penalty, "penalty", line, errors, positive=False)
    if not _DATE.fullmatch(due):
        errors.append(LineError(line, "due_date", f"{due!r} is not a date YYYY-MM-DD"))
    else:
        try:
            date.fromisoformat(due)
        except ValueError:
            errors.append(LineError(line, "due_date", f"{due!r} is not a calendar date"))
    if len(errors) != n:
        return None
    return no, period, bill_id, p, q, due, category


_CATEGORIES = frozenset(("E", "V", "F", ""))


def _check_agreement(line: int, row: list[str], errors: list[LineError]) -> tuple | None:
    """(customer_no, bank_code, account_no, account_name, status, debit_limit) if the line is good."""
    n = len(errors)
    no, bank, account, name, status, limit = row
    _customer_no(no, line, errors)
    if not _BANK_CODE.fullmatch(bank):
        errors.append(LineError(line, "bank_code", f"{bank!r} is not a bank code of 1-11 digits"))
    if not _ACCOUNT_NO.fullmatch(account):
        errors.append(LineError(line, "account_no", f"{account!r} is not 1-28 printable ASCII characters"))
    _gbk_name(name, "account_name", line, errors)
    _choice(status, ("A", "C"), "status", line, errors, "A (active) or C (cancelled)")
    debit_limit = _fen(limit, "debit_limit", line, errors, positive=False)
    if len(errors) != n:
        return None
    return no, bank, account, name, status, debit_limit


# ---------------------------------------------------------------------------------------------
# Bill notices (shared with corrections)


def _active_account():
    """The account of a customer's active agreement (at most one is active), for a query of customers."""
    a = agreements.c
    return (select(func.max(a.account_no)).where(a.customer_no == customers.c.customer_no, a.status == "A")
            .scalar_subquery())


def bill_notice_facts(conn, customer_nos: Iterable[str]) -> dict[str, tuple[str, str | None, str | None]]:
    """What a bill notice needs of each named customer with a mobile: (mobile, collection type as
    stored, account of the active agreement or None)."""
    c = customers.c
    out: dict[str, tuple] = {}
    for where in key_filters(conn, c.customer_no, customer_nos):
        for no, mobile, collection, account in conn.execute(
                select(c.customer_no, c.mobile, c.collection_type, _active_account())
                .where(where, c.mobile.is_not(None))):
            out[no] = (mobile, collection, account)
    return out


def bill_notice_rows(conn, new_bills: Sequence[Mapping], paid_ids: set[str], at: datetime) -> list[dict]:
    """Outbox rows telling customers with a mobile of their new bills (kind bill_notice, ref bill:<id>),
    worded after their collection type; a bill already paid from prepaid is told as paid."""
    facts = bill_notice_facts(conn, {b["customer_no"] for b in new_bills})
    rows = []
    for b in new_bills:
        if b["customer_no"] not in facts:
            continue
        mobile, collection, account = facts[b["customer_no"]]
        total = int(b["principal"]) + int(b["penalty"])
        if b["bill_id"] in paid_ids:
            text = notices.bill_paid_from_prepaid(b["customer_no"], b["period"], total)
        else:
            text = notices.bill_notice(b["customer_no"], b["period"], total, b["due_date"], collection, account)
        rows.append(notices.outbox_row(b["customer_no"], mobile, "bill_notice", f"bill:{b['bill_id']}", text, at))
    return rows


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


class _GenericPlans:
    """PostgreSQL: generic plans for a chunk's lookups and writes. Our sessions plan every
    statement afresh (``ledger.db``), and so the foreign-key check each written row fires (bills,
    customer_history: customers and imports) was planned again row after row: 2.4 times the COPY's
    time; the lookups by key (``= ANY(array)`` on a primary key or an index) took twice as long.
    Their generic plans are index lookups whatever a table's size. Custom plans again after the
    chunk (the prepaid application at the end has joins that want them)."""

    def __init__(self, conn):
        self.conn = conn if conn.dialect.name == "postgresql" else None

    def __enter__(self):
        if self.conn is not None:
            self.conn.exec_driver_sql(GENERIC_PLANS)

    def __exit__(self, *exc):
        if self.conn is not None and exc[0] is None:
            self.conn.exec_driver_sql(CUSTOM_PLANS)


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
                _JSON.encode(details))

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


class _CustomersFile(_File):
    kind = "customers"

    def __init__(self, ctx, result, path, reader):
        super().__init__(ctx, result, path, reader)
        self.customers = RowWriter(self.conn, customers, ("customer_no", *_CUSTOMER_FIELDS, *_CUSTOMER_OPTIONAL,
                                                        "version", "updated_at"))
        self.history = RowWriter(self.conn, customer_history, ("customer_no", "version", *_CUSTOMER_FIELDS,
                                                             *_CUSTOMER_OPTIONAL, "import_id", "recorded_at"))
        self.fields: tuple[str, ...] = ()

    def chunk(self, items):
        if not self.fields:   # the header has been read: the columns the file gives
            self.fields = self.reader.columns[1:]
            self.current = operator.attrgetter(*self.fields)           # of a row of the customers table
            self.missing = _CUSTOMER_OPTIONAL[len(self.fields) - len(_CUSTOMER_FIELDS):]   # kept as they are
            self.kept = lambda row: tuple(getattr(row, name) for name in self.missing)
        conn, r, errors = self.conn, self.r, self.errors
        keys = [key for _, key, _ in items]
        earlier = self.seen.get(keys)
        known = {row.customer_no: row for row in _lookup(conn, _query("customers", conn.dialect.name),
                                                         sorted({k for _, k, v in items if v is not None}))}
        first: dict[str, int] = {}
        new, changed = [], []
        for line, key, values in items:
            seen = first.get(key) or earlier.get(key, (None,))[0]
            if seen is not None:
                errors.append(LineError(line, "customer_no", f"{key} appears again (first on line {seen})"))
                continue
            first[key] = line
            if values is None:
                continue
            old = known.get(key)
            if old is None:
                new.append(values)
            elif self.current(old) != values[1:]:
                changed.append((old, values))
        self.seen.add([(key, line, None, None) for key, line in first.items()])
        r.created += len(new)
        r.updated += len(changed)
        r.applied += len(new) + len(changed)
        r.skipped += sum(1 for _, _, v in items if v is not None) - len(new) - len(changed)
        self._write(new, changed)

    def _write(self, new: list[tuple], changed: list[tuple]) -> None:
        conn, at, import_id, fields = self.conn, self.ctx.at_db, self.import_id, self.fields
        absent = (None,) * len(self.missing)   # a new customer's columns the file does not give
        self.customers.write([(*v, *absent, 1, at) for v in new])
        if changed:
            conn.execute(update(customers).where(customers.c.customer_no == bindparam("key"))
                         .values({f: bindparam(f) for f in (*fields, "version", "updated_at")}),
                         [{**dict(zip(fields, v[1:])), "key": v[0], "version": old.version + 1,
                           "updated_at": self.ctx.at} for old, v in changed])
        self.history.write([(v[0], 1, *v[1:], *absent, import_id, at) for v in new] +
                           [(v[0], old.version + 1, *v[1:], *self.kept(old), import_id, at) for old, v in changed])
        given = fields[len(_CUSTOMER_FIELDS):]   # the optional columns the file has
        audits = [self.audit("customer.create", "customer", v[0], {
            "customer_name": v[1], "customer_type": v[2], "import_id": import_id, "mobile": v[5],
            "prepay_allowed": v[4], "status": v[3], "version": 1, **dict(zip(given, v[6:]))}) for v in new]
        for old, v in changed:
            audits.append(self.audit("customer.update", "customer", v[0], {
                "import_id": import_id, "version": old.version + 1,
                "changes": {f: [o, n] for f, o, n in zip(fields, self.current(old), v[1:]) if o != n}}))
        self.audits.write(audits)


def _bill_content(no: str, period: str, principal: int, penalty: int, due: str, category: str) -> str:
    return f"{no}|{period}|{principal}|{penalty}|{due}|{category}"


class _BillsFile(_File):
    kind = "bills"

    def __init__(self, ctx, result, path, reader):
        super().__init__(ctx, result, path, reader)
        self.bills = RowWriter(self.conn, bills, ("bill_id", "customer_no", "period", "principal", "penalty", "due_date",
                                                "category", "kind", "import_id", "created_at"))
        self.journal = BillJournal(self.conn)
        self.outbox = RowWriter(self.conn, outbox, ("customer_no", "mobile", "kind", "ref", "text", "state", "attempts",
                                                  "next_attempt_at", "created_at"))
        self.unwritten = False                  # lines with a good bill id not written (seen holds them)
        self.again: list[tuple[int, str]] = []  # lines giving a bill written from this file with other content
        self.waiting: list[tuple] = []          # their new bills (and notice facts): told once prepaid is applied

    def chunk(self, items):
        conn, r, errors, import_id = self.conn, self.r, self.errors, self.import_id
        dialect = conn.dialect.name
        mobiles, funded = {}, set()   # the chunk's customers with a prepaid balance
        wording = {}                  # of those with a mobile: (collection type, active agreement's account)
        for no, mobile, prepaid, collection, account in _lookup(conn, _query("mobiles", dialect),
                                                                {v[0] for _, v in items}):
            mobiles[no] = mobile
            if mobile:
                wording[no] = (collection, account)
            if prepaid is not None and prepaid > 0:
                funded.add(no)
        ids = [v[2] for _, v in items]
        known = {row.bill_id: row for row in _lookup(conn, _query("bills", dialect), ids)}
        # lines not written (unknown customer) whose bill id a later line may give again
        earlier = self.seen.get(i for i in ids if i not in known) if self.unwritten else {}
        first: dict[str, tuple[int, str]] = {}
        unwritten, new = [], []
        skipped = 0
        for line, v in items:
            no, period, bill_id, principal, penalty, due, category = v
            unknown = no not in mobiles
            if unknown:
                errors.append(LineError(line, "customer_no", f"unknown customer {no}"))
            old = known.get(bill_id)
            mine = old is not None and old.import_id == import_id   # written from an earlier line of this file
            if old is None or mine:
                content = _bill_content(no, period, principal, penalty, due, category)
                before = first.get(bill_id) or earlier.get(bill_id)
                if before is None and mine:
                    if content == _bill_content(old.customer_no, old.period, old.principal, old.penalty,
                                                old.due_date.isoformat(), old.category):
                        skipped += 1
                    else:   # its first line is looked up at the end: only a rejected file needs it
                        self.again.append((line, bill_id))
                    continue
                if before is not None:
                    first_line, first_content = before
                    if first_content == content:
                        skipped += 1
                    else:
                        errors.append(LineError(line, "bill_id", f"bill {bill_id} appears again with other "
                                                                 f"content (first on line {first_line})"))
                    continue
                first[bill_id] = (line, content)
                if unknown:
                    unwritten.append((bill_id, line, None, content))
                else:
                    new.append(v)
                continue
            diffs = [f for f, a, b in (("customer_no", old.customer_no, no), ("period", old.period, period),
                                       ("principal", old.principal, principal), ("penalty", old.penalty, penalty),
                                       ("due_date", old.due_date.isoformat(), due),
                                       ("category", old.category, category)) if a != b]
            if old.kind != "O":
                diffs.insert(0, "kind")
            if diffs:
                errors.append(LineError(line, "bill_id", f"bill {bill_id} was imported before with other "
                                                         f"content ({', '.join(diffs)} differ); corrections are made "
                                                         f"with 'gridpay ledger correct'"))
            else:
                skipped += 1
        if unwritten:
            self.seen.add(unwritten)
            self.unwritten = True
        r.created += len(new)
        r.applied += len(new)
        r.skipped += skipped
        if new:
            self._write(new, mobiles, funded, wording)

    def _write(self, new: list[tuple], mobiles: dict, funded: set[str], wording: dict) -> None:
        ctx = self.ctx
        at, day, actor, import_id = ctx.at_db, ctx.day_db, ctx.actor, self.import_id
        if ctx.pg:   # binary COPY takes a date; SQLite stores the text the file has
            self.bills.write([(bill_id, no, period, principal, penalty, date.fromisoformat(due), category, "O",
                               import_id, at) for no, period, bill_id, principal, penalty, due, category in new])
        else:
            self.bills.write([(bill_id, no, period, principal, penalty, due, category, "O", import_id, at)
                              for no, period, bill_id, principal, penalty, due, category in new])
        self.journal.write(new, day, actor, at)
        rows = []
        for v in new:
            no = v[0]
            mobile = mobiles.get(no)
            if no in funded:
                self.waiting.append((v, mobile, wording.get(no)))
            elif mobile:
                rows.append(self._notice(v, mobile, wording[no], paid=False))
        self.outbox.write(rows)
        self.r.notices += len(rows)

    def _first_lines(self) -> None:
        """The lines giving a bill id again with other content, once the file is read: the first
        line of each such bill id (read the file again; only a rejected file comes here)."""
        wanted = {bill_id for _, bill_id in self.again}
        firsts: dict[str, int] = {}
        for line, row in _Reader(self.path, "bills", []):
            if row[2] in wanted and row[2] not in firsts and _check_bill(line, row, []) is not None:
                firsts[row[2]] = line
        for line, bill_id in self.again:
            self.errors.append(LineError(line, "bill_id", f"bill {bill_id} appears again with other content "
                                                          f"(first on line {firsts[bill_id]})"))

    def _notice(self, v: tuple, mobile: str, wording: tuple, paid: bool) -> tuple:
        no, period, bill_id, principal, penalty, due, _ = v
        if paid:
            text = notices.bill_paid_from_prepaid(no, period, principal + penalty)
        else:
            text = notices.bill_notice(no, period, principal + penalty, date.fromisoformat(due), *wording)
        at = self.ctx.at_db
        return (no, mobile, "bill_notice", f"bill:{bill_id}", text, "pending", 0, at, at)

    def finish(self):
        super().finish()
        if self.again:
            self._first_lines()
        funded = sorted({v[0] for v, _, _ in self.waiting})   # with a prepaid balance and a new bill
        if self.errors or not funded:
            return
        ctx = self.ctx
        lock_customers(self.conn, funded)
        paid = {bill_id for _, bill_id, _ in apply_prepaid(self.conn, funded, at=ctx.at,
                                                             business_date=ctx.business_date, actor=ctx.actor)}
        rows = []
        for v, mobile, wording in self.waiting:
            if v[2] in paid:
                self.r.prepaid_applied += 1
            if mobile:
                rows.append(self._notice(v, mobile, wording, paid=v[2] in paid))
        self.outbox.write(rows)
        self.r.notices += len(rows)


class _AgreementsFile(_File):
    kind = "agreements"

    def __init__(self, ctx, result, path, reader):
        super().__init__(ctx, result, path, reader)
        self.banks_known: set[str] = set()
        self.agreements = RowWriter(self.conn, agreements, ("id", "customer_no", "bank_code", "account_no",
                                                          "account_name", "status", "debit_limit", "version",
                                                          "updated_at"))

    def _banks(self, codes: set[str]) -> set[str]:
        """The codes not in the banks table (those allowed are added to it)."""
        conn, ctx = self.conn, self.ctx
        unknown = codes - self.banks_known
        if unknown:
            self.banks_known.update(conn.execute(select(banks.c.bank_code)
                                                 .where(banks.c.bank_code.in_(sorted(unknown)))).scalars())
        missing = sorted(codes - self.banks_known)
        allowed = [code for code in missing if ctx.known_banks is None or code in ctx.known_banks]
        if allowed:
            names = ctx.known_banks or {}
            conn.execute(insert(banks), [{"bank_code": code, "name": str(names.get(code, ""))[:100],
                                          "created_at": ctx.at} for code in allowed])
            self.audits.write([self.audit("bank.create", "bank", code, {"import_id": self.import_id})
                               for code in allowed])
            self.banks_known.update(allowed)
            self.r.banks_added = sorted({*self.r.banks_added, *allowed})
        return set(missing) - set(allowed)

    def chunk(self, items):
        conn, r, errors, import_id, at = self.conn, self.r, self.errors, self.import_id, self.ctx.at_db
        nos = {v[0] for _, v in items}
        known_customers = set()
        for where in key_filters(conn, customers.c.customer_no, nos):
            known_customers.update(conn.execute(select(customers.c.customer_no).where(where)).scalars())
        unknown_banks = self._banks({v[1] for _, v in items})
        current: dict[tuple, object] = {}
        for where in key_filters(conn, agreements.c.customer_no, nos):
            query = select(agreements).where(where)
            if self.ctx.pg:
                query = query.order_by(agreements.c.id).with_for_update()
            for row in conn.execute(query):
                current[(row.customer_no, row.bank_code, row.account_no)] = row
        keys = {"\t".join(v[:3]): (line, v) for line, v in reversed(items)}
        earlier = self.seen.get(keys)
        first: dict[str, int] = {}
        new, changed, seen_rows = [], [], []
        for line, v in items:
            no, bank, account = v[:3]
            key = f"{no}\t{bank}\t{account}"
            before = first.get(key) or earlier.get(key, (None,))[0]
            if before is not None:
                errors.append(LineError(line, "account_no",
                                        f"agreement {no}/{bank}/{account} appears again (first on line {before})"))
                continue
            first[key] = line
            bad = False
            if no not in known_customers:
                errors.append(LineError(line, "customer_no", f"unknown customer {no}"))
                bad = True
            if bank in unknown_banks:
                errors.append(LineError(line, "bank_code", f"unknown bank {bank} (not in the configuration's banks "
                                                           f"nor the banks table)"))
                bad = True
            if bad:
                seen_rows.append((key, line, None, None))
                continue
            seen_rows.append((key, line, no, None))   # owner: written, counted in the check of active ones
            old = current.get((no, bank, account))
            if old is None:
                new.append(v)
            elif (old.account_name, old.status, old.debit_limit) != v[3:]:
                changed.append((old, v))
        self.seen.add(seen_rows)
        r.created += len(new)
        r.updated += len(changed)
        r.applied += len(new) + len(changed)
        r.skipped += len(seen_rows) - len(new) - len(changed)
        # cancellations first, so that a customer never has two active agreements mid-way
        changed.sort(key=lambda pair: pair[1][4] != "C")
        if changed:
            conn.execute(update(agreements).where(agreements.c.id == bindparam("key"))
                         .values({f: bindparam(f) for f in (*_AGREEMENT_FIELDS, "version", "updated_at")}),
                         [{**dict(zip(_AGREEMENT_FIELDS, v[3:])), "key": old.id, "version": old.version + 1,
                           "updated_at": self.ctx.at} for old, v in changed])
        ids = reserve_ids_for_bulk(conn, agreements, len(new))
        self.agreements.write([(agreement_id, *v, 1, at) for agreement_id, v in zip(ids, new)])
        audits = [self.audit("agreement.create", "agreement", agreement_id, {
            "import_id": import_id, "version": 1, **dict(zip(HEADERS["agreements"], v))})
            for v, agreement_id in zip(new, ids)]
        audits += [self.audit("agreement.update", "agreement", old.id, {
            "import_id": import_id, "version": old.version + 1, "customer_no": v[0], "bank_code": v[1],
            "account_no": v[2], "changes": {f: [o, n] for f, o, n in zip(
                _AGREEMENT_FIELDS, (old.account_name, old.status, old.debit_limit), v[3:]) if o != n}})
            for old, v in changed]
        self.audits.write(audits)

    def finish(self):
        """At most one active agreement per customer of the file, once all of it is written."""
        conn, s, a = self.conn, _seen_table.c, agreements.c
        owners = select(s.owner).where(s.owner.is_not(None))
        crowded = conn.execute(select(a.customer_no).where(a.status == "A", a.customer_no.in_(owners))
                               .group_by(a.customer_no).having(func.count() > 1)).scalars().all()
        for where in key_filters(conn, a.customer_no, crowded):
            rows = conn.execute(select(a.customer_no, a.bank_code, a.account_no)
                                .where(where, a.status == "A")).all()
            lines = self.seen.get("\t".join(row) for row in rows)
            by_customer: dict[str, list] = {}
            for no, bank, account in rows:
                line = lines.get(f"{no}\t{bank}\t{account}", (None,))[0]
                by_customer.setdefault(no, []).append((line or 0, (no, bank, account)))
            for no, active in sorted(by_customer.items()):
                active.sort()
                names = ", ".join(f"{k[1]}/{k[2]}" + (f" (line {ln})" if ln else " (already active)")
                                  for ln, k in active)
                for line, _ in active:
                    if line:
                        self.errors.append(LineError(line, "status", f"customer {no} would have {len(active)} "
                                                                     f"active agreements: {names}; at most one may be "
                                                                     f"active"))
        super().finish()


def _check_customer_item(line: int, row: list[str], errors: list[LineError]):
    key, values = _check_customer(line, row, errors)
    return None if key is None else (line, key, values)


def _check_bill_item(line: int, row: list[str], errors: list[LineError]):
    values = _check_bill(line, row, errors)
    return None if values is None else (line, values)


def _check_agreement_item(line: int, row: list[str], errors: list[LineError]):
    values = _check_agreement(line, row, errors)
    return None if values is None else (line, values)


_FILES = {"customers": _CustomersFile, "bills": _BillsFile, "agreements": _AgreementsFile}


def _chunks(reader: _Reader, check, key_of) -> Iterator[tuple[list, int]]:
    """The checked lines of a file in chunks of CHUNK_LINES, with the number of lines read so far.
    A key met again within a chunk ends it, so that a chunk's lookups see its earlier lines written."""
    items: list = []
    keys: set[str] = set()
    for line, row in reader:
        item = check(line, row)
        if item is None:
            continue
        key = key_of(item)
        if key in keys or len(items) >= CHUNK_LINES:
            yield items, reader.line_num - 1
            items, keys = [], set()
        items.append(item)
        keys.add(key)
    if items:
        yield items, reader.line_num


_KEY_OF = {"customers": lambda item: item[1], "bills": lambda item: item[1][2],
           "agreements": lambda item: "\t".join(item[1][:3])}


def _import_one(ctx: _Context, kind: str, path: Path, result: ImportResult, lines: int, progress) -> None:
    """Pass 1 of one file: check its lines and write its good rows, CHUNK_LINES at a time."""
    read_errors: list[LineError] = []   # the fields' (a line's check counts the errors it adds)
    reader = _Reader(path, kind, read_errors)
    importer = _FILES[kind](ctx, result, path, reader)
    check = {"customers": _check_customer_item, "bills": _check_bill_item, "agreements": _check_agreement_item}[kind]
    progress.start(f"{result.file_name}: checking and applying", total=lines, unit="lines")
    chunks = _chunks(reader, functools.partial(check, errors=read_errors), _KEY_OF[kind])
    try:
        for items, read in chunks:
            with _GenericPlans(ctx.conn):
                importer.chunk(items)
            progress.set_done(read)
    finally:
        chunks.close()
    result.errors.extend(read_errors)
    result.lines = reader.records
    importer.finish()
    progress.set_done(lines)
    if not result.errors:
        importer.record()
    progress.finish()


def import_files(engine: Engine, files: Mapping[str, str | Path], actor: str, *,
                 clock: Clock = SYSTEM_CLOCK, now: datetime | None = None,
                 known_banks: Mapping[str, str] | Iterable[str] | None = None,
                 progress=None) -> dict[str, ImportResult]:
    """Import a file set ({kind: path}) in the order customers, agreements, bills (``KINDS``), all
    in one transaction: either every file is applied or none is. Bills and agreements may name
    customers of the customers file of the same set. ``known_banks`` (codes, or codes to names),
    when given, limits the banks an agreement may name to these and those already in the banks
    table; a bank not yet in the banks table is added. ``progress``: a ``ledger.progress.Progress`` advanced as
    the files are read (default: none). Returns a result per file; look at ``.errors``."""
    if not actor or not actor.strip():
        raise ValueError("an import names who makes it (actor)")
    unknown = set(files) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown import kind(s) {', '.join(sorted(unknown))}: one of {', '.join(KINDS)}")
    progress = progress or NoProgress()
    at = now or clock.now()
    business_date = clock.business_date(at)
    if known_banks is not None and not isinstance(known_banks, Mapping):
        known_banks = {code: "" for code in known_banks}
    paths = {kind: Path(files[kind]) for kind in KINDS if kind in files}
    results, scans = {}, {}
    for kind, path in paths.items():   # pass 0: sha256, encoding, size
        results[kind] = r = ImportResult(kind=kind, file_name=path.name[:255])
        scan = scans[kind] = _scan(path, r.errors)
        r.sha256 = scan.sha256
    try:
        with engine.begin() as conn:
            ctx = _Context(conn, actor, at, business_date, known_banks)
            cache = None
            if conn.dialect.name == "sqlite":
                cache = conn.exec_driver_sql("PRAGMA cache_size").scalar()
                conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            try:
                for kind, path in paths.items():
                    if not results[kind].errors:   # a file that is not UTF-8 is not read further
                        _import_one(ctx, kind, path, results[kind], scans[kind].lines, progress)
                if any(r.errors for r in results.values()):
                    raise _Rejected
            finally:
                if cache is not None:
                    with contextlib.suppress(Exception):   # never in place of the error that got us here
                        conn.exec_driver_sql(f"PRAGMA cache_size = {int(cache)}")
    except _Rejected:
        for r in results.values():
            r.import_id = None
            r.applied = r.skipped = r.created = r.updated = r.prepaid_applied = r.notices = 0
            r.banks_added = []
            r.errors.sort()
    return results


def import_file(engine: Engine, kind: str, path: str | Path, actor: str, **kwargs) -> ImportResult:
    """Import one file (customers, bills or agreements); see ``import_files``."""
    if kind not in HEADERS:
        raise ValueError(f"unknown import kind {kind!r}: one of {', '.join(KINDS)}")
    return import_files(engine, {kind: path}, actor, **kwargs)[kind]


def set_files(directory: str | Path) -> dict[str, Path]:
    """The files of a set in a directory: customers.csv, bills.csv, agreements.csv (those present)."""
    directory = Path(directory)
    return {kind: directory / name for kind, name in SET_FILE_NAMES.items() if (directory / name).is_file()}


def write_report(results: Iterable[ImportResult], path: str | Path) -> None:
    """The rejection report as CSV (UTF-8 with BOM, for spreadsheets): file,line,column,reason."""
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "line", "column", "reason"])
        for r in results:
            for e in r.errors:
                writer.writerow([r.file_name, e.line, e.column, e.reason])
