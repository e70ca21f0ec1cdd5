"""The site's daily checks, behind ``gridpay status``: each reads the database (and, for the banks'
sign-on, the processes' ``/metrics`` where one answers) and returns a ``Check``: a name, ok or not,
one line of detail and the figures behind it. Nothing here writes anything.

The limits are those of the alert rules (config/prometheus/gridpay-alerts.yml) and of the runbook's
daily checks, so that ``gridpay status`` and the alerts agree (tests/test_status.py compares them):

- reconciliation item open longer than a day           GridpayReconciliationExceptionsOpen (86400 s)
- SMS notice pending longer than 30 minutes            GridpayOutboxBacklog (1800 s)
- more than 10,000 SMS notices pending                 GridpayOutboxBacklogLarge
- a debit chunk waiting 15 minutes for an engine       GridpayDebitBatchStuck (900 s)
- reversals unanswered or refused (debit still unknown) GridpayDebitReversalsOpen (> 0)
- a reversal pending for more than an hour             runbook, "Daily checks"
- a running batch with no change for two hours         runbook, "Daily checks"
- a debit of unknown outcome for more than a day       the bank's day file settles it within a day
"""
from __future__ import annotations

import re
import socket
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import case, func, select

from config.clock import SYSTEM_CLOCK
from ledger.key_store_db import newest_keys

STATUS_ACTOR = "gridpay-status"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "figures": self.figures}


@dataclass(frozen=True)
class Thresholds:
    """Limits in seconds (``outbox_backlog`` in notices)."""
    recon: float = 86_400.0          # GridpayReconciliationExceptionsOpen
    unknown_debit: float = 86_400.0  # a day: the bank's day file should have settled it
    reversal: float = 3_600.0        # runbook: reversals pending for more than an hour
    chunk: float = 900.0             # GridpayDebitBatchStuck
    batch: float = 7_200.0           # runbook: batches not finished two hours after their last change
    outbox: float = 1_800.0          # GridpayOutboxBacklog
    outbox_backlog: int = 10_000     # GridpayOutboxBacklogLarge

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


# --- small helpers ---------------------------------------------------------------------------

def aware(ts: datetime | None) -> datetime | None:
    """SQLite hands back naive UTC."""
    if ts is None:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


