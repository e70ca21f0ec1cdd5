"""Shared by the identity tests: a database with identity's tables, a fast Argon2 configuration
(the tests hash many passwords; the policy and the parameters' rehash are what they check), and the
audit rows written."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import select

from config.settings import AccessConfig
from ledger.db import make_engine
from ledger.identity import ChangedBy, add_client, add_first_admin, add_key, add_operator
from ledger.identity.tables import api_keys, principals, sessions
from ledger.schema import audit_log, metadata

T0 = datetime(2026, 12, 1, 1, 0, 0, tzinfo=timezone.utc)
FAST = AccessConfig(argon2_time_cost=1, argon2_memory_kib=8, argon2_parallelism=1)
PASSWORD = "Correct-horse-42"
ADMIN = ChangedBy("operator:root", "tester")


def identity_engine(url: str):
    engine = make_engine(url)
    metadata.create_all(engine, tables=[audit_log, principals, api_keys, sessions])
    return engine


def add_people(engine, **roles_by_name) -> None:
    """The first administrator ``root`` and one operator per keyword (name=[roles])."""
    with engine.begin() as conn:
        add_first_admin(conn, T0, "root", "Root Admin", PASSWORD, "tester", FAST)
        for name, roles in roles_by_name.items():
            add_operator(conn, T0, ADMIN, name, name.title(), roles, PASSWORD, FAST)


def add_client_key(engine, name: str, scopes, expires_at: datetime) -> tuple[str, int]:
    with engine.begin() as conn:
        add_client(conn, T0, ADMIN, name, name.title())
        return add_key(conn, T0, ADMIN, name, scopes, expires_at, FAST)


def audit_rows(engine, action: str | None = None) -> list[dict]:
    query = select(audit_log).order_by(audit_log.c.id)
    if action:
        query = query.where(audit_log.c.action == action)
    with engine.connect() as conn:
        return [{**r._mapping, "details": json.loads(r.details)} for r in conn.execute(query)]


def refusals(metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("gridpay_auth_refusals_total", {"reason": reason}) or 0.0


def operator_token(url_or_engine, name: str, roles) -> str:
    """A session token (for GRIDPAY_OPERATOR_TOKEN) of operator ``name`` with ``roles``, added to a
    database that has the identity tables (a migrated one): the first administrator ``root`` too
    when there is none yet. The session begins now (the command checks it against the wall clock)."""
    from ledger.identity import login

    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        if conn.execute(select(principals.c.principal_id).limit(1)).first() is None:
            add_first_admin(conn, now, "root", "Root Admin", PASSWORD, "tester", FAST)
        add_operator(conn, now, ADMIN, name, name.title(), list(roles), PASSWORD, FAST)
    token = login(engine, name, PASSWORD, None, now, "test", access=FAST).token
    if isinstance(url_or_engine, str):
        engine.dispose()
    return token


def operator_env(url_or_engine, name: str, roles, env: dict | None = None) -> dict:
    """``env`` (default: this process's environment) with GRIDPAY_OPERATOR_TOKEN of a new operator."""
    import os

    return {**(os.environ if env is None else env),
            "GRIDPAY_OPERATOR_TOKEN": operator_token(url_or_engine, name, roles)}
