"""Operators' sessions: made by a log-in, proved by a token shown once, ended by log-out, by
``[access]``'s idle timeout or absolute lifetime, or when the operator is disabled or reset."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, insert, select, update

from config.settings import AccessConfig
from ledger.audit import audit_row, write_audit
from ledger.identity.principal import NotAuthenticated, Principal
from ledger.identity.refusals import MESSAGES, PUBLIC, AuthMetrics, record_refusal
from ledger.identity.store import aware, principal_from_row, stale
from ledger.identity.tables import principals, sessions
from ledger.identity.tokens import new_session_token, sha256_hex


@dataclass(frozen=True)
class Session:
    token: str                 # shown once; only its SHA-256 is stored
    principal: Principal
    expires_at: datetime       # the absolute end (the idle timeout may end it sooner)
    session_id: int


def open_session(conn, row, now: datetime, source: str, access: AccessConfig) -> Session:
    token, digest = new_session_token()
    expires = now + timedelta(hours=access.session_lifetime_hours)
    session_id = conn.execute(insert(sessions).values(
        token_sha256=digest, principal_id=row.principal_id, source=source[:100], created_at=now,
        expires_at=expires, last_seen_at=now).returning(sessions.c.session_id)).scalar_one()
    return Session(token, principal_from_row(row, session_id=session_id), expires, session_id)


def session_problem(found, now: datetime, access: AccessConfig) -> str | None:
    """Why a session (a row of sessions joined to its principal) no longer proves anyone (None: it does)."""
    if found.revoked_at is not None:
        return "session_revoked"
    if now >= aware(found.expires_at):
        return "session_expired"
    if now - aware(found.last_seen_at) >= timedelta(minutes=access.session_idle_minutes):
        return "session_idle"
    if found.disabled == "Y":
        return "session_disabled"
    return None


def authenticate_session(engine: Engine, token: str, now: datetime, *, access: AccessConfig = AccessConfig(),
                         metrics: AuthMetrics | None = None) -> Principal:
    """The operator a session token belongs to (its last use moved to ``now``), or
    ``NotAuthenticated`` (audited and counted)."""
    with engine.begin() as conn:
        # the principal's columns and the session's own (its id, times, revocation); principal_id is the same
        found = conn.execute(
            select(principals, sessions.c.session_id, sessions.c.expires_at, sessions.c.last_seen_at,
                   sessions.c.revoked_at).join(sessions, principals.c.principal_id == sessions.c.principal_id)
            .where(sessions.c.token_sha256 == sha256_hex(token or ""))).first()
        problem = "no_session" if found is None else session_problem(found, now, access)
        if problem is None:
            if stale(found.last_seen_at, now):
                conn.execute(update(sessions).where(sessions.c.session_id == found.session_id).values(last_seen_at=now))
            return principal_from_row(found, session_id=found.session_id)
        actor = "anonymous" if found is None else f"{found.kind}:{found.name}"
        record_refusal(conn, now, actor, "session.refused", problem, metrics, "session",
                       "" if found is None else found.session_id)
    raise NotAuthenticated(PUBLIC[problem], MESSAGES[PUBLIC[problem]])


def logout(engine: Engine, token: str, now: datetime, source: str = "") -> bool:
    """End the session the token proves; False when there was no live one. ``source``: where the
    request came from (the HTTP service's client address), for the audit row."""
    with engine.begin() as conn:
        found = conn.execute(
            select(sessions.c.session_id, principals.c.kind, principals.c.name)
            .join(principals, principals.c.principal_id == sessions.c.principal_id)
            .where(sessions.c.token_sha256 == sha256_hex(token or ""), sessions.c.revoked_at.is_(None))).first()
        if found is None:
            return False
        conn.execute(update(sessions).where(sessions.c.session_id == found.session_id).values(revoked_at=now))
        write_audit(conn, [audit_row(now, f"{found.kind}:{found.name}", "logout", "session", found.session_id,
                                     **({"source": source} if source else {}))])
    return True


def revoke_sessions(conn, principal_id: int, now: datetime) -> int:
    """End every live session of a principal (disabled, password reset); how many there were."""
    return conn.execute(update(sessions).where(sessions.c.principal_id == principal_id,
                                               sessions.c.revoked_at.is_(None)).values(revoked_at=now)).rowcount
