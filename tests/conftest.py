"""Shared fixtures: database URLs for embedded SQLite and the PostgreSQL server.

PostgreSQL tests use the server named by GRIDPAY_TEST_PG_URL (default: the local one on
127.0.0.1:5432, database ``test``). Each test gets a schema of its own. When the server
cannot be reached the tests skip with the reason, unless GRIDPAY_REQUIRE_PG=1 (set by
.ci/run), which turns that into a failure: in CI the PostgreSQL tests must run.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pytest_report_header(config):
    return f"PostgreSQL for tests: {os.environ.get('GRIDPAY_TEST_PG_URL', DEFAULT_PG_URL)}" + (
        " (required)" if os.environ.get("GRIDPAY_REQUIRE_PG") == "1" else " (skipped if unreachable)")


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    from sqlalchemy import create_engine, text

    url = os.environ.get("GRIDPAY_TEST_PG_URL", DEFAULT_PG_URL)
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server"
        reason = f"PostgreSQL not reachable at {url}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        if os.environ.get("GRIDPAY_REQUIRE_PG") == "1":
            pytest.fail(reason + " (GRIDPAY_REQUIRE_PG=1)")
        pytest.skip(reason)
    return url


@contextmanager
def fresh_schema(pg_server_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after."""
    from sqlalchemy import create_engine, text

    schema = f"gp_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    sep = "&" if "?" in pg_server_url else "?"
    try:
        yield f"{pg_server_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'drop schema "{schema}" cascade'))
        admin.dispose()


@pytest.fixture
def pg_url(pg_server_url):
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    with fresh_schema(pg_server_url) as url:
        yield url


@pytest.fixture
def pg_database(pg_server_url):
    """(an AUTOCOMMIT engine on the server, the URL of a database of the test's own), dropped after:
    for what is one per database (an extension), where the others' tests share theirs."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"gp_db_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    try:
        yield admin, make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'drop database "{name}" with (force)'))
        admin.dispose()


@pytest.fixture
def pg_prioritized(pg_database) -> str:
    """The URL of a database of the test's own with PostgreSQL's prioritize extension created (the
    test skips, saying why, where the server has none)."""
    from sqlalchemy import create_engine, text

    admin, url = pg_database
    with admin.connect() as conn:
        if not conn.execute(text("select 1 from pg_available_extensions where name = 'prioritize'")).all():
            pytest.skip("this PostgreSQL has no prioritize extension (Debian: postgresql-NN-prioritize; "
                        ".ci/run installs it)")
    own = create_engine(url, isolation_level="AUTOCOMMIT")
    with own.connect() as conn:
        conn.execute(text("create extension prioritize"))
    own.dispose()
    return url


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'gridpay.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    """Runs the test once on embedded SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture(autouse=True)
def _built_in_notice_wording():
    """A configuration a test loads sets the process's notice wording (``config.load_settings``):
    the next test starts from the built-in one."""
    yield
    from config import notices

    notices.configure()
