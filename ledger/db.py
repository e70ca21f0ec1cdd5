"""Database engines for embedded SQLite (default), PostgreSQL and Oracle."""
from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


# Every PostgreSQL session of ours is short OLTP statements:
# - custom plans always: a generic plan made while a table was small (a new database, the first
#   hour of a new ledger) goes on scanning it whole long after it has grown, foreign-key checks
#   included; planning these statements costs a fraction of a millisecond;
# - no JIT: on tables without statistics the estimates pass jit_above_cost and compiling a
#   100-row lookup took 100 ms.
SESSION_OPTIONS = ("-c plan_cache_mode=force_custom_plan", "-c jit=off")

log = logging.getLogger("gridpay.db")


def make_engine(url: str, pool_size: int = 10, echo: bool = False, statement_timeout_s: float | None = None,
                pre_ping: bool = True, backend_nice: int = 0) -> Engine:
    """An engine set up for durable ledger work on any supported database. ``statement_timeout_s``
    bounds each statement on PostgreSQL, so a wedged database fails a request instead of holding it.
    ``pre_ping=False`` for a caller that retries a transaction whose connection turns out dead (the
    batch workers): a ping is a round trip per transaction. ``backend_nice``: the CPU priority of
    each PostgreSQL session's server process (``lower_backend_priority``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, echo)
    _require_driver(parsed)
    kwargs = {"pool_size": pool_size, "max_overflow": pool_size, "pool_pre_ping": pre_ping}
    if parsed.get_backend_name() == "postgresql":
        options = " ".join(filter(None, [parsed.query.get("options"), *SESSION_OPTIONS]))
        kwargs["connect_args"] = {"connect_timeout": 5, "options": options}
    engine = create_engine(url, echo=echo, **kwargs)
    if statement_timeout_s and parsed.get_backend_name() == "postgresql":
        milliseconds = int(statement_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _statement_timeout(dbapi_conn, _record):
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET statement_timeout = {milliseconds}")
            dbapi_conn.commit()

    if backend_nice and parsed.get_backend_name() == "postgresql":
        lower_backend_priority(engine, backend_nice)
    return engine


PRIORITY_FUNCTION = "set_backend_priority(integer,integer)"


def lower_backend_priority(engine: Engine, nice: int) -> None:
    """Each new session's server process runs at ``nice`` (a Unix niceness, 1-19), through the
    ``prioritize`` extension (Debian's postgresql-NN-prioritize; ``CREATE EXTENSION prioritize``).
    The batch's sessions then yield the database's cores to the counter's, as the engine processes
    themselves do (config/systemd: Nice=): on a shared core a payment's statements wait behind a
    debit's otherwise. A process may only lower its own sessions' priority, never raise it. Without
    the extension the sessions run at the default priority, said once in the log."""
    warned = []

    @event.listens_for(engine, "connect")
    def _nice(dbapi_conn, _record):
        with dbapi_conn.cursor() as cur:
            cur.execute("SELECT to_regprocedure(%s) IS NOT NULL", (PRIORITY_FUNCTION,))
            if cur.fetchone()[0]:
                cur.execute("SELECT set_backend_priority(pg_backend_pid(), %s)", (nice,))
            elif not warned:
                warned.append(True)
                log.warning("database sessions at the default CPU priority, not nice %d: the database has no "
                            "prioritize extension (CREATE EXTENSION prioritize; docs/runbook.md)", nice)
        dbapi_conn.commit()


ORACLE_DRIVER_MISSING = (
    "an Oracle URL needs the python-oracledb driver, an extra of gridpay: pip install 'gridpay[oracle]'. "
    "Oracle is untested against a server (none was available): tests only compile gridpay's Oracle DDL and "
    "statements with SQLAlchemy's Oracle dialect")


def _require_driver(parsed) -> None:
    """The Oracle driver is the ``oracle`` extra, imported only for an Oracle URL: without it, a
    ConfigError that says how to install it (instead of SQLAlchemy's bare ModuleNotFoundError)."""
    if parsed.get_backend_name() != "oracle":
        return
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError:
        from config import ConfigError

        raise ConfigError("database.url", ORACLE_DRIVER_MISSING) from None


def _sqlite_engine(url: str, echo: bool) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None hands transaction control to us: each transaction starts with
    # BEGIN IMMEDIATE, so writers queue on the database lock instead of failing on upgrade.
    engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False,
                                                          "isolation_level": None})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


READ_ONLY = "gridpay_read_only"


def read_only(conn):
    """A connection for reads only: on SQLite its transactions do not take the write lock."""
    return conn.execution_options(**{READ_ONLY: True})


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
