"""``gridpay plan``, ``gridpay scheduler``, ``gridpay engine``, ``gridpay debit``."""
from __future__ import annotations

import json
import logging
import os
import sys

import click

from config import load_settings
from gridpay.operator_auth import operator_actor
from gridpay.options import config_option, require_schema
from ledger.schema import SINGLE_CHANNELS
from runtime.bootstrap import install_reactor, on_stop_signals



def _open(config_path, pool_size: int | None = None, batch_side: bool = False):
    """batch_side: the engine's sessions, at engines.database_nice."""
    from ledger.db import make_engine

    settings = load_settings(config_path)
    url = settings.database_url()
    require_schema(url)
    nice = settings.engines.database_nice if batch_side else 0
    return settings, make_engine(url, pool_size=pool_size or settings.database.pool_size, backend_nice=nice)


def _now():
    from config.clock import SYSTEM_CLOCK
    return SYSTEM_CLOCK.now()


# --- plan ------------------------------------------------------------------------------------

@click.group()
def plan() -> None:
    """Direct-debit plans: which bank, which customers, when (cron)."""


@plan.command("add")
@config_option
@click.argument("name")
@click.option("--bank", "bank_code", required=True)
@click.option("--cron", required=True, help='cron expression, e.g. "0 9 5 * *" (09:00 on the 5th)')
@click.option("--due-days", default=0, show_default=True, help="bills due on or before run date + N days (may be < 0)")
@click.option("--district", default=None, help="only customers of this district")
@click.option("--customers", "customer_list", default=None, help="only these customers (comma-separated)")
@click.option("--chunk-size", default=1000, show_default=True)
@click.option("--tz", "time_zone", default=None, help="time zone of the cron expression (default: business.timezone)")
@click.option("--paused", is_flag=True)
def plan_add(config_path, name, bank_code, cron, due_days, district, customer_list, chunk_size, time_zone, paused):
    """Add a plan."""
    from engines.plans import PlanError, add_plan

    settings, db = _open(config_path)
    actor = operator_actor((settings, db), "plan.manage")
    try:
        plan_id = add_plan(db, name=name, bank_code=bank_code, cron=cron, now=_now(), actor=actor,
                           due_days=due_days, district=district,
                           customers_only=[c.strip() for c in customer_list.split(",") if c.strip()] if customer_list else None,
                           chunk_size=chunk_size, time_zone=time_zone or settings.business.timezone, paused=paused)
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - integrity: name taken, unknown bank
        raise click.ClickException(f"cannot add plan {name}: {str(exc).splitlines()[0]}") from None
    click.echo(f"plan {plan_id} {name} added")


@plan.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True)
def plan_list(config_path, as_json):
    """List plans."""
    from engines.plans import list_plans

    _, db = _open(config_path)
    rows = list_plans(db)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    click.echo(f"{'id':>4} {'name':20} {'bank':11} {'status':6} {'cron':18} {'due+':>4} {'district':10} last run")
    for r in rows:
        click.echo(f"{r['plan_id']:>4} {r['name']:20} {r['bank_code']:11} {'active' if r['status'] == 'A' else 'paused':6} "
                   f"{r['cron']:18} {r['due_days']:>4} {r['district'] or '-':10} {r['last_run_for'] or '-'}")


def _set(config_path, name, status):
    from engines.plans import PlanError, set_status

    settings, db = _open(config_path)
    actor = operator_actor((settings, db), "plan.manage")
    try:
        set_status(db, name, status, now=_now(), actor=actor)
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"plan {name} {'resumed' if status == 'A' else 'paused'}")


@plan.command("pause")
@config_option
@click.argument("name")
def plan_pause(config_path, name):
    """Pause a plan (the scheduler skips it)."""
    _set(config_path, name, "P")


@plan.command("resume")
@config_option
@click.argument("name")
def plan_resume(config_path, name):
    """Resume a plan from now on (runs missed while paused are not made)."""
    _set(config_path, name, "A")


@plan.command("run-now")
@config_option
@click.argument("name")
def plan_run_now(config_path, name):
    """Make a batch of the plan now."""
    from config.clock import Clock
    from engines.plans import PlanError, run_now

    settings, db = _open(config_path)
    actor = operator_actor((settings, db), "plan.manage")
    try:  # the site's business calendar: the batch's run date, and so which bills are due, follow its cut-off
        s = run_now(db, settings, name, now=_now(), actor=actor, clock=Clock.of(settings.business))
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"batch {s.batch_id}: {s.debits} debits, {s.total} fen, {s.chunks} chunks, mode {s.mode}, "
               f"{len(s.skipped)} skipped")
    for cust, amount, why in s.skipped:
        click.echo(f"  skipped {cust} ({amount} fen): {why}")


# --- scheduler -------------------------------------------------------------------------------

