"""The billing feed as a daily file in ``DROP/outgoing/`` (docs/billing-feed.md, "The daily file").

``billing_feed_{YYYYMMDD}_{first}-{last}.txt``: GBK (the rows are ASCII), ``\\n`` line ends, ``|``
between fields, as the bank contract's files (docs/spec/INTERFACE.md §7):

    H|BILLING_FEED|{business date YYYYMMDD}|{first seq}|{last seq}
    D|{the row's columns in billing_feed's order; empty for NULL; at as YYYYMMDDhhmmssffffff UTC}
    T|{number of D lines}|{sum of amount_fen}

The day's rows are ``read.day_range``'s. The file is written to ``.{name}.part``, fsynced and
renamed, so a reader never sees half of it; written again it has the same bytes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from ledger.audit import audit_row, write_audit
from ledger.billing_feed.read import COLUMNS, day_end, day_range, day_rows
from config.clock import Clock
from ledger.db import read_only
from ledger.errors import Refused

ENCODING = "gbk"
AT_FORMAT = "%Y%m%d%H%M%S%f"
INTEGERS = {"seq", "amount_fen", "payment_id", "reversal_id", "debit_id", "refund_id", "prepaid_movement_id",
            "bill_owing_fen", "customer_owing_fen", "prepaid_balance_fen", "customer_due_fen"}


@dataclass(frozen=True)
class FeedFile:
    path: Path
    business_date: date
    first: int
    last: int
    count: int
    total: int              # sum of amount_fen
    superseded: tuple[str, ...] = ()   # files of the same day with another range, removed

    def summary(self) -> str:
        gone = f"; replaced {', '.join(self.superseded)}" if self.superseded else ""
        return (f"{self.path}: {self.business_date.isoformat()}, seq {self.first}-{self.last}, {self.count} rows, "
                f"{self.total} fen{gone}")


def file_name(business_date: date, first: int, last: int) -> str:
    return f"billing_feed_{business_date:%Y%m%d}_{first}-{last}.txt"


def _field(name: str, value) -> str:
    if value is None:
        return ""
    if name == "at":
        return value.astimezone(timezone.utc).strftime(AT_FORMAT)
    if name == "business_date":
        return f"{value:%Y%m%d}"
    return str(value)


def d_line(row: dict) -> str:
    """A feed row as the file's D line."""
    return "D|" + "|".join(_field(c, row[c]) for c in COLUMNS)


def feed_file_bytes(business_date: date, first: int, last: int, rows: list[dict]) -> bytes:
    lines = [f"H|BILLING_FEED|{business_date:%Y%m%d}|{first}|{last}"]
    lines += [d_line(row) for row in rows]
    lines.append(f"T|{len(rows)}|{sum(row['amount_fen'] for row in rows)}")
    return ("\n".join(lines) + "\n").encode(ENCODING)


def write_feed_file(engine, drop_dir, business_date: date, *, clock: Clock, now: datetime,
                    actor: str) -> FeedFile:
    """Write the day's feed file to ``drop_dir/outgoing/`` (audited as ``feed.export``). Refused
    before the day is over. Files of the same day with another range (rows came in after an earlier
    export) are removed once the new one is in place, and named in the result."""
    if now < day_end(clock, business_date):
        raise Refused(f"business date {business_date.isoformat()} is not over yet: its feed file would miss rows")
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":   # the range and its rows from one snapshot
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with read_only(conn).begin():
            first, last = day_range(conn, clock, business_date)
            rows = day_rows(conn, first, last)
    out = Path(drop_dir) / "outgoing"
    out.mkdir(parents=True, exist_ok=True)
    name = file_name(business_date, first, last)
    part = out / f".{name}.part"
    with open(part, "wb") as fh:
        fh.write(feed_file_bytes(business_date, first, last, rows))
        fh.flush()
        os.fsync(fh.fileno())
    part.replace(out / name)
    stale = sorted(p.name for p in out.glob(f"billing_feed_{business_date:%Y%m%d}_*.txt") if p.name != name)
    for old in stale:
        (out / old).unlink()
    result = FeedFile(out / name, business_date, first, last, len(rows), sum(r["amount_fen"] for r in rows),
                      tuple(stale))
    with engine.begin() as conn:
        write_audit(conn, [audit_row(now, actor, "feed.export", "billing_feed", business_date.isoformat(),
                                     file=name, first=first, last=last, rows=result.count, total=result.total,
                                     replaced=list(stale))])
    return result


def read_feed_file(path) -> tuple[date, int, int, list[dict]]:
    """A feed file's (business date, first, last, rows as read_feed gives them). Raises ``Refused``
    for a file that is not whole: a bad header, a line of the wrong shape, or a trailer whose count
    or sum disagrees with its lines."""
    lines = Path(path).read_bytes().decode(ENCODING).split("\n")
    if len(lines) < 3 or lines[-1] != "" or not lines[0].startswith("H|BILLING_FEED|"):
        raise Refused(f"{path}: not a whole billing feed file")
    try:
        _, _, day, first, last = lines[0].split("|")
        business_date = datetime.strptime(day, "%Y%m%d").date()
        rows = [_parse_row(line) for line in lines[1:-2]]
        mark, count, total = lines[-2].split("|")
        first, last, count, total = int(first), int(last), int(count), int(total)
    except ValueError as exc:
        raise Refused(f"{path}: not a billing feed file ({exc})") from None
    if mark != "T" or count != len(rows) or total != sum(r["amount_fen"] for r in rows):
        raise Refused(f"{path}: its trailer does not agree with its {len(rows)} lines")
    if [r["seq"] for r in rows] != list(range(first, last + 1)):
        raise Refused(f"{path}: its lines are not seq {first} to {last} in order")
    return business_date, first, last, rows


def _parse_row(line: str) -> dict:
    mark, *values = line.split("|")
    if mark != "D" or len(values) != len(COLUMNS):
        raise ValueError(f"not a D line of {len(COLUMNS)} fields: {line[:60]!r}")
    row = {}
    for name, text in zip(COLUMNS, values):
        if text == "":
            row[name] = None
        elif name == "at":
            row[name] = datetime.strptime(text, AT_FORMAT).replace(tzinfo=timezone.utc)
        elif name == "business_date":
            row[name] = datetime.strptime(text, "%Y%m%d").date()
        else:
            row[name] = int(text) if name in INTEGERS else text
    return row
