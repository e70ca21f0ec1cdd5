"""The batch's database sessions at a lower CPU priority (engines.database_nice, ledger/db.py
lower_backend_priority), through PostgreSQL's prioritize extension, and without it."""
import logging
from pathlib import Path

from sqlalchemy import text

from ledger.db import make_engine


def nice_of_sessions(engine, sessions: int = 2) -> list[int]:
    """The niceness of ``sessions`` of the engine's pooled sessions' server processes, from /proc."""
    conns = [engine.connect() for _ in range(sessions)]
    try:
        pids = [c.execute(text("select pg_backend_pid()")).scalar_one() for c in conns]
        return [int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) for pid in pids]
    finally:
        for c in conns:
            c.close()


def test_with_the_extension_each_session_runs_at_the_niceness(pg_prioritized):
    url = pg_prioritized
    plain = make_engine(url, pool_size=2)
    niced = make_engine(url, pool_size=2, backend_nice=7)
    try:
        assert nice_of_sessions(niced) == [7, 7]
        with niced.connect() as conn:  # the function is the extension's own: it reads back the same
            assert conn.execute(text("select get_backend_priority(pg_backend_pid())")).scalar_one() == 7
        assert nice_of_sessions(plain) == [0, 0]
    finally:
        niced.dispose()
        plain.dispose()


def test_without_the_extension_sessions_work_and_the_log_says_so_once(pg_database, caplog):
    _, url = pg_database
    niced = make_engine(url, pool_size=2, backend_nice=7)
    try:
        with caplog.at_level(logging.WARNING, logger="gridpay.db"):
            assert nice_of_sessions(niced) == [0, 0]
        said = [r.getMessage() for r in caplog.records if r.name == "gridpay.db"]
        assert len(said) == 1 and "prioritize" in said[0] and "nice 7" in said[0]
    finally:
        niced.dispose()


def test_the_engines_writer_takes_the_setting(pg_prioritized):
    """engines.database_nice reaches the writer's worker, which writes the debits' results."""
    from engines.writer import WriterWorker

    worker = WriterWorker({"url": pg_prioritized, "statement_timeout_s": 5, "timezone": "Asia/Shanghai", "cutoff": "23:00",
                           "backend_nice": 5})
    try:
        assert nice_of_sessions(worker.db, 1) == [5]
    finally:
        worker.close()
