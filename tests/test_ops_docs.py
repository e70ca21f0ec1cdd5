"""The operator's documents name only commands, options, tables and columns that exist.

Every `gridpay ...` line in docs/runbook.md's shell blocks must be a real subcommand with real
options; every SQL block must name real tables and run on a migrated PostgreSQL database."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "runbook.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def gridpay_commands(path: Path) -> list[list[str]]:
    out = []
    for block in blocks(path, "sh"):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            if "/opt/gridpay/venv/bin/gridpay " in line:  # a command run through runuser / env
                line = line[line.index("/opt/gridpay/venv/bin/gridpay ") + len("/opt/gridpay/venv/bin/"):]
            if line.startswith("gridpay "):
                out.append(shlex.split(line.rstrip(")")))
    return out


def resolve(argv: list[str]) -> tuple[click.Command, list[str]]:
    from gridpay.cli import gridpay

    cmd: click.Command = gridpay
    ctx = click.Context(gridpay, info_name="gridpay")
    rest = argv[1:]
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"{' '.join(argv)}: no command {rest[0]!r}"
        ctx = click.Context(sub, info_name=rest[0], parent=ctx)
        cmd, rest = sub, rest[1:]
    return cmd, rest


def test_runbook_commands_exist_with_their_options():
    commands = gridpay_commands(RUNBOOK)
    assert len(commands) >= 20
    seen = set()
    for argv in commands:
        cmd, rest = resolve(argv)
        options = {o for p in cmd.params for o in p.opts + p.secondary_opts} | {"-h", "--help"}
        given = {a.split("=", 1)[0] for a in rest if a.startswith("-")}
        assert given <= options, f"{' '.join(argv)}: unknown option(s) {sorted(given - options)}"
        ctx = cmd.make_context(argv[0], list(rest), resilient_parsing=True)
        assert ctx is not None
        seen.add(" ".join(a for a in argv[1:3] if not a.startswith("-") and not a[0].isdigit()))
    for needed in ("ledger verify", "notifier status", "notifier requeue", "recon open", "recon resolve",
                   "recon show", "debit batch", "debit result", "db upgrade", "plan list"):
        assert any(s.startswith(needed) for s in seen), f"the runbook never shows `gridpay {needed}`"


def sql_statements() -> list[str]:
    out = []
    for block in blocks(RUNBOOK, "sql"):
        out += [s.strip() for s in block.split(";") if s.strip()]
    return out


def table_names() -> set[str]:
    from gridpay.all_tables import metadata

    return set(metadata.tables)


def test_runbook_sql_names_real_tables():
    tables = table_names()
    statements = sql_statements()
    assert len(statements) >= 15
    used = set()
    for statement in statements:
        assert re.match(r"(?is)^(select|with)\b", statement), f"read-only queries only: {statement[:60]}"
        for name in re.findall(r"(?i)\b(?:from|join)\s+([a-z_][a-z0-9_]*)", statement):
            assert name in tables or name.startswith("pg_"), f"no table {name!r}: {statement[:80]}"
            used.add(name)
    for needed in ("debit_reversals", "recon_items", "debit_chunks", "engine_batches", "bank_keys", "outbox",
                   "engine_instances", "debit_files", "business_day_closures"):
        assert needed in used, f"the runbook has no query on {needed}"


@pytest.mark.postgres
def test_runbook_sql_runs_on_postgresql(pg_prioritized):
    """In a database of its own: the runbook's query of the sessions' niceness needs the prioritize
    extension, which is one per database (.ci/run installs it)."""
    from sqlalchemy import create_engine, text

    from ledger import migrate

    migrate.upgrade(pg_prioritized)
    engine = create_engine(pg_prioritized)
    try:
        with engine.connect() as conn:
            for statement in sql_statements():
                conn.execute(text(statement.replace(":", r"\:"))).fetchall()
    finally:
        engine.dispose()


def test_runbook_names_every_alert_and_real_units():
    import yaml

    text = RUNBOOK.read_text(encoding="utf-8")
    rules = yaml.safe_load((ROOT / "config" / "prometheus" / "gridpay-alerts.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert f"`{rule['alert']}`" in text, f"the runbook never mentions {rule['alert']}"
    units = {p.name.split(".")[0].rstrip("@") for p in (ROOT / "config" / "systemd").iterdir()}
    for name in set(re.findall(r"\b(gridpay-[a-z]+)(?=[@\s'`]|\.service|\.target|$)", text)):
        assert name in units, f"the runbook names a unit {name} that config/systemd/ does not have"


def test_architecture_names_real_tables_and_units():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    tables = table_names()
    from scripts.gen_config_docs import walk

    settings = {k.name for k in walk()}
    named = set(re.findall(r"`([a-z_]+)`", text))
    # backticked snake_case words are tables, except settings and a few column / metric names
    candidates = {n for n in named if "_" in n and n not in settings and not n.startswith("gridpay_")}
    columns = {"last_run_for", "lease_until", "scheduled_for", "plan_id", "mak_under_zmk", "apply_batch",
               "next_attempt_at"}
    unknown = {n for n in candidates - columns if n not in tables}
    assert not unknown, f"not tables: {sorted(unknown)}"
    for unit in re.findall(r"`(gridpay-[a-z@.]+\.service)`", text):
        assert (ROOT / "config" / "systemd" / unit).exists(), unit
