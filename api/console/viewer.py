"""Who is looking at a page: the signed-in operator (from the session cookie), the page's
permission (a refusal is audited and counted by ledger.identity, then answered with a 403 page),
and a form's CSRF token (a wrong one is audited, counted and answered with a 403 page)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from api.console.protection import CSRF_FIELD, SESSION_COOKIE, csrf_matches, csrf_token
from api.deps import ApiContext, source_of
from ledger.identity import Forbidden, NotAuthenticated, Principal, authenticate_session, authorize
from ledger.identity.refusals import record_refusal

log = logging.getLogger("gridpay.access")


@dataclass(frozen=True)
class Viewer:
    principal: Principal
    session_token: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.session_token)


class SignInNeeded(Exception):
    """No live session: the browser is sent to sign in (``reason``: needed or expired)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class PageRefused(Exception):
    """A 403 page: ``kind`` forbidden (the permission) or csrf."""

    def __init__(self, kind: str, permission: str = ""):
        super().__init__(kind)
        self.kind, self.permission = kind, permission


def context_of(request: Request) -> ApiContext:
    return request.app.state.context


async def signed_in(request: Request) -> Viewer:
    ctx = context_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        ctx.metrics.auth.refused("no_credentials")
        log.info("console request without a session from %s: %s %s", source_of(request), request.method,
                 request.url.path)
        raise SignInNeeded("needed")
    try:
        principal = await run_in_threadpool(authenticate_session, ctx.engine, token, ctx.now(),
                                            access=ctx.settings.access, metrics=ctx.metrics.auth)
    except NotAuthenticated as exc:
        raise SignInNeeded("expired" if exc.code == "session_expired" else "needed") from None
    request.state.viewer = Viewer(principal, token)    # the refusal pages show the operator's menu too
    return request.state.viewer


def page(*permissions: str):
    """A dependency: the signed-in operator, holding one of ``permissions`` (none: any operator)."""

    async def dependency(request: Request, viewer: Viewer = Depends(signed_in)) -> Viewer:
        await ensure(request, viewer, *permissions)
        return viewer

    dependency.permission = permissions
    return dependency


async def ensure(request: Request, viewer: Viewer, *permissions: str) -> None:
    """Nothing when the operator holds one of ``permissions`` (or none is asked); else the refusal,
    audited and counted by ledger.identity, as a 403 page (``PageRefused``)."""
    if permissions and not any(viewer.principal.may(p) for p in permissions):
        ctx = context_of(request)
        try:
            await run_in_threadpool(authorize, ctx.engine, viewer.principal, permissions[0], ctx.now(),
                                    metrics=ctx.metrics.auth)
        except Forbidden:
            raise PageRefused("forbidden", " | ".join(permissions)) from None


def refuse_csrf(ctx: ApiContext, request: Request, actor: str, object_type: str, object_id) -> PageRefused:
    """Audit, log and count a form without its token; the 403 page to raise."""
    with ctx.engine.begin() as conn:
        record_refusal(conn, ctx.now(), actor, "console.csrf_refused", "csrf", ctx.metrics.auth, object_type,
                       object_id, path=request.url.path, source=source_of(request))
    return PageRefused("csrf")


async def checked_form(request: Request, viewer: Viewer = Depends(signed_in)) -> FormData:
    """The form of a signed-in operator's POST, once its CSRF token is checked."""
    form = await request.form()
    if not csrf_matches(viewer.session_token, form.get(CSRF_FIELD)):
        raise await run_in_threadpool(refuse_csrf, context_of(request), request, viewer.principal.actor, "session",
                                      viewer.principal.session_id)
    return form
