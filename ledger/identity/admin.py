"""Managing principals: add (the first administrator, operators, clients), disable, enable, reset,
list. Every change is audited by ``ChangedBy`` (the administrator and the OS login); nothing a
refusal is about is changed. Secrets (passwords, TOTP secrets) never reach the audit log."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, text, update

from config.settings import AccessConfig
from ledger.errors import Refused
from ledger.identity.changes import ChangedBy
from ledger.identity.passwords import hash_new_password
from ledger.identity.principal import CLIENT, OPERATOR
from ledger.identity.roles import join_names, split_names, unknown_roles
from ledger.identity.sessions import revoke_sessions
from ledger.identity.store import aware, existing_row, principal_row
from ledger.identity.tables import principals
from ledger.identity.totp import new_secret, provisioning_uri, seal

NAME = re.compile(r"^[a-z][a-z0-9._-]{1,39}$")
FIRST_ADMIN_ROLE = "administrator"


class PrincipalsExist(Refused):
    """The bootstrap was asked for when principals exist: an attempt to become administrator."""


@dataclass(frozen=True)
class PrincipalInfo:
    principal_id: int
    kind: str
    name: str
    display_name: str
    roles: tuple[str, ...]
    disabled: bool
    totp: bool                       # enrolled (the secret itself is never shown again)
    failed_logins: int
    locked_until: datetime | None
    created_at: datetime
    changed_at: datetime


def add_operator(conn, now: datetime, by: ChangedBy, name: str, display_name: str, roles, password: str,
                 access: AccessConfig = AccessConfig(), totp: bool = False) -> tuple[int, str | None]:
    """(the new operator's id, the otpauth URI to show once when ``totp``)."""
    if not roles or unknown_roles(roles):
        raise Refused(f"roles refused: {', '.join(unknown_roles(roles)) or 'none given'} (see docs/access.md)")
    _check_new_name(conn, name, display_name)
    secret = new_secret() if totp else None
    principal_id = _insert(conn, now, OPERATOR, name, display_name, join_names(roles),
                           password_hash=hash_new_password(name, password, access),
                           totp_secret=seal(secret, name, access.totp_key()) if secret else None)
    by.audit(conn, now, "principal.add", "principal", principal_id, kind=OPERATOR, name=name,
             roles=join_names(roles), totp=bool(totp))
    return principal_id, (provisioning_uri(secret, name, access.totp_issuer) if secret else None)


def add_first_admin(conn, now: datetime, name: str, display_name: str, password: str, os_login: str,
                    access: AccessConfig = AccessConfig(), totp: bool = False) -> tuple[int, str | None]:
    """The very first principal, an administrator: ``Refused`` once any principal exists."""
    if conn.dialect.name == "postgresql":   # two bootstraps at once: the second waits, then sees the first
        conn.execute(text("LOCK TABLE principals IN SHARE ROW EXCLUSIVE MODE"))
    if conn.execute(select(func.count()).select_from(principals)).scalar_one():
        raise PrincipalsExist("principals exist already: only an administrator adds more (log in, then "
                      "GRIDPAY_OPERATOR_TOKEN=... gridpay principal add)")
    by = ChangedBy(f"{OPERATOR}:{name}", os_login, "bootstrap")
    return add_operator(conn, now, by, name, display_name, [FIRST_ADMIN_ROLE], password, access, totp)


def add_client(conn, now: datetime, by: ChangedBy, name: str, display_name: str) -> int:
    """A system (call centre, billing ...); its API keys are made with ``keys.add_key``."""
    _check_new_name(conn, name, display_name)
    principal_id = _insert(conn, now, CLIENT, name, display_name, "")
    by.audit(conn, now, "principal.add", "principal", principal_id, kind=CLIENT, name=name)
    return principal_id


def set_disabled(conn, now: datetime, by: ChangedBy, name: str, disabled: bool, reason: str = "") -> None:
    """Disable (every session ends, keys stop working) or enable a principal."""
    row = existing_row(conn, name)
    if by.actor == f"{row.kind}:{row.name}" and disabled:
        raise Refused("an administrator cannot disable themselves")
    conn.execute(update(principals).where(principals.c.principal_id == row.principal_id)
                 .values(disabled="Y" if disabled else "N", changed_at=now))
    ended = revoke_sessions(conn, row.principal_id, now) if disabled else 0
    by.audit(conn, now, "principal.disable" if disabled else "principal.enable", "principal", row.principal_id,
             reason, name=name, sessions_ended=ended)


def reset(conn, now: datetime, by: ChangedBy, name: str, password: str, access: AccessConfig = AccessConfig(),
          totp: str = "keep") -> str | None:
    """A new password; the lock-out cleared and every session ended. ``totp``: ``keep``, ``enrol`` (a
    new secret: its otpauth URI is returned, to show once) or ``remove``."""
    row = existing_row(conn, name)
    if row.kind != OPERATOR:
        raise Refused(f"{name} is a client: it has API keys, not a password")
    if totp not in ("keep", "enrol", "remove"):
        raise ValueError(totp)
    values = {"password_hash": hash_new_password(name, password, access), "failed_logins": 0,
              "locked_until": None, "changed_at": now}
    secret = new_secret() if totp == "enrol" else None
    if totp != "keep":
        values.update(totp_secret=seal(secret, name, access.totp_key()) if secret else None, totp_last_step=None)
    conn.execute(update(principals).where(principals.c.principal_id == row.principal_id).values(**values))
    ended = revoke_sessions(conn, row.principal_id, now)
    by.audit(conn, now, "principal.reset", "principal", row.principal_id, name=name, totp=totp,
             was_locked=row.locked_until is not None, sessions_ended=ended)
    return provisioning_uri(secret, name, access.totp_issuer) if secret else None


def set_roles(conn, now: datetime, by: ChangedBy, name: str, roles) -> None:
    row = existing_row(conn, name)
    if row.kind != OPERATOR or not roles or unknown_roles(roles):
        raise Refused(f"roles refused for {name}: {', '.join(unknown_roles(roles)) or 'an operator needs a role'}")
    if by.actor == f"{OPERATOR}:{name}" and FIRST_ADMIN_ROLE not in roles:
        raise Refused("an administrator cannot take their own administrator role away")
    conn.execute(update(principals).where(principals.c.principal_id == row.principal_id)
                 .values(roles=join_names(roles), changed_at=now))
    by.audit(conn, now, "principal.roles", "principal", row.principal_id, name=name, roles=join_names(roles),
             before=row.roles)


def list_principals(conn) -> list[PrincipalInfo]:
    return [_info(r) for r in conn.execute(select(principals).order_by(principals.c.name))]


def show(conn, name: str) -> PrincipalInfo:
    return _info(existing_row(conn, name, for_update=False))


def _info(r) -> PrincipalInfo:
    return PrincipalInfo(r.principal_id, r.kind, r.name, r.display_name, split_names(r.roles), r.disabled == "Y",
                         r.totp_secret is not None, r.failed_logins, aware(r.locked_until), aware(r.created_at),
                         aware(r.changed_at))


def _check_new_name(conn, name: str, display_name: str) -> None:
    if not NAME.match(name or ""):
        raise Refused(f"name {name!r} refused: 2 to 40 of a-z, 0-9, '.', '_', '-', starting with a letter")
    if not (display_name or "").strip() or len(display_name) > 120:
        raise Refused("a display name (1 to 120 characters) is needed")
    if principal_row(conn, name) is not None:
        raise Refused(f"a principal named {name!r} exists already")


def _insert(conn, now: datetime, kind: str, name: str, display_name: str, roles: str, **secrets) -> int:
    return conn.execute(insert(principals).values(
        kind=kind, name=name, display_name=display_name.strip(), roles=roles, created_at=now, changed_at=now,
        **secrets).returning(principals.c.principal_id)).scalar_one()
