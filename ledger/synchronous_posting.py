"""``post``: postings applied at once in a transaction of their own, with the group committer's retry
rules (``ledger.group_commit.Poster``) - for the back office, the debit results' tests and scripts.
Beside ``ledger.posting`` rather than in it: the retry rules import the posting module."""
from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterable

from ledger.business_date import BusinessCalendar, utcnow
from ledger.group_commit import Poster
from ledger.posting import Outcome, Posting


def post(engine, postings: Iterable[Posting], calendar: BusinessCalendar | None = None,
         clock: Callable[[], datetime] | None = None) -> list[Outcome]:
    """Post synchronously in one transaction, with the group committer's retry rules."""
    return Poster(engine, calendar or BusinessCalendar(), clock or utcnow).process(list(postings))
