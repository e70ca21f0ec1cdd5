"""The billing system's payment feed (docs/billing-feed.md): every change that matters to billing,
numbered without gaps in commit order, written by the posting module in the money's transaction.

- ``read_feed(conn, after, limit) -> (rows, next_after)``: the next page after a seq;
- ``write_feed_file(engine, drop_dir, business_date, clock=, now=, actor=)``: the day's file in
  ``DROP/outgoing/``; ``read_feed_file(path)`` reads one back, checking it is whole;
- ``feed_failures(conn)``: the feed's invariants, for ``ledger verify``.
"""
from ledger.billing_feed.daily_file import FeedFile, read_feed_file, write_feed_file
from ledger.billing_feed.read import MAX_PAGE, read_feed
from ledger.billing_feed.verify import feed_failures

__all__ = ["FeedFile", "MAX_PAGE", "feed_failures", "read_feed", "read_feed_file", "write_feed_file"]
