"""``gridpay principal ...`` end to end through click's runner on a migrated database: the first
administrator, refusals without a token, changes with one (audited with the principal and the OS
login), keys shown once, log-in and log-out; and ``current_operator`` for other commands."""
from __future__ import annotations

import getpass
from datetime import timedelta

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from gridpay.cli import gridpay
from ledger import migrate
from ledger.db import make_engine
from ledger.identity import authenticate_api_key
from ledger.identity.tables import api_keys
from config.clock import SYSTEM_CLOCK
from identity_helpers import PASSWORD, audit_rows

FAST_ENV = {"GRIDPAY_ACCESS__ARGON2_TIME_COST": "1", "GRIDPAY_ACCESS__ARGON2_MEMORY_KIB": "8",
            "GRIDPAY_ACCESS__ARGON2_PARALLELISM": "1"}


class Cli:
    def __init__(self, url: str, tmp_path):
        self.env = {"GRIDPAY_DATABASE__URL": url, "GRIDPAY_OPERATOR_TOKEN": "", **FAST_ENV}
        self.password = tmp_path / "password"
        self.password.write_text(PASSWORD + "\n")

    def __call__(self, *args, token: str = "", code: int = 0):
        result = CliRunner().invoke(gridpay, list(args), env={**self.env, "GRIDPAY_OPERATOR_TOKEN": token})
        assert result.exit_code == code, (args, result.output, result.exception)
        return result

    def login(self, user: str) -> str:
        return self("principal", "login", "--user", user, "--password-file", str(self.password)).stdout.strip()


@pytest.fixture
def cli(tmp_path, sqlite_url):
    migrate.upgrade(sqlite_url)
    return Cli(sqlite_url, tmp_path)


def add_operator(cli, token: str, name: str, role: str):
    return cli("principal", "add", name, "--display-name", name.title(), "--role", role, "--password-file",
               str(cli.password), token=token)


def first_admin(cli):
    return cli("principal", "add", "root", "--display-name", "Root Admin", "--first-admin",
               "--password-file", str(cli.password))


def test_first_admin_then_a_second_add_needs_an_administrators_token(db_url, tmp_path):
    migrate.upgrade(db_url)
    cli = Cli(db_url, tmp_path)
    first_admin(cli)
    add_alice = ("principal", "add", "alice", "--display-name", "Alice", "--role", "clerk",
                 "--password-file", str(cli.password))
    refused = cli(*add_alice, code=1)
    assert "not authenticated" in refused.output
    again = cli("principal", "add", "eve", "--display-name", "Eve", "--first-admin", "--password-file",
                str(cli.password), code=1)
    assert "principals exist already" in again.output
    token = cli.login("root")
    assert token.startswith("gps_")
    cli(*add_alice, token=token)
    engine = make_engine(db_url)
    rows = audit_rows(engine)
    engine.dispose()
    adds = [r for r in rows if r["action"] == "principal.add"]
    assert [(r["actor"], r["details"]["name"]) for r in adds] == [("operator:root", "root"), ("operator:root", "alice")]
    assert all(r["details"]["os_login"] == getpass.getuser() for r in adds)
    assert adds[0]["details"]["source"] == "bootstrap"
    refusals = [(r["action"], r["actor"], r["reason"]) for r in rows if r["action"].endswith(".refused")]
    assert refusals == [("command.refused", "anonymous", "no_credentials"),
                        ("bootstrap.refused", "claimed:eve", "bootstrap_refused")]
    command = next(r for r in rows if r["action"] == "command.refused")["details"]
    assert command["command"] == "gridpay principal add" and command["os_login"] == getpass.getuser()
    assert PASSWORD not in str(rows)


def test_a_clerks_token_may_not_manage_principals(cli):
    first_admin(cli)
    root = cli.login("root")
    add_operator(cli, root, "alice", "clerk")
    alice = cli.login("alice")
    out = cli("principal", "disable", "root", token=alice, code=1)
    assert "operator:alice may not" in out.output and "principal.manage" in out.output
    out = cli("principal", "list", token=alice, code=1)
    assert "principal.read" in out.output
    listing = cli("principal", "list", token=root).stdout
    assert "alice" in listing and "clerk" in listing and "administrator" in listing


def test_client_key_is_printed_once_and_works_until_revoked(cli):
    first_admin(cli)
    root = cli.login("root")
    expires = f"{SYSTEM_CLOCK.now() + timedelta(days=30):%Y-%m-%d}"
    mixed = cli("principal", "add", "billing", "--client", "--display-name", "Billing", "--role", "clerk", token=root,
                code=2)
    assert "not roles" in mixed.output
    far = cli("principal", "add", "billing", "--client", "--display-name", "Billing system", "--scope",
              "billing.import", "--expires", "2099-01-01", token=root, code=1)
    assert "at most 400 days away" in far.output
    out = cli("principal", "add", "billing", "--client", "--display-name", "Billing system", "--scope",
              "billing.import", "--expires", expires, token=root).stdout
    key = out.split("keep it now): ")[1].split()[0]
    engine = make_engine(cli.env["GRIDPAY_DATABASE__URL"])
    assert authenticate_api_key(engine, key, SYSTEM_CLOCK.now()).actor == "client:billing"
    listed = cli("principal", "keys", "list", "billing", token=root).stdout
    assert key not in listed and key.split("_")[1] in listed and "active" in listed
    show = cli("principal", "show", "billing", token=root).stdout
    assert key not in show and "billing.import" in show
    with engine.connect() as conn:
        key_id = conn.execute(select(api_keys.c.key_id)).scalar_one()
    bad = cli("principal", "keys", "add", "billing", "--scope", "principal.manage", "--expires", expires,
              token=root, code=1)
    assert "scopes refused: principal.manage" in bad.output
    cli("principal", "keys", "revoke", str(key_id), "--reason", "rotated", token=root)
    with pytest.raises(Exception, match="not valid"):
        authenticate_api_key(engine, key, SYSTEM_CLOCK.now())
    actions = [(r["action"], r["actor"]) for r in audit_rows(engine) if r["action"].startswith("api_key")]
    engine.dispose()
    assert actions == [("api_key.add", "operator:root"), ("api_key.revoke", "operator:root"),
                       ("api_key.refused", "client:billing")]


