"""``gridpay notifier``: run the SMS notifier; ``requeue`` and ``status`` for operators."""
from __future__ import annotations

import json
import logging
import sys
import time

import click

from config import load_settings
from gridpay.operator_auth import operator_actor
from gridpay.options import config_option, require_schema, url_option
from runtime.bootstrap import install_reactor, on_stop_signals



@click.group(invoke_without_command=True)
@config_option
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
@click.option("--once", is_flag=True, help="send what is due now, then exit (no metrics port)")
@click.pass_context
def notifier(ctx, config_path, log_level, once) -> None:
    """Send the outbox's SMS notices (until SIGTERM or SIGINT), each at most once.

    Serves /metrics, /healthz and /readyz on notifier.metrics_port (0: any free port; the
    start-up line names it). Subcommands: requeue, status."""
    if ctx.invoked_subcommand is not None:
        return
    settings = load_settings(config_path)
    from runtime.logging_setup import setup_logging

    setup_logging(settings.notifier.log_file, getattr(logging, log_level))
    if once:
        _run_once(settings)
    else:
        _run(settings)


def _engine(settings, url: str | None = None):
    from ledger.db import make_engine

    pool = max(settings.database.pool_size, settings.notifier.concurrency + 2)
    return make_engine(url or settings.database_url(), pool_size=pool)


def _clock(settings):
    from config.clock import Clock

    return Clock.of(settings.business)


def _quiet(settings):
    from ledger.reminders import QuietHours

    return QuietHours.of(settings.reminders.quiet_from, settings.reminders.quiet_until)


def _notifier(settings, engine):
    from engines.notifier import Notifier

    return Notifier.from_config(settings.notifier, engine, key_file_permissions=settings.key_file_permissions,
                                clock=_clock(settings), quiet=_quiet(settings))


def reminder_job(settings, engine, actor: str, progress=None):
    from ledger.reminders import ReminderJob, Schedule

    cfg = settings.reminders
    return ReminderJob(engine, Schedule.of(cfg), _clock(settings), actor=actor, batch_size=cfg.batch_size,
                       progress=progress)


def _run_once(settings) -> None:
    require_schema(settings.database_url())
    engine = _engine(settings)
    notifier = _notifier(settings, engine)
    totals: dict[str, int] = {}
    try:
        notifier.sweep()
        while True:
            report = notifier.run_once()
            for key, value in vars(report).items():
                totals[key] = totals.get(key, 0) + value
            if report.claimed < notifier.batch_size:
                break
        stats = notifier.refresh_gauges()
    finally:
        notifier.close()
        engine.dispose()
    click.echo(json.dumps({**totals, "backlog": stats.backlog, "oldest_age_s": round(stats.oldest_age_s, 1),
                           "dead_total": stats.dead}))


def _run(settings) -> None:

    reactor = install_reactor()
    from twisted.internet import threads

    from engines.notifier import NotifierLoop
    from engines.reminder_loop import ReminderLoop
    from ledger.reminders import ACTOR

    cfg = settings.notifier
    require_schema(settings.database_url())
    engine = _engine(settings)
    notifier = _notifier(settings, engine)
    loop = NotifierLoop(notifier, cfg.poll_interval_s, cfg.sweep_interval_s)
    reminders = None
    if settings.reminders.enabled:
        reminders = ReminderLoop(reminder_job(settings, engine, ACTOR), settings.reminders.interval_s)
    log = logging.getLogger("gridpay.notifier")
    site = ops_site(notifier, loop, engine, reminders)
    try:
        port = reactor.listenTCP(cfg.metrics_port, site, interface=cfg.metrics_host)
    except Exception as exc:
        notifier.close()
        engine.dispose()
        raise click.ClickException(f"cannot listen on {cfg.metrics_host}:{cfg.metrics_port}: {exc}") from None
    stopping: list = []

    def stop() -> None:
        if stopping:
            return
        stopping.append(True)
        log.info("stopping: finishing the batch in hand")
        loop.stopping.set()
        if reminders is not None:
            reminders.stopping.set()
        d = threads.deferToThread(stop_loops)
        d.addBoth(lambda _: port.stopListening())
        d.addBoth(lambda _: reactor.stop())

    def stop_loops() -> None:
        loop.stop()
        if reminders is not None:
            reminders.stop()

    def on_signal(signum, _frame) -> None:
        reactor.callFromThread(stop)

    def watch_loop() -> None:   # the loop thread ends only when asked to; if it does not, stop too
        if not loop.thread.is_alive() and not stopping:
            log.error("the notifier loop ended unexpectedly")
            stopping.append("failed")
            reactor.stop()
        elif not stopping:
            reactor.callLater(1.0, watch_loop)

    def started() -> None:
        on_stop_signals(on_signal)
        loop.start()
        if reminders is not None:
            reminders.start()
        reactor.callLater(1.0, watch_loop)
        host = cfg.metrics_host
        log.info("notifier %s started: sender %s, metrics on http://%s:%d/metrics", notifier.name,
                 notifier.sender.name, host, port.getHost().port)
        print(f"gridpay notifier: name={notifier.name} sender={notifier.sender.name} "
              f"metrics=http://{host}:{port.getHost().port}/metrics", flush=True)

    reactor.callWhenRunning(started)
    reactor.run(installSignalHandlers=False)
    loop.stop()
    if reminders is not None:
        reminders.stop()
    notifier.close()
    engine.dispose()
    if "failed" in stopping:
        sys.exit(1)


