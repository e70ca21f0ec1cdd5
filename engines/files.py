"""Batch debit files (docs/spec/INTERFACE.md §7.2) for banks without an online debit channel (``debit.mode = "file"``).

Request ``{bank}_{batch}.req`` goes to ``DROP/outgoing/``; the result ``{bank}_{batch}.ret``
comes back through ``DROP/incoming/`` (the drop watcher calls ``apply_result_file``) or
``gridpay debit result FILE``.

**Written once.** The request is written to ``outgoing/.{name}.part`` and fsynced; then ONE
transaction records the file (``debit_files``, its bytes and line → debit map), moves the
batch's debits to ``sent`` and the batch to ``written``; only after that commit is the part
file renamed to its final name (what the transfer agent picks up). A crash before the commit
leaves no record (the part file is overwritten on the next try: nothing was sent); a crash
between commit and rename is finished by the next pass (the part file is renamed); a recorded
file whose part and final names are both gone was sent, and is never written again.

**Applied whole or not at all.** A result file is checked against the stored request
(``ledger.recon.debit_files.validate_debit_result``: every line answered once with the same
customer, account and amount; header totals agree); any problem rejects it whole. Otherwise
every line's result is posted through the ledger in one transaction: ``00`` approved (bills
paid), anything else declined with that code. A line's bank reference becomes the debit's RRN
(the bank's §7.1 day file names a file debit by it; an approved line's must be 1-12 letters or
digits); the request file has none, so a file debit has no RRN until its result. A second result
for the same batch is refused.

**Deadline.** A batch with no result ``result_deadline_h`` hours after its request was written
is marked expired and its debits ``unknown``: unpaid, open for reconciliation. A valid result
file that arrives later is still applied (unknown → approved / declined: the bank's word).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, insert, select, update

from engines.tables import debit_file_lines, debit_files, engine_batches
from runtime.bulk_sql import insert_rows
from config.clock import SYSTEM_CLOCK, Clock
from ledger.errors import Refused
from ledger.posting import DebitResult, apply_batch
from ledger.schema import bills, debit_attempts, debit_batches, debit_bills, debits

log = logging.getLogger("gridpay.debit.files")
ACTOR = "system:debit-files"


def _dirs(drop_dir) -> tuple[Path, Path]:
    drop = Path(drop_dir)
    out = drop / "outgoing"
    out.mkdir(parents=True, exist_ok=True)
    return drop, out


def request_name(bank_code: str, batch_id: int) -> str:
    return f"{bank_code}_{batch_id}.req"


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def finish_renames(db, drop_dir) -> list[str]:
    """Rename part files whose request was recorded (a crash between commit and rename)."""
    _, out = _dirs(drop_dir)
    done = []
    with db.connect() as conn:
        names = list(conn.execute(select(debit_files.c.file_name).where(debit_files.c.state == "written")).scalars())
    for name in names:
        part, final = out / f".{name}.part", out / name
        if part.exists() and not final.exists():
            part.replace(final)
            done.append(name)
            log.info("request file %s: rename finished after a restart", name)
    return done


def write_request_file(db, settings, batch_id: int, *, now: datetime, owner: str = ACTOR,
                       clock: Clock = SYSTEM_CLOCK) -> Path | None:
    """Write the batch's request file once; None if it is not (or no longer) waiting for one."""
    clock = clock or Clock.of(settings.business)
    _, out = _dirs(settings.drop_dir)
    eb, d = engine_batches.c, debits.c
    with db.begin() as conn:
        stmt = select(eb.batch_id).where(eb.batch_id == batch_id, eb.state == "new")
        if conn.dialect.name in ("postgresql", "oracle"):
            stmt = stmt.with_for_update(skip_locked=True)
        if conn.execute(stmt).first() is None:
            return None
        batch = conn.execute(select(debit_batches).where(debit_batches.c.batch_id == batch_id)).one()
        bank = batch.bank_code
        rows = conn.execute(select(d.debit_id, d.customer_no, d.account_no, d.amount)
                            .where(d.batch_id == batch_id, d.state == "pending").order_by(d.debit_id)).all()
        periods: dict[int, set] = {}
        for r in conn.execute(select(debit_bills.c.debit_id, bills.c.period)
                              .join(bills, bills.c.bill_id == debit_bills.c.bill_id)
                              .join(debits, debits.c.debit_id == debit_bills.c.debit_id)
                              .where(d.batch_id == batch_id)):
            periods.setdefault(r.debit_id, set()).add(r.period)
        total = sum(int(r.amount) for r in rows)
        lines = [f"H|{bank}|{batch_id}|{len(rows)}|{total}"]
        lines += [f"D|{seq}|{r.customer_no}|{r.account_no}|{int(r.amount)}|{','.join(sorted(periods[r.debit_id]))}"
                  for seq, r in enumerate(rows, start=1)]
        data = ("\n".join(lines) + "\n").encode("gbk")
        name = request_name(bank, batch_id)
        part = out / f".{name}.part"
        _fsync_write(part, data)
        deadline = now + timedelta(hours=settings.bank(bank).debit.result_deadline_h) if bank in settings.banks \
            else now + timedelta(hours=24)
        conn.execute(insert(debit_files), {
            "batch_id": batch_id, "bank_code": bank, "file_name": name, "request": data, "lines": len(rows),
            "total": total, "state": "written", "written_at": now, "deadline_at": deadline, "result_sha256": None,
            "result_applied_at": None, "written_by": owner})
        insert_rows(conn, debit_file_lines, [{"batch_id": batch_id, "seq": seq, "debit_id": r.debit_id}
                                             for seq, r in enumerate(rows, start=1)])
        changed = conn.execute(update(debits).where(d.batch_id == batch_id, d.state == "pending").values(
            state="sent", business_date=clock.business_date(now), updated_at=now)).rowcount
        if changed != len(rows):
            raise RuntimeError(f"batch {batch_id}: {changed} of {len(rows)} debits moved to sent")
        insert_rows(conn, debit_attempts, [{"debit_id": r.debit_id, "event": "sent", "mti": None, "response_code": None,
                                            "detail": f"request file {name} line {seq}", "actor": owner, "at": now}
                                           for seq, r in enumerate(rows, start=1)])
        conn.execute(update(engine_batches).where(eb.batch_id == batch_id).values(state="written", updated_at=now))
    final = out / name
    part.replace(final)
    log.info("request file %s written: %d lines, %d fen", name, len(rows), total)
    return final


