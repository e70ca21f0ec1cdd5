"""Log-in, log-out and who am I: ``POST /v1/sessions``, ``DELETE /v1/sessions/current``, ``GET /v1/me``.

The log-in takes no ``Idempotency-Key``: its answer is a secret the service never stores, and a
retry that makes a second session costs nothing (the unused one ends after
``access.session_idle_minutes``). Log-in and log-out are audited by ledger.identity with the
client's address as ``source``.
"""
from __future__ import annotations


from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from api.deps import ApiContext, bearer_token, context, require, source_of
from api.json_types import UtcDateTime
from api.problems import Problem, problem_responses
from ledger.identity import NotAuthenticated, Principal, login, logout
from ledger.identity.refusals import record_refusal

router = APIRouter(tags=["auth"], responses=problem_responses(401, 422))

TEXT = r"^[^\x00-\x1f\x7f]*$"   # no control characters (PostgreSQL stores no NUL)


class LoginRequest(BaseModel):
    user: str = Field(min_length=1, max_length=40, pattern=TEXT)
    password: str = Field(min_length=1, max_length=200, pattern=TEXT)
    totp: str | None = Field(None, max_length=10, pattern=r"^[0-9 ]*$",
                             description="The TOTP code, for an operator who enrolled one.")


class SessionAnswer(BaseModel):
    token: str = Field(description="Shown once: send it as `Authorization: Bearer <token>`.")
    expires_at: UtcDateTime = Field(description="The latest end (idle sessions end sooner).")
    actor: str


class Me(BaseModel):
    actor: str
    kind: str
    name: str
    display_name: str
    roles: list[str]
    permissions: list[str]
    session_id: int | None = None
    key_id: int | None = None


@router.post("/v1/sessions", status_code=201, response_model=SessionAnswer,
             responses=problem_responses(401, 422, 423, 429))
def create_session(body: LoginRequest, request: Request, ctx: ApiContext = Depends(context)) -> SessionAnswer:
    """Log in with user name, password and (when enrolled) TOTP code: a session token."""
    now, source = ctx.now(), source_of(request)
    wait = ctx.login_throttle.wait(source, now)
    if wait is not None:
        with ctx.engine.begin() as conn:
            record_refusal(conn, now, "anonymous", "login.refused", "throttled", ctx.metrics.auth, "principal", "",
                           source=source, claimed=body.user[:40])
        raise Problem("too-many-logins", f"too many log-in attempts from this address: wait {int(wait)} s",
                      headers={"Retry-After": str(int(wait))})
    try:   # a refusal is ledger.identity's NotAuthenticated: bad-credentials (401) or locked (423)
        session = login(ctx.engine, body.user, body.password, body.totp, now, source, access=ctx.settings.access,
                        metrics=ctx.metrics.auth)
    except NotAuthenticated:
        ctx.login_throttle.failed(source, now)
        raise
    return SessionAnswer(token=session.token, expires_at=session.expires_at, actor=session.principal.actor)


@router.delete("/v1/sessions/current", status_code=204, response_class=Response,
               responses=problem_responses(400, 401))
def end_session(request: Request, principal: Principal = Depends(require(None)),
                ctx: ApiContext = Depends(context)) -> Response:
    """Log out: end the session whose token authenticated this request."""
    if principal.session_id is None:
        raise Problem("not-a-session", "an API key is not a session: an administrator revokes keys "
                      "(`gridpay principal keys revoke`)")
    logout(ctx.engine, bearer_token(request) or "", ctx.now(), source_of(request))
    return Response(status_code=204)


@router.get("/v1/me", response_model=Me)
def me(principal: Principal = Depends(require(None))) -> Me:
    """Who the token or key proves: roles (operators) and permissions (a client: its key's scopes)."""
    return Me(actor=principal.actor, kind=principal.kind, name=principal.name, display_name=principal.display_name,
              roles=list(principal.roles), permissions=sorted(principal.permissions),
              session_id=principal.session_id, key_id=principal.key_id)