def ops_site(notifier, loop, engine, reminders=None):
    """/metrics (the notifier's own registry), /healthz and /readyz (the database answers and the
    loop runs), as every process has them."""
    from engines.notifier import mask_digits
    from runtime.ops_site import ops_site as site

    def conditions() -> tuple[bool, dict]:
        since = None if loop.last_cycle is None else round(time.monotonic() - loop.last_cycle, 1)
        details = {"loop": "running" if loop.running else "stopped", "last_cycle_s_ago": since,
                   "last_error": loop.last_error, "batches": loop.batches,
                   "name": notifier.name, "sender": notifier.sender.name}
        if reminders is not None:
            last = reminders.last_report
            details["reminders"] = {"last_run": last.summary() if last else None, "last_error": reminders.last_error}
        return loop.running, details

    return site(notifier.metrics.registry, notifier.metrics.db_up, engine, conditions, mask_digits)


@notifier.command()
@click.argument("ids", nargs=-1, required=True, type=int)
@click.option("--reason", default="", help="why (kept in the audit log)")
@config_option
@url_option
def requeue(ids, reason, config_path, url) -> None:
    """Send dead notices again (all named IDS or none): an operator's decision, audited.

    A notice whose outcome is unknown may already have reached the customer; requeueing it may
    send it twice."""
    from engines.notifier import RequeueError
    from engines.notifier import requeue as do_requeue

    settings = load_settings(config_path)
    engine = _engine(settings, url)
    try:
        done = do_requeue(engine, ids, operator_actor((settings, engine), "notice.manage"), reason)
    except RequeueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"requeued {len(done)} notice(s): {', '.join(map(str, done))}")


@notifier.command()
@click.option("--dead", "show_dead", default=20, show_default=True, help="list this many dead notices (newest first)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@config_option
@url_option
def status(show_dead, as_json, config_path, url) -> None:
    """Outbox counts by state, the backlog's oldest age, and the latest dead notices (masked)."""
    from sqlalchemy import func, select

    from engines.notifier import DEAD, as_utc, mask_digits
    from iso8583_specs.masking import mask_number
    from config.clock import SYSTEM_CLOCK
    from ledger.schema import outbox

    settings = load_settings(config_path)
    engine = _engine(settings, url)
    try:
        with engine.connect() as conn:
            counts = dict(conn.execute(select(outbox.c.state, func.count()).group_by(outbox.c.state)).all())
            oldest = as_utc(conn.execute(select(func.min(outbox.c.created_at))
                                         .where(outbox.c.state == "pending")).scalar())
            dead = conn.execute(select(outbox.c.id, outbox.c.kind, outbox.c.ref, outbox.c.customer_no,
                                       outbox.c.mobile, outbox.c.attempts, outbox.c.claimed_by, outbox.c.last_error)
                                .where(outbox.c.state == DEAD).order_by(outbox.c.id.desc())
                                .limit(show_dead)).all()
    finally:
        engine.dispose()
    age = round((SYSTEM_CLOCK.now() - oldest).total_seconds(), 1) if oldest else 0.0
    rows = [{"id": r.id, "kind": r.kind, "ref": r.ref, "customer_no": mask_number(r.customer_no),
             "mobile": mask_number(r.mobile), "attempts": r.attempts, "claimed_by": r.claimed_by,
             "last_error": mask_digits(r.last_error or "")} for r in dead]
    if as_json:
        click.echo(json.dumps({"counts": counts, "oldest_pending_age_s": age, "dead": rows}, ensure_ascii=False))
        return
    click.echo("  ".join(f"{s}={counts.get(s, 0)}" for s in ("pending", "sending", "sent", "dead"))
               + f"  oldest pending: {age:.0f} s")
    for r in rows:
        click.echo(f"dead {r['id']}: {r['kind']} {r['ref']} customer {r['customer_no']} mobile {r['mobile']} "
                   f"attempts {r['attempts']} by {r['claimed_by']}: {r['last_error']}")


@notifier.command()
@click.option("--dry-run", is_flag=True, help="count who would be reminded; enqueue nothing")
@config_option
@url_option
def remind(dry_run, config_path, url) -> None:
    """Enqueue today's overdue reminders now (docs/notifier.md, `[reminders]`), as the operator
    (notice.manage): one per customer due one, none in quiet hours. Progress on stderr; prints a
    JSON summary. `gridpay notifier` does the same on a timer when `reminders.enabled`."""
    from ledger.progress import Progress

    settings = load_settings(config_path)
    require_schema(url or settings.database_url())
    engine = _engine(settings, url)
    try:
        actor = "dry-run" if dry_run else operator_actor((settings, engine), "notice.manage")
        report = reminder_job(settings, engine, actor, Progress()).run(dry_run=dry_run)
    finally:
        engine.dispose()
    click.echo(json.dumps(report.summary(), ensure_ascii=False))
