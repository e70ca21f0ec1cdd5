"""The SMS notifier: sends the outbox's notices through a sender (``engines.sms``), at most once each.

States of an outbox row (ledger/schema.py) and who moves them::

    pending --claim--> sending --begin attempt--> (in flight) --2xx--------------------> sent
       ^                 |                             |--transient, attempts left------> pending (backoff)
       |                 |                             |--permanent / retry limit / unknown --> dead
       |                 |--lease over, never begun (sweep) --> pending
       |                 `--too close to the lease end to begin --> pending
       |                                     (in flight) --lease over (sweep)--> dead "outcome unknown"
       `----------- requeue (operator, audited) <------------------------------- dead

- **Claim** (one transaction): due pending rows (``next_attempt_at <= now``) become ``sending`` with
  ``claimed_by`` = this notifier and ``next_attempt_at`` = the end of its lease. PostgreSQL and
  Oracle select them ``FOR UPDATE SKIP LOCKED`` (two notifiers never wait for or take each other's
  rows); SQLite has one writer at a time (``BEGIN IMMEDIATE``, ledger.db) and the UPDATE is
  conditional on the row still being pending.
- **Begin attempt** (committed before anything is sent): ``attempts + 1`` and ``last_error`` =
  ``in flight since ...`` - from here on the notice may have gone out.
- **Result** (one transaction per notice, as soon as it is known): ``sent`` + ``sent_at``;
  ``pending`` + backoff; or ``dead``.
- **Sweep** (every ``sweep_interval_s``, by any notifier): rows still ``sending`` after their lease
  belonged to a notifier that died (or lost its database). Never begun: back to ``pending``
  (certainly not sent). In flight: ``dead`` with ``OUTCOME_UNKNOWN`` - not resent automatically;
  an operator decides (``gridpay notifier requeue``). At most once, not at least once.

A notifier never begins an attempt later than ``lease_s - 2 x send timeout`` after its claim, so
a live notifier's notice is never swept from under it (clocks of notifier hosts must agree to
well within that margin).
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Engine, Select, and_, func, or_, select, update

from runtime.loop_thread import LoopThread
from runtime.ratelimit import Backoff
from engines.sms import Notice, Sender, SendError
from iso8583_specs.masking import mask_number
from ledger.audit import audit_row, write_audit
from config.clock import SYSTEM_CLOCK, Clock
from ledger.db import read_only
from ledger.reminders import KIND as REMINDER_KIND
from ledger.reminders import QuietHours
from ledger.schema import outbox

log = logging.getLogger("gridpay.notifier")

OUTCOME_UNKNOWN = "outcome unknown: notifier died while sending"
IN_FLIGHT = "in flight since "
PENDING, SENDING, SENT, DEAD = "pending", "sending", "sent", "dead"
NOTICE_COLUMNS = (outbox.c.id, outbox.c.customer_no, outbox.c.mobile, outbox.c.kind, outbox.c.text, outbox.c.ref,
                  outbox.c.attempts, outbox.c.params)


# ---------------------------------------------------------------------------------------------
# masking and time


_DIGITS = re.compile(r"\d{6,}")


def mask_digits(text: str) -> str:
    """Any run of 6 or more digits (mobile, customer or account numbers) masked, for logs."""
    return _DIGITS.sub(lambda m: mask_number(m[0]), text)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return mask_digits(text.splitlines()[0] if text else type(exc).__name__)


def describe(notice: Notice) -> str:
    return f"notice {notice.id} ({notice.kind} {notice.ref}, customer {mask_number(notice.customer_no)}, " \
           f"mobile {mask_number(notice.mobile)})"


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything in the ledger is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def default_name(prefix: str = "") -> str:
    return f"{prefix or socket.gethostname()}:{os.getpid()}"[-64:]


# ---------------------------------------------------------------------------------------------
# metrics


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sent = Counter("gridpay_notices_sent", "Notices the SMS gateway took", registry=r)
        self.failed = Counter("gridpay_notices_failed", "Failed send attempts, by reason class", ["reason"],
                              registry=r)
        self.dead = Counter("gridpay_notices_dead", "Notices moved to dead, by cause "
                            "(permanent, retry_limit, outcome_unknown)", ["cause"], registry=r)
        self.released = Counter("gridpay_notices_released", "Claimed notices put back unsent", registry=r)
        self.send_seconds = Histogram("gridpay_notice_send_seconds", "Duration of one send attempt",
                                      buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.backlog = Gauge("gridpay_outbox_backlog", "Pending notices (due or waiting for a retry)", registry=r)
        self.oldest_age = Gauge("gridpay_outbox_oldest_age_seconds", "Age of the oldest pending notice "
                                "(0 when none)", registry=r)
        self.sending = Gauge("gridpay_outbox_sending", "Notices claimed by some notifier", registry=r)
        self.dead_rows = Gauge("gridpay_outbox_dead", "Notices in the dead state (waiting for an operator)",
                               registry=r)
        self.db_up = Gauge("gridpay_db_up", "1 when the last database access succeeded", registry=r)


# ---------------------------------------------------------------------------------------------
# the outbox in the database


@dataclass(frozen=True)
class OutboxStats:
    backlog: int
    oldest_age_s: float
    sending: int
    dead: int


def claim_statement(dialect_name: str, limit: int, now: datetime, held_kinds: tuple[str, ...] = ()) -> Select:
    """Due pending rows, oldest due first, locked for this transaction; other claimers skip them.
    ``held_kinds``: kinds not to send now (reminders in quiet hours); they stay pending.

    Oracle refuses FOR UPDATE with FETCH FIRST (ORA-02014): there the statement has no limit and the
    caller fetches ``limit`` rows (with SKIP LOCKED, Oracle locks rows as they are fetched)."""
    stmt = (select(*NOTICE_COLUMNS)
            .where(outbox.c.state == PENDING, outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.next_attempt_at, outbox.c.id))
    if held_kinds:
        stmt = stmt.where(outbox.c.kind.not_in(held_kinds))
    if dialect_name == "sqlite":
        return stmt.limit(limit)            # the transaction holds the write lock already
    if dialect_name == "oracle":
        return stmt.with_for_update(skip_locked=True)
    return stmt.limit(limit).with_for_update(skip_locked=True)



def _ours(name: str):
    """A row this notifier claimed and still owns - or one the sweep gave up on while we were sending
    (we then know its outcome after all, and record it)."""
    return and_(outbox.c.claimed_by == name,
                or_(outbox.c.state == SENDING, and_(outbox.c.state == DEAD, outbox.c.last_error == OUTCOME_UNKNOWN)))


class OutboxStore:
    def __init__(self, engine: Engine, name: str):
        self.engine, self.name = engine, name

    def claim(self, now: datetime, limit: int, lease_s: float, held_kinds: tuple[str, ...] = ()) -> list[Notice]:
        lease_until = now + timedelta(seconds=lease_s)
        with self.engine.begin() as conn:
            result = conn.execute(claim_statement(conn.dialect.name, limit, now, held_kinds))
            rows = result.fetchmany(limit)
            result.close()
            if not rows:
                return []
            ids = [r.id for r in rows]
            claimed = conn.execute(
                update(outbox).where(outbox.c.id.in_(ids), outbox.c.state == PENDING)
                .values(state=SENDING, claimed_by=self.name, next_attempt_at=lease_until)).rowcount
            if claimed != len(ids):     # cannot happen: the rows are locked (or the database is)
                raise RuntimeError(f"claimed {claimed} of {len(ids)} locked outbox rows")
        return [Notice(r.id, r.customer_no, r.mobile, r.kind, r.text, r.ref, r.attempts, r.params) for r in rows]

    def begin_attempt(self, notice: Notice, now: datetime) -> bool:
        """Committed before the send: from here on the notice may have gone out."""
        with self.engine.begin() as conn:
            return conn.execute(
                update(outbox).where(outbox.c.id == notice.id, outbox.c.state == SENDING,
                                     outbox.c.claimed_by == self.name)
                .values(attempts=outbox.c.attempts + 1,
                        last_error=f"{IN_FLIGHT}{now:%Y-%m-%dT%H:%M:%SZ} ({self.name})"[:200])).rowcount == 1

    def release(self, notice: Notice, now: datetime) -> bool:
        """Back to pending, never sent (attempts unchanged)."""
        with self.engine.begin() as conn:
            return conn.execute(
                update(outbox).where(outbox.c.id == notice.id, outbox.c.state == SENDING,
                                     outbox.c.claimed_by == self.name)
                .values(state=PENDING, claimed_by=None, next_attempt_at=now)).rowcount == 1

    def _record(self, notice: Notice, **values) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(update(outbox).where(outbox.c.id == notice.id, _ours(self.name))
                                .values(**values)).rowcount == 1

    def record_sent(self, notice: Notice, now: datetime) -> bool:
        # claimed_by stays: who sent it
        return self._record(notice, state=SENT, sent_at=now, next_attempt_at=None)

    def record_retry(self, notice: Notice, next_attempt_at: datetime, error: str) -> bool:
        return self._record(notice, state=PENDING, claimed_by=None, next_attempt_at=next_attempt_at,
                            last_error=error[:200])

    def record_dead(self, notice: Notice, error: str) -> bool:
        return self._record(notice, state=DEAD, next_attempt_at=None, last_error=error[:200])

    def sweep(self, now: datetime) -> tuple[list[int], list[int]]:
        """Rows left ``sending`` past their lease: (ids made dead, ids put back to pending)."""
        expired = and_(outbox.c.state == SENDING, outbox.c.next_attempt_at <= now)
        in_flight = outbox.c.last_error.like(f"{IN_FLIGHT}%")
        with self.engine.begin() as conn:
            rows = conn.execute(select(outbox.c.id, outbox.c.last_error).where(expired)).all()
            if not rows:
                return [], []
            dead = [r.id for r in rows if (r.last_error or "").startswith(IN_FLIGHT)]
            back = [r.id for r in rows if not (r.last_error or "").startswith(IN_FLIGHT)]
            if dead:
                conn.execute(update(outbox).where(outbox.c.id.in_(dead), expired, in_flight)
                             .values(state=DEAD, next_attempt_at=None, last_error=OUTCOME_UNKNOWN))
            if back:
                conn.execute(update(outbox).where(outbox.c.id.in_(back), expired,
                                                  or_(outbox.c.last_error.is_(None), ~in_flight))
                             .values(state=PENDING, claimed_by=None, next_attempt_at=now))
        return dead, back

    def stats(self, now: datetime) -> OutboxStats:
        with self.engine.connect() as conn:
            conn = read_only(conn)
            with conn.begin():
                return outbox_stats(conn, now)


def outbox_stats(conn, now: datetime) -> OutboxStats:
    """The outbox's backlog (pending, the oldest's age), sending and dead, read in the caller's transaction."""
    backlog, oldest = conn.execute(select(func.count(), func.min(outbox.c.created_at))
                                   .where(outbox.c.state == PENDING)).one()
    counts = dict(conn.execute(select(outbox.c.state, func.count())
                               .where(outbox.c.state.in_([SENDING, DEAD])).group_by(outbox.c.state)).all())
    oldest = as_utc(oldest)
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return OutboxStats(int(backlog), age, int(counts.get(SENDING, 0)), int(counts.get(DEAD, 0)))


