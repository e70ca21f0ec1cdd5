"""``post``: postings applied at once in a transaction of their own, with the group committer's retry
rules (``ledger.group_commit.Poster``) - for the back office, the debit results' tests and scripts.
Beside ``ledger.posting`` rather than in it: the retry rules import the posting module."""
from __future__ import annotations

from typing import Iterable

from config.clock import SYSTEM_CLOCK, Clock
from ledger.group_commit import Poster
from ledger.posting import Outcome, Posting


def post(engine, postings: Iterable[Posting], clock: Clock = SYSTEM_CLOCK) -> list[Outcome]:
    """Post synchronously in one transaction, with the group committer's retry rules."""
    return Poster(engine, clock).process(list(postings))
