"""Reading the billing feed: a page after a sequence number, and a business day's rows.

A reader that has seen seq N never later finds a new row <= N: numbers are taken under the
counter row's lock, held to the commit, so a later number always commits later
(docs/billing-feed.md, "Why the order holds").
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from sqlalchemy import select

from ledger.billing_feed.tables import billing_feed
from config.clock import Clock
from ledger.errors import Refused

MAX_PAGE = 10_000
COLUMNS = tuple(c.name for c in billing_feed.c)   # the rows' keys, in the table's (and the file's) order


def _page_arguments(after, limit) -> None:
    for name, value, low in (("after", after, 0), ("limit", limit, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise Refused(f"{name} must be a whole number >= {low}, not {value!r}")
    if limit > MAX_PAGE:
        raise Refused(f"limit must be at most {MAX_PAGE}, not {limit}")


def read_feed(conn, after: int, limit: int) -> tuple[list[dict], int]:
    """The rows with seq > after, at most ``limit`` of them, in seq order; and the seq to ask after
    next (the last row's, or ``after`` again when there is none yet). Raises ``Refused`` for an
    ``after`` below 0 or a ``limit`` outside 1..MAX_PAGE."""
    _page_arguments(after, limit)
    rows = [as_row(r) for r in conn.execute(select(billing_feed).where(billing_feed.c.seq > after)
                                            .order_by(billing_feed.c.seq).limit(limit)).mappings()]
    return rows, rows[-1]["seq"] if rows else after


def as_row(mapping) -> dict:
    row = dict(mapping)
    if row["at"].tzinfo is None:    # SQLite keeps no zone: the ledger's datetimes are UTC
        row["at"] = row["at"].replace(tzinfo=timezone.utc)
    return row


def day_end(clock: Clock, business_date: date) -> datetime:
    """When a business date ends (UTC): its own date's cut-off, local time."""
    return clock.end_of(business_date)


def last_seq_before(conn, end: datetime) -> int:
    """The highest seq of a row recorded before ``end`` (0: none). Read from the top of the seq
    index down, so for a recent day it reads only the rows since."""
    seq = conn.execute(select(billing_feed.c.seq).where(billing_feed.c.at < end)
                       .order_by(billing_feed.c.seq.desc()).limit(1)).scalar()
    return int(seq or 0)


def day_range(conn, clock: Clock, business_date: date) -> tuple[int, int]:
    """The day's seq range (first, last): the rows after the highest seq recorded before the day
    began, up to the highest recorded before it ended. Contiguous, day after day, so each row is in
    exactly one day and in seq order; a row committed a moment after the day ended but numbered
    before one of the day's own (batches of two processes near midnight) goes with the day.
    An empty day has first = last + 1."""
    start = last_seq_before(conn, day_end(clock, business_date - timedelta(days=1)))
    end = max(start, last_seq_before(conn, day_end(clock, business_date)))
    return start + 1, end


def day_rows(conn, first: int, last: int) -> list[dict]:
    return [as_row(r) for r in conn.execute(select(billing_feed).where(billing_feed.c.seq.between(first, last))
                                            .order_by(billing_feed.c.seq)).mappings()]
