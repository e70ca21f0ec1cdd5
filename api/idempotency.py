"""``Idempotency-Key``: every POST that changes something takes one; a retry with the same key and
body gets the first answer again and changes nothing.

A key belongs to its principal (two clients cannot collide) and is kept ``api.idempotency_hours``.
The first request *claims* the key (a row with no answer yet, committed at once, so that a
concurrent duplicate finds it), then makes its change and stores its answer in the same
transaction as the change. A duplicate that finds the claim still unanswered is told 409
``idempotency-in-progress`` (retry later); one that finds an answer gets it again, with the header
``Idempotent-Replayed: true``; the same key with another method, path or body is refused (422
``idempotency-key-reused``). When the change fails (a refusal, a crash) the claim is released:
nothing changed, so a retry may try again.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from fastapi import Depends, Header, Request
from fastapi.responses import Response
from sqlalchemy import Engine, and_, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from api.deps import ApiContext, context, current_principal
from api.problems import Problem
from api.tables import api_idempotency as table
from ledger.identity import Principal

log = logging.getLogger("gridpay.api")
REPLAYED = "Idempotent-Replayed"
IDEMPOTENCY_KEY = "Idempotency-Key"


@dataclass(frozen=True)
class IdempotentRequest:
    principal: str
    key: str
    method: str
    path: str
    body_sha256: str

    def where(self):
        return and_(table.c.principal == self.principal, table.c.idem_key == self.key)


def body_digest(raw: bytes) -> str:
    """SHA-256 of the body as canonical JSON (key order and spacing do not make another body)."""
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = raw
    return hashlib.sha256(canonical).hexdigest()


def claim(engine: Engine, request: IdempotentRequest, now: datetime, keep: timedelta) -> tuple[int, str] | None:
    """Claim the key for this request (None), or the first request's answer (status, body) to replay."""
    for _ in range(3):   # a claim released or expired between our insert and our read: claim again
        try:
            with engine.begin() as conn:
                # this key's row only: a key past its time is a new request (no other key's rows are locked)
                conn.execute(delete(table).where(request.where(), table.c.created_at < now - keep))
                conn.execute(insert(table).values(
                    principal=request.principal, idem_key=request.key, method=request.method, path=request.path,
                    body_sha256=request.body_sha256, status=None, response_body=None, created_at=now))
            purge_expired(engine, now, keep)
            return None
        except IntegrityError:
            with engine.connect() as conn:
                found = conn.execute(select(table).where(request.where())).first()
        if found is not None:
            return _answer_of(found, request)
    raise Problem("idempotency-in-progress", "a request with this Idempotency-Key is in progress: retry later",
                  headers={"Retry-After": "1"})


def purge_expired(engine: Engine, now: datetime, keep: timedelta) -> None:
    """Forget the keys past their time. Its own transaction: a purge that fails (two at once on
    PostgreSQL may deadlock) is logged and left to the next request, never the request's failure."""
    try:
        with engine.begin() as conn:
            conn.execute(delete(table).where(table.c.created_at < now - keep))
    except DBAPIError as exc:
        log.warning("purging expired idempotency keys failed (left to the next request): %s", exc.orig)


def _answer_of(found, request: IdempotentRequest) -> tuple[int, str]:
    if (found.method, found.path, found.body_sha256) != (request.method, request.path, request.body_sha256):
        raise Problem("idempotency-key-reused", "this Idempotency-Key was used for another request "
                      f"({found.method} {found.path} with another body): use a new key for a new request")
    if found.status is None:
        raise Problem("idempotency-in-progress", "a request with this Idempotency-Key is in progress: retry later",
                      headers={"Retry-After": "1"})
    return found.status, found.response_body


def store_answer(conn, request: IdempotentRequest, status: int, body: str) -> None:
    """In the change's transaction: the answer a retry will get."""
    conn.execute(update(table).where(request.where()).values(status=status, response_body=body))


def release(engine: Engine, request: IdempotentRequest) -> None:
    with engine.begin() as conn:
        conn.execute(delete(table).where(request.where(), table.c.status.is_(None)))


class Idempotent:
    """What an endpoint gets: ``run(change)`` does the change once per key."""

    def __init__(self, ctx: ApiContext, request: IdempotentRequest):
        self.ctx, self.request = ctx, request

    def run(self, change: Callable[..., tuple[int, object]]) -> Response:
        """``change(conn, now)`` makes the change in ``conn``'s transaction and returns (status, JSON-able
        answer); its answer is stored in the same transaction. A replay returns the stored answer."""
        ctx = self.ctx
        now = ctx.now()
        stored = claim(ctx.engine, self.request, now, timedelta(hours=ctx.settings.api.idempotency_hours))
        if stored is not None:
            return Response(stored[1], stored[0], media_type="application/json", headers={REPLAYED: "true"})
        try:
            with ctx.engine.begin() as conn:
                status, answer = change(conn, now)
                body = json.dumps(answer, ensure_ascii=False, separators=(",", ":"), default=str)
                store_answer(conn, self.request, status, body)
        except BaseException:
            release(ctx.engine, self.request)
            raise
        return Response(body, status, media_type="application/json")


async def idempotent(request: Request,
                     idempotency_key: str | None = Header(None, alias=IDEMPOTENCY_KEY, max_length=200,
                                                          pattern=r"^[\x21-\x7e]+$",
                                                          description="A new random value (e.g. a UUID) per "
                                                          "change; the same value on every retry of it."),
                     principal: Principal = Depends(current_principal),
                     ctx: ApiContext = Depends(context)) -> Idempotent:
    """A dependency of every changing POST: the key (required), the principal and the body's digest.
    Nothing is claimed here: the body is validated after the dependencies run."""
    if not idempotency_key:
        raise Problem("idempotency-key-missing", "a POST that changes something needs an Idempotency-Key header")
    raw = await request.body()
    return Idempotent(ctx, IdempotentRequest(principal.actor, idempotency_key, request.method, request.url.path,
                                             body_digest(raw)))