def age_of(now: datetime, ts: datetime | None) -> float:
    return 0.0 if ts is None else max(0.0, (now - aware(ts)).total_seconds())


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 120:
        return f"{s}s"
    if s < 3_600:
        return f"{s // 60}m"
    if s < 172_800:
        return f"{s // 3600}h" + (f" {s % 3600 // 60}m" if s % 3600 // 60 else "")
    return f"{s // 86400}d" + (f" {s % 86400 // 3600}h" if s % 86400 // 3600 else "")


def when(ts: datetime | None) -> str:
    return aware(ts).strftime("%Y-%m-%d %H:%M UTC") if ts is not None else "-"


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)          # SQLAlchemy's wrapper: the driver's own message says it
    if isinstance(orig, BaseException):
        exc = orig
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@contextmanager
def reading(engine):
    """A read-only transaction (on SQLite it does not take the write lock)."""
    from ledger.db import read_only

    with engine.connect() as conn:
        conn = read_only(conn)
        with conn.begin():
            yield conn


def guarded(name: str, fn, *args) -> list[Check]:
    """A check that could not run (a table missing on an old schema, a lost connection) fails, saying why."""
    try:
        out = fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        return [Check(name, False, f"could not check: {first_line(exc)}")]
    return out if isinstance(out, list) else [out]


# --- metrics endpoints -----------------------------------------------------------------------

@dataclass
class Scrape:
    url: str
    what: str                              # "gateway", "engine NAME", "--metrics"
    required: bool                         # named with --metrics: it must answer
    samples: list[tuple[str, dict, float]] | None = None   # None: did not answer
    error: str = ""

    @property
    def answered(self) -> bool:
        return self.samples is not None


def metrics_url(url: str) -> str:
    if "://" not in url:
        url = f"http://{url}"
    scheme, rest = url.split("://", 1)
    return url if "/" in rest else f"{url}/metrics"


def _local(host: str) -> str:
    """Where this host reaches a port bound to ``host`` (a wildcard address: the loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def gateway_metrics_url(settings) -> str | None:
    """The configured gateway's /metrics on this host, if the site has a gateway and a fixed port."""
    gw = settings.gateway
    if not gw.listeners or not gw.metrics_port:
        return None
    return f"http://{_local(gw.metrics_host)}:{gw.metrics_port}/metrics"


def engine_metrics_urls(settings, live: list) -> list[tuple[str, str]]:
    """(url, engine name) of the live engines on this host whose /metrics the configuration gives:
    ``gridpay-engine@N`` is named ``HOST-N`` and serves on ``engines.metrics_port_base`` + N.
    Engines on other hosts are not asked (their ports are usually open to Prometheus only)."""
    cfg = getattr(settings, "engines", None)
    base = getattr(cfg, "metrics_port_base", 0)
    if not base:
        return []
    here = socket.gethostname()
    out = []
    for row in live:
        number = re.fullmatch(re.escape(row.host) + r"-(\d+)", row.name)
        if row.host == here and number and base + int(number[1]) <= 65535:
            out.append((f"http://{_local(cfg.metrics_host)}:{base + int(number[1])}/metrics", row.name))
    return out


def scrape(url: str, what: str, required: bool, timeout_s: float = 3.0) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    out = Scrape(url, what, required)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", "replace")
        out.samples = [(s.name, dict(s.labels), float(s.value))
                       for family in text_string_to_metric_families(text) for s in family.samples]
    except ValueError as exc:  # the parser's
        out.error = f"not Prometheus text: {first_line(exc)}"
    except Exception as exc:  # noqa: BLE001 - any failure: the endpoint does not answer
        reason = getattr(exc, "reason", None)   # URLError wraps the socket's error
        out.error = first_line(reason) if isinstance(reason, BaseException) else first_line(exc)
    return out


def check_scrapes(scrapes: list[Scrape]) -> list[Check]:
    out = []
    for s in scrapes:
        name = f"metrics {s.url}"
        figures = {"url": s.url, "process": s.what, "required": s.required, "answered": s.answered}
        if s.answered:
            out.append(Check(name, True, f"{s.what}: answers ({len(s.samples)} samples)", figures))
        elif s.required:
            out.append(Check(name, False, f"{s.what}: not answering: {s.error}", figures))
        else:
            out.append(Check(name, True, f"{s.what}: not answering here ({s.error}); sign-on is read from the "
                                         "database", figures))
    return out


def _metric(scrapes: list[Scrape], metric: str, **labels) -> tuple[list[float], list[str]]:
    values, urls = [], []
    for s in scrapes:
        if not s.answered:
            continue
        found = [v for name, lab, v in s.samples
                 if name == metric and all(lab.get(k) == v2 for k, v2 in labels.items())]
        if found:
            values += found
            urls.append(s.url)
    return values, urls


# --- database ----------------------------------------------------------------------------------

def describe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"sqlite {u.database or ':memory:'}"
    where = f"{u.host or 'localhost'}{f':{u.port}' if u.port else ''}/{u.database or ''}"
    return f"{u.get_backend_name()} {where}"


def check_database(url: str, statement_timeout_s: float | None = None):
    """(Check, engine or None): the database answers a query. ``statement_timeout_s`` bounds every
    statement of the checks on PostgreSQL, so a wedged database fails them instead of hanging."""
    from runtime.db_probe import PROBE
    from sqlalchemy.engine import make_url

    from ledger.db import make_engine

    label = describe_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:" \
            and not Path(u.database).exists():
        return Check("database", False, f"{label}: no database file there (gridpay db upgrade creates it)",
                     {"url": label, "reachable": False}), None
    engine = make_engine(url, pool_size=2, statement_timeout_s=statement_timeout_s)
    t0 = time.perf_counter()
    try:
        with reading(engine) as conn:
            conn.execute(PROBE).scalar_one()
    except Exception as exc:  # noqa: BLE001 - the driver's error, in one line
        engine.dispose()
        return Check("database", False, f"{label}: unreachable: {first_line(exc)}",
                     {"url": label, "reachable": False}), None
    ms = (time.perf_counter() - t0) * 1000
    return Check("database", True, f"{label} answers ({ms:.0f} ms)",
                 {"url": label, "reachable": True, "answer_ms": round(ms, 1)}), engine


def check_schema(url: str) -> Check:
    from ledger import migrate

    current, head = migrate.current(url), migrate.newest()
    figures = {"current": current, "head": head}
    if current is None:
        return Check("schema", False, "the database has no schema: run `gridpay db upgrade`", figures)
    if set(current.split(",")) != set(head.split(",")):
        return Check("schema", False, f"at revision {current}, the head is {head}: run `gridpay db upgrade`", figures)
    return Check("schema", True, f"at the head revision {head}", figures)


def check_replica(replica_url: str, primary, statement_timeout_s: float | None = None) -> Check:
    """The read replica (``database.replica_url``) answers, is a standby, and how much of the
    primary's WAL it has still to replay (figures; only an unreachable replica fails: the reports
    and the glance would fail)."""
    from sqlalchemy import text

    from ledger.db import make_engine
    from ledger.replica_lag import replay_lag_s

    label = describe_url(replica_url)
    replica = make_engine(replica_url, pool_size=1, statement_timeout_s=statement_timeout_s)
    try:
        with reading(primary) as conn:
            written = conn.execute(text("select pg_current_wal_lsn()")).scalar()
        with reading(replica) as conn:
            standby, behind, replayed_at = conn.execute(text(
                "select pg_is_in_recovery(), pg_wal_lsn_diff(:lsn, pg_last_wal_replay_lsn()), "
                "pg_last_xact_replay_timestamp()"), {"lsn": written}).one()
            lag_s = replay_lag_s(conn)
    except Exception as exc:  # noqa: BLE001 - the driver's error, in one line
        return Check("replica", False, f"{label}: unreachable: {first_line(exc)}", {"url": label, "reachable": False})
    finally:
        replica.dispose()
    figures = {"url": label, "reachable": True, "standby": standby}
    if not standby:
        return Check("replica", True, f"{label} answers, but is no standby: the reports read a primary", figures)
    figures |= {"behind_bytes": max(0, int(behind or 0)), "last_replayed_commit": when(replayed_at),
                "replay_lag_s": None if lag_s is None else round(lag_s, 1)}
    return Check("replica", True, f"{label} answers; {figures['behind_bytes']} bytes of the primary's WAL to replay, "
                 f"replay lag {figures['replay_lag_s']} s, last replayed commit {figures['last_replayed_commit']}",
                 figures)


# --- banks and engines ---------------------------------------------------------------------------

def _key_state(row) -> tuple[bool, str]:
    if row is None:
        return False, "never signed on (database: no bank_keys row)"
    if row.mak_under_zmk is None:
        return False, f"signed off at {when(row.saved_at)} (database: bank_keys version {row.version})"
    return True, f"signed on at {when(row.saved_at)} (database: bank_keys version {row.version})"


@dataclass
class EngineRows:
    live: list = field(default_factory=list)       # rows of live engines
    stopped: list = field(default_factory=list)    # (row, why)
    stale_debit_now: list = field(default_factory=list)


def engine_rows(engine, now: datetime) -> EngineRows:
    from engines.store import live_engines
    from engines.tables import engine_instances

    with reading(engine) as conn:
        rows = conn.execute(select(engine_instances).order_by(engine_instances.c.name)).all()
    live = set(live_engines(engine, now))
    out = EngineRows()
    for r in rows:
        lease_over = aware(r.lease_until) <= now
        if r.name.startswith("debit-now:"):        # a one-off `gridpay debit now`: never counted as an engine
            if lease_over:
                out.stale_debit_now.append(r.name)
        elif r.name in live:
            out.live.append(r)
        elif lease_over:
            out.stopped.append((r, f"lease over {duration(age_of(now, r.lease_until))} ago, "
                                   f"last heartbeat {when(r.heartbeat_at)}"))
        else:
            out.stopped.append((r, f"process {r.pid} on {r.host} is gone"))
    return out


def check_engines(rows: EngineRows) -> Check:
    figures = {"live": [r.name for r in rows.live],
               "stopped": [{"name": r.name, "host": r.host, "pid": r.pid, "why": why} for r, why in rows.stopped],
               "stale_debit_now": rows.stale_debit_now}
    live = ", ".join(f"{r.name} ({r.banks or 'no banks'})" for r in rows.live) or "none"
    if rows.stopped:
        stopped = "; ".join(f"{r.name} (pid {r.pid} on {r.host}: {why})" for r, why in rows.stopped)
        return Check("engines", False, f"stopped: {stopped}; live: {live}", figures)
    if not rows.live:
        return Check("engines", True, "none registered", figures)
    return Check("engines", True, f"{len(rows.live)} live: {live}", figures)


def check_banks(settings, engine, rows: EngineRows, scrapes: list[Scrape]) -> list[Check]:
    with reading(engine) as conn:
        keys = newest_keys(conn)
    out = []
    for code, bank in settings.banks.items():
        for channel in bank.channels:
            name = f"bank {code} {channel}"
            figures: dict = {"bank": code, "channel": channel}
            if channel == "counter":
                values, urls = _metric(scrapes, "gridpay_bank_signed_on", bank=code, channel="counter")
                if values:
                    signed = max(values) >= 1
                    text = f"{'signed on' if signed else 'not signed on'} (gateway metrics {', '.join(urls)})"
                    figures.update(signed_on=signed, source="metrics", urls=urls)
                else:
                    signed, text = _key_state(keys.get((code, "counter")))
                    figures.update(signed_on=signed, source="database")
                out.append(Check(name, signed, text, figures))
                continue
            serving = [r.name for r in rows.live if code in r.banks.split(",")]
            figures["engines"] = serving
            served = f"served by {', '.join(serving)}" if serving else "no live engine serves it"
            if bank.debit.mode == "file":
                figures.update(mode="file")
                out.append(Check(name, bool(serving), f"file mode: {served}", figures))
                continue
            values, urls = _metric(scrapes, "gridpay_debit_connections_ready", bank=code)
            if values:
                signed = sum(values) > 0
                text = (f"{'signed on' if signed else 'not signed on'}: {int(sum(values))} ready connections "
                        f"(engine metrics {', '.join(urls)})")
                figures.update(signed_on=signed, source="metrics", urls=urls, ready_connections=int(sum(values)))
            else:
                signed, text = _key_state(keys.get((code, "debit")))
                figures.update(signed_on=signed, source="database")
            figures.update(mode="online")
            out.append(Check(name, signed and bool(serving), f"{text}; {served}", figures))
    return out


# --- money waiting -------------------------------------------------------------------------------

def check_recon(engine, now: datetime, th: Thresholds) -> Check:
    from ledger.recon_tables import recon_items

    i = recon_items.c
    bank = func.coalesce(i.bank_code, "-")
    limit = now.timestamp() - th.recon
    with reading(engine) as conn:
        by_bank = conn.execute(select(bank, func.count(), func.min(i.created_at))
                               .where(i.status == "open").group_by(bank).order_by(bank)).all()
        oldest = conn.execute(select(i.item_id, i.bank_code, i.kind, i.business_date, i.created_at)
                              .where(i.status == "open").order_by(i.created_at, i.item_id).limit(1)).first()
        old = conn.execute(select(bank, func.count()).where(
            i.status == "open", i.created_at < datetime.fromtimestamp(limit, timezone.utc)).group_by(bank)).all()
    total = sum(n for _, n, _ in by_bank)
    figures = {"open": total, "older_than_limit": sum(n for _, n in old), "limit_s": th.recon,
               "oldest_age_s": round(age_of(now, oldest.created_at), 1) if oldest else 0.0,
               "oldest_item": oldest.item_id if oldest else None,
               "by_bank": {b: {"open": n, "oldest_age_s": round(age_of(now, t), 1)} for b, n, t in by_bank}}
    if not total:
        return Check("reconciliation", True, "no open items", figures)
    banks = ", ".join(f"{b}: {n}" for b, n, _ in by_bank)
    first = (f"item {oldest.item_id} (bank {oldest.bank_code or '-'}, {oldest.kind}, business date "
             f"{oldest.business_date or '-'}) open {duration(age_of(now, oldest.created_at))}")
    if old:
        old_banks = ", ".join(f"{b}: {n}" for b, n in sorted(old))
        return Check("reconciliation", False, f"{figures['older_than_limit']} of {total} open items older than "
                     f"{duration(th.recon)} ({old_banks}); oldest {first}: gridpay recon open", figures)
    return Check("reconciliation", True, f"{total} open ({banks}), oldest {first} "
                 f"(limit {duration(th.recon)})", figures)


def check_unknown_debits(engine, now: datetime, th: Thresholds) -> Check:
    from engines.tables import debit_reversals
    from ledger.schema import debits

    d, r = debits.c, debit_reversals.c
    rev = func.coalesce(r.state, "none")
    join = debits.outerjoin(debit_reversals, r.debit_id == d.debit_id)
    with reading(engine) as conn:
        groups = conn.execute(select(rev, func.count()).select_from(join).where(d.state == "unknown")
                              .group_by(rev)).all()
        oldest = conn.execute(select(d.debit_id, d.bank_code, d.business_date, d.updated_at)
                              .where(d.state == "unknown").order_by(d.updated_at, d.debit_id).limit(1)).first()
    total = sum(n for _, n in groups)
    by_rev = {state: n for state, n in groups}
    age = age_of(now, oldest.updated_at) if oldest else 0.0
    figures = {"unknown": total, "by_reversal_state": by_rev, "oldest_age_s": round(age, 1),
               "oldest_debit": oldest.debit_id if oldest else None, "limit_s": th.unknown_debit}
    if not total:
        return Check("unknown debits", True, "none", figures)
    states = ", ".join(f"reversal {s}: {n}" for s, n in sorted(by_rev.items()))
    first = (f"debit {oldest.debit_id} (bank {oldest.bank_code}, business date {oldest.business_date or '-'}) "
             f"unknown for {duration(age)}")
    if age > th.unknown_debit:
        return Check("unknown debits", False, f"{total} of unknown outcome ({states}); oldest {first}, limit "
                     f"{duration(th.unknown_debit)}: settle by the bank's day file (gridpay recon open "
                     f"--kind debit_unknown)", figures)
    return Check("unknown debits", True, f"{total} of unknown outcome ({states}); oldest {first}", figures)


def check_reversals(engine, now: datetime, th: Thresholds) -> Check:
    from engines.tables import debit_reversals
    from ledger.schema import debits

    d, r = debits.c, debit_reversals.c
    with reading(engine) as conn:
        pending = conn.execute(select(r.debit_id, r.bank_code, r.attempts, r.created_at)
                               .where(r.state == "pending").order_by(r.created_at, r.debit_id)).all()
        waiting = conn.execute(select(r.state, r.bank_code, func.count())
                               .join(debits, d.debit_id == r.debit_id)
                               .where(r.state.in_(["unanswered", "refused"]), d.state == "unknown")
                               .group_by(r.state, r.bank_code).order_by(r.state, r.bank_code)).all()
    overdue = [p for p in pending if age_of(now, p.created_at) > th.reversal]
    figures = {"pending": len(pending), "pending_over_limit": len(overdue), "limit_s": th.reversal,
               "oldest_pending_age_s": round(age_of(now, pending[0].created_at), 1) if pending else 0.0,
               "unanswered": sum(n for s, _, n in waiting if s == "unanswered"),
               "refused": sum(n for s, _, n in waiting if s == "refused")}
    problems = []
    if overdue:
        o = overdue[0]
        problems.append(f"{len(overdue)} pending longer than {duration(th.reversal)} (oldest: debit {o.debit_id}, "
                        f"bank {o.bank_code}, {o.attempts} attempts, {duration(age_of(now, o.created_at))})")
    if waiting:
        problems.append(", ".join(f"{n} {s} (bank {b})" for s, b, n in waiting)
                        + " with the debit still unknown: settle by the bank's day file")
    if problems:
        return Check("reversals", False, "; ".join(problems), figures)
    if pending:
        return Check("reversals", True, f"{len(pending)} pending, oldest "
                     f"{duration(figures['oldest_pending_age_s'])} (limit {duration(th.reversal)})", figures)
    return Check("reversals", True, "none pending or unanswered", figures)


def check_outbox(engine, now: datetime, th: Thresholds) -> Check:
    from engines.notifier import OutboxStore

    stats = OutboxStore(engine, STATUS_ACTOR).stats(now)
    figures = {"backlog": stats.backlog, "oldest_age_s": round(stats.oldest_age_s, 1), "sending": stats.sending,
               "dead": stats.dead, "limit_age_s": th.outbox, "limit_backlog": th.outbox_backlog}
    pending = (f"{stats.backlog} pending, oldest {duration(stats.oldest_age_s)} (limit {duration(th.outbox)})"
               if stats.backlog else "none pending")
    text = f"{pending}; {stats.sending} sending; {stats.dead} dead"
    problems = []
    if stats.oldest_age_s > th.outbox:
        problems.append(f"oldest pending notice {duration(stats.oldest_age_s)} old")
    if stats.backlog > th.outbox_backlog:
        problems.append(f"{stats.backlog} pending (limit {th.outbox_backlog})")
    if problems:
        return Check("outbox", False, f"{'; '.join(problems)}: {text} (gridpay notifier status)", figures)
    return Check("outbox", True, text, figures)


def check_batches(engine, now: datetime, th: Thresholds) -> Check:
    """Batches running: online ones with a chunk not done, file ones waiting for their request or
    result file. Stuck: a chunk waiting for an engine too long, no change for too long, a result
    file past its deadline."""
    from engines.tables import debit_chunks, debit_files, engine_batches
    from ledger.schema import debit_batches, debits

    c, eb, db_, d, f = debit_chunks.c, engine_batches.c, debit_batches.c, debits.c, debit_files.c
    with reading(engine) as conn:
        ids = set(conn.execute(select(c.batch_id).where(c.state != "done").distinct()).scalars())
        ids |= set(conn.execute(select(eb.batch_id).where(eb.state.in_(["new", "written"]))).scalars())
        batches = []
        for batch_id in sorted(ids):
            head = conn.execute(select(db_.bank_code, db_.mode, eb.kind, eb.state, eb.debit_count, eb.chunk_count,
                                       eb.created_at, eb.updated_at)
                                .join(engine_batches, eb.batch_id == db_.batch_id)
                                .where(db_.batch_id == batch_id)).first()
            if head is None:
                continue
            chunks = dict(conn.execute(select(c.state, func.count()).where(c.batch_id == batch_id)
                                       .group_by(c.state)).all())
            oldest_ready, chunk_change = conn.execute(
                select(func.min(case((c.state == "ready", c.created_at))), func.max(c.updated_at))
                .where(c.batch_id == batch_id)).one()
            states = dict(conn.execute(select(d.state, func.count()).where(d.batch_id == batch_id)
                                       .group_by(d.state)).all())
            debit_change = conn.execute(select(func.max(d.updated_at)).where(d.batch_id == batch_id)).scalar()
            deadline = conn.execute(select(f.deadline_at).where(f.batch_id == batch_id)).scalar()
            batches.append((batch_id, head, chunks, oldest_ready, max(
                (aware(t) for t in (head.updated_at, chunk_change, debit_change) if t is not None)), states, deadline))
    items, stuck = [], []
    for batch_id, head, chunks, oldest_ready, changed, states, deadline in batches:
        total = sum(states.values())
        done = total - states.get("pending", 0) - states.get("sent", 0)
        item = {"batch": batch_id, "bank": head.bank_code, "mode": head.mode, "kind": head.kind, "state": head.state,
                "chunks": chunks, "chunks_done": chunks.get("done", 0), "chunk_count": sum(chunks.values()),
                "debits": states, "debits_done": done, "debit_count": total,
                "idle_s": round(age_of(now, changed), 1), "created_at": str(aware(head.created_at))}
        if head.mode == "file":
            progress = f"{head.state}" + (f", result due {when(deadline)}" if deadline is not None else "")
        else:
            progress = f"chunks {item['chunks_done']}/{item['chunk_count']} done"
        text = f"batch {batch_id} ({head.bank_code} {head.mode}): {progress}, debits {done}/{total} done"
        why = []
        wait = age_of(now, oldest_ready) if oldest_ready is not None else 0.0
        if head.mode == "file" and head.state == "new":
            wait = age_of(now, head.created_at)
        if wait > th.chunk:
            why.append(f"waiting {duration(wait)} for an engine (limit {duration(th.chunk)})")
        if head.mode == "file" and head.state == "written" and deadline is not None and aware(deadline) < now:
            why.append(f"result file overdue since {when(deadline)}")
        elif age_of(now, changed) > th.batch:
            why.append(f"no change for {duration(age_of(now, changed))} (limit {duration(th.batch)})")
        item["stuck"] = why
        item["text"] = text
        items.append(item)
        if why:
            stuck.append(f"{text}: {', '.join(why)}")
    figures = {"running": len(items), "stuck": len(stuck), "batches": items,
               "limit_chunk_wait_s": th.chunk, "limit_idle_s": th.batch}
    if stuck:
        return Check("batches", False, f"{len(stuck)} of {len(items)} running batches stuck: " + "; ".join(stuck)
                     + " (gridpay debit batch ID)", figures)
    if not items:
        return Check("batches", True, "none running", figures)
    return Check("batches", True, f"{len(items)} running: " + "; ".join(i["text"] for i in items), figures)


# --- all of them ---------------------------------------------------------------------------------

def run_checks(settings, *, now: datetime | None = None, thresholds: Thresholds | None = None,
               metrics: list[str] = (), use_configured_metrics: bool = True, timeout_s: float = 3.0) -> list[Check]:
    """Every check, in the order operators read them. With the database unreachable (or without a
    schema) only what could be checked is returned."""
    now = now or SYSTEM_CLOCK.now()
    th = thresholds or Thresholds()
    url = settings.database_url()
    asked = [(metrics_url(u), "--metrics", True) for u in metrics]
    configured = gateway_metrics_url(settings) if use_configured_metrics else None

    def scrapes_of(extra: list[tuple[str, str]]) -> list[Scrape]:
        seen = {u for u, _, _ in asked}
        wanted = [(u, what, False) for u, what in extra if u not in seen] + asked
        return [scrape(u, what, required, timeout_s) for u, what, required in wanted]

    database, owned = check_database(url, settings.database.statement_timeout_s)
    checks = [database]
    if owned is None:
        return checks + check_scrapes(scrapes_of([(configured, "gateway")] if configured else []))
    from ledger.db import READ_ONLY

    engine = owned.execution_options(**{READ_ONLY: True})   # every transaction a reader's (SQLite: no write lock)
    try:
        schema = guarded("schema", check_schema, url)
        checks += schema
        if schema[0].figures.get("current") is None:
            return checks
        if settings.database.replica_url:
            checks += guarded("replica", check_replica, settings.replica_url(), engine,
                              settings.database.statement_timeout_s)
        try:
            rows = engine_rows(engine, now)
            engines = check_engines(rows)
        except Exception as exc:  # noqa: BLE001
            rows, engines = EngineRows(), Check("engines", False, f"could not check: {first_line(exc)}")
        local = [(configured, "gateway")] if configured else []
        if use_configured_metrics:
            local += [(u, f"engine {name}") for u, name in engine_metrics_urls(settings, rows.live)]
        scrapes = scrapes_of(local)
        checks += check_scrapes(scrapes)
        checks.append(engines)
        checks += guarded("banks", check_banks, settings, engine, rows, scrapes)
        checks += guarded("reconciliation", check_recon, engine, now, th)
        checks += guarded("unknown debits", check_unknown_debits, engine, now, th)
        checks += guarded("reversals", check_reversals, engine, now, th)
        checks += guarded("outbox", check_outbox, engine, now, th)
        checks += guarded("batches", check_batches, engine, now, th)
    finally:
        owned.dispose()
    return checks


__all__ = ["Check", "Scrape", "Thresholds", "run_checks", "duration"]
