"""First reconciliation: a bank's transaction file (docs/spec/INTERFACE.md §7.1) against the gateway's records.

``reconcile_bank_file(engine, path, actor=...)``:

1. reads and checks the file whole (``bank_file.read_bank_file``); a bad file applies nothing and
   the result (and its report) names each bad line, field and reason;
2. a file whose SHA-256 was reconciled before changes nothing and says so; so does another file
   for a bank and business date already reconciled (the date is closed);
3. matches every line by channel + RRN against the ledger's side for (bank, business date): its
   payments (counter C and approved debits D), reversed or not, and its debits still open
   (sent / unknown / reversal unanswered) from ``debits``. Outcomes: matched; bank_only;
   ledger_only; amount_differs; status_differs (reversed on one side only); debit_unknown (an
   open debit, with what the bank says: S, R or absent). A file debit's RRN is the bank reference
   of its result-file line (§7.1); an open file debit whose result never came has none, and is
   looked for among the file's unclaimed debit lines by customer and amount;
4. in ONE transaction: the business-day closure row (reversals are refused from then on), the run
   with both sides' totals and the matched count and sum (per channel in ``details``: matched
   lines are not stored one by one), the exceptions as items (one multi-row insert), an audit row;
5. writes the run's CSV and HTML reports.

Matching is in memory: the file's lines in a dict keyed by channel + RRN, the ledger's rows
streamed through it (Core, no ORM). A million lines take well under the 30 s budget (see
scripts/bench/recon.py and docs/reconciliation.md).
"""
from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import Engine, and_, insert, select
from sqlalchemy.exc import IntegrityError

from ledger.audit import audit_row, write_audit
from config.clock import SYSTEM_CLOCK, Clock
from ledger.ids import reserve_ids
from ledger.progress import NoProgress
from ledger.recon.bank_file import BankFile, read_bank_file
from ledger.recon_tables import recon_items, recon_runs
from ledger.schema import banks, business_day_closures, debits, payments, reversals
from runtime.bulk_sql import insert_rows

# debits that were sent and whose outcome is not known (the debit engine may add states such as
# reversal_sent / reversal_unanswered: any state not listed as final or unsent counts as open)
FINAL_DEBIT_STATES = ("approved", "declined", "reversed", "pending")
EXCEPTION_KINDS = ("bank_only", "ledger_only", "amount_differs", "status_differs", "debit_unknown")
# the end of a debit_unknown item's detail that settling at reconciliation leaves alone: the bank's
# file may hold the debit, but which of its lines is for a person to say
BY_HAND = ": match it by hand"


@dataclass
class BankRunResult:
    status: str                      # applied | rejected | duplicate | closed
    message: str
    bank_file: BankFile | None = None
    run_id: int | None = None
    counts: dict = field(default_factory=dict)   # outcome kind -> count
    items: list[dict] = field(default_factory=list)
    totals: dict = field(default_factory=dict)
    reports: list[Path] = field(default_factory=list)
    settled: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("applied", "duplicate")


def _item(run_id, kind, bf: BankFile, now, **kw) -> dict:
    row = {c.name: None for c in recon_items.c if c.name != "item_id"}
    row.update(run_id=run_id, kind=kind, status="open", bank_code=bf.bank_code, business_date=bf.business_date,
               detail="", created_at=now)
    row.update(kw)
    return row


def _bank_fields(bf: BankFile, line_no: int) -> dict:
    ln = bf.line(line_no)
    return {"channel": ln.channel, "rrn": ln.rrn, "customer_no": ln.customer_no, "bank_amount": ln.amount,
            "bank_status": ln.status, "line_no": line_no, "transmitted": ln.transmitted, "stan": ln.stan,
            "terminal": ln.terminal}


