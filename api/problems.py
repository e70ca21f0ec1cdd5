"""Errors as RFC 9457 problem documents (``application/problem+json``), one stable ``type`` per error.

Everything the service refuses goes through ``problem_response``: a ``Problem`` raised by an
endpoint, an access refusal of ``ledger.identity`` (its public code is the slug), a ledger
``Refused``, FastAPI's validation errors (its default 422 body is replaced) and Starlette's 404/405.
The table of types is ``TYPES``; docs/api.md lists it and tests/test_api_problems.py checks that.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.errors import Refused
from ledger.identity import AccessRefused

log = logging.getLogger("gridpay.api")

BASE = "https://gridpay.example/problems/"
MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str


TYPES: dict[str, ProblemType] = {t.slug: t for t in (
    ProblemType("not-authenticated", 401, "Not authenticated"),
    ProblemType("bad-credentials", 401, "Wrong user name, password or TOTP code"),
    ProblemType("session-expired", 401, "Session expired"),
    ProblemType("bad-key", 401, "API key not valid"),
    ProblemType("key-expired", 401, "API key expired"),
    ProblemType("forbidden", 403, "Not allowed"),
    ProblemType("locked", 423, "Account locked"),
    ProblemType("too-many-logins", 429, "Too many log-in attempts"),
    ProblemType("not-a-session", 400, "Not a session"),
    ProblemType("not-found", 404, "Not found"),
    ProblemType("method-not-allowed", 405, "Method not allowed"),
    ProblemType("invalid-request", 422, "Request not valid"),
    ProblemType("bad-cursor", 400, "Cursor not valid"),
    ProblemType("idempotency-key-missing", 400, "Idempotency-Key header missing"),
    ProblemType("idempotency-key-reused", 422, "Idempotency-Key used for another request"),
    ProblemType("idempotency-in-progress", 409, "Request with this Idempotency-Key in progress"),
    ProblemType("debit-in-flight", 409, "A debit of this customer is in flight"),
    ProblemType("refused", 422, "Refused by the ledger"),
    ProblemType("bad-request", 400, "Bad request"),
    ProblemType("internal-error", 500, "Internal error"),
)}


class ProblemDoc(BaseModel):
    """An RFC 9457 problem document."""
    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str = ""
    instance: str = ""


class Problem(Exception):
    """Raise to answer with the problem ``slug`` (a key of ``TYPES``); ``extra``: more members."""

    def __init__(self, slug: str, detail: str = "", headers: dict[str, str] | None = None, **extra):
        super().__init__(detail or slug)
        self.type = TYPES[slug]
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body = {"type": BASE + problem.type.slug, "title": problem.type.title, "status": problem.type.status,
            "detail": problem.detail, "instance": request.url.path, **problem.extra}
    return JSONResponse(body, problem.type.status, headers=problem.headers, media_type=MEDIA_TYPE)


def _access_refused(exc: AccessRefused) -> Problem:
    slug = exc.code.replace("_", "-")
    return Problem(slug if slug in TYPES else "forbidden", str(exc))


def _validation(exc: RequestValidationError) -> Problem:
    # location and message only: the input itself may be a secret (a password) or not JSON at all
    errors = [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")),
               "type": str(e.get("type", ""))} for e in exc.errors()]
    return Problem("invalid-request", "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors), errors=errors)


def _http(exc: StarletteHTTPException) -> Problem:
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "bad-request")
    return Problem(slug, str(exc.detail), headers=dict(exc.headers or {}))


def install(app: FastAPI) -> None:
    """The one exception handler, for every kind of refusal (and the last resort: a 500 problem)."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, Problem):
            problem = exc
        elif isinstance(exc, AccessRefused):
            problem = _access_refused(exc)
        elif isinstance(exc, Refused):
            problem = Problem("refused", str(exc))
        elif isinstance(exc, RequestValidationError):
            problem = _validation(exc)
        elif isinstance(exc, StarletteHTTPException):
            problem = _http(exc)
        else:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
            problem = Problem("internal-error", "the request failed; the service's log has the details")
        return problem_response(request, problem)

    for kind in (Problem, AccessRefused, Refused, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)


def _schema_ref() -> dict:
    return {"$ref": "#/components/schemas/ProblemDoc"}


def problem_responses(*statuses: int) -> dict:
    """OpenAPI ``responses`` for a router: each status (and any other: ``default``) answers a problem."""
    entry = {"content": {MEDIA_TYPE: {"schema": _schema_ref()}}}
    out: dict = {status: {"description": "a problem document", **entry} for status in statuses}
    out["default"] = {"description": "a problem document (any other refusal)", **entry}
    return out
