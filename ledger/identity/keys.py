"""Clients' API keys: made (shown once), listed, revoked, and proved on each request."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, insert, select, update

from config.settings import AccessConfig
from ledger.errors import Refused
from ledger.identity.changes import ChangedBy
from ledger.identity.principal import CLIENT, NotAuthenticated, Principal
from ledger.identity.refusals import MESSAGES, PUBLIC, AuthMetrics, record_refusal
from ledger.identity.roles import bad_scopes, join_names, split_names
from ledger.identity.store import aware, existing_row, principal_from_row, stale
from ledger.identity.tables import api_keys, principals
from ledger.identity.tokens import new_api_key, secret_matches, split_api_key


@dataclass(frozen=True)
class KeyInfo:
    key_id: int
    client: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"


def add_key(conn, now: datetime, by: ChangedBy, client: str, scopes, expires_at: datetime,
            access: AccessConfig = AccessConfig()) -> tuple[str, int]:
    """(the key, shown this once; its id). ``Refused``: not a client, bad scopes or expiry."""
    row = existing_row(conn, client)
    if row.kind != CLIENT:
        raise Refused(f"{client} is an operator: API keys are for clients (systems)")
    scopes = set(scopes)
    if not scopes or bad_scopes(scopes):
        raise Refused(f"scopes refused: {', '.join(bad_scopes(scopes)) or 'none given'} "
                      "(a key carries permissions of docs/access.md, no approval or principal management)")
    if not now < expires_at <= now + timedelta(days=access.api_key_max_days):
        raise Refused(f"the expiry must be in the future and at most {access.api_key_max_days} days away")
    key, prefix, digest = new_api_key()
    key_id = conn.execute(insert(api_keys).values(
        principal_id=row.principal_id, prefix=prefix, secret_sha256=digest, scopes=join_names(scopes),
        created_at=now, expires_at=expires_at).returning(api_keys.c.key_id)).scalar_one()
    by.audit(conn, now, "api_key.add", "api_key", key_id, client=client, prefix=prefix,
             scopes=join_names(scopes), expires_at=expires_at)
    return key, key_id


def list_keys(conn, client: str | None = None) -> list[KeyInfo]:
    query = select(api_keys, principals.c.name).join(principals).order_by(api_keys.c.key_id)
    if client is not None:
        query = query.where(principals.c.name == client)
    return [KeyInfo(r.key_id, r.name, r.prefix, split_names(r.scopes), aware(r.created_at), aware(r.expires_at),
                    aware(r.revoked_at), aware(r.last_used_at)) for r in conn.execute(query)]


def revoke_key(conn, now: datetime, by: ChangedBy, key_id: int, reason: str = "") -> None:
    done = conn.execute(update(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                        .values(revoked_at=now)).rowcount
    if not done:
        raise Refused(f"no live API key {key_id}")
    by.audit(conn, now, "api_key.revoke", "api_key", key_id, reason)


def authenticate_api_key(engine: Engine, key: str, now: datetime, *, metrics: AuthMetrics | None = None) -> Principal:
    """The client a key belongs to, with the key's scopes as its permissions (its last use moved to
    ``now``), or ``NotAuthenticated`` (audited and counted)."""
    parts = split_api_key(key)
    with engine.begin() as conn:
        found = None if parts is None else conn.execute(
            select(principals, api_keys.c.key_id, api_keys.c.secret_sha256, api_keys.c.scopes, api_keys.c.expires_at,
                   api_keys.c.revoked_at, api_keys.c.last_used_at).join(api_keys, principals.c.principal_id == api_keys.c.principal_id)
            .where(api_keys.c.prefix == parts[0])).first()
        problem = _key_problem(found, parts, now)
        if problem is None:
            if stale(found.last_used_at, now):
                conn.execute(update(api_keys).where(api_keys.c.key_id == found.key_id).values(last_used_at=now))
            return principal_from_row(found, scopes=found.scopes, key_id=found.key_id)
        proved = problem != "bad_key"
        record_refusal(conn, now, f"client:{found.name}" if proved else "anonymous", "api_key.refused", problem,
                       metrics, "api_key", found.key_id if proved else "",
                       prefix=parts[0] if parts else "")
    raise NotAuthenticated(PUBLIC[problem], MESSAGES[PUBLIC[problem]])


def _key_problem(found, parts, now: datetime) -> str | None:
    if found is None or not secret_matches(parts[1], found.secret_sha256):
        return "bad_key"
    if found.revoked_at is not None:
        return "key_revoked"
    if now >= aware(found.expires_at):
        return "key_expired"
    if found.disabled == "Y":
        return "key_disabled"
    return None