def expire_files(db, now: datetime, clock: Clock, actor: str = ACTOR) -> list[int]:
    """Batches past their result deadline: debits unknown (unpaid, open for reconciliation)."""
    f = debit_files.c
    expired = []
    with db.connect() as conn:
        due = list(conn.execute(select(f.batch_id).where(f.state == "written", f.deadline_at <= now)).scalars())
    for batch_id in due:
        with db.begin() as conn:
            stmt = select(f.state).where(f.batch_id == batch_id)
            if conn.dialect.name != "sqlite":
                stmt = stmt.with_for_update()
            if conn.execute(stmt).scalar_one() != "written":
                continue
            ids = list(conn.execute(select(debits.c.debit_id).where(debits.c.batch_id == batch_id,
                                                                    debits.c.state == "sent")).scalars())
            apply_batch(conn, [DebitResult(i, "unknown", now, detail="no result file by the deadline: open for "
                                           "reconciliation", actor=actor) for i in ids], clock, now)
            conn.execute(update(debit_files).where(f.batch_id == batch_id).values(state="expired"))
            conn.execute(update(engine_batches).where(engine_batches.c.batch_id == batch_id)
                         .values(state="expired", updated_at=now))
        expired.append(batch_id)
        log.warning("batch %d: no result file by the deadline: %d debits unknown", batch_id, len(ids))
    return expired


def run_file_work(db, settings, now: datetime, *, owner: str, banks: list[str],
                  clock: Clock = SYSTEM_CLOCK) -> dict:
    """One pass: finish renames, write new request files, expire overdue batches."""
    clock = clock or Clock.of(settings.business)
    finish_renames(db, settings.drop_dir)
    eb = engine_batches.c
    with db.connect() as conn:
        new = list(conn.execute(select(eb.batch_id).join(debit_batches, debit_batches.c.batch_id == eb.batch_id)
                                .where(eb.state == "new", debit_batches.c.bank_code.in_(banks))
                                .order_by(eb.batch_id)).scalars())
    written = [p for b in new if (p := write_request_file(db, settings, b, now=now, owner=owner, clock=clock))]
    return {"written": written, "expired": expire_files(db, now, clock)}


# --- results -----------------------------------------------------------------------------------

@dataclass
class ResultFileOutcome:
    ok: bool
    message: str
    errors: list[tuple] = field(default_factory=list)     # (line, field, reason)
    batch_id: int | None = None
    approved: int = 0
    approved_sum: int = 0
    declined: int = 0

    def __iter__(self):  # ok, message, errors = apply_result_file(...)  (the drop watcher's handler shape)
        return iter((self.ok, self.message, self.errors))


