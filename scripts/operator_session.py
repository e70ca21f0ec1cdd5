"""A session token for scripts that run back-office commands on a scratch database they made
(benchmarks, demonstrations): the commands authenticate as an operator (docs/access.md), so the
script bootstraps the first administrator, which adds the operator it runs as, and logs that one in.

Usage: ``env = {**os.environ, "GRIDPAY_OPERATOR_TOKEN": operator_session(url, "bench", ["operations"])}``.
The passwords are random and forgotten: nobody logs in as these principals again.
"""
from __future__ import annotations

import secrets


def operator_session(url: str, name: str, roles: list[str]) -> str:
    """The session token of a new operator ``name`` holding ``roles``; the database must have no
    principals yet (its first administrator is ``<name>-admin``)."""
    from config.clock import SYSTEM_CLOCK
    from gridpay.operator_auth import os_login
    from ledger.db import make_engine
    from ledger.identity import ChangedBy, add_first_admin, add_operator, login

    engine = make_engine(url)
    try:
        now = SYSTEM_CLOCK.now()
        admin, password = f"{name}-admin", _password()
        with engine.begin() as conn:
            add_first_admin(conn, now, admin, "Script administrator", _password(), os_login())
            by = ChangedBy(f"operator:{admin}", os_login(), "script")     # the administrator just made
            add_operator(conn, now, by, name, f"Script operator {name}", roles, password)
        return login(engine, name, password, None, now, f"script:{os_login()}").token
    finally:
        engine.dispose()


def _password() -> str:
    return secrets.token_urlsafe(24) + "-Aa1"     # long and of all four kinds: the policy accepts it


def another_session(url: str, name: str, roles: list[str]) -> str:
    """A session for a run on a database that ``operator_session(url, name, ...)`` set up before (a
    kept schema, or a copy of one): its administrator ``<name>-admin`` adds a new operator."""
    from config.clock import SYSTEM_CLOCK
    from gridpay.operator_auth import os_login
    from ledger.db import make_engine
    from ledger.identity import ChangedBy, add_operator, login

    engine = make_engine(url)
    try:
        now = SYSTEM_CLOCK.now()
        operator, password = f"{name}-{secrets.token_hex(4)}", _password()
        with engine.begin() as conn:
            by = ChangedBy(f"operator:{name}-admin", os_login(), "script")
            add_operator(conn, now, by, operator, f"Script operator {name}", roles, password)
        return login(engine, operator, password, None, now, f"script:{os_login()}").token
    finally:
        engine.dispose()