@click.command()
@config_option
@click.option("--once", is_flag=True, help="one pass, then exit")
@click.option("--interval", type=float, help="seconds between passes (default: scheduler.interval_s)")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="/metrics, /healthz, /readyz (default: scheduler.metrics_port; 0 = any free port)")
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def scheduler(config_path, once, interval, metrics_port, log_level):
    """Turn due plans into batches (each missed run once; never two batches for one run)."""
    import threading

    from engines.scheduler import run_forever, run_once
    from runtime.logging_setup import setup_logging

    setup_logging("", getattr(logging, log_level))
    settings, db = _open(config_path)
    interval = interval or settings.scheduler.interval_s
    if once:
        for run in run_once(db, settings, _now()):
            b = run.batch
            click.echo(f"{run.plan} {run.scheduled_for.isoformat()} {run.outcome}"
                       + (f" batch {b.batch_id} debits {b.debits} skipped {len(b.skipped)}" if b else ""))
        return
    stop = threading.Event()
    on_stop_signals(lambda *_: stop.set())
    from engines.process_metrics import SchedulerMetrics
    from runtime.process_metrics import serve_threaded

    metrics = SchedulerMetrics()
    port = serve_threaded(metrics, db, settings.scheduler.metrics_host,
                          settings.scheduler.metrics_port if metrics_port is None else metrics_port, stop)
    click.echo(f"gridpay scheduler running: metrics http://{settings.scheduler.metrics_host}:{port}/metrics")
    sys.stdout.flush()
    run_forever(db, settings, interval_s=interval, stop=stop, on_pass=metrics.passed)


# --- engine ----------------------------------------------------------------------------------

@click.command()
@config_option
@click.option("--id", "name", default=None, help="engine name (default host:pid); unique among running engines")
@click.option("--bank", "banks", multiple=True, help="serve only these banks (default: every debit bank)")
@click.option("--lease", "lease_s", default=30.0, show_default=True, help="seconds a claim lasts without a heartbeat")
@click.option("--poll", "poll_s", default=0.5, show_default=True, help="seconds between polls")
@click.option("--chunks-ahead", default=2, show_default=True, help="chunks held per bank at once")
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
@click.option("--log-file", default="", help="log here instead of stderr")
@click.option("--instance", type=click.IntRange(0, 999), default=0, show_default=True,
              help="this engine's number on its host (systemd: gridpay-engine@N); its metrics port is "
                   "engines.metrics_port_base + N")
@click.option("--metrics-host", help="address of /metrics, /healthz, /readyz (default: engines.metrics_host)")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="/metrics, /healthz, /readyz (default: engines.metrics_port_base + --instance; "
                   "0 = any free port, printed at start)")
def engine(config_path, name, banks, lease_s, poll_s, chunks_ahead, log_level, log_file, instance, metrics_host,
           metrics_port):
    """Run a debit engine until SIGTERM: claim chunks, send debits, post results, reverse unknowns."""
    from runtime.logging_setup import setup_logging

    setup_logging(log_file, getattr(logging, log_level))
    # The claim and heartbeat threads wait on the database; each wake-up needs the interpreter
    # lock back from the busy reactor thread, which by default yields it only every 5 ms.
    sys.setswitchinterval(float(os.environ.get("GRIDPAY_ENGINE_SWITCH_S", "0.0005")))
    reactor = install_reactor()  # Twisted on its asyncio reactor, as every gridpay process
    from engines.engine import DebitEngine, default_name
    from engines.store import EngineConflict

    from engines.process_metrics import EngineMetrics
    from runtime.process_metrics import serve_metrics
    from runtime.gc_settle import settle_gc

    settings, db = _open(config_path, pool_size=8, batch_side=True)
    metrics_host = metrics_host or settings.engines.metrics_host
    if metrics_port is None:
        base = settings.engines.metrics_port_base
        metrics_port = base + instance if base else 0
    metrics = EngineMetrics()
    eng = DebitEngine(settings, reactor, db, name=name or default_name(), banks=list(banks) or None,
                      lease_s=lease_s, poll_s=poll_s, chunks_ahead=chunks_ahead, link_metrics=metrics.link)
    state = {"failed": None}

    def on_signal(signum, _frame):
        reactor.callFromThread(lambda: eng.stop().addBoth(lambda _: reactor.stop()))

    def started(_):
        settle_gc()  # collections walked every start-up object: 0.06 ms of a debit's 0.3 ms in the bench
        on_stop_signals(on_signal)
        metrics.start(reactor, db)
        serve_metrics(reactor, metrics, db, metrics_host, metrics_port).addCallback(announce)

    def announce(port):
        print(f"gridpay engine {eng.name} running: online banks {','.join(eng.banks) or '-'}; "
              f"file banks {','.join(eng.file_banks) or '-'}; "
              f"metrics http://{metrics_host}:{port.getHost().port}/metrics", flush=True)

    def failed(f):
        state["failed"] = f.value
        reactor.stop()

    reactor.callWhenRunning(lambda: eng.start().addCallbacks(started, failed))
    profile_to = os.environ.get("GRIDPAY_ENGINE_PROFILE")  # the bench's profile of the reactor thread
    if profile_to:
        import cProfile

        prof = cProfile.Profile()
        prof.runcall(reactor.run, installSignalHandlers=False)
        prof.dump_stats(profile_to)
    else:
        reactor.run(installSignalHandlers=False)
    if state["failed"] is not None:
        exc = state["failed"]
        click.echo(f"gridpay engine: {exc}", err=True)
        sys.exit(3 if isinstance(exc, EngineConflict) else 1)
    print(json.dumps({"engine": eng.name, "stats": dict(eng.stats), "writer_batches": eng.writer.batches,
                      "writer_ops": eng.writer.ops, "writer_busy_s": round(eng.writer.busy_s, 3)}), flush=True)