def apply_result_file(engine, path, actor: str = ACTOR, *, now: datetime | None = None,
                      clock: Clock = SYSTEM_CLOCK, data: bytes | None = None) -> ResultFileOutcome:
    """Apply a §7.2 result file whole, or reject it whole (nothing applied) with every problem."""
    from ledger.recon.debit_files import RET_LINE, RRN, validate_debit_result

    now = now or clock.now()
    path = Path(path)
    name = path.name
    stem, dot, ext = name.rpartition(".")
    bank, _, batch = stem.partition("_")
    if ext != "ret" or not bank.isdigit() or not batch.isdigit():
        return ResultFileOutcome(False, f"{name}: not a result file name ({{bank}}_{{batch}}.ret)",
                                 [(0, "-", "file name must be {bank}_{batch}.ret")])
    batch_id = int(batch)
    try:
        data = path.read_bytes() if data is None else data
    except OSError as exc:
        return ResultFileOutcome(False, f"{name}: cannot read: {exc.strerror}", [(0, "-", str(exc))], batch_id)
    sha = hashlib.sha256(data).hexdigest()
    f = debit_files.c
    with engine.connect() as conn:
        rec = conn.execute(select(debit_files).where(f.batch_id == batch_id)).mappings().first()
    if rec is None or rec["bank_code"] != bank:
        return ResultFileOutcome(False, f"{name}: no request file was sent for bank {bank} batch {batch_id}",
                                 [(0, "batch_no", f"no request {bank}_{batch_id}.req on record")], batch_id)
    if rec["state"] == "applied":
        return ResultFileOutcome(False, f"{name}: batch {batch_id} already has its result (applied "
                                        f"{rec['result_applied_at']}); nothing applied",
                                 [(0, "-", "duplicate result file for this batch")], batch_id)
    problems = validate_debit_result(bytes(rec["request"]), data)
    if problems:
        return ResultFileOutcome(False, f"{name}: rejected, {len(problems)} problem(s); nothing applied",
                                 problems, batch_id)
    lines = data.decode("gbk").replace("\r\n", "\n").split("\n")
    answers = {}
    for line in lines[1:]:
        if line:
            m = RET_LINE.fullmatch(line)
            answers[int(m.group(1))] = (m.group(5), m.group(6))
    out = ResultFileOutcome(True, "", [], batch_id)
    try:
        with engine.begin() as conn:
            stmt = select(f.state).where(f.batch_id == batch_id)
            if conn.dialect.name != "sqlite":
                stmt = stmt.with_for_update()
            if conn.execute(stmt).scalar_one() == "applied":
                return ResultFileOutcome(False, f"{name}: batch {batch_id} already has its result; nothing applied",
                                         [(0, "-", "duplicate result file for this batch")], batch_id)
            seq_to_debit = dict(conn.execute(select(debit_file_lines.c.seq, debit_file_lines.c.debit_id)
                                             .where(debit_file_lines.c.batch_id == batch_id)).all())
            amounts = dict(conn.execute(select(debits.c.debit_id, debits.c.amount)
                                        .where(debits.c.batch_id == batch_id)).all())
            postings, rrns = [], []
            for seq in sorted(answers):
                code, ref = answers[seq]
                debit_id = seq_to_debit[seq]
                if RRN.fullmatch(ref):
                    rrns.append({"id": debit_id, "ref": ref})
                if code == "00":
                    postings.append(DebitResult(debit_id, "approved", now, "00", ref[:6] or None,
                                                detail=f"result file {name}: bank reference {ref}", actor=actor))
                    out.approved += 1
                    out.approved_sum += int(amounts[debit_id])
                else:
                    postings.append(DebitResult(debit_id, "declined", now, code,
                                                detail=f"result file {name}: bank reference {ref}", actor=actor))
                    out.declined += 1
            # the bank's day file names a file debit by its bank reference (§7.1): that is its RRN,
            # set before the postings so that an approved debit's payment is booked under it
            if rrns:
                d = debits.c
                conn.execute(update(debits).where(d.debit_id == bindparam("id")).values(rrn=bindparam("ref")), rrns)
            outcomes = apply_batch(conn, postings, clock, now)
            bad = [(p.debit_id, o.response_code, o.detail) for p, o in zip(postings, outcomes)
                   if not (o.ok or o.replayed)]
            if bad:
                raise Refused(f"the ledger refused {len(bad)} line(s); nothing applied",
                              [(0, "debit", f"debit {i}: {code} {detail}") for i, code, detail in bad])
            conn.execute(update(debit_files).where(f.batch_id == batch_id).values(
                state="applied", result_sha256=sha, result_applied_at=now))
            conn.execute(update(engine_batches).where(engine_batches.c.batch_id == batch_id)
                         .values(state="applied", updated_at=now))
    except Refused as exc:
        return ResultFileOutcome(False, f"{name}: {exc}", exc.lines, batch_id)
    out.message = (f"{name}: applied: {out.approved} approved ({out.approved_sum} fen), {out.declined} declined")
    log.info("%s", out.message)
    return out


def register_with_watch() -> None:
    """Make the drop watcher (``gridpay watch``) hand ``*.ret`` files to ``apply_result_file``."""
    from ledger.recon.watch import register_handler

    register_handler("debit_result", apply_result_file)


try:
    register_with_watch()
except ImportError:  # pragma: no cover - the watcher is optional
    pass
