"""Alembic migrations, driven from code: ``gridpay db upgrade`` needs no alembic.ini."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revisions the database is at, comma-separated (one per branch), or None when empty."""
    from alembic.runtime.migration import MigrationContext

    from ledger.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            heads = MigrationContext.configure(conn).get_current_heads()
            return ",".join(sorted(heads)) or None
    finally:
        engine.dispose()


def newest() -> str:
    """The revisions a fully migrated database is at."""
    from alembic.script import ScriptDirectory

    return ",".join(sorted(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()))


def pending_ranges(at: list[str]) -> list[tuple[str, str]]:
    """(from, to) for each branch whose head a database at revisions ``at`` has not reached.

    The branches (gateway, recon, engines) grow from one root; a database made by ``gridpay db
    upgrade`` is at every branch's head of its release, so each branch's range starts at the
    newest revision of that branch the database already has."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    applied = {rev.revision for head in at for rev in script.iterate_revisions(head, "base")}
    ranges = []
    for head in sorted(script.get_heads()):
        start = next((rev.revision for rev in script.iterate_revisions(head, "base") if rev.revision in applied), None)
        if start != head:
            ranges.append((start or "base", head))
    return ranges


def sqlite_upgrade_sql(url: str) -> list[str]:
    """The statements ``upgrade`` would run on this SQLite database, found by running it on a copy.

    SQLite alters a table by rebuilding it from the live table's reflected shape (alembic's batch
    mode), so its SQL cannot be written offline; the copy is migrated and thrown away."""
    import sqlite3
    import tempfile

    from sqlalchemy import Engine, event
    from sqlalchemy.engine import make_url

    statements: list[str] = []

    def record(_conn, _cursor, statement, parameters, _context, _executemany):
        if not statement.lstrip().upper().startswith(("SELECT", "PRAGMA", "BEGIN")):
            statements.append(statement.strip() if not parameters else f"{statement.strip()} -- {parameters!r}")

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "copy.db"
        source = sqlite3.connect(f"file:{make_url(url).database}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        event.listen(Engine, "before_cursor_execute", record)
        try:
            upgrade(f"sqlite:///{copy}")
        finally:
            event.remove(Engine, "before_cursor_execute", record)
    return statements
