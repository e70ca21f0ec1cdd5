"""``gridpay scheduler``: turn due plans into batches, once per plan per scheduled time.

For each active plan, every cron time after the plan's ``last_run_for`` (or its creation) and up
to now gets a batch: after downtime each missed run is made once, in order (the first takes the
due bills; later ones find them in open debits and take only what fell due since). The batch and
its debits are made in one transaction that inserts the (plan_id, scheduled_for) row first: a
second scheduler racing for the same run fails on the unique key and makes nothing. There is no
business-day gating: the cron expression alone decides, so runs happen on weekends and holidays.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from engines.plans import BatchSummary, _bank_mode, build_batch
from engines.tables import debit_plans
from config.clock import SYSTEM_CLOCK, Clock
from ledger.schema import debit_batches

log = logging.getLogger("gridpay.debit.scheduler")
ACTOR = "system:debit-scheduler"


@dataclass
class Run:
    plan: str
    scheduled_for: datetime
    outcome: str                      # made | exists
    batch: BatchSummary | None = None


def due_times(cron: str, tz: str, after: datetime, now: datetime, limit: int = 10_000) -> list[datetime]:
    """Cron times t with after < t <= now (UTC), at most ``limit`` (the oldest)."""
    from croniter import croniter

    zone = ZoneInfo(tz)
    it = croniter(cron, after.astimezone(zone))
    out = []
    while len(out) < limit:
        t = it.get_next(datetime).astimezone(timezone.utc)
        if t > now:
            break
        out.append(t)
    return out


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


def run_once(db, settings, now: datetime, *, actor: str = ACTOR, clock: Clock = SYSTEM_CLOCK,
             max_catch_up: int = 10_000) -> list[Run]:
    if clock is None:
        clock = (Clock.of(settings.business) if settings is not None
                    else Clock())
    p = debit_plans.c
    with db.connect() as conn:
        plans = [dict(r) for r in conn.execute(select(debit_plans).where(p.status == "A")).mappings()]
    runs: list[Run] = []
    for plan in plans:
        after = _aware(plan["last_run_for"]) or _aware(plan["created_at"])
        times = due_times(plan["cron"], plan["time_zone"], after, now, max_catch_up)
        if len(times) == max_catch_up:
            log.warning("plan %s: more than %d missed runs; making the oldest %d now", plan["name"], max_catch_up,
                        max_catch_up)
        for t in times:
            try:
                with db.begin() as conn:
                    summary = build_batch(conn, bank_code=plan["bank_code"], at=now, clock=clock, plan=plan,
                                          scheduled_for=t, mode=_bank_mode(settings, plan["bank_code"]), actor=actor)
                    _advance(conn, plan["plan_id"], t)
                runs.append(Run(plan["name"], t, "made", summary))
                log.info("plan %s: batch %d for %s: %d debits, %d skipped", plan["name"], summary.batch_id,
                         t.isoformat(), summary.debits, len(summary.skipped))
            except IntegrityError:
                with db.begin() as conn:   # another scheduler made this run
                    _advance(conn, plan["plan_id"], t)
                runs.append(Run(plan["name"], t, "exists"))
    return runs


def _advance(conn, plan_id: int, t: datetime) -> None:
    p = debit_plans.c
    conn.execute(update(debit_plans).where(p.plan_id == plan_id, or_(p.last_run_for.is_(None), p.last_run_for < t))
                 .values(last_run_for=t))


def batches_of(db, plan_id: int) -> list[tuple[int, datetime]]:
    b = debit_batches.c
    with db.connect() as conn:
        return [(r.batch_id, _aware(r.scheduled_for)) for r in conn.execute(
            select(b.batch_id, b.scheduled_for).where(b.plan_id == plan_id).order_by(b.scheduled_for))]


def run_forever(db, settings, *, interval_s: float = 30.0, stop: threading.Event | None = None, now=None,
                on_pass=lambda runs: None) -> None:
    """Pass over the plans every ``interval_s`` until ``stop``; ``on_pass`` gets each pass's runs (None: failed)."""
    stop = stop or threading.Event()
    now = now or SYSTEM_CLOCK.now
    while not stop.is_set():
        try:
            runs = run_once(db, settings, now())
        except Exception:  # noqa: BLE001 - keep scheduling; the next pass retries
            log.exception("scheduler pass failed")
            runs = None
        on_pass(runs)
        stop.wait(interval_s)
