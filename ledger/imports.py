"""Imports of the billing system's files: customers, bills and debit agreements (spec/BILLING-FILES.md).

A file is applied whole or not at all. Every line is checked first: the encoding (UTF-8, optional
BOM), the quoting (RFC 4180), the header, every field, and then the facts in the database (known
customers, bill ids already imported, active agreements). Any bad line rejects the file and the
result lists every bad line with its column and the reason; nothing is written. A good file is
applied in one transaction with one statement per table (``executemany``), and an ``imports`` row
records it (sha256, counts, actor).

Repeat imports are idempotent:
- customers: an identical row is skipped; a known customer_no with other values is updated, its
  version goes up by one, and the update is recorded (``customer_history`` + ``audit_log``).
- bills: a bill_id already imported with the same content is skipped and counted; with other
  content it is an error (a correction is an operator's command, see ``ledger.corrections``).
- agreements: keyed by (customer_no, bank_code, account_no); identical rows skipped, changed
  ones updated and audited. After the file, a customer has at most one active agreement.

Every new bill writes a journal entry (Dr receivable principal+penalty; Cr revenue principal;
Cr penalty_income penalty) and, when the customer has a mobile number, an SMS notice.

Prepaid balances pay bills as they arrive (``apply_prepaid``): the customer's unpaid bills are
taken oldest first (period, due date, bill id), and a bill is paid only when the balance covers it
entirely, since bills are paid whole; the first bill the balance does not cover stops the run, so
a newer bill is never paid while an older one stays unpaid. Each bill so paid gets a prepaid
movement (kind ``applied``, negative), an allocation pointing at it, and a journal entry
(Dr prepaid / Cr receivable); its SMS says it has been paid instead of asking for payment.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from sqlalchemy import Engine, any_, bindparam, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import aliased

from ledger import notices
from ledger.audit import audit_row, write_audit
from ledger.business_date import BusinessCalendar, utcnow
from ledger.ids import reserve_ids
from ledger.journal import PENALTY_INCOME, PREPAID, RECEIVABLE, REVENUE, Entry, write_entries
from ledger.schema import (
    agreements, allocations, audit_log, banks, bills, customer_history, customers, imports, journal_entries, journal_lines,
    outbox, prepaid_movements,
)

KINDS = ("customers", "bills", "agreements")  # the order a file set is applied in
HEADERS = {
    "customers": ("customer_no", "customer_name", "customer_type", "status", "prepay_allowed", "mobile"),
    "bills": ("customer_no", "period", "bill_id", "principal", "penalty", "due_date"),
    "agreements": ("customer_no", "bank_code", "account_no", "account_name", "status", "debit_limit"),
}
SET_FILE_NAMES = {kind: f"{kind}.csv" for kind in KINDS}

CHUNK = 900            # keys per IN (...) query
MAX_AMOUNT = 10 ** 12  # field 48 BI carries principal and penalty in 12 digits each

_CUSTOMER_NO = re.compile(r"[A-Za-z0-9]{1,20}")
_BILL_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_PERIOD = re.compile(r"(\d{4})(0[1-9]|1[0-2])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FEN = re.compile(r"\d{1,15}")
_MOBILE = re.compile(r"\d{11}")
_BANK_CODE = re.compile(r"\d{1,11}")
_ACCOUNT_NO = re.compile(r"[\x21-\x7e]{1,28}")  # printable ASCII, no spaces
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Refused(Exception):
    """An operator command the ledger refuses (the message says why); nothing was changed."""


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
# Reading and checking a file on its own


@dataclass
class _Parsed:
    kind: str
    path: Path
    result: ImportResult
    records: list[tuple[int, dict]] = field(default_factory=list)  # (line, values)


def _decode(data: bytes, errors: list[LineError]) -> str | None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        errors.append(LineError(1, "-", "UTF-16 byte-order mark: the file must be UTF-8"))
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        errors.append(LineError(line, "-", f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                                           "the file must be UTF-8, e.g. not GBK"))
        return None
    stray = text.find("\ufeff")
    if stray >= 0:
        errors.append(LineError(text.count("\n", 0, stray) + 1, "-", "byte-order mark inside the file"))
        return None
    return text


def _records(text: str, kind: str, errors: list[LineError]) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = HEADERS[kind]
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
            if tuple(row) != header:
                found = ",".join(row)
                for i, name in enumerate(header):
                    if i >= len(row) or row[i] != name:
                        errors.append(LineError(start, name, f"bad header {found!r}: expected {','.join(header)!r}"))
                        break
                else:
                    errors.append(LineError(start, "-", f"bad header {found!r}: expected {','.join(header)!r}"))
            continue
        if not row or row == [""]:
            continue  # blank line
        yield start, row
    if not header_seen:
        errors.append(LineError(1, "-", f"empty file: the header line {','.join(header)!r} is required"))


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


def _choice(value: str, allowed: str, column: str, line: int, errors: list[LineError], what: str) -> None:
    if len(value) != 1 or value not in allowed:
        errors.append(LineError(line, column, f"{value!r} is not {what}"))


def _fen(value: str, column: str, line: int, errors: list[LineError], *, positive: bool) -> int | None:
    if not _FEN.fullmatch(value):
        errors.append(LineError(line, column, f"{value!r} is not an amount in whole fen (digits only)"))
        return None
    amount = int(value)
    if positive and amount <= 0:
        errors.append(LineError(line, column, "must be greater than 0"))
        return None
    if amount >= MAX_AMOUNT:
        errors.append(LineError(line, column, "more than 12 digits"))
        return None
    return amount


def _check_customers(rows: Iterable[tuple[int, list[str]]], errors: list[LineError]) -> list[tuple[int, dict]]:
    out, seen = [], {}
    for line, row in rows:
        n = len(errors)
        no, name, ctype, status, prepay, mobile = row
        if not _CUSTOMER_NO.fullmatch(no):
            errors.append(LineError(line, "customer_no", f"{no!r} is not 1-20 ASCII letters or digits"))
        elif no in seen:
            errors.append(LineError(line, "customer_no", f"{no} appears again (first on line {seen[no]})"))
        else:
            seen[no] = line
        _gbk_name(name, "customer_name", line, errors)
        _choice(ctype, "RN", "customer_type", line, errors, "R (resident) or N (non-resident)")
        _choice(status, "ASC", "status", line, errors, "A (active), S (suspended) or C (closed)")
        _choice(prepay, "YN", "prepay_allowed", line, errors, "Y or N")
        if mobile and not _MOBILE.fullmatch(mobile):
            errors.append(LineError(line, "mobile", f"{mobile!r} is not empty or 11 digits"))
        if len(errors) == n:
            out.append((line, {"customer_no": no, "customer_name": name, "customer_type": ctype,
                               "status": status, "prepay_allowed": prepay, "mobile": mobile or None}))
    return out


def _check_bills(rows: Iterable[tuple[int, list[str]]], errors: list[LineError]) -> list[tuple[int, dict]]:
    out = []
    for line, row in rows:
        n = len(errors)
        no, period, bill_id, principal, penalty, due = row
        if not _CUSTOMER_NO.fullmatch(no):
            errors.append(LineError(line, "customer_no", f"{no!r} is not 1-20 ASCII letters or digits"))
        if not _PERIOD.fullmatch(period):
            errors.append(LineError(line, "period", f"{period!r} is not a month YYYYMM"))
        if not _BILL_ID.fullmatch(bill_id):
            errors.append(LineError(line, "bill_id", f"{bill_id!r} is not 1-32 ASCII letters or digits"))
        p = _fen(principal, "principal", line, errors, positive=True)
        q = _fen(penalty, "penalty", line, errors, positive=False)
        due_date = None
        if not _DATE.fullmatch(due):
            errors.append(LineError(line, "due_date", f"{due!r} is not a date YYYY-MM-DD"))
        else:
            try:
                due_date = date.fromisoformat(due)
            except ValueError:
                errors.append(LineError(line, "due_date", f"{due!r} is not a calendar date"))
        if len(errors) == n:
            out.append((line, {"customer_no": no, "period": period, "bill_id": bill_id, "principal": p,
                               "penalty": q, "due_date": due_date}))
    return out


def _check_agreements(rows: Iterable[tuple[int, list[str]]], errors: list[LineError]) -> list[tuple[int, dict]]:
    out, seen = [], {}
    for line, row in rows:
        n = len(errors)
        no, bank, account, name, status, limit = row
        if not _CUSTOMER_NO.fullmatch(no):
            errors.append(LineError(line, "customer_no", f"{no!r} is not 1-20 ASCII letters or digits"))
        if not _BANK_CODE.fullmatch(bank):
            errors.append(LineError(line, "bank_code", f"{bank!r} is not a bank code of 1-11 digits"))
        if not _ACCOUNT_NO.fullmatch(account):
            errors.append(LineError(line, "account_no", f"{account!r} is not 1-28 printable ASCII characters"))
        _gbk_name(name, "account_name", line, errors)
        _choice(status, "AC", "status", line, errors, "A (active) or C (cancelled)")
        debit_limit = _fen(limit, "debit_limit", line, errors, positive=False)
        if len(errors) == n:
            key = (no, bank, account)
            if key in seen:
                errors.append(LineError(line, "account_no",
                                        f"agreement {no}/{bank}/{account} appears again (first on line {seen[key]})"))
                continue
            seen[key] = line
            out.append((line, {"customer_no": no, "bank_code": bank, "account_no": account,
                               "account_name": name, "status": status, "debit_limit": debit_limit}))
    return out


_CHECKS = {"customers": _check_customers, "bills": _check_bills, "agreements": _check_agreements}


def parse_file(kind: str, path: str | Path) -> _Parsed:
    """Read a file and check everything that needs no database."""
    if kind not in HEADERS:
        raise ValueError(f"unknown import kind {kind!r}: one of {', '.join(KINDS)}")
    path = Path(path)
    data = path.read_bytes()
    result = ImportResult(kind=kind, file_name=path.name[:255], sha256=hashlib.sha256(data).hexdigest())
    parsed = _Parsed(kind, path, result)
    errors = result.errors
    text = _decode(data, errors)
    if text is None:
        return parsed
    width = len(HEADERS[kind])
    counted = []

    def sized() -> Iterator[tuple[int, list[str]]]:
        for line, row in _records(text, kind, errors):
            counted.append(line)
            if len(row) != width:
                errors.append(LineError(line, "-", f"{len(row)} field(s), expected {width}"))
                continue
            yield line, row

    parsed.records = _CHECKS[kind](sized(), errors)
    result.lines = len(counted)
    return parsed


# ---------------------------------------------------------------------------------------------
# Helpers shared with corrections and refunds


def chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def key_filters(conn, column, keys: Iterable[str]) -> Iterator:
    """WHERE clauses matching ``column`` against the keys, a chunk at a time: ``IN (...)`` of at
    most CHUNK keys, or on PostgreSQL ``= ANY(array)`` of up to 20,000 (one parameter, cheap to parse)."""
    ordered = sorted(set(keys))
    if conn.dialect.name == "postgresql":
        for chunk in chunks(ordered, 20_000):
            yield column == any_(bindparam(None, list(chunk), type_=postgresql.ARRAY(column.type)))
    else:
        for chunk in chunks(ordered):
            yield column.in_(chunk)


def bulk_insert(conn, table, rows: Sequence[dict]) -> None:
    """Insert many rows: COPY on PostgreSQL (psycopg 3), else one executemany."""
    if not rows:
        return
    if conn.dialect.name == "postgresql" and len(rows) >= 500:
        names = list(rows[0])
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            with cur.copy(f'COPY "{table.name}" ({", ".join(f"{chr(34)}{n}{chr(34)}" for n in names)}) '
                          "FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row[n] for n in names])
        return
    conn.execute(insert(table), list(rows))


def write_entries_bulk(conn, entries: Sequence[Entry], created_at: datetime) -> None:
    """``ledger.journal.write_entries`` for large batches: the entry ids are reserved first
    (``ledger.ids.reserve_ids``), so that no RETURNING is needed and COPY can be used."""
    if not entries:
        return
    ids = reserve_ids(conn, journal_entries, len(entries))
    bulk_insert(conn, journal_entries, [{"entry_id": entry_id, **e.entry_row(created_at)}
                                        for e, entry_id in zip(entries, ids)])
    bulk_insert(conn, journal_lines, [line for e, entry_id in zip(entries, ids) for line in e.line_rows(entry_id)])


def lock_customers(conn, customer_nos: Iterable[str]) -> None:
    """Lock customers' rows (PostgreSQL, Oracle: SELECT ... FOR UPDATE, in key order) so that their
    prepaid balances and bills do not move under us. SQLite needs nothing: BEGIN IMMEDIATE."""
    if conn.dialect.name == "sqlite":
        return
    for where in key_filters(conn, customers.c.customer_no, customer_nos):
        conn.execute(select(customers.c.customer_no).where(where)
                     .order_by(customers.c.customer_no).with_for_update()).all()


def prepaid_balances(conn, customer_nos: Iterable[str]) -> dict[str, int]:
    """Prepaid balance of each named customer that has any movement."""
    out: dict[str, int] = {}
    for where in key_filters(conn, prepaid_movements.c.customer_no, customer_nos):
        rows = conn.execute(select(prepaid_movements.c.customer_no, func.sum(prepaid_movements.c.amount))
                            .where(where)
                            .group_by(prepaid_movements.c.customer_no)).all()
        out.update({no: int(total or 0) for no, total in rows})
    return out


def prepaid_balance(conn, customer_no: str) -> int:
    return prepaid_balances(conn, [customer_no]).get(customer_no, 0)


def unpaid_bills(conn, customer_nos: Iterable[str]) -> dict[str, list[dict]]:
    """Each customer's bills still owing (kind O or N, not reversed, owing > 0), oldest first."""
    reversing = aliased(bills)
    paid = (select(allocations.c.bill_id, func.sum(allocations.c.amount).label("paid"))
            .group_by(allocations.c.bill_id).subquery())
    out: dict[str, list[dict]] = {}
    for where in key_filters(conn, bills.c.customer_no, customer_nos):
        query = (select(bills.c.bill_id, bills.c.customer_no, bills.c.period, bills.c.due_date,
                        bills.c.principal, bills.c.penalty, func.coalesce(paid.c.paid, 0).label("paid"))
                 .select_from(bills.outerjoin(paid, paid.c.bill_id == bills.c.bill_id))
                 .where(where, bills.c.kind.in_(("O", "N")),
                        ~exists().where(reversing.c.reverses_bill_id == bills.c.bill_id))
                 .order_by(bills.c.customer_no, bills.c.period, bills.c.due_date, bills.c.bill_id))
        for row in conn.execute(query):
            owing = int(row.principal) + int(row.penalty) - int(row.paid)
            if owing > 0:
                out.setdefault(row.customer_no, []).append(
                    {"bill_id": row.bill_id, "period": row.period, "due_date": row.due_date, "owing": owing})
    return out


