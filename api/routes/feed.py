"""The billing system's payment feed (``feed.read``, a client's key scope): ``GET /v1/feed?after=&limit=``
returns the rows with seq > after in seq order and the ``after`` to ask with next
(ledger.billing_feed.read_feed; docs/billing-feed.md). On SQLite a read-only transaction: reading
takes no write lock from the posting."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from api.deps import ApiContext, context, require
from api.json_types import json_row
from api.problems import problem_responses
from ledger.billing_feed import read_feed
from ledger.billing_feed.read import MAX_PAGE
from ledger.db import read_only
from ledger.identity import Principal

router = APIRouter(tags=["billing feed"], responses=problem_responses(400, 401, 403, 422))


class FeedPage(BaseModel):
    items: list[dict[str, Any]]
    next_after: int


@router.get("/v1/feed", response_model=FeedPage)
def feed(after: int = Query(0, ge=0, le=2**62, description="the last seq applied (0: from the start)"),
         limit: int = Query(500, ge=1, le=MAX_PAGE),
         principal: Principal = Depends(require("feed.read")), ctx: ApiContext = Depends(context)):
    """The next page of the feed after ``after``; ask again with ``next_after`` (the same value when
    nothing new has come)."""
    with read_only(ctx.engine.connect()) as conn, conn.begin():
        rows, next_after = read_feed(conn, after, limit)
    return FeedPage(items=[json_row(r) for r in rows], next_after=next_after)