# --- debit -----------------------------------------------------------------------------------

@click.group()
def debit() -> None:
    """Single debits and batch debit files."""


@debit.command("now")
@config_option
@click.argument("customer")
@click.option("--bank", "bank_code", default=None, help="the bank of the agreement (default: the customer's one)")
@click.option("--pickup", "pickup_s", default=5.0, show_default=True,
              help="seconds to wait for a running engine to take it before using our own link")
@click.option("--channel", default="district_office", show_default=True, type=click.Choice(SINGLE_CHANNELS),
              help="who asked for it (recorded on the debit; `gridpay report debits` counts by it)")
def debit_now(config_path, customer, bank_code, pickup_s, channel):
    """Debit a customer's unpaid bills now, wait for the bank's answer and print it."""
    from engines.plans import PlanError
    from engines.realtime import create_single, describe, run_own_link, wait_for
    from engines.store import live_engines

    settings, db = _open(config_path)
    actor = operator_actor((settings, db), "debit.single")
    try:
        single = create_single(db, settings, customer, bank_code=bank_code, now=_now(), actor=actor,
                               channel=channel)
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None
    cfg = settings.bank(single.bank_code).debit
    final = ("approved", "declined", "unknown", "reversed")
    engines = live_engines(db, _now(), single.bank_code)
    st = None
    if engines:
        st = wait_for(db, single.debit_id, ("sent",) + final, pickup_s)
    if st is None or st["state"] == "pending":
        run_own_link(db, settings, single, reversal_wait_s=min(cfg.timeout_s, 10.0))
        st = wait_for(db, single.debit_id, final, 0)
    elif st["state"] not in final:
        st = wait_for(db, single.debit_id, final, cfg.timeout_s + 10.0)
    text, code = describe(single, st, cfg.timeout_s, settings)
    click.echo(text)
    sys.exit(code)


@debit.command("result")
@config_option
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def debit_result(config_path, path):
    """Apply a batch debit result file {bank}_{batch}.ret (docs/spec/INTERFACE.md §7.2): whole, or rejected whole."""
    from engines.files import apply_result_file

    from config.clock import Clock

    settings, db = _open(config_path)
    out = apply_result_file(db, path, operator_actor((settings, db), "batch.manage"),
                            clock=Clock.of(settings.business))
    click.echo(out.message)
    for line, fld, reason in out.errors:
        click.echo(f"  line {line}, {fld}: {reason}" if line else f"  {fld}: {reason}")
    sys.exit(0 if out.ok else 1)


@debit.command("batch")
@config_option
@click.argument("batch_id", type=int)
@click.option("--watch", is_flag=True, help="follow the batch until every debit has an outcome, with progress")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.1),
              help="seconds between looks (with --watch)")
def debit_batch(config_path, batch_id, watch, interval):
    """Show a batch: debits by state, chunks by state, skipped customers (JSON).

    With --watch, show its progress (a bar on a terminal, a line every few seconds otherwise)
    until no debit is pending or sent, then the same JSON. Ctrl-C stops watching, not the batch."""
    import time

    from ledger.progress import Progress

    _, db = _open(config_path)
    shown = _batch_state(db, batch_id)
    if shown is None:
        raise click.ClickException(f"no batch {batch_id}")
    if watch:
        progress = Progress().start(f"batch {batch_id}", total=_debit_count(shown), unit="debits")
        try:
            while _open_debits(shown):
                progress.set_done(_debit_count(shown) - _open_debits(shown), total=_debit_count(shown))
                time.sleep(interval)
                shown = _batch_state(db, batch_id)
            progress.set_done(_debit_count(shown))
        except KeyboardInterrupt:
            pass
        states = shown["debits"]
        progress.finish(f"batch {batch_id}: {_debit_count(shown) - _open_debits(shown):,} of {_debit_count(shown):,} "
                        f"debits have an outcome (" + ", ".join(f"{n:,} {s}" for s, n in sorted(states.items())) + ")")
    click.echo(json.dumps(shown))


def _debit_count(shown: dict) -> int:
    return sum(shown["debits"].values())


def _open_debits(shown: dict) -> int:
    from engines.batch_progress import debits_done

    return _debit_count(shown) - debits_done(shown["debits"])


def _batch_state(db, batch_id: int) -> dict | None:
    from engines.batch_progress import batch_state

    with db.connect() as conn:
        return batch_state(conn, batch_id)


__all__ = ["plan", "scheduler", "engine", "debit"]