def bill_entry(bill: Mapping, business_date: date, actor: str) -> Entry:
    """The journal entry of a bill; a reversing bill (negative amounts) gets the mirror image."""
    principal, penalty = int(bill["principal"]), int(bill["penalty"])
    kind = "bill_reversal" if principal < 0 else "bill"
    entry = Entry(kind, "bill", bill["bill_id"], business_date, actor)
    entry.debit(RECEIVABLE, principal + penalty, bill["customer_no"])
    entry.credit(REVENUE, principal, bill["customer_no"])
    entry.credit(PENALTY_INCOME, penalty, bill["customer_no"])
    return entry


def apply_prepaid(conn, customer_nos: Iterable[str], *, at: datetime, business_date: date, actor: str,
                  balances: Mapping[str, int] | None = None) -> list[tuple[str, str, int]]:
    """Pay the named customers' unpaid bills from their prepaid balances, oldest first, whole bills
    only, stopping at the first bill the balance does not cover. The caller holds the customers'
    locks. Returns (customer_no, bill_id, amount) of each bill paid."""
    if balances is None:
        balances = prepaid_balances(conn, customer_nos)
    funded = {no: bal for no, bal in balances.items() if bal > 0}
    if not funded:
        return []
    paid: list[tuple[str, str, int]] = []
    for no, owing in unpaid_bills(conn, funded).items():
        balance = funded[no]
        for bill in owing:
            if bill["owing"] > balance:
                break
            balance -= bill["owing"]
            paid.append((no, bill["bill_id"], bill["owing"]))
    if not paid:
        return []
    moves = conn.execute(
        insert(prepaid_movements).returning(prepaid_movements.c.id, sort_by_parameter_order=True),
        [{"customer_no": no, "amount": -amount, "kind": "applied", "bill_id": bill_id, "created_at": at}
         for no, bill_id, amount in paid]).scalars().all()
    conn.execute(insert(allocations), [
        {"bill_id": bill_id, "amount": amount, "prepaid_movement_id": move_id, "created_at": at}
        for (no, bill_id, amount), move_id in zip(paid, moves)])
    entries = []
    for no, bill_id, amount in paid:
        entry = Entry("prepaid_applied", "bill", bill_id, business_date, actor)
        entry.debit(PREPAID, amount, no).credit(RECEIVABLE, amount, no)
        entries.append(entry)
    write_entries(conn, entries, at)
    return paid


