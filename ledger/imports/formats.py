"""The import files' kinds, columns and checks of single values, and what an import returns."""
from __future__ import annotations

import re
from dataclasses import dataclass, field


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


