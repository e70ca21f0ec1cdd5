"""``gridpay principal ...``: operators and clients, their roles, passwords, TOTP and API keys
(docs/access.md).

Every command but ``login`` and ``add --first-admin`` runs as an authenticated operator
(``GRIDPAY_OPERATOR_TOKEN``, or a log-in on the terminal: gridpay/operator_auth.py) holding
``principal.manage`` (changes) or ``principal.read`` (list, show, keys list). Secrets are printed once:
a new API key, a session token, an otpauth URI. Exit codes: 0 done; 1 refused (the message says
why, nothing changed); 2 usage errors.
"""
from __future__ import annotations

import sys
from datetime import datetime, time
from zoneinfo import ZoneInfo

import click

from gridpay.operator_auth import TOKEN_ENV, changed_by, current_operator, os_login, refuse_unauthenticated
from gridpay.options import config_option, open_database, url_option
from config.clock import SYSTEM_CLOCK

password_file_option = click.option(
    "--password-file", type=click.File("r"),
    help="read the password from this file's first line ('-': standard input); default: a prompt")
scope_option = click.option("--scope", "scopes", multiple=True, help="a permission the key carries (repeatable)")
expires_option = click.option("--expires", type=click.DateTime(formats=["%Y-%m-%d"]),
                              help="the key works until this date begins (business time zone)")


def _database(config_path, url):
    from ledger.errors import Refused

    return open_database(config_path, url, refusals=(Refused,), needs_schema=True)


def _as_administrator(config_path, url, change):
    """Run ``change(conn, now, by, settings)`` in one transaction as the authenticated administrator."""
    with _database(config_path, url) as db:
        by = changed_by(current_operator(db, "principal.manage"))
        with db[1].begin() as conn:
            return change(conn, SYSTEM_CLOCK.now(), by, db[0])


def _as_reader(config_path, url, read):
    """``read(conn)`` as an authenticated operator who may read principals."""
    from ledger.db import read_only

    with _database(config_path, url) as db:
        current_operator(db, "principal.read")
        with db[1].connect() as conn:
            return read(read_only(conn))


def _password(password_file, confirm: bool) -> str:
    if password_file is not None:
        return password_file.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise click.UsageError("no terminal to ask for the password on: give --password-file")
    return click.prompt("password", hide_input=True, confirmation_prompt=confirm, err=True)


def _expiry(settings, day: datetime | None) -> datetime:
    if day is None:
        raise click.UsageError("an API key needs --expires DATE")
    return datetime.combine(day.date(), time(0), ZoneInfo(settings.business.timezone))


def _show_once(label: str, secret: str) -> None:
    click.echo(f"{label} (shown this once, never again: keep it now): {secret}")


@click.group()
def principal() -> None:
    """Operators and clients: add, disable, enable, reset, roles, API keys, log-in (docs/access.md)."""


@principal.command()
@click.argument("name")
@click.option("--display-name", required=True, help="the person's or system's full name")
@click.option("--client", is_flag=True, help="a system (API keys), not an operator (a person)")
@click.option("--role", "roles", multiple=True, help="an operator's role (repeatable; docs/access.md)")
@password_file_option
@click.option("--totp", is_flag=True, help="enrol a TOTP second factor (its otpauth URI is printed once)")
@click.option("--first-admin", is_flag=True, help="the very first principal: an administrator, no log-in needed")
@scope_option
@expires_option
@config_option
@url_option
def add(name, display_name, client, roles, password_file, totp, first_admin, scopes, expires, config_path, url):
    """Add an operator (--role ..., a password) or a client (--client; with --scope and --expires, its
    first API key)."""
    from ledger.identity import add_client, add_key, add_operator

    if first_admin and (client or roles or scopes):
        raise click.UsageError("--first-admin makes an operator with the administrator role only")
    if client and (roles or totp or password_file):
        raise click.UsageError("a client has API keys (--scope, --expires), not roles, a password or TOTP")
    if not client and (scopes or expires):
        raise click.UsageError("--scope and --expires are a client's (--client); an operator has roles (--role)")
    with _database(config_path, url) as db:
        settings, engine = db
        if first_admin:
            uri = _first_admin(engine, settings, name, display_name, _password(password_file, confirm=True), totp)
        else:
            by = changed_by(current_operator(db, "principal.manage"))
            # asked before the transaction: no lock is held while someone types
            password = None if client else _password(password_file, confirm=True)
            expires_at = _expiry(settings, expires) if scopes else None
            uri = key = None
            with engine.begin() as conn:
                if client:
                    add_client(conn, SYSTEM_CLOCK.now(), by, name, display_name)
                    if scopes:
                        key, _ = add_key(conn, SYSTEM_CLOCK.now(), by, name, scopes, expires_at, settings.access)
                else:
                    _, uri = add_operator(conn, SYSTEM_CLOCK.now(), by, name, display_name, roles, password, settings.access,
                                          totp)
            if key:
                _show_once("API key", key)
    click.echo(f"added {'client' if client else 'operator'} {name}")
    if uri:
        _show_once("TOTP enrolment URI", uri)


