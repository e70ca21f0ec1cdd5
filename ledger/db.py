"""Database engines for embedded SQLite (default), PostgreSQL and Oracle."""
from __future__ import annotations

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


def make_engine(url: str, pool_size: int = 10, echo: bool = False, statement_timeout_s: float | None = None,
                pre_ping: bool = True) -> Engine:
    """An engine set up for durable ledger work on any supported database. ``statement_timeout_s``
    bounds each statement on PostgreSQL, so a wedged database fails a request instead of holding it.
    ``pre_ping=False`` for a caller that retries a transaction whose connection turns out dead (the
    batch workers): a ping is a round trip per transaction."""
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

    return engine


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
