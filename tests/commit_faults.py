"""A posting worker (``runtime.worker_process`` child) that is killed with SIGKILL at the COMMIT of a
write transaction, when the test arms it: the file named by $GRIDPAY_TEST_KILL_AT_COMMIT holds
``before`` (killed just before the COMMIT is sent: nothing lands) or ``after`` (killed as soon as
the COMMIT has returned: it landed, durable, and the batch is never answered). The file is
removed when the kill fires, so the worker's successor works normally.

The gateway runs it when a test sets ``LedgerPort.POSTING_WORKER = "commit_faults:KilledAtCommit"``
and puts this directory on the child's PYTHONPATH.
"""
from __future__ import annotations

import os
import signal

from sqlalchemy import event

from ledger.group_commit import PostingWorker

ENV = "GRIDPAY_TEST_KILL_AT_COMMIT"


class KilledAtCommit(PostingWorker):
    def __init__(self, config: dict):
        super().__init__(config)
        trigger = os.environ[ENV]
        dialect = self.engine.dialect
        do_commit = dialect.do_commit
        changes_at_begin = {}

        def written(dbapi_connection) -> bool:
            raw = getattr(dbapi_connection, "driver_connection", dbapi_connection)  # past the pool's proxy
            if dialect.name == "sqlite":
                return raw.total_changes > changes_at_begin.get(id(raw), 0)
            return raw.info.transaction_status != 0 and _wrote_pg(raw)

        @event.listens_for(self.engine, "begin")
        def _begin(conn):
            raw = conn.connection.driver_connection
            if dialect.name == "sqlite":
                changes_at_begin[id(raw)] = raw.total_changes

        def commit(dbapi_connection):
            when = _take(trigger) if os.path.exists(trigger) and written(dbapi_connection) else None
            if when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            do_commit(dbapi_connection)
            if when == "after":
                os.kill(os.getpid(), signal.SIGKILL)

        dialect.do_commit = commit


def _wrote_pg(raw) -> bool:
    """Whether this PostgreSQL transaction wrote (has an xid): a lookup's read transaction did not."""
    with raw.cursor() as cur:
        cur.execute("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
        return cur.fetchone()[0]


def _take(trigger: str) -> str | None:
    try:
        with open(trigger) as f:
            when = f.read().strip()
        os.unlink(trigger)
    except FileNotFoundError:
        return None
    return when
