"""The bank transaction file (docs/spec/INTERFACE.md §7.1): read and check it whole.

``read_bank_file(path)`` decodes (GBK), checks every line and the header's count and sum against
the lines, and returns a ``BankFile``: ``errors`` lists every bad line with its field and reason
(then nothing of the file may be applied), else ``entries`` maps ``channel + RRN`` to
``(amount, status, line number)`` for matching. Lines are kept as text so that the few lines an
exception needs can be read again by number; a million lines take about 1.5 s and ~300 MB here.

Rules where §7.1 is silent: a trailing newline is allowed and ``\\r\\n`` is read as ``\\n``; a
blank line inside the file is an error; (channel, RRN) must be unique in a file; amounts are
integer fen > 0 on S and R lines alike (an R line carries the amount of the reversed payment);
a file named ``{bank}_{YYYYMMDD}.txt`` must agree with its header.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

MAX_ERRORS = 10_000   # listed; the rest are counted

NAME = re.compile(r"^(\d{1,11})_(\d{8})\.txt$")
HEADER = re.compile(r"H\|(\d{1,11})\|(\d{8})\|(\d{1,9})\|(\d{1,18})")
LINE = re.compile(
    r"D\|([CD])\|((?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?:[01]\d|2[0-3])[0-5]\d[0-5]\d)"
    r"\|(\d{6})\|([0-9A-Za-z]{1,12})\|([0-9A-Za-z]{1,20})\|([1-9]\d{0,14})\|([SR])\|([\x20-\x7b\x7d-\x7e]{0,20})")
D_FIELDS = ("record_type", "channel", "transmission", "stan", "rrn", "customer_no", "amount", "status", "terminal")
H_FIELDS = ("record_type", "bank_code", "business_date", "count", "sum")


@dataclass(frozen=True, order=True)
class LineError:
    line: int       # 1 = the header
    field: str      # the field's name, or "-" for the whole line
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}, field {self.field}: {self.reason}"


@dataclass
class BankLine:
    line_no: int
    channel: str
    transmitted: str    # YYYYMMDDhhmmss
    stan: str
    rrn: str
    customer_no: str
    amount: int
    status: str         # S | R
    terminal: str


@dataclass
class BankFile:
    path: Path
    sha256: str
    bank_code: str = ""
    business_date: date | None = None
    header_count: int = 0
    header_sum: int = 0
    count: int = 0                  # D lines
    sum_s: int = 0                  # sum of S lines' amounts
    errors: list[LineError] = field(default_factory=list)
    more_errors: int = 0            # errors beyond MAX_ERRORS, counted only
    entries: dict[str, tuple[int, str, int]] = field(default_factory=dict)   # channel+rrn -> (amount, status, line)
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def file_name(self) -> str:
        return self.path.name

    def error(self, line: int, fld: str, reason: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(LineError(line, fld, reason))
        else:
            self.more_errors += 1

    def line(self, line_no: int) -> BankLine:
        f = self.lines[line_no - 1].split("|")
        return BankLine(line_no, f[1], f[2], f[3], f[4], f[5], int(f[6]), f[7], f[8])

    def summary(self) -> str:
        if self.errors:
            n = len(self.errors) + self.more_errors
            return (f"bank file {self.file_name}: REJECTED, {n} error(s); nothing was applied. "
                    + "; ".join(str(e) for e in self.errors[:5]) + (" ..." if n > 5 else ""))
        return (f"bank file {self.file_name}: bank {self.bank_code}, business date {self.business_date}, "
                f"{self.count} lines, S sum {self.sum_s}")


def _valid_date(text: str) -> date | None:
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _diagnose(bf: BankFile, line_no: int, text: str) -> None:
    """Name every bad field of a D line that did not match the pattern."""
    f = text.split("|")
    if f[0] != "D":
        bf.error(line_no, "record_type", f"must be D (a header H is only allowed on line 1), not {f[0][:10]!r}")
        return
    if len(f) != 9:
        bf.error(line_no, "-", f"a D line has 9 fields separated by '|', this one has {len(f)}")
        return
    _, channel, tx, stan, rrn, cust, amount, status, terminal = f
    found = False

    def bad(name: str, reason: str) -> None:
        nonlocal found
        found = True
        bf.error(line_no, name, reason)

    if channel not in ("C", "D"):
        bad("channel", f"must be C (counter) or D (debit), not {channel!r}")
    if not re.fullmatch(r"\d{14}", tx):
        bad("transmission", f"must be 14 digits YYYYMMDDhhmmss, not {tx!r}")
    elif _valid_date(tx[:8]) is None or int(tx[8:10]) > 23 or int(tx[10:12]) > 59 or int(tx[12:]) > 59:
        bad("transmission", f"not a valid date and time: {tx!r}")
    if not re.fullmatch(r"\d{6}", stan):
        bad("stan", f"must be 6 digits, not {stan!r}")
    if not re.fullmatch(r"[0-9A-Za-z]{1,12}", rrn):
        bad("rrn", f"must be 1-12 letters or digits, not {rrn!r}")
    if not re.fullmatch(r"[0-9A-Za-z]{1,20}", cust):
        bad("customer_no", f"must be 1-20 letters or digits, not {cust!r}")
    if not re.fullmatch(r"\d{1,15}", amount):
        bad("amount", f"must be an integer number of fen, not {amount!r}")
    elif int(amount) <= 0:
        bad("amount", "must be greater than 0")
    elif amount.startswith("0"):
        bad("amount", f"no leading zeros: {amount!r}")
    if status not in ("S", "R"):
        bad("status", f"must be S (succeeded) or R (reversed), not {status!r}")
    if not re.fullmatch(r"[\x20-\x7b\x7d-\x7e]{0,20}", terminal):
        bad("terminal", f"at most 20 printable characters, not {terminal[:30]!r}")
    if not found:
        bad("-", "malformed line")


def read_bank_file(path: str | Path, data: bytes | None = None) -> BankFile:
    path = Path(path)
    if data is None:
        data = path.read_bytes()
    bf = BankFile(path, hashlib.sha256(data).hexdigest())
    try:
        text = data.decode("gbk")
    except UnicodeDecodeError as exc:
        bf.error(data.count(b"\n", 0, exc.start) + 1, "-", f"not GBK text (byte {exc.start}: {exc.reason})")
        return bf
    del data
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    del text
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        bf.error(1, "-", "the file is empty: a header line is required")
        return bf
    bf.lines = lines

    header = HEADER.fullmatch(lines[0])
    if header is None:
        hf = lines[0].split("|")
        if hf[0] != "H":
            bf.error(1, "record_type", f"the first line must be the header H|bank|YYYYMMDD|count|sum, not {lines[0][:40]!r}")
        elif len(hf) != 5:
            bf.error(1, "-", f"the header has 5 fields separated by '|', this one has {len(hf)}")
        else:
            for name, value, pattern in zip(H_FIELDS[1:], hf[1:], (r"\d{1,11}", r"\d{8}", r"\d{1,9}", r"\d{1,18}")):
                if not re.fullmatch(pattern, value):
                    bf.error(1, name, f"not valid: {value!r}")
    else:
        bf.bank_code, day, count, total = header.groups()
        bf.business_date = _valid_date(day)
        if bf.business_date is None:
            bf.error(1, "business_date", f"not a valid date: {day!r}")
        bf.header_count, bf.header_sum = int(count), int(total)
        named = NAME.match(path.name)
        if named:
            if named.group(1) != bf.bank_code:
                bf.error(1, "bank_code", f"header says bank {bf.bank_code}, the file name says {named.group(1)}")
            if named.group(2) != day:
                bf.error(1, "business_date", f"header says {day}, the file name says {named.group(2)}")

    entries = bf.entries
    match = LINE.fullmatch
    count = sum_s = 0
    checked_days: dict[str, bool] = {}
    for no, line in enumerate(lines[1:], start=2):
        m = match(line)
        if m is None:
            if line == "":
                bf.error(no, "-", "blank line")
            else:
                _diagnose(bf, no, line)
            continue
        channel, tx, _stan, rrn, _cust, amount, status, _term = m.groups()
        day = tx[:8]
        ok = checked_days.get(day)
        if ok is None:
            ok = checked_days[day] = _valid_date(day) is not None
        if not ok:
            bf.error(no, "transmission", f"not a valid date: {tx!r}")
            continue
        key = channel + rrn
        amount = int(amount)
        if key in entries:
            bf.error(no, "rrn", f"channel {channel} RRN {rrn} already on line {entries[key][2]}")
            continue
        entries[key] = (amount, status, no)
        count += 1
        if status == "S":
            sum_s += amount
    bf.count, bf.sum_s = count, sum_s
    if header is not None:
        bad_lines = len(lines) - 1 - count
        if bf.header_count != len(lines) - 1:
            bf.error(1, "count", f"header says {bf.header_count} D lines, the file has {len(lines) - 1}")
        if bf.header_sum != sum_s:
            suffix = f" (not counting {bad_lines} bad line(s))" if bad_lines else ""
            bf.error(1, "sum", f"header says the S lines sum to {bf.header_sum} fen, they sum to {sum_s}{suffix}")
    bf.errors.sort()
    if bf.errors:
        bf.entries = {}
    return bf
