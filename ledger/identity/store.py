"""Reading principals: a row becomes the ``Principal`` callers get."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from ledger.errors import Refused
from ledger.identity.principal import CLIENT, Principal
from ledger.identity.roles import permissions_of, split_names
from ledger.identity.tables import principals


# A session's last use and an API key's are written at most this often: every request reads them,
# and writing on every request made all requests of one key or session queue on its row (the
# idle timeout is counted at this resolution).
TOUCH_EVERY = timedelta(seconds=30)


def stale(last: datetime | None, now: datetime) -> bool:
    """Whether a last-use time is due to be written again."""
    return last is None or now - aware(last) >= TOUCH_EVERY


def aware(at: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone: they are UTC."""
    return at.replace(tzinfo=timezone.utc) if at is not None and at.tzinfo is None else at


def principal_from_row(row, scopes: str = "", session_id: int | None = None, key_id: int | None = None) -> Principal:
    roles = split_names(row.roles)
    permissions = frozenset(split_names(scopes)) if row.kind == CLIENT else permissions_of(roles)
    return Principal(row.principal_id, row.kind, row.name, row.display_name, roles, permissions,
                     session_id=session_id, key_id=key_id)


def principal_row(conn, name: str, *, for_update: bool = False):
    query = select(principals).where(principals.c.name == name)
    return conn.execute(query.with_for_update() if for_update else query).first()


def existing_row(conn, name: str, *, for_update: bool = True):
    """The principal's row, or ``Refused`` naming the unknown name."""
    row = principal_row(conn, name, for_update=for_update)
    if row is None:
        raise Refused(f"no principal named {name!r}")
    return row