def _previous_run(conn, bf: BankFile):
    rr = recon_runs.c
    same = conn.execute(select(rr.run_id, rr.finished_at, rr.file_name).where(
        rr.kind == "bank", rr.file_sha256 == bf.sha256)).first()
    if same is not None:
        return "duplicate", (f"already reconciled: file SHA-256 {bf.sha256[:16]}... is run {same.run_id} "
                             f"({same.file_name}, {same.finished_at:%Y-%m-%d %H:%M}); nothing changed")
    bdc = business_day_closures.c
    closed = conn.execute(select(bdc.recon_run_id, bdc.closed_at, bdc.closed_by).where(
        bdc.bank_code == bf.bank_code, bdc.business_date == bf.business_date)).first()
    if closed is not None:
        return "closed", (f"bank {bf.bank_code} business date {bf.business_date} was already reconciled "
                          f"(run {closed.recon_run_id}, closed by {closed.closed_by} at {closed.closed_at:%Y-%m-%d %H:%M}) "
                          f"from another file; this file (SHA-256 {bf.sha256[:16]}...) changes nothing")
    return None, ""


def reconcile_bank_file(engine: Engine, path: str | Path, *, actor: str, now: datetime | None = None,
                        clock: Clock = SYSTEM_CLOCK, reports_dir: str | Path | None = None,
                        settle_debits: bool = False, data: bytes | None = None,
                        progress: NoProgress = NoProgress()) -> BankRunResult:
    """See the module docstring. ``settle_debits``: give every debit_unknown item at once the outcome
    the file shows (``resolutions.resolve_item(..., 'settle')``), audited with ``actor``. ``progress``
    hears of each phase (read, match, store, reports) as it ends."""
    assert actor, "a reconciliation names who runs it"
    t0 = time.perf_counter()
    now = now or clock.now()
    gc_was_enabled = gc.isenabled()
    gc.disable()   # a million small tuples: the cyclic collector's passes over them cost seconds, and there are no cycles
    try:
        return _reconcile(engine, path, actor, now, clock, reports_dir, settle_debits, data, t0, progress)
    finally:
        if gc_was_enabled:
            gc.enable()


def _reconcile(engine, path, actor, now, clock, reports_dir, settle_debits, data, t0, progress) -> BankRunResult:
    bf = read_bank_file(path, data)
    t_read = time.perf_counter() - t0
    progress.step(f"{bf.path.name}: read {len(bf.lines):,} lines in {t_read:.1f} s "
                  f"({len(bf.lines) / max(t_read, 1e-6):,.0f} lines/s)" + ("" if bf.ok else f", {len(bf.errors):,} errors"))
    if not bf.ok:
        result = BankRunResult("rejected", bf.summary(), bf)
        if reports_dir is not None:
            from ledger.recon.run_reports import write_rejection
            result.reports = write_rejection(bf.path.name, [(e.line, e.field, e.reason) for e in bf.errors],
                                             bf.more_errors, reports_dir)
        return result
    with engine.connect() as conn:
        status, message = _previous_run(conn, bf)
        if status is None and conn.execute(select(banks.c.bank_code).where(banks.c.bank_code == bf.bank_code)).first() is None:
            status, message = "rejected", f"bank {bf.bank_code} is not registered with the ledger; nothing was applied"
    if status is not None:
        return BankRunResult(status, message, bf)
    try:
        result = _match_and_store(engine, bf, actor, now, clock, t0, t_read, progress)
    except IntegrityError:
        # another process closed this bank/date (or stored this file) between our check and our insert
        with engine.connect() as conn:
            status, message = _previous_run(conn, bf)
        return BankRunResult(status or "closed", message or "reconciled concurrently by another process", bf)
    if settle_debits:
        from ledger.recon.resolutions import resolve_item
        for item in result.items:
            if item["kind"] == "debit_unknown" and not item["detail"].endswith(BY_HAND):
                result.settled.append(resolve_item(engine, item["item_id"], "settle", actor=actor,
                                                   reason="settled by the bank file at reconciliation",
                                                   clock=clock))
    if reports_dir is not None:
        from ledger.recon.run_reports import write_run_reports
        t_reports = time.perf_counter()
        result.reports = write_run_reports(engine, result.run_id, reports_dir)
        progress.step(f"{bf.path.name}: {len(result.reports)} reports written in {time.perf_counter() - t_reports:.1f} s")
    return result


LEDGER_SQL = ("SELECT p.channel, p.rrn, p.amount, p.payment_id, p.customer_no, r.reversal_id "
              "FROM payments p LEFT OUTER JOIN reversals r ON r.payment_id = p.payment_id "
              "WHERE p.bank_code = {0} AND p.business_date = {0}")