class RequeueError(Exception):
    pass


def requeue(engine: Engine, ids: Iterable[int], actor: str, reason: str = "",
            now: datetime | None = None) -> list[int]:
    """Dead notices back to pending (attempts from 0), all or none, each with an audit row."""
    now = now or SYSTEM_CLOCK.now()
    ids = sorted(set(int(i) for i in ids))
    if not ids:
        raise RequeueError("no notice ids given")
    with engine.begin() as conn:
        rows = {r.id: r for r in conn.execute(
            select(outbox.c.id, outbox.c.state, outbox.c.kind, outbox.c.ref, outbox.c.attempts,
                   outbox.c.last_error, outbox.c.claimed_by).where(outbox.c.id.in_(ids))).all()}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise RequeueError(f"no such notice: {', '.join(map(str, missing))}")
        not_dead = [f"{i} is {rows[i].state}" for i in ids if rows[i].state != DEAD]
        if not_dead:
            raise RequeueError("only dead notices can be requeued: " + "; ".join(not_dead))
        done = conn.execute(update(outbox).where(outbox.c.id.in_(ids), outbox.c.state == DEAD)
                            .values(state=PENDING, attempts=0, next_attempt_at=now, claimed_by=None,
                                    last_error=None)).rowcount
        if done != len(ids):
            raise RequeueError("a notice changed while being requeued; try again")
        write_audit(conn, [audit_row(now, actor, "notice_requeue", "outbox", i, reason, kind=rows[i].kind,
                                     ref=rows[i].ref, attempts=rows[i].attempts, last_error=rows[i].last_error,
                                     claimed_by=rows[i].claimed_by) for i in ids])
    return ids


