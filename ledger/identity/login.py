"""Operators' log-in: password, then TOTP when enrolled; lock-out after repeated failures.

``[access]``: after ``max_failed_logins`` failures in a row (wrong password, missing, wrong or reused
TOTP code) the account refuses every log-in for ``lockout_minutes``, the right password included;
then it starts again from zero. A log-in that succeeds resets the count. Failures of unknown user
names are audited and counted too (there is no account to lock).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, update

from config.settings import AccessConfig
from ledger.audit import audit_row, write_audit
from ledger.identity.passwords import verify
from ledger.identity.principal import OPERATOR, NotAuthenticated
from ledger.identity.refusals import MESSAGES, PUBLIC, AuthMetrics, claimed_actor, record_refusal
from ledger.identity.sessions import Session, open_session
from ledger.identity.store import aware, principal_row
from ledger.identity.tables import principals
from ledger.identity.totp import judge_code, unseal

# reasons that count towards the lock-out (a disabled or locked account's attempts do not)
COUNTED = {"bad_password", "totp_missing", "bad_totp", "totp_replayed"}


def login(engine: Engine, user: str, password: str, totp_code: str | None, now: datetime, source: str = "", *,
          access: AccessConfig = AccessConfig(), metrics: AuthMetrics | None = None) -> Session:
    """A new session for the operator, or ``NotAuthenticated`` (audited, counted, and counted
    towards the account's lock-out)."""
    with engine.begin() as conn:
        row = principal_row(conn, user, for_update=True)
        if row is not None and row.kind != OPERATOR:
            row = None                      # clients have keys, not passwords
        problem, step, new_hash = _judge(row, password, totp_code, now, access)
        if problem is None:
            values = {"failed_logins": 0, "locked_until": None, **({"totp_last_step": step} if step is not None else {}),
                      **({"password_hash": new_hash} if new_hash else {})}
            conn.execute(update(principals).where(principals.c.principal_id == row.principal_id).values(**values))
            session = open_session(conn, row, now, source, access)
            write_audit(conn, [audit_row(now, session.principal.actor, "login", "principal", row.principal_id,
                                         source=source, session_id=session.session_id, rehashed=bool(new_hash))])
            return session
        details = _count_failure(conn, row, problem, now, access) if row is not None else {}
        record_refusal(conn, now, claimed_actor(user), "login.refused", problem, metrics, "principal",
                       "" if row is None else row.principal_id, source=source, **details)
    raise NotAuthenticated(PUBLIC[problem], MESSAGES[PUBLIC[problem]])


def _judge(row, password: str, totp_code: str | None, now: datetime, access: AccessConfig):
    """(problem or None, accepted TOTP step or None, new password hash or None)."""
    if row is not None and row.locked_until is not None and aware(row.locked_until) > now:
        return "locked", None, None
    matches, new_hash = verify(row.password_hash if row is not None else None, password or "", access)
    if row is None:
        return "unknown_user", None, None
    if row.disabled == "Y":
        return "disabled", None, None
    if not matches:
        return "bad_password", None, None
    if row.totp_secret is None:
        return None, None, new_hash
    if not (totp_code or "").strip():
        return "totp_missing", None, None
    step = judge_code(unseal(row.totp_secret, row.name, access.totp_key()), totp_code, now, row.totp_last_step)
    return (step, None, None) if isinstance(step, str) else (None, step, new_hash)


def _count_failure(conn, row, problem: str, now: datetime, access: AccessConfig) -> dict:
    """Count a failure towards the lock-out; lock the account at the limit. The audit details."""
    if problem not in COUNTED:
        return {}
    failures = row.failed_logins + 1
    values: dict = {"failed_logins": failures}
    if failures >= access.max_failed_logins:
        values = {"failed_logins": 0, "locked_until": now + timedelta(minutes=access.lockout_minutes)}
    conn.execute(update(principals).where(principals.c.principal_id == row.principal_id).values(**values))
    return {"failed_logins": failures, **({"locked_until": values["locked_until"]} if "locked_until" in values else {})}
