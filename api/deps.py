"""What endpoints depend on: the service's context, the caller's address, the authenticated
principal and ``require(permission)``.

``Authorization: Bearer <token>`` carries an operator's session token (from ``POST /v1/sessions``)
or a client's API key (``gpk_...``). ``require(permission)`` authenticates and then authorises with
``ledger.identity.authorize``: every refusal is audited, logged and counted by ledger.identity
(a request without credentials is logged and counted: there is no one to audit).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from sqlalchemy import Engine

from api.metrics import ApiMetrics
from api.problems import Problem
from api.throttle import LoginThrottle
from config.clock import Clock
from config.settings import Settings
from ledger.identity import Principal, authenticate_api_key, authenticate_session, authorize

log = logging.getLogger("gridpay.access")
API_KEY_PREFIX = "gpk_"


@dataclass
class ApiContext:
    """One per application: what every request shares. ``engine`` is the database (the primary):
    every write, the audit log and whatever decides money. ``reads`` is for the heavy reads that
    tolerate a replica's lag (reports, the day at a glance): the replica (``database.replica_url``)
    where there is one, else ``engine`` itself."""
    settings: Settings
    engine: Engine
    clock: Clock
    metrics: ApiMetrics
    login_throttle: LoginThrottle
    reads: Engine | None = None

    def __post_init__(self) -> None:
        if self.reads is None:
            self.reads = self.engine

    def now(self) -> datetime:
        return self.clock.now()


async def context(request: Request) -> ApiContext:
    # async: FastAPI runs a plain function's dependency in its thread pool, a hop per dependency
    return request.app.state.context


def source_of(request: Request) -> str:
    """Where the request came from, for the audit log (behind HAProxy: uvicorn takes the client's
    address from X-Forwarded-For when the proxy is one of ``api.trusted_proxies``)."""
    host = request.client.host if request.client else "unknown"
    return f"api {host}"


def bearer_token(request: Request) -> str | None:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def current_principal(request: Request, ctx: ApiContext = Depends(context)) -> Principal:
    """The authenticated principal (operator by session token, client by API key), or a 401 problem."""
    token = bearer_token(request)
    if token is None:
        ctx.metrics.auth.refused("no_credentials")
        log.info("api request without credentials from %s: %s %s", source_of(request), request.method,
                 request.url.path)
        raise Problem("not-authenticated", "send Authorization: Bearer <session token or API key>",
                      headers={"WWW-Authenticate": "Bearer"})
    if token.startswith(API_KEY_PREFIX):
        principal = authenticate_api_key(ctx.engine, token, ctx.now(), metrics=ctx.metrics.auth)
    else:
        principal = authenticate_session(ctx.engine, token, ctx.now(), access=ctx.settings.access,
                                         metrics=ctx.metrics.auth)
    request.state.principal = principal
    return principal


def require(permission: str | tuple[str, ...] | None) -> Callable[..., Principal]:
    """A dependency: the principal, authenticated and (unless ``permission`` is None: any
    authenticated principal) holding ``permission`` (a tuple: any one of them, e.g. either level of
    a refund approval); else a 401 or 403 problem. The permission is kept on the dependency
    (``.permission``) for the table-driven access test."""
    alternatives = (permission,) if isinstance(permission, str) else permission

    async def dependency(principal: Principal = Depends(current_principal),
                         ctx: ApiContext = Depends(context)) -> Principal:
        if alternatives and not any(principal.may(p) for p in alternatives):
            # refused: audited and counted (the first permission named) by a database write, off the event loop
            await run_in_threadpool(authorize, ctx.engine, principal, alternatives[0], ctx.now(), metrics=ctx.metrics.auth)
        return principal

    dependency.permission = permission
    name = "_or_".join(alternatives) if alternatives else "authenticated"
    dependency.__name__ = f"require_{name}".replace(".", "_")
    return dependency


def permission_of(route) -> tuple[bool, str | None]:
    """(whether ``route`` authenticates, the permission it requires) from its dependencies."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if hasattr(dep.call, "permission"):
            return True, dep.call.permission
        stack.extend(dep.dependencies)
    return False, None
