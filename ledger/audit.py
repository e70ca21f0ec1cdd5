"""The audit log: who (operator, bank link or process), when, what and why."""
from __future__ import annotations

import json
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Iterator

# What a command adds to every audit row it causes (the OS login beside the authenticated operator):
# set once by the command (gridpay/operator_auth.py), so that no library function has to carry it.
_COMMAND_DETAILS: ContextVar[dict] = ContextVar("audit_command_details", default={})


def bank_actor(bank_code: str) -> str:
    return f"bank:{bank_code}"


def audit_row(at: datetime, actor: str, action: str, object_type: str, object_id, reason: str = "",
              **details) -> dict:
    assert actor, "every change names who made it"
    details = {**command_audit_details(), **details}
    return {"at": at, "actor": actor, "action": action, "object_type": object_type,
            "object_id": str(object_id), "reason": reason[:200],
            "details": json.dumps(details, ensure_ascii=False, default=str, sort_keys=True)}


def write_audit(conn, rows: list[dict]) -> None:
    from sqlalchemy import insert

    from ledger.schema import audit_log

    if rows:
        conn.execute(insert(audit_log), rows)


def command_audit_details() -> dict:
    """What the running command adds to each audit row (``{}`` outside a command): for writers that
    build audit rows in bulk without ``audit_row``."""
    return _COMMAND_DETAILS.get()


@contextmanager
def command_details(**details) -> Iterator[None]:
    """Every audit row built inside carries ``details`` too (a row's own details win): a command's
    ``os_login``."""
    token = _COMMAND_DETAILS.set({**_COMMAND_DETAILS.get(), **details})
    try:
        yield
    finally:
        _COMMAND_DETAILS.reset(token)
