"""The audit log: who (operator, bank link or process), when, what and why."""
from __future__ import annotations

import json
from datetime import datetime


def bank_actor(bank_code: str) -> str:
    return f"bank:{bank_code}"


def audit_row(at: datetime, actor: str, action: str, object_type: str, object_id, reason: str = "",
              **details) -> dict:
    assert actor, "every change names who made it"
    return {"at": at, "actor": actor, "action": action, "object_type": object_type,
            "object_id": str(object_id), "reason": reason[:200],
            "details": json.dumps(details, ensure_ascii=False, default=str, sort_keys=True)}


def write_audit(conn, rows: list[dict]) -> None:
    from sqlalchemy import insert

    from ledger.schema import audit_log

    if rows:
        conn.execute(insert(audit_log), rows)