def test_reset_enrols_totp_once_and_disable_ends_the_session(cli):
    first_admin(cli)
    root = cli.login("root")
    add_operator(cli, root, "bob", "finance")
    bob = cli.login("bob")
    cli("principal", "disable", "bob", "--reason", "on leave", token=root)
    assert "may not" not in cli("principal", "list", token=bob, code=1).output   # the session ended
    cli("principal", "enable", "bob", token=root)
    out = cli("principal", "reset", "bob", "--password-file", str(cli.password), "--totp", token=root).stdout
    assert "otpauth://totp/" in out
    show = cli("principal", "show", "bob", token=root).stdout
    assert "enrolled" in show and "secret" not in show.lower()
    no_code = cli("principal", "login", "--user", "bob", "--password-file", str(cli.password), code=1)
    assert "wrong user name, password or TOTP code" in no_code.output
    assert "totp_missing" not in no_code.output          # the precise reason is the audit log's, not the terminal's
    assert cli("principal", "logout", token=root).stdout.strip() == "logged out"
    cli("principal", "list", token=root, code=1)


def test_current_operator_gives_the_principal_or_refuses(cli):
    """The helper other commands will call: a token in the environment, the permission checked."""
    from gridpay.operator_auth import current_operator
    from gridpay.options import config_option, open_database

    seen = []

    @click.command()
    @click.argument("permission")
    @config_option
    def probe(permission, config_path):
        with open_database(config_path) as db:
            seen.append(current_operator(db, permission))

    first_admin(cli)
    root = cli.login("root")
    runner = CliRunner()
    ok = runner.invoke(probe, ["principal.manage"], env={**cli.env, "GRIDPAY_OPERATOR_TOKEN": root})
    assert ok.exit_code == 0 and seen[0].actor == "operator:root"
    no = runner.invoke(probe, ["refund.request"], env={**cli.env, "GRIDPAY_OPERATOR_TOKEN": root})
    assert no.exit_code == 1 and "refused: operator:root may not" in no.output
    nobody = runner.invoke(probe, ["refund.request"], env={**cli.env, "GRIDPAY_OPERATOR_TOKEN": ""})
    assert nobody.exit_code == 1 and "GRIDPAY_OPERATOR_TOKEN" in nobody.output
    forged = runner.invoke(probe, ["refund.request"], env={**cli.env, "GRIDPAY_OPERATOR_TOKEN": "gps_nope"})
    assert forged.exit_code == 1 and "not logged in" in forged.output


def test_the_commands_docs_access_shows_exist_with_their_options():
    from pathlib import Path

    from test_ops_docs import gridpay_commands, resolve

    commands = gridpay_commands(Path(__file__).resolve().parents[1] / "docs" / "access.md")
    assert len(commands) >= 12
    for argv in commands:
        cmd, rest = resolve(argv)
        options = {o for p in cmd.params for o in p.opts + p.secondary_opts}
        given = {a for a in rest if a.startswith("-")}
        assert given <= options, f"{' '.join(argv)}: unknown option(s) {sorted(given - options)}"


def test_on_a_terminal_without_a_token_the_command_asks_for_a_log_in(cli):
    """A pseudo-terminal: the operator types user name, password and (empty) TOTP code; the command
    runs as that operator and its log-in session is ended at once."""
    import os
    import pty
    import sys

    first_admin(cli)
    pid, fd = pty.fork()
    if pid == 0:                                          # the child: gridpay on the terminal
        os.execvpe(sys.executable, [sys.executable, "-m", "gridpay", "principal", "list"],
                   {**os.environ, **cli.env, "GRIDPAY_OPERATOR_TOKEN": ""})
    transcript = b""
    for prompt, answer in ((b"operator", b"root\n"), (b"password", PASSWORD.encode() + b"\n"), (b"TOTP code", b"\n")):
        while prompt not in transcript:
            transcript += os.read(fd, 1024)
        transcript = transcript.split(prompt, 1)[1]
        os.write(fd, answer)
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:                                   # the child has gone: the terminal is closed
            break
        if not chunk:
            break
        transcript += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, transcript
    assert b"administrator" in transcript and PASSWORD.encode() not in transcript
    engine = make_engine(cli.env["GRIDPAY_DATABASE__URL"])
    actions = [(r["action"], r["actor"]) for r in audit_rows(engine) if r["action"] in ("login", "logout")]
    engine.dispose()
    assert actions == [("login", "operator:root"), ("logout", "operator:root")]