def customer_mobiles(conn, customer_nos: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for where in key_filters(conn, customers.c.customer_no, customer_nos):
        out.update(conn.execute(select(customers.c.customer_no, customers.c.mobile)
                                .where(where, customers.c.mobile.is_not(None))).all())
    return out


def bill_notice_rows(conn, new_bills: Sequence[Mapping], paid_ids: set[str], at: datetime) -> list[dict]:
    """Outbox rows telling customers with a mobile of their new bills (kind bill_notice, ref bill:<id>);
    a bill already paid from prepaid is told as paid."""
    mobiles = customer_mobiles(conn, {b["customer_no"] for b in new_bills})
    rows = []
    for b in new_bills:
        mobile = mobiles.get(b["customer_no"])
        if not mobile:
            continue
        total = int(b["principal"]) + int(b["penalty"])
        if b["bill_id"] in paid_ids:
            text = notices.payment_received(b["customer_no"], [b["period"]], total)
        else:
            text = notices.bill_notice(b["customer_no"], b["period"], total, b["due_date"])
        rows.append(notices.outbox_row(b["customer_no"], mobile, "bill_notice", f"bill:{b['bill_id']}", text, at))
    return rows


# ---------------------------------------------------------------------------------------------
# Checks against the database, and applying


class _Rejected(Exception):
    pass


_CUSTOMER_FIELDS = ("customer_name", "customer_type", "status", "prepay_allowed", "mobile")
_AGREEMENT_FIELDS = ("account_name", "status", "debit_limit")


def _existing(conn, table, column, keys: Iterable[str], lock: bool = False) -> dict[str, object]:
    out = {}
    for where in key_filters(conn, column, keys):
        query = select(table).where(where)
        if lock:
            query = query.order_by(column).with_for_update()
        out.update({getattr(row, column.name): row for row in conn.execute(query)})
    return out


class _Context:
    def __init__(self, conn, actor: str, at: datetime, business_date: date, known_banks):
        self.conn, self.actor, self.at, self.business_date = conn, actor, at, business_date
        self.known_banks = known_banks
        self.set_customers: set[str] = set()   # customers from the customers file of this set

    def import_row(self, parsed: _Parsed) -> int:
        r = parsed.result
        import_id = self.conn.execute(insert(imports).returning(imports.c.id), [{
            "kind": r.kind, "file_name": r.file_name, "file_sha256": r.sha256, "lines": r.lines,
            "applied": r.applied, "skipped": r.skipped, "actor": self.actor, "imported_at": self.at}]).scalar_one()
        write_audit(self.conn, [audit_row(self.at, self.actor, "import.apply", "import", import_id,
                                          f"{r.kind} file {r.file_name}", kind=r.kind, file_name=r.file_name,
                                          sha256=r.sha256, lines=r.lines, applied=r.applied, skipped=r.skipped)])
        return import_id


def _customers(ctx: _Context, parsed: _Parsed, apply: bool) -> None:
    conn, r = ctx.conn, parsed.result
    ctx.set_customers = {values["customer_no"] for _, values in parsed.records}
    if r.errors or not apply:
        return
    known = _existing(conn, customers, customers.c.customer_no, ctx.set_customers, lock=True)
    new, changed = [], []
    for _, values in parsed.records:
        old = known.get(values["customer_no"])
        if old is None:
            new.append(values)
        elif any(getattr(old, f) != values[f] for f in _CUSTOMER_FIELDS):
            changed.append((old, values))
    r.created, r.updated = len(new), len(changed)
    r.applied, r.skipped = len(new) + len(changed), len(parsed.records) - len(new) - len(changed)
    r.import_id = import_id = ctx.import_row(parsed)
    at = ctx.at
    bulk_insert(conn, customers, [{**v, "district": None, "version": 1, "updated_at": at} for v in new])
    if changed:
        conn.execute(update(customers).where(customers.c.customer_no == bindparam("key"))
                     .values({f: bindparam(f) for f in (*_CUSTOMER_FIELDS, "version", "updated_at")}),
                     [{**v, "key": v["customer_no"], "version": old.version + 1, "updated_at": at}
                      for old, v in changed])
    history = [{**v, "version": 1, "import_id": import_id, "recorded_at": at} for v in new]
    history += [{**v, "version": old.version + 1, "import_id": import_id, "recorded_at": at} for old, v in changed]
    bulk_insert(conn, customer_history, [{k: h[k] for k in (
        "customer_no", "version", *_CUSTOMER_FIELDS, "import_id", "recorded_at")} for h in history])
    audits = [audit_row(at, ctx.actor, "customer.create", "customer", v["customer_no"], f"import {import_id}",
                        import_id=import_id, version=1, **{f: v[f] for f in _CUSTOMER_FIELDS}) for v in new]
    audits += [audit_row(at, ctx.actor, "customer.update", "customer", v["customer_no"], f"import {import_id}",
                         import_id=import_id, version=old.version + 1,
                         changes={f: [getattr(old, f), v[f]] for f in _CUSTOMER_FIELDS if getattr(old, f) != v[f]})
               for old, v in changed]
    bulk_insert(conn, audit_log, audits)


def _check_customers_known(ctx: _Context, parsed: _Parsed) -> None:
    nos = {v["customer_no"] for _, v in parsed.records}
    known = set(_existing(ctx.conn, customers, customers.c.customer_no, nos - ctx.set_customers)) | ctx.set_customers
    for line, values in parsed.records:
        if values["customer_no"] not in known:
            parsed.result.errors.append(LineError(line, "customer_no",
                                                  f"unknown customer {values['customer_no']}"))


_BILL_CONTENT = ("customer_no", "period", "principal", "penalty", "due_date")


def _bills(ctx: _Context, parsed: _Parsed, apply: bool) -> None:
    conn, r = ctx.conn, parsed.result
    _check_customers_known(ctx, parsed)
    ids = [v["bill_id"] for _, v in parsed.records]
    known = _existing(conn, bills, bills.c.bill_id, ids)
    first: dict[str, tuple[int, dict]] = {}
    new, skipped = [], 0
    for line, v in parsed.records:
        old = known.get(v["bill_id"])
        if old is None and v["bill_id"] in first:
            first_line, old_values = first[v["bill_id"]]
            if all(old_values[f] == v[f] for f in _BILL_CONTENT):
                skipped += 1
            else:
                r.errors.append(LineError(line, "bill_id", f"bill {v['bill_id']} appears again with other "
                                                           f"content (first on line {first_line})"))
            continue
        if old is None:
            first[v["bill_id"]] = (line, v)
            new.append(v)
            continue
        diffs = [f for f in _BILL_CONTENT if getattr(old, f) != v[f]]
        if old.kind != "O":
            diffs.insert(0, "kind")
        if diffs:
            r.errors.append(LineError(line, "bill_id", f"bill {v['bill_id']} was imported before with other "
                                                       f"content ({', '.join(diffs)} differ); corrections are made "
                                                       f"with 'gridpay ledger correct'"))
        else:
            skipped += 1
    if r.errors or not apply:
        return
    r.created, r.applied, r.skipped = len(new), len(new), skipped
    r.import_id = import_id = ctx.import_row(parsed)
    if not new:
        return
    at = ctx.at
    bulk_insert(conn, bills, [{**v, "kind": "O", "reverses_bill_id": None, "replaces_bill_id": None,
                               "import_id": import_id, "created_at": at} for v in new])
    write_entries_bulk(conn, [bill_entry(v, ctx.business_date, ctx.actor) for v in new], at)
    touched = {v["customer_no"] for v in new}
    funded = [no for no, bal in prepaid_balances(conn, touched).items() if bal > 0]
    paid = []
    if funded:
        lock_customers(conn, funded)
        paid = apply_prepaid(conn, funded, at=at, business_date=ctx.business_date, actor=ctx.actor)
    r.prepaid_applied = sum(1 for _, bill_id, _ in paid if bill_id in first)
    rows = bill_notice_rows(conn, new, {bill_id for _, bill_id, _ in paid}, at)
    bulk_insert(conn, outbox, rows)
    r.notices = len(rows)


def _agreements(ctx: _Context, parsed: _Parsed, apply: bool) -> None:
    conn, r = ctx.conn, parsed.result
    _check_customers_known(ctx, parsed)
    nos = sorted({v["customer_no"] for _, v in parsed.records})
    current: dict[tuple, object] = {}
    for where in key_filters(conn, agreements.c.customer_no, nos):
        query = select(agreements).where(where)
        if conn.dialect.name != "sqlite":
            query = query.order_by(agreements.c.id).with_for_update()
        for row in conn.execute(query):
            current[(row.customer_no, row.bank_code, row.account_no)] = row
    # the state after this file: the file's rows over the current ones
    final: dict[str, dict[tuple, tuple[int | None, str]]] = {}
    for key, row in current.items():
        final.setdefault(key[0], {})[key] = (None, row.status)
    for line, v in parsed.records:
        key = (v["customer_no"], v["bank_code"], v["account_no"])
        final.setdefault(key[0], {})[key] = (line, v["status"])
    for no, rows in final.items():
        active = sorted(((line or 0), key) for key, (line, status) in rows.items() if status == "A")
        if len(active) <= 1:
            continue
        names = ", ".join(f"{k[1]}/{k[2]}" + (f" (line {ln})" if ln else " (already active)") for ln, k in active)
        for line, key in active:
            if line:
                r.errors.append(LineError(line, "status", f"customer {no} would have {len(active)} active "
                                                          f"agreements: {names}; at most one may be active"))
    bank_codes = {v["bank_code"] for _, v in parsed.records}
    known_banks = set(conn.execute(select(banks.c.bank_code).where(banks.c.bank_code.in_(sorted(bank_codes)))).scalars())
    missing = sorted(bank_codes - known_banks)
    if ctx.known_banks is not None:
        for line, v in parsed.records:
            if v["bank_code"] in missing and v["bank_code"] not in ctx.known_banks:
                r.errors.append(LineError(line, "bank_code", f"unknown bank {v['bank_code']} (not in the "
                                                             f"configuration's banks nor the banks table)"))
    if r.errors or not apply:
        return
    new, changed = [], []
    for _, v in parsed.records:
        old = current.get((v["customer_no"], v["bank_code"], v["account_no"]))
        if old is None:
            new.append(v)
        elif any(getattr(old, f) != v[f] for f in _AGREEMENT_FIELDS):
            changed.append((old, v))
    r.created, r.updated = len(new), len(changed)
    r.applied = len(new) + len(changed)
    r.skipped = len(parsed.records) - r.applied
    r.import_id = import_id = ctx.import_row(parsed)
    at, audits = ctx.at, []
    if missing:
        names = ctx.known_banks or {}
        conn.execute(insert(banks), [{"bank_code": code, "name": str(names.get(code, "") if isinstance(names, dict)
                                                                     else "")[:100], "created_at": at}
                                     for code in missing])
        audits += [audit_row(at, ctx.actor, "bank.create", "bank", code, f"import {import_id}", import_id=import_id)
                   for code in missing]
        r.banks_added = missing
    # cancellations first, so that a customer never has two active agreements mid-way
    changed.sort(key=lambda pair: pair[1]["status"] != "C")
    if changed:
        conn.execute(update(agreements).where(agreements.c.id == bindparam("key"))
                     .values({f: bindparam(f) for f in (*_AGREEMENT_FIELDS, "version", "updated_at")}),
                     [{**{f: v[f] for f in _AGREEMENT_FIELDS}, "key": old.id, "version": old.version + 1,
                       "updated_at": at} for old, v in changed])
    if new:
        ids = conn.execute(insert(agreements).returning(agreements.c.id, sort_by_parameter_order=True),
                           [{**v, "version": 1, "updated_at": at} for v in new]).scalars().all()
    else:
        ids = []
    audits += [audit_row(at, ctx.actor, "agreement.create", "agreement", agreement_id, f"import {import_id}",
                         import_id=import_id, version=1, **v) for v, agreement_id in zip(new, ids)]
    audits += [audit_row(at, ctx.actor, "agreement.update", "agreement", old.id, f"import {import_id}",
                         import_id=import_id, version=old.version + 1, customer_no=v["customer_no"],
                         bank_code=v["bank_code"], account_no=v["account_no"],
                         changes={f: [getattr(old, f), v[f]] for f in _AGREEMENT_FIELDS if getattr(old, f) != v[f]})
               for old, v in changed]
    write_audit(conn, audits)


_APPLY = {"customers": _customers, "bills": _bills, "agreements": _agreements}


def import_files(engine: Engine, files: Mapping[str, str | Path], actor: str, *,
                 calendar: BusinessCalendar | None = None, now: datetime | None = None,
                 known_banks: Mapping[str, str] | Iterable[str] | None = None) -> dict[str, ImportResult]:
    """Import a file set ({kind: path}) in the order customers, bills, agreements, all in one
    transaction: either every file is applied or none is. Bills and agreements may name customers
    of the customers file of the same set. ``known_banks`` (codes, or codes to names), when given,
    limits the banks an agreement may name to these and those already in the banks table; a bank
    not yet in the banks table is added. Returns a result per file; look at ``.errors``."""
    if not actor or not actor.strip():
        raise ValueError("an import names who makes it (actor)")
    unknown = set(files) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown import kind(s) {', '.join(sorted(unknown))}: one of {', '.join(KINDS)}")
    at = now or utcnow()
    business_date = (calendar or BusinessCalendar()).business_date(at)
    if known_banks is not None and not isinstance(known_banks, Mapping):
        known_banks = {code: "" for code in known_banks}
    parsed = [parse_file(kind, files[kind]) for kind in KINDS if kind in files]
    results = {p.kind: p.result for p in parsed}
    try:
        with engine.begin() as conn:
            ctx = _Context(conn, actor, at, business_date, known_banks)
            rejected = False
            for p in parsed:
                # after a bad file, keep checking against the database for a complete report
                rejected = rejected or bool(p.result.errors)
                _APPLY[p.kind](ctx, p, not rejected)
                rejected = rejected or bool(p.result.errors)
            if rejected:
                raise _Rejected
    except _Rejected:
        for r in results.values():
            r.import_id = None
            r.applied = r.skipped = r.created = r.updated = r.prepaid_applied = r.notices = 0
            r.banks_added = []
            r.errors.sort()
    return results


def import_file(engine: Engine, kind: str, path: str | Path, actor: str, **kwargs) -> ImportResult:
    """Import one file (customers, bills or agreements); see ``import_files``."""
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