def _ledger_rows(conn, bank_code: str, business_date: date, chunk: int = 50_000):
    """The ledger's payments of (bank, date) with their reversal, in chunks of plain tuples. On SQLite and
    PostgreSQL straight from the DB-API cursor (a server-side cursor on PostgreSQL): a million rows
    through SQLAlchemy's Row objects cost about a second more; elsewhere through Core."""
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        dbapi_conn = conn.connection.dbapi_connection
        if dialect == "sqlite":
            cur = dbapi_conn.cursor()
            cur.execute(LEDGER_SQL.format("?"), (bank_code, business_date.isoformat()))
        else:
            # a cursor's plan is chosen for the first rows by default (cursor_tuple_fraction 0.1: a nested
            # loop into reversals per payment); we read them all, so plan for all (hash join)
            conn.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
            cur = dbapi_conn.cursor(name="gridpay_recon_ledger")
            cur.itersize = chunk
            cur.execute(LEDGER_SQL.format("%s"), (bank_code, business_date))
        try:
            while True:
                rows = cur.fetchmany(chunk)
                if not rows:
                    break
                yield rows
        finally:
            cur.close()
        return
    p, r = payments.c, reversals.c
    stmt = (select(p.channel, p.rrn, p.amount, p.payment_id, p.customer_no, r.reversal_id)
            .select_from(payments.outerjoin(reversals, r.payment_id == p.payment_id))
            .where(p.bank_code == bank_code, p.business_date == business_date))
    for part in conn.execute(stmt.execution_options(stream_results=True, yield_per=chunk)).partitions():
        yield [tuple(row) for row in part]


def lock_bank_for_closing(conn, bank_code: str) -> None:
    """The bank row's lock, taken first: a reversal being posted for this bank finishes before the
    day is closed and read (the ledger's reversals take the same row FOR SHARE before reading
    closures). FOR NO KEY UPDATE on PostgreSQL, not FOR UPDATE: every payment, debit and agreement
    of the bank checks its foreign key to this row (FOR KEY SHARE), and under FOR UPDATE the
    bank's counter payments and debits all waited for its reconciliation to commit."""
    conn.execute(select(banks.c.bank_code).where(banks.c.bank_code == bank_code)
                 .with_for_update(key_share=True)).all()


