"""Every back-office command that changes something runs as an authenticated operator holding its
permission (docs/access.md): a token of a role without it is refused, no token off a terminal is
refused, and either way nothing changes but the refusal's audit row."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from config.settings import environment_for
from gridpay.cli import gridpay
from gridpay.operator_auth import TOKEN_ENV, os_login
from ledger.schema import audit_log, metadata
from identity_helpers import operator_token
from test_engine_support import BANK, seed, settings_tree

# command line -> the permission it needs; FILE is an existing file, DIR a directory (click checks them)
COMMANDS = [
    (["ledger", "import", "customers", "FILE"], "billing.import"),
    (["ledger", "correct", "B1", "--principal", "1", "--penalty", "0", "--reason", "x"], "correction.request"),
    (["ledger", "refund", "C0001", "100", "--reason", "x"], "refund.request"),
    (["ledger", "approve", "1"], "refund.approve.accounting"),   # or .director: neither held, the first is named
    (["ledger", "reject", "1", "--reason", "x"], "refund.approve.accounting"),
    (["ledger", "feed", "export", "2026-11-23", "--dir", "DIR"], "billing.import"),
    (["ledger", "archive", "--before", "2020-01"], "ledger.archive"),
    (["recon", "bank", "FILE"], "recon.run"),
    (["recon", "finance", "FILE"], "statement.import"),
    (["recon", "match", "1", "2"], "recon.match"),
    (["recon", "unmatch", "1", "--reason", "x"], "recon.match"),
    (["recon", "resolve", "1", "--reason", "x"], "recon.match"),
    (["plan", "add", "monthly", "--bank", BANK, "--cron", "0 9 5 * *"], "plan.manage"),
    (["plan", "pause", "monthly"], "plan.manage"),
    (["plan", "resume", "monthly"], "plan.manage"),
    (["plan", "run-now", "monthly"], "plan.manage"),
    (["debit", "now", "C0001"], "debit.single"),
    (["debit", "result", "FILE"], "batch.manage"),
    (["notifier", "requeue", "1"], "notice.manage"),
    (["notifier", "remind"], "notice.manage"),
    (["db", "partitions"], "database.manage"),
]
IDS = [" ".join(argv[:2]) for argv, _ in COMMANDS]
REFUSALS = ("access.forbidden", "command.refused")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A migrated database with customers, bills and agreements, and an auditor: a role that reads
    everything and may change nothing."""
    tmp = tmp_path_factory.mktemp("cliauth")
    url = f"sqlite:///{tmp / 'gridpay.db'}"
    engine, _ = seed(url, 2)
    auditor = operator_token(engine, "audra", ["auditor"])
    (tmp / "some.csv").write_text("not looked at\n", encoding="utf-8")
    env = environment_for(settings_tree(url, drop_dir=str(tmp / "drop")))
    yield engine, env, tmp, auditor
    engine.dispose()


def _argv(argv, tmp) -> list[str]:
    return [str(tmp / "some.csv") if a == "FILE" else str(tmp / "out") if a == "DIR" else a for a in argv]


def _state(engine) -> dict:
    """Row counts of every table but the audit log and the sessions (a session's last use moves)."""
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables if t.name not in ("audit_log", "sessions")}


def _audit_since(engine, last_id: int) -> list:
    with engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.id > last_id).order_by(audit_log.c.id)).all()


def _last_audit_id(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(audit_log.c.id), 0))).scalar_one()


def _run(env, argv, token: str | None):
    env = {**env, TOKEN_ENV: token or ""}
    return CliRunner().invoke(gridpay, argv, env=env, catch_exceptions=False)


@pytest.mark.parametrize("argv,permission", COMMANDS, ids=IDS)
def test_a_role_without_the_permission_is_refused_and_nothing_changes(site, argv, permission):
    engine, env, tmp, auditor = site
    before, last = _state(engine), _last_audit_id(engine)
    result = _run(env, _argv(argv, tmp), auditor)
    assert result.exit_code == 1, result.output
    assert "refused: operator:audra may not" in result.output and f"({permission})" in result.output
    assert _state(engine) == before
    [row] = _audit_since(engine, last)
    assert (row.actor, row.action, row.reason) == ("operator:audra", "access.forbidden", "forbidden")
    details = json.loads(row.details)
    assert details["permission"] == permission and details["os_login"] == os_login()
    assert not (tmp / "out").exists()


@pytest.mark.parametrize("argv,permission", COMMANDS, ids=IDS)
def test_no_token_off_a_terminal_is_refused_and_nothing_changes(site, argv, permission):
    engine, env, tmp, _ = site
    before, last = _state(engine), _last_audit_id(engine)
    result = _run(env, _argv(argv, tmp), None)     # CliRunner's standard input is not a terminal
    assert result.exit_code == 1, result.output
    assert f"refused: not authenticated: set {TOKEN_ENV}" in result.output
    assert _state(engine) == before
    [row] = _audit_since(engine, last)
    assert (row.actor, row.action, row.reason) == ("anonymous", "command.refused", "no_credentials")
    assert json.loads(row.details)["os_login"] == os_login()


def test_a_token_that_is_not_a_session_is_refused(site):
    engine, env, tmp, _ = site
    before = _state(engine)
    result = _run(env, _argv(["ledger", "refund", "C0001", "100", "--reason", "x"], tmp), "not-a-token")
    assert result.exit_code == 1 and "refused:" in result.output
    assert _state(engine) == before


def test_docs_access_lists_each_command_with_its_permission():
    from pathlib import Path

    lines = (Path(__file__).parents[1] / "docs" / "access.md").read_text(encoding="utf-8").splitlines()
    for argv, permission in COMMANDS:
        name = " ".join(argv[:3] if argv[1] == "feed" else argv[:2])
        rows = [line for line in lines if line.startswith("| ") and f"`{name}`" in line.split("|")[1]]
        assert rows and all(f"`{permission}`" in row for row in rows), (name, permission, rows)
