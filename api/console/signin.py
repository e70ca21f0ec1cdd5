"""Sign-in (operators only: a user name and password, and the TOTP code when one is enrolled; an API
key is not accepted here) and sign-out. A sign-in makes a ledger.identity session whose token the
browser keeps in the HttpOnly cookie; sign-out ends it. Both are audited by ledger.identity; failed
sign-ins count towards the account's lock-out and the address's throttle, as ``POST /v1/sessions``."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from api.console.protection import (
    CSRF_FIELD, PRE_SIGNIN_COOKIE, SESSION_COOKIE, csrf_matches, csrf_token, forget_cookie, pre_signin_secret,
    set_cookie,
)
from api.console.render import render
from api.console.viewer import Viewer, checked_form, context_of, refuse_csrf, signed_in
from api.deps import source_of
from ledger.identity import NotAuthenticated, login, logout
from ledger.identity.refusals import record_refusal

router = APIRouter()
NOTES = {"expired": "signin.expired", "needed": "signin.needed", "signed_out": "signin.signed_out"}
REFUSALS = {"locked": ("signin.locked", 423)}


def signin_page(request: Request, note: str | None = None, status: int = 200, user: str = "") -> Response:
    secret, new = pre_signin_secret(request)
    response = render(request, "signin.html", None, status, csrf=csrf_token(secret), note=note, user=user)
    if new:
        set_cookie(response, request, PRE_SIGNIN_COOKIE, secret)
    return response


@router.get("/sign-in")
def sign_in_form(request: Request) -> Response:
    return signin_page(request, NOTES.get(request.query_params.get("m", "")))


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    ctx, form = context_of(request), await request.form()
    if not csrf_matches(request.cookies.get(PRE_SIGNIN_COOKIE), form.get(CSRF_FIELD)):
        raise await run_in_threadpool(refuse_csrf, ctx, request, "anonymous", "principal", "")
    user, now, source = str(form.get("user", ""))[:40], ctx.now(), source_of(request)
    if ctx.login_throttle.wait(source, now) is not None:
        await run_in_threadpool(_throttled, ctx, now, source, user)
        return signin_page(request, "signin.throttled", 429, user)
    try:
        session = await run_in_threadpool(login, ctx.engine, user, str(form.get("password", "")),
                                          str(form.get("totp", "")) or None, now, source,
                                          access=ctx.settings.access, metrics=ctx.metrics.auth)
    except NotAuthenticated as exc:
        ctx.login_throttle.failed(source, now)
        note, status = REFUSALS.get(exc.code, ("signin.refused", 401))
        return signin_page(request, note, status, user)
    response = RedirectResponse("/console/", 303)
    set_cookie(response, request, SESSION_COOKIE, session.token)
    forget_cookie(response, request, PRE_SIGNIN_COOKIE)
    return response


def _throttled(ctx, now, source: str, user: str) -> None:
    with ctx.engine.begin() as conn:
        record_refusal(conn, now, "anonymous", "login.refused", "throttled", ctx.metrics.auth, "principal", "",
                       source=source, claimed=user)


@router.post("/sign-out")
async def sign_out(request: Request, viewer: Viewer = Depends(signed_in),
                   form: FormData = Depends(checked_form)) -> Response:
    ctx = context_of(request)
    await run_in_threadpool(logout, ctx.engine, viewer.session_token, ctx.now(), source_of(request))
    response = RedirectResponse("/console/sign-in?m=signed_out", 303)
    forget_cookie(response, request, SESSION_COOKIE)
    return response