def _match_and_store(engine: Engine, bf: BankFile, actor: str, now: datetime, clock: Clock, t0: float,
                     t_read: float, progress: NoProgress) -> BankRunResult:
    entries = bf.entries
    items: list[dict] = []
    per_channel = {ch: {"matched": 0, "matched_sum": 0, "matched_reversed": 0} for ch in "CD"}
    ledger_count = ledger_sum = matched_count = matched_sum = 0
    with engine.begin() as conn:
        (run_id,) = reserve_ids(conn, recon_runs, 1)
        lock_bank_for_closing(conn, bf.bank_code)
        # the closure next: it takes the (bank, date) key, so a concurrent run of the same date fails here
        conn.execute(insert(business_day_closures), {"bank_code": bf.bank_code, "business_date": bf.business_date,
                                                     "closed_at": now, "closed_by": actor, "recon_run_id": run_id})
        t1 = time.perf_counter()
        pop = entries.pop
        progress.start(f"{bf.path.name}: matching", total=bf.count, unit="payments")
        for part in _ledger_rows(conn, bf.bank_code, bf.business_date):
            progress.advance(len(part))
            for channel, rrn, amount, payment_id, customer_no, reversal_id in part:
                lstatus = "S" if reversal_id is None else "R"
                ledger_count += 1
                if reversal_id is None:
                    ledger_sum += amount
                b = pop(channel + rrn, None)
                if b is None:
                    items.append(_item(run_id, "ledger_only", bf, now, channel=channel, rrn=rrn, customer_no=customer_no,
                                       ledger_amount=amount, ledger_status=lstatus, payment_id=payment_id,
                                       detail="in the ledger, not in the bank's file"))
                    continue
                bamount, bstatus, line_no = b
                if bamount == amount and bstatus == lstatus:
                    matched_count += 1
                    pc = per_channel[channel]
                    pc["matched"] += 1
                    if bstatus == "S":
                        matched_sum += amount
                        pc["matched_sum"] += amount
                    else:
                        pc["matched_reversed"] += 1
                    continue
                fields = _bank_fields(bf, line_no)
                fields["customer_no"] = customer_no
                if bamount != amount:
                    kind, detail = "amount_differs", f"bank {bamount} fen, ledger {amount} fen"
                    if bstatus != lstatus:
                        detail += f"; and bank status {bstatus}, ledger {lstatus}"
                else:
                    kind = "status_differs"
                    detail = ("reversed at the bank only" if bstatus == "R" else "reversed in the ledger only")
                items.append(_item(run_id, kind, bf, now, ledger_amount=amount, ledger_status=lstatus,
                                   payment_id=payment_id, detail=detail, **fields))
        # debits sent whose outcome is not known yet, and declined ones (for the bank-only lines' details)
        d = debits.c
        declined: dict[str, int] = {}
        no_rrn = []
        for row in conn.execute(select(d.debit_id, d.rrn, d.amount, d.customer_no, d.state).where(
                d.bank_code == bf.bank_code, d.business_date == bf.business_date,
                d.state.not_in(("approved", "pending")))):
            if row.rrn is None:
                # a file debit whose result file never came: the bank reference that is its RRN
                # in this file (§7.1) was never heard of; it is looked for below by customer and amount
                if row.state not in FINAL_DEBIT_STATES:
                    no_rrn.append(row)
                continue
            if row.state in FINAL_DEBIT_STATES:
                b = entries.get("D" + row.rrn)
                if row.state == "reversed" and b is not None and b[1] == "R" and b[0] == int(row.amount):
                    # applied at the bank, then reversed by our 0420: both sides agree, nothing moved
                    pop("D" + row.rrn)
                    ledger_count += 1
                    matched_count += 1
                    per_channel["D"]["matched"] += 1
                    per_channel["D"]["matched_reversed"] += 1
                    continue
                declined["D" + row.rrn] = row.debit_id
                continue
            ledger_count += 1
            b = pop("D" + row.rrn, None)
            if b is None:
                items.append(_item(run_id, "debit_unknown", bf, now, channel="D", rrn=row.rrn, customer_no=row.customer_no,
                                   ledger_amount=int(row.amount), ledger_status="U", debit_id=row.debit_id,
                                   detail=f"debit {row.debit_id} is {row.state}; not in the bank's file: it did not happen"))
                continue
            fields = _bank_fields(bf, b[2])
            fields["customer_no"] = row.customer_no
            what = "succeeded" if b[1] == "S" else "was reversed"
            detail = f"debit {row.debit_id} is {row.state}; the bank's file says it {what}"
            if b[0] != int(row.amount):
                detail += f" (bank amount {b[0]}, debit amount {int(row.amount)})"
            items.append(_item(run_id, "debit_unknown", bf, now, ledger_amount=int(row.amount), ledger_status="U",
                               debit_id=row.debit_id, detail=detail, **fields))
        if no_rrn:
            ledger_count += len(no_rrn)
            items += _match_without_rrn(run_id, bf, now, no_rrn, entries, declined)
        for key, (bamount, bstatus, line_no) in entries.items():
            detail = "in the bank's file, not in the ledger"
            if key in declined:
                detail = f"the ledger recorded debit {declined[key]} as {'declined/reversed'}; the bank shows {bstatus}"
            items.append(_item(run_id, "bank_only", bf, now, detail=detail, **_bank_fields(bf, line_no)))
        t_match = time.perf_counter() - t1
        progress.finish(f"{bf.path.name}: {ledger_count:,} ledger payments against {bf.count:,} bank lines in "
                        f"{t_match:.1f} s: {matched_count:,} matched, {len(items):,} exceptions")
        items.sort(key=lambda i: (i["kind"], i["line_no"] or 0, i["payment_id"] or 0))
        ids = reserve_ids(conn, recon_items, len(items))
        for item, item_id in zip(items, ids):
            item["item_id"] = item_id
        counts = {k: 0 for k in EXCEPTION_KINDS}
        for item in items:
            counts[item["kind"]] += 1
        totals = {"bank_count": bf.count, "bank_sum": bf.sum_s, "ledger_count": ledger_count, "ledger_sum": ledger_sum,
                  "matched_count": matched_count, "matched_sum": matched_sum, "exception_count": len(items)}
        details = {"channels": per_channel, "outcomes": counts,
                   "timings_s": {"read": round(t_read, 3), "match": round(t_match, 3)},
                   "stored": "exceptions as items; matched lines as counts and sums only"}
        conn.execute(insert(recon_runs), {
            "run_id": run_id, "kind": "bank", "bank_code": bf.bank_code, "business_date": bf.business_date,
            "file_name": bf.file_name[:255], "file_sha256": bf.sha256, "file_format": "bank-7.1",
            "lines": len(bf.lines), **totals, "actor": actor, "started_at": now, "finished_at": clock.now(),
            "details": json.dumps(details, sort_keys=True)})
        insert_rows(conn, recon_items, items)
        write_audit(conn, [audit_row(now, actor, "recon.bank", "recon_run", run_id, bank_code=bf.bank_code,
                                     business_date=bf.business_date, file=bf.file_name, sha256=bf.sha256,
                                     outcomes=counts, matched=matched_count)])
    bf.entries = {}
    exc = sum(counts.values())
    message = (f"run {run_id}: bank {bf.bank_code} {bf.business_date}: {bf.count} lines, {matched_count} matched "
               f"({matched_sum} fen), {exc} exception(s)"
               + ("" if not exc else ": " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
               + f"; business date closed for reversals ({time.perf_counter() - t0:.1f} s)")
    timings = dict(details["timings_s"], store=round(time.perf_counter() - t0 - t_read - t_match, 3))
    return BankRunResult("applied", message, bf, run_id, counts, items, totals, timings=timings)


def _match_without_rrn(run_id, bf: BankFile, now, rows, entries: dict, declined: dict) -> list[dict]:
    """Open file debits with no RRN (their batch's result file never came, §7.2) against the
    file's debit lines nobody claimed, by customer and amount: a line that is the only one for
    its customer and amount, wanted by exactly one such debit, is that debit's (taken from
    ``entries``); the others get no line, and a debit with several candidates says so."""
    lines: dict[tuple, list[str]] = {}
    for key, (amount, _status, line_no) in entries.items():
        if key[0] == "D" and key not in declined:
            lines.setdefault((bf.line(line_no).customer_no, amount), []).append(key)
    wanted: dict[tuple, int] = {}
    for row in rows:
        k = (row.customer_no, int(row.amount))
        wanted[k] = wanted.get(k, 0) + 1
    out = []
    for row in rows:
        k = (row.customer_no, int(row.amount))
        found = lines.get(k, [])
        base = f"debit {row.debit_id} is {row.state}, a file debit without a result file (no bank reference)"
        if len(found) == 1 and wanted[k] == 1:
            b = entries.pop(found[0])
            what = "succeeded" if b[1] == "S" else "was reversed"
            fields = _bank_fields(bf, b[2])
            out.append(_item(run_id, "debit_unknown", bf, now, ledger_amount=int(row.amount), ledger_status="U",
                             debit_id=row.debit_id, detail=f"{base}; the bank's file has its customer and amount "
                                                           f"under RRN {fields['rrn']} and says it {what}", **fields))
            continue
        detail = (f"{base}; {len(found)} lines of the bank's file have its customer and amount{BY_HAND}"
                  if found else f"{base}; no line of the bank's file has its customer and amount: it did not happen")
        out.append(_item(run_id, "debit_unknown", bf, now, channel="D", customer_no=row.customer_no,
                         ledger_amount=int(row.amount), ledger_status="U", debit_id=row.debit_id, detail=detail))
    return out


def closed(conn, bank_code: str, business_date: date) -> bool:
    bdc = business_day_closures.c
    return conn.execute(select(bdc.bank_code).where(and_(bdc.bank_code == bank_code,
                                                         bdc.business_date == business_date))).first() is not None