# ---------------------------------------------------------------------------------------------
# the notifier


@dataclass
class BatchReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    skipped: int = 0      # no longer ours when the attempt was to begin (not sent)
    unrecorded: int = 0   # results the database did not take (retried each cycle; else the sweep settles them)


class Notifier:
    """Claims, sends and records; synchronous (call from a worker thread). ``clock`` gives every
    timestamp, so tests move time without sleeping."""

    def __init__(self, engine: Engine, sender: Sender, *, name: str | None = None, batch_size: int = 50,
                 concurrency: int = 4, max_attempts: int = 8, backoff: Backoff | None = None,
                 lease_s: float = 300.0, send_timeout_s: float = 10.0,
                 clock: Clock = SYSTEM_CLOCK, metrics: NotifierMetrics | None = None,
                 quiet: QuietHours | None = None):
        if lease_s < 3 * send_timeout_s:
            raise ValueError("lease_s must be at least 3 x send_timeout_s")
        self.engine, self.sender = engine, sender
        self.name = name or default_name()
        self.store = OutboxStore(engine, self.name)
        self.batch_size, self.max_attempts = batch_size, max_attempts
        self.backoff = backoff or Backoff(30.0, 3600.0, jitter=0.2)
        self.lease_s, self.send_timeout_s = lease_s, send_timeout_s
        self.now, self.clock, self.quiet = clock.now, clock, quiet
        self.metrics = metrics or NotifierMetrics()
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="notifier-send") if concurrency > 1 else None
        self._owed: list[tuple[Notice, str, Callable[[], bool]]] = []   # results the database has not taken yet
        self._owed_lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg, engine: Engine, sender: Sender | None = None, key_file_permissions: str = "refuse",
                    **kw) -> "Notifier":
        from engines.sms import sender_from_config

        kw.setdefault("name", default_name(cfg.name))
        return cls(engine, sender or sender_from_config(cfg, permissions=key_file_permissions), batch_size=cfg.batch_size,
                   concurrency=cfg.concurrency, max_attempts=cfg.max_attempts,
                   backoff=Backoff(cfg.backoff_base_s, cfg.backoff_max_s, jitter=cfg.backoff_jitter),
                   lease_s=cfg.lease_s, send_timeout_s=cfg.http_timeout_s, **kw)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        try:
            self.settle_owed()
        except Exception as exc:  # noqa: BLE001
            log.error("results of notices %s not recorded (%s); the sweep will make them dead",
                      ", ".join(str(n.id) for n, _, _ in self._owed), first_line(exc))
        self.sender.close()

    def settle_owed(self) -> int:
        """Record results the database refused earlier (it was away); raises while it still is."""
        with self._owed_lock:
            owed, self._owed = self._owed, []
        done = 0
        try:
            while owed:
                notice, what, record = owed[0]
                if not record():
                    log.error("%s: %s, but the row was no longer ours: not recorded", describe(notice), what)
                owed.pop(0)
                done += 1
        finally:
            with self._owed_lock:
                self._owed[:0] = owed
        if done:
            log.info("recorded %d result(s) owed since the database was away", done)
        return done

    def _settle(self, notice: Notice, what: str, record: Callable[[], bool], outcome: str) -> str:
        try:
            ok = record()
        except Exception as exc:  # noqa: BLE001 - the database is away: keep the result, record it later
            self.metrics.db_up.set(0)
            log.error("%s: %s; recording it failed (%s), will retry", describe(notice), what, first_line(exc))
            with self._owed_lock:
                self._owed.append((notice, what, record))
            return "unrecorded"
        if not ok:
            log.error("%s: %s, but the row was no longer ours: not recorded", describe(notice), what)
            return "unrecorded"
        return outcome

    # -- one batch

    def run_once(self) -> BatchReport:
        """Claim one batch of due notices and send each of them; returns when all are settled."""
        try:
            self.settle_owed()
            claimed_at = self.now()
            notices = self.store.claim(claimed_at, self.batch_size, self.lease_s, self.held_kinds(claimed_at))
        except Exception:
            self.metrics.db_up.set(0)
            raise
        self.metrics.db_up.set(1)
        report = BatchReport(claimed=len(notices))
        if not notices:
            return report
        last_start = claimed_at + timedelta(seconds=self.lease_s - 2 * self.send_timeout_s)
        if self.pool is None:
            outcomes = [self._deliver(n, last_start) for n in notices]
        else:
            outcomes = list(self.pool.map(lambda n: self._deliver(n, last_start), notices))
        for outcome in outcomes:
            setattr(report, outcome, getattr(report, outcome) + 1)
        log.info("batch of %d: %d sent, %d to retry, %d dead, %d put back, %d skipped, %d unrecorded",
                 report.claimed, report.sent, report.retried, report.dead, report.released, report.skipped,
                 report.unrecorded)
        return report

    def held_kinds(self, at: datetime) -> tuple[str, ...]:
        """Reminders wait out the quiet hours (their retries too); other notices go as ever."""
        if self.quiet is not None and self.quiet.covers(self.clock.local(at)):
            return (REMINDER_KIND,)
        return ()

    def _deliver(self, notice: Notice, last_start: datetime) -> str:
        try:
            return self._deliver_one(notice, last_start)
        except Exception as exc:  # noqa: BLE001 - the database failed before the send: the sweep settles it
            self.metrics.db_up.set(0)
            log.error("%s: not sent: database: %s", describe(notice), first_line(exc))
            return "unrecorded"

    def _deliver_one(self, notice: Notice, last_start: datetime) -> str:
        now = self.now()
        if now > last_start:       # too late to begin: the lease could end while we send
            self.metrics.released.inc()
            self.store.release(notice, now)
            log.warning("%s: put back unsent (claimed too long ago)", describe(notice))
            return "released"
        if not self.store.begin_attempt(notice, now):
            log.warning("%s: no longer ours; not sent", describe(notice))
            return "skipped"
        attempt = notice.attempts + 1
        started = time.monotonic()
        try:
            self.sender.send(notice)
        except SendError as exc:
            self.metrics.send_seconds.observe(time.monotonic() - started)
            return self._failed(notice, attempt, exc)
        except Exception as exc:  # noqa: BLE001 - a sender bug: the message may or may not have gone
            self.metrics.send_seconds.observe(time.monotonic() - started)
            return self._failed(notice, attempt, SendError("unknown", "error", f"{type(exc).__name__}: {exc}"))
        self.metrics.send_seconds.observe(time.monotonic() - started)
        self.metrics.sent.inc()
        sent_at = self.now()
        log.info("%s: sent (attempt %d)", describe(notice), attempt)
        return self._settle(notice, "sent", lambda: self.store.record_sent(notice, sent_at), "sent")

    def _failed(self, notice: Notice, attempt: int, exc: SendError) -> str:
        self.metrics.failed.labels(exc.reason).inc()
        error = f"{exc.reason}: {exc.detail}"
        if exc.kind == "transient" and attempt < self.max_attempts:
            delay = self.backoff.delay(attempt, exc.retry_after_s)
            next_at = self.now() + timedelta(seconds=delay)
            log.warning("%s: attempt %d failed (%s); next in %.0f s", describe(notice), attempt,
                        mask_digits(error), delay)
            return self._settle(notice, "failed", lambda: self.store.record_retry(notice, next_at, error), "retried")
        if exc.kind == "transient":
            cause, error = "retry_limit", f"retry limit ({attempt} attempts): {error}"
        elif exc.kind == "unknown":
            cause, error = "outcome_unknown", f"outcome unknown: {error}"
        else:
            cause = "permanent"
        self.metrics.dead.labels(cause).inc()
        log.error("%s: dead after attempt %d: %s", describe(notice), attempt, mask_digits(error))
        return self._settle(notice, "dead", lambda: self.store.record_dead(notice, error), "dead")

    # -- housekeeping

    def sweep(self) -> tuple[list[int], list[int]]:
        dead, back = self.store.sweep(self.now())
        if dead:
            self.metrics.dead.labels("outcome_unknown").inc(len(dead))
            log.error("notice(s) %s: %s (lease over); not resent - an operator may `gridpay notifier requeue` "
                      "them", ", ".join(map(str, dead)), OUTCOME_UNKNOWN)
        if back:
            log.warning("notice(s) %s: claimed by a notifier that stopped before sending them; back to pending",
                        ", ".join(map(str, back)))
        return dead, back

    def refresh_gauges(self) -> OutboxStats:
        stats = self.store.stats(self.now())
        m = self.metrics
        m.backlog.set(stats.backlog)
        m.oldest_age.set(stats.oldest_age_s)
        m.sending.set(stats.sending)
        m.dead_rows.set(stats.dead)
        m.db_up.set(1)
        return stats


