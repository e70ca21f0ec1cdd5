"""The daily feed files written without anyone asking: the drop directory's watcher (one per drop
directory) writes each ended business date's file once, catching up over ``CATCH_UP_DAYS`` after
an outage. ``gridpay ledger feed export`` writes (or rewrites) any day by hand."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from config.clock import Clock
from ledger.billing_feed.daily_file import FeedFile, write_feed_file
from ledger.billing_feed.tables import billing_feed
from ledger.db import read_only

CATCH_UP_DAYS = 7


def write_due_files(engine, drop_dir, *, clock: Clock, now: datetime, actor: str) -> list[FeedFile]:
    """The files of the ended business dates of the last ``CATCH_UP_DAYS`` that have none in
    ``DROP/outgoing/`` yet, from the feed's first day on (a site without feed rows writes none)."""
    today, out = clock.business_date(now), Path(drop_dir) / "outgoing"
    missing = [day for day in (today - timedelta(days=n) for n in range(CATCH_UP_DAYS, 0, -1))
               if not any(out.glob(f"billing_feed_{day:%Y%m%d}_*.txt"))]
    if not missing:
        return []                   # the usual poll: no database work
    with read_only(engine.connect()) as conn:   # the feed's first row, by its primary key
        first = conn.execute(select(billing_feed.c.business_date).order_by(billing_feed.c.seq).limit(1)).scalar()
    if first is None:
        return []
    return [write_feed_file(engine, drop_dir, day, clock=clock, now=now, actor=actor)
            for day in missing if day >= first]
