"""Faults for the posting simulation, injected into one engine's statements and COMMITs.

``arm(f1, f2, ...)``: each fault strikes in turn, ``f.transaction`` transactions after the one
before it struck (0: the first to begin; a batch's first, or the first of its posting-by-posting
rerun), at that transaction's ``f.at``-th statement, or at its COMMIT when it has fewer
statements (or the fault is a COMMIT's own). Errors are the driver's own exception classes,
raised where the driver would raise them, so SQLAlchemy and the ledger classify them as they
would a real one:
- ``error``: a statement fails (disk full, an I/O error); at the COMMIT the connection breaks
  instead: the COMMIT's fate is unknown;
- ``broken``: the connection breaks at a statement (rerun once on a new one); at the COMMIT: as
  ``error``;
- ``busy``: SQLite's "database is locked" / PostgreSQL's serialization failure (retried);
- ``integrity``: a unique key taken by another process (rerun posting by posting);
- ``lost``: the connection breaks at the COMMIT (``after``: once it had landed), an outcome the
  ledger cannot know (on SQLite a disk error); then the next ``down`` statements fail too (the
  database unreachable for a while, or until the caller's deadline);
- ``kill``: the process dies (``Killed``, a BaseException nothing in the posting path catches):
  at a statement, or just before / just after the COMMIT.
``hold`` keeps the next COMMIT waiting until ``release`` (two committers racing in a known order).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import event

KINDS = ("error", "broken", "busy", "integrity", "lost", "kill")
AT_COMMIT = 1_000_000
FOREVER = 10 ** 9


class Killed(BaseException):
    """The process died here: nothing after this point runs, nothing is answered."""


@dataclass(frozen=True)
class Fault:
    kind: str
    at: int = AT_COMMIT       # the statement it strikes; beyond the transaction's last: its COMMIT
    after: bool = False       # lost / kill at the COMMIT: after it landed
    down: int = 0             # lost: statements that fail after it (the database away)
    transaction: int = 0      # transactions to let pass first

    def __post_init__(self):
        assert self.kind in KINDS, self.kind

    @property
    def commit_only(self) -> bool:
        return self.kind == "lost" or (self.kind == "kill" and self.after)


@dataclass(frozen=True)
class Strike:
    kind: str
    where: str                # statement | before commit | after commit

    @property
    def landed(self) -> bool:
        return self.where == "after commit"


class FaultyEngine:
    """The fault hooks of one engine; ``fired``: where each armed fault struck, in order."""

    def __init__(self, engine):
        self.dbapi = engine.dialect.loaded_dbapi
        self.postgresql = engine.dialect.name == "postgresql"
        self.faults: list[Fault] = []
        self.fired: list[Strike] = []
        self.down = 0
        self.begun = 0            # transactions begun since arming or the last strike
        self.statements = 0       # statements of the current transaction
        self._hold: tuple[threading.Event, threading.Event] | None = None
        self._release = threading.Event()
        self._do_commit = engine.dialect.do_commit
        engine.dialect.do_commit = self._commit
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "before_cursor_execute", self._statement)

    def arm(self, *faults: Fault) -> None:
        self.faults, self.fired, self.down, self.begun, self.statements = list(faults), [], 0, 0, 0

    def disarm(self) -> None:
        self.faults, self.down = [], 0

    def hold(self) -> threading.Event:
        """Hold the next COMMIT until ``release``; the returned event is set once it is waiting."""
        self._release = threading.Event()
        self._hold = (threading.Event(), self._release)
        return self._hold[0]

    def release(self) -> None:
        self._release.set()

    # ------------------------------------------------------------------ the hooks
    def _active(self) -> Fault | None:
        fault = self.faults[0] if self.faults else None
        return fault if fault is not None and self.begun - 1 == fault.transaction else None

    def _begin(self, conn) -> None:
        self.begun += 1
        self.statements = 0

    def _statement(self, conn, cursor, statement, parameters, context, executemany):
        if self.down:
            self.down -= 1
            raise self.dbapi.OperationalError("injected: could not connect to the database")
        fault = self._active()
        if fault is None:
            return
        self.statements += 1
        if self.statements < fault.at or fault.commit_only:
            return
        self._strike("statement")
        if fault.kind == "kill":
            raise Killed()
        if fault.kind == "broken":
            raise self._break(conn.connection.driver_connection)
        raise self._error(fault.kind)

    def _commit(self, dbapi_connection):
        hold, self._hold = self._hold, None
        if hold is not None:
            hold[0].set()
            hold[1].wait(120)
        fault = self._active()
        if fault is None:
            return self._do_commit(dbapi_connection)
        landed = fault.after and fault.kind in ("lost", "kill")
        self._strike("after commit" if landed else "before commit")
        if landed:
            self._do_commit(dbapi_connection)
        if fault.kind == "kill":
            raise Killed()
        if fault.kind in ("busy", "integrity"):
            raise self._error(fault.kind)
        self.down = fault.down
        if self.postgresql:
            raise self._break(getattr(dbapi_connection, "driver_connection", dbapi_connection))
        raise self.dbapi.OperationalError("disk I/O error")   # SQLite's COMMIT cannot lose a connection

    def _break(self, raw) -> Exception:
        """The connection gone: closed (the server ends a transaction it did not commit), and the
        error the driver then raises."""
        raw.close()
        if self.postgresql:
            return self.dbapi.OperationalError("injected: server closed the connection unexpectedly")
        return self.dbapi.ProgrammingError("Cannot operate on a closed database.")

    def _strike(self, where: str) -> None:
        self.fired.append(Strike(self.faults.pop(0).kind, where))
        self.begun = 0

    def _error(self, kind: str) -> Exception:
        if kind == "busy":
            if self.postgresql:
                from psycopg import errors
                return errors.SerializationFailure("injected: could not serialize access")
            return self.dbapi.OperationalError("database is locked")
        if kind == "integrity":
            return self.dbapi.IntegrityError("injected: duplicate key value violates a unique constraint")
        if self.postgresql:
            from psycopg import errors
            return errors.DiskFull("injected: could not extend file: No space left on device")
        return self.dbapi.OperationalError("disk I/O error")
