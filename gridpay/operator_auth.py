"""Who runs a back-office command: the authenticated operator, never a name typed on the command line.

``current_operator(db, permission)`` takes the session token from ``GRIDPAY_OPERATOR_TOKEN`` (made by
``gridpay principal login``, for scripts), or on a terminal asks for the user name, password and TOTP
code (that log-in's session ends when the command has its operator). The operator must hold
``permission`` (ledger/identity/roles.py); a refusal is audited and counted, and the command exits
as every refusal does (``refused: ...``, exit status 1). Audit rows carry ``principal.actor`` and,
through ``changed_by``, the OS login beside it.
"""
from __future__ import annotations

import getpass
import os
import sys

import click

from gridpay.options import refuse
from config.clock import SYSTEM_CLOCK

TOKEN_ENV = "GRIDPAY_OPERATOR_TOKEN"
NOT_AUTHENTICATED = (f"not authenticated: set {TOKEN_ENV} (from `gridpay principal login`) or run the command "
                     "on a terminal to log in")


def os_login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container without a passwd entry)
        return f"uid:{os.getuid()}"


def current_operator(db, permission: str, *alternatives: str):
    """The ``Principal`` running the command, holding ``permission`` (or one of ``alternatives``:
    a refund's approval at either level); ``db``: the (settings, engine) pair ``open_database``
    yields. Refuses (exit 1) when nobody is authenticated or the operator may not. From here to the
    end of the command every audit row carries the OS login (``details.os_login``)."""
    from ledger.identity import AccessRefused, authenticate_session, authorize

    settings, engine = db
    _record_os_login_for_this_command()
    try:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if token:
            principal = authenticate_session(engine, token, SYSTEM_CLOCK.now(), access=settings.access)
        elif sys.stdin.isatty():
            principal = _log_in_on_terminal(settings, engine)
        else:
            refuse_unauthenticated(engine, "no_credentials", "command")
        held = [p for p in (permission, *alternatives) if principal.may(p)]
        authorize(engine, principal, held[0] if held else permission, SYSTEM_CLOCK.now())
    except AccessRefused as exc:
        refuse(exc)
    return principal


def operator_actor(db, permission: str, *alternatives: str) -> str:
    """``current_operator``'s audit actor (``operator:alice``): what a command passes as ``actor``."""
    return current_operator(db, permission, *alternatives).actor


def _record_os_login_for_this_command() -> None:
    """Audit rows written until the click command ends name the OS login (ledger/audit.py)."""
    from ledger.audit import command_details

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.with_resource(command_details(os_login=os_login()))


def refuse_unauthenticated(engine, reason: str, action: str, actor: str = "anonymous",
                           message: str = NOT_AUTHENTICATED):
    """Audit and count a command nobody is authenticated for (actor: ``anonymous`` or the claimed
    name), then refuse it."""
    from ledger.identity.refusals import record_refusal

    ctx = click.get_current_context(silent=True)
    with engine.begin() as conn:
        record_refusal(conn, SYSTEM_CLOCK.now(), actor, f"{action}.refused", reason, None, os_login=os_login(),
                       command=ctx.command_path if ctx else "")
    refuse(message)


def changed_by(principal):
    """Whom the audit log names for a change of principals: the administrator and the OS login."""
    from ledger.identity import ChangedBy

    return ChangedBy.administrator(principal, os_login())


def _log_in_on_terminal(settings, engine):
    from ledger.identity import login, logout

    user = click.prompt("operator", default=os_login(), err=True)
    password = click.prompt("password", hide_input=True, err=True)
    code = click.prompt("TOTP code (empty if none)", default="", show_default=False, err=True)
    session = login(engine, user, password, code or None, SYSTEM_CLOCK.now(), f"cli:{os_login()}", access=settings.access)
    logout(engine, session.token, SYSTEM_CLOCK.now())      # the command has its operator; no token is left behind
    return session.principal