def _first_admin(engine, settings, name, display_name, password, totp) -> str | None:
    """The bootstrap; refused (audited and counted) once any principal exists."""
    from ledger.identity import add_first_admin
    from ledger.identity.admin import PrincipalsExist
    from ledger.identity.refusals import claimed_actor

    try:
        with engine.begin() as conn:
            return add_first_admin(conn, SYSTEM_CLOCK.now(), name, display_name, password, os_login(), settings.access, totp)[1]
    except PrincipalsExist as exc:
        refuse_unauthenticated(engine, "bootstrap_refused", "bootstrap", claimed_actor(name), str(exc))


@principal.command()
@click.argument("name")
@click.option("--reason", default="", help="why (audited)")
@config_option
@url_option
def disable(name, reason, config_path, url):
    """Disable a principal: its sessions end and its keys stop working."""
    _set_disabled(name, True, reason, config_path, url)


@principal.command()
@click.argument("name")
@click.option("--reason", default="", help="why (audited)")
@config_option
@url_option
def enable(name, reason, config_path, url):
    """Enable a disabled principal again."""
    _set_disabled(name, False, reason, config_path, url)


def _set_disabled(name, disabled, reason, config_path, url):
    from ledger.identity import set_disabled

    _as_administrator(config_path, url, lambda conn, now, by, _: set_disabled(conn, now, by, name, disabled, reason))
    click.echo(f"{'disabled' if disabled else 'enabled'} {name}")


@principal.command()
@click.argument("name")
@password_file_option
@click.option("--totp", "totp", flag_value="enrol", help="enrol a new TOTP secret (its URI is printed once)")
@click.option("--remove-totp", "totp", flag_value="remove", help="remove the TOTP second factor")
@config_option
@url_option
def reset(name, password_file, totp, config_path, url):
    """Give an operator a new password: clears a lock-out and ends every session."""
    from ledger.identity import reset as reset_principal

    with _database(config_path, url) as db:
        by = changed_by(current_operator(db, "principal.manage"))
        password = _password(password_file, confirm=True)
        with db[1].begin() as conn:
            uri = reset_principal(conn, SYSTEM_CLOCK.now(), by, name, password, db[0].access, totp or "keep")
    click.echo(f"reset {name}")
    if uri:
        _show_once("TOTP enrolment URI", uri)


@principal.command()
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help="the operator's roles from now on (repeatable)")
@config_option
@url_option
def roles(name, roles, config_path, url):
    """Set an operator's roles."""
    from ledger.identity import set_roles

    _as_administrator(config_path, url, lambda conn, now, by, _: set_roles(conn, now, by, name, roles))
    click.echo(f"{name}: {' '.join(sorted(roles))}")


@principal.command(name="list")
@config_option
@url_option
def list_(config_path, url):
    """List principals: kind, name, roles, state."""
    from ledger.identity import list_principals

    for p in _as_reader(config_path, url, list_principals):
        click.echo(f"{p.kind:8} {p.name:20} {_state(p):10} {' '.join(p.roles) or '-':40} {p.display_name}")