# ---------------------------------------------------------------------------------------------
# the loop


class NotifierLoop(LoopThread):
    """Runs a notifier in a thread of its own: sweep and gauges every ``sweep_interval_s``, a batch
    whenever notices are due, a wait of ``poll_interval_s`` when the last batch was not full.
    ``stop()`` lets the batch in hand finish."""

    def __init__(self, notifier: Notifier, poll_interval_s: float = 2.0, sweep_interval_s: float = 15.0,
                 max_error_wait_s: float = 60.0):
        self.notifier = notifier
        self.poll_interval_s, self.sweep_interval_s = poll_interval_s, sweep_interval_s
        self.max_error_wait_s = max(max_error_wait_s, poll_interval_s)
        super().__init__("gridpay-notifier")
        self.last_cycle: float | None = None    # time.monotonic() of the last cycle that reached the database
        self.last_error: str | None = None
        self.batches = 0

    def _run(self) -> None:
        next_sweep = 0.0
        errors = 0
        while not self.stopping.is_set():
            wait = self.poll_interval_s
            try:
                if time.monotonic() >= next_sweep:
                    self.notifier.sweep()
                    self.notifier.refresh_gauges()
                    next_sweep = time.monotonic() + self.sweep_interval_s
                report = self.notifier.run_once()
                self.batches += 1 if report.claimed else 0
                self.last_cycle, self.last_error, errors = time.monotonic(), None, 0
                if report.claimed >= self.notifier.batch_size:
                    wait = 0
            except Exception as exc:  # noqa: BLE001 - the database is away; keep trying
                errors += 1
                self.notifier.metrics.db_up.set(0)
                self.last_error = first_line(exc)
                wait = min(self.poll_interval_s * 2 ** min(errors, 10), self.max_error_wait_s)
                log.error("notifier cycle failed (%d in a row), next try in %.1f s: %s", errors, wait, self.last_error)
            if wait:
                self.stopping.wait(wait)
        log.info("notifier loop stopped")
