"""Every refusal is audited, logged and counted.

The audit row's actor is the principal when one is known (``operator:alice``: a right session of a
disabled operator, a forbidden action), else the name the caller claimed (``claimed:alice``: nobody
proved it) or ``anonymous``. The Prometheus counter ``gridpay_auth_refusals_total{reason}`` counts by
the precise reason; the caller's exception carries only the public code (``PUBLIC``), so a stranger
learns neither which user names exist nor which factor was wrong.
"""
from __future__ import annotations

import logging
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter

from ledger.audit import audit_row, write_audit

log = logging.getLogger("gridpay.access")

# precise reason -> the code a caller sees
PUBLIC: dict[str, str] = {
    "unknown_user": "bad_credentials", "bad_password": "bad_credentials", "disabled": "bad_credentials",
    "totp_missing": "bad_credentials", "bad_totp": "bad_credentials", "totp_replayed": "bad_credentials",
    "locked": "locked",
    "no_credentials": "not_authenticated", "no_session": "not_authenticated", "session_revoked": "not_authenticated", "session_disabled": "not_authenticated",
    "session_expired": "session_expired", "session_idle": "session_expired",
    "bad_key": "bad_key", "key_revoked": "bad_key", "key_disabled": "bad_key", "key_expired": "key_expired",
    "forbidden": "forbidden",
}

MESSAGES: dict[str, str] = {
    "bad_credentials": "wrong user name, password or TOTP code",
    "locked": "too many failed log-ins: the account is locked for a while (an administrator can unlock it "
              "with `gridpay principal reset`)",
    "not_authenticated": "not logged in (no such session, or it was ended)",
    "session_expired": "the session has expired: log in again",
    "bad_key": "the API key is not valid",
    "key_expired": "the API key has expired",
}


class AuthMetrics:
    """The refusal counter, in the registry of the process that serves its /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.refusals = Counter("gridpay_auth_refusals", "Log-ins, sessions, API keys and actions refused, by reason",
                                ["reason"], registry=self.registry)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason=reason).inc()


DEFAULT_METRICS = AuthMetrics()   # for callers that serve no /metrics (the CLI)


def claimed_actor(name: str | None) -> str:
    name = (name or "").strip()
    return f"claimed:{name[:50]}" if name else "anonymous"


def record_refusal(conn, now: datetime, actor: str, action: str, reason: str, metrics: AuthMetrics | None,
                   object_type: str = "principal", object_id="", **details) -> None:
    """Audit (in ``conn``'s transaction), log and count one refusal."""
    (metrics or DEFAULT_METRICS).refused(reason)
    # INFO: a process's log (runtime.logging_setup) has it; a command does not print the precise
    # reason on the terminal of whoever was refused
    log.info("%s for %s: %s %s", action, actor, reason, details or "")
    write_audit(conn, [audit_row(now, actor, action, object_type, object_id, reason, **details)])


def authorize(engine, principal, permission: str, now: datetime, *, metrics: AuthMetrics | None = None) -> None:
    """``require``, with a refusal audited (actor: the principal) and counted before ``Forbidden``
    is raised: what the HTTP service and the commands call before acting."""
    from ledger.identity.principal import Forbidden, require

    try:
        require(principal, permission)
    except Forbidden as exc:
        with engine.begin() as conn:
            record_refusal(conn, now, principal.actor, "access.forbidden", exc.code, metrics, "principal",
                           principal.id, permission=permission)
        raise