@principal.command()
@click.argument("name")
@config_option
@url_option
def show(name, config_path, url):
    """Show one principal (never its secrets) and, for a client, its keys."""
    from ledger.identity import list_keys, show as show_principal

    p, keys = _as_reader(config_path, url, lambda conn: (show_principal(conn, name), list_keys(conn, name)))
    for label, value in (("id", p.principal_id), ("kind", p.kind), ("name", p.name),
                         ("display name", p.display_name), ("roles", " ".join(p.roles) or "-"), ("state", _state(p)),
                         ("TOTP", "enrolled" if p.totp else "no"), ("failed log-ins", p.failed_logins),
                         ("locked until", p.locked_until or "-"), ("created", p.created_at), ("changed", p.changed_at)):
        click.echo(f"{label:15} {value}")
    _print_keys(keys)


def _state(p) -> str:
    if p.disabled:
        return "disabled"
    return "locked" if p.locked_until is not None and p.locked_until > SYSTEM_CLOCK.now() else "active"


def _print_keys(keys) -> None:
    now = SYSTEM_CLOCK.now()
    for k in keys:
        click.echo(f"key {k.key_id:<5} {k.client:20} gpk_{k.prefix}_...  {k.state(now):8} until {k.expires_at:%Y-%m-%d %H:%M}"
                   f"  last used {k.last_used_at or '-'}  {' '.join(k.scopes)}")


@principal.group()
def keys() -> None:
    """Clients' API keys: add (shown once), list, revoke."""


@keys.command(name="add")
@click.argument("client")
@scope_option
@expires_option
@config_option
@url_option
def keys_add(client, scopes, expires, config_path, url):
    """Make a new API key for a client (printed once)."""
    from ledger.identity import add_key

    key, key_id = _as_administrator(config_path, url, lambda conn, now, by, settings: add_key(
        conn, now, by, client, scopes, _expiry(settings, expires), settings.access))
    click.echo(f"key {key_id} for {client}")
    _show_once("API key", key)


@keys.command(name="list")
@click.argument("client", required=False)
@config_option
@url_option
def keys_list(client, config_path, url):
    """List API keys (prefixes only), of one client or all."""
    from ledger.identity import list_keys

    _print_keys(_as_reader(config_path, url, lambda conn: list_keys(conn, client)))


@keys.command(name="revoke")
@click.argument("key_id", type=int)
@click.option("--reason", default="", help="why (audited)")
@config_option
@url_option
def keys_revoke(key_id, reason, config_path, url):
    """Revoke an API key at once."""
    from ledger.identity import revoke_key

    _as_administrator(config_path, url, lambda conn, now, by, _: revoke_key(conn, now, by, key_id, reason))
    click.echo(f"revoked key {key_id}")


@principal.command()
@click.option("--user", default=None, help="the operator (default: the login name)")
@password_file_option
@click.option("--totp", "totp_code", default=None, help="the TOTP code, when enrolled (default: asked on a terminal)")
@config_option
@url_option
def login(user, password_file, totp_code, config_path, url):
    """Log in; prints the session token alone, for scripts: export GRIDPAY_OPERATOR_TOKEN=$(gridpay principal login)."""
    from ledger.identity import login as log_in

    with _database(config_path, url) as (settings, engine):
        user = user or os_login()
        password = _password(password_file, confirm=False)
        if totp_code is None and password_file is None and sys.stdin.isatty():
            totp_code = click.prompt("TOTP code (empty if none)", default="", show_default=False, err=True) or None
        session = log_in(engine, user, password, totp_code, SYSTEM_CLOCK.now(), f"cli:{os_login()}", access=settings.access)
    click.echo(f"logged in as {session.principal.actor} until {session.expires_at:%Y-%m-%d %H:%M} UTC at the latest "
               f"(idle timeout {settings.access.session_idle_minutes:g} min); token for {TOKEN_ENV}:", err=True)
    click.echo(session.token)


@principal.command()
@config_option
@url_option
def logout(config_path, url):
    """End the session in GRIDPAY_OPERATOR_TOKEN."""
    import os

    from ledger.identity import logout as log_out

    with _database(config_path, url) as (_settings, engine):
        ended = log_out(engine, os.environ.get(TOKEN_ENV, ""), SYSTEM_CLOCK.now())
    click.echo("logged out" if ended else f"no live session in {TOKEN_ENV}")
