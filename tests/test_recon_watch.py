"""The drop directory: complete-file rule, recognition of each kind, once-only by SHA-256,
rejections with .error.txt; docs/spec/INTERFACE.md §7.2 result-file checks; the real ``gridpay watch --once``."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import pytest_twisted
from sqlalchemy import func, select

from ledger.recon import watch as watch_mod
from ledger.recon.debit_files import validate_debit_result
from ledger.recon.watch import DropWatcher, poll_forever, recognise, register_handler
from ledger.recon_tables import recon_drop_files, recon_runs
from ledger.schema import customers
from test_recon_finance import REMIT, camt, ntry
from test_recon_support import BANK, DAY, build_world, gridpay, world, write_bank_file  # noqa: F401 - a fixture


def drop(watcher: DropWatcher, name: str, data: bytes) -> Path:
    """Write under a temporary name, then rename into place (the complete-file rule)."""
    tmp = watcher.incoming / f".{name}.part"
    tmp.write_bytes(data)
    final = watcher.incoming / name
    os.replace(tmp, final)
    return final


def bank_bytes(w, tmp_path, **kw) -> bytes:
    return write_bank_file(tmp_path, w.lines, **kw).read_bytes()


def test_each_kind_is_recognised_by_name_and_content():
    assert recognise("01020000_20261123.txt", b"H|01020000|20261123|1|5\nD|...") == "bank"
    assert recognise("01020000_20261123.txt", b"hello") == "unknown"
    assert recognise("01020000_B42.ret", b"H|01020000|B42|1|5|1|5|0|0\n") == "debit_result"
    assert recognise("stmt.xml", camt(8, [])) == "finance"
    assert recognise("stmt.csv", b"booking_date,value_date,amount,direction,method,cheque_no,reference,counterparty\n") == "finance"
    assert recognise("c.csv", b"customer_no,customer_name,customer_type,status,prepay_allowed,mobile\n") == "customers"
    assert recognise("b.csv", b"\xef\xbb\xbfcustomer_no,period,bill_id,principal,penalty,due_date\n") == "bills"
    assert recognise("a.csv", b"customer_no,bank_code,account_no,account_name,status,debit_limit\n") == "agreements"
    assert recognise("x.csv", b"a,b,c\n") == "unknown"


def test_complete_file_rule_duplicates_and_rejections(world, tmp_path):
    w = DropWatcher(world.engine, tmp_path / "drop", actor="system:test")
    data = bank_bytes(world, tmp_path)
    # being written: temporary names are never taken
    (w.incoming / f".{BANK}_{DAY:%Y%m%d}.txt").write_bytes(data[:50])
    (w.incoming / f"{BANK}_{DAY:%Y%m%d}.txt.part").write_bytes(data[:50])
    assert w.poll_once() == []
    for leftover in list(w.incoming.iterdir()):
        leftover.unlink()
    # complete: processed, moved, reported
    drop(w, f"{BANK}_{DAY:%Y%m%d}.txt", data)
    (r,) = w.poll_once()
    assert (r.kind, r.outcome) == ("bank", "processed"), r.message
    assert (w.processed / f"{BANK}_{DAY:%Y%m%d}.txt").read_bytes() == data
    assert sorted(p.suffix for p in w.reports.path.iterdir()) == [".csv", ".html"]
    assert not any(w.incoming.iterdir())
    # the same bytes again (another name): set aside as a duplicate, nothing applied
    drop(w, f"{BANK}_{DAY:%Y%m%d}.txt", data)
    (dup,) = w.poll_once()
    assert dup.outcome == "duplicate" and "same SHA-256" in dup.message
    error = (w.rejected / f"{BANK}_{DAY:%Y%m%d}.txt.error.txt").read_text(encoding="utf-8")
    assert "duplicate" in error and f"{BANK}_{DAY:%Y%m%d}.txt" in error
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(recon_runs)).scalar_one() == 1
        outcomes = sorted(conn.execute(select(recon_drop_files.c.outcome)).scalars())
    assert outcomes == ["duplicate", "processed"]
    # a bad file: rejected, with every bad line, field and reason in .error.txt
    lines = list(world.lines)
    lines[0] = lines[0].replace("|S|", "|Q|")
    bad = write_bank_file(tmp_path, lines, day=DAY.replace(day=24), total=1).read_bytes()
    drop(w, f"{BANK}_20261124.txt", bad)
    (rej,) = w.poll_once()
    assert rej.outcome == "rejected"
    error = (w.rejected / f"{BANK}_20261124.txt.error.txt").read_text(encoding="utf-8")
    assert "line 2, field status: must be S (succeeded) or R (reversed)" in error
    assert "line 1, field sum: header says" in error
    assert (w.rejected / f"{BANK}_20261124.txt").exists()


def test_finance_billing_and_unknown_files(world, tmp_path):
    w = DropWatcher(world.engine, tmp_path / "drop", actor="system:test")
    drop(w, "statement.xml", camt(8, [ntry(8, REMIT, ref=f"{BANK}{DAY:%Y%m%d}")]))
    drop(w, f"{BANK}_{DAY:%Y%m%d}.txt", bank_bytes(world, tmp_path))
    drop(w, "statement2.csv", b"booking_date,value_date,amount,direction,method,cheque_no,reference,counterparty\n"
                              b"2026-11-24,,500,C,,,SOMETHING,x\n")
    drop(w, "customers.csv", "customer_no,customer_name,customer_type,status,prepay_allowed,mobile\n"
                             "C900,张三,R,A,Y,13800000000\n".encode())
    drop(w, "bad_customers.csv", b"customer_no,customer_name,customer_type,status,prepay_allowed,mobile\nC901,x,Z,A,Y,1\n")
    drop(w, "notes.txt", b"hello")
    results = {r.name: r for r in w.poll_once()}
    # order: billing files, then bank files, then statements (the remittance finds its bank run)
    assert [r for r in results][:2] == ["bad_customers.csv", "customers.csv"]
    assert results["customers.csv"].outcome == "processed" and results["customers.csv"].ref.startswith("import:")
    assert results["bad_customers.csv"].outcome == "rejected"
    assert "line 2, field customer_type:" in (w.rejected / "bad_customers.csv.error.txt").read_text(encoding="utf-8")
    assert results[f"{BANK}_{DAY:%Y%m%d}.txt"].outcome == "processed"
    assert results["statement.xml"].outcome == "processed" and "1 matched" in results["statement.xml"].message
    assert results["statement2.csv"].outcome == "processed" and results["statement2.csv"].kind == "finance"
    assert results["notes.txt"].outcome == "rejected" and "not recognised" in results["notes.txt"].message
    with world.engine.connect() as conn:
        assert conn.execute(select(customers.c.customer_name).where(customers.c.customer_no == "C900")).scalar_one() == "张三"


REQ = "H|01020000|B42|3|6000\nD|1|C1|6222001|1000|202610\nD|2|C2|6222002|2000|202610,202611\nD|3|C3|6222003|3000|202611\n"
RET = ("H|01020000|B42|3|6000|2|4000|1|2000\nD|1|C1|6222001|1000|00|REF1\nD|2|C2|6222002|2000|51|REF2\n"
       "D|3|C3|6222003|3000|00|REF3\n")


def test_debit_result_checks():
    assert validate_debit_result(REQ.encode(), RET.encode()) == []
    missing = RET.replace("D|3|C3|6222003|3000|00|REF3\n", "")
    problems = validate_debit_result(REQ, missing)
    assert (0, "seq", "request seq 3 is not answered (missing line)") in problems
    assert any(p[:2] == (1, "lines") for p in problems)
    extra = RET + "D|4|C4|6222004|10|00|REF4\n"
    assert any(p[1] == "seq" and "extra line" in p[2] for p in validate_debit_result(REQ, extra))
    changed = RET.replace("D|2|C2|6222002|2000|", "D|2|C2|6222002|2500|")
    assert any(p[:2] == (3, "amount") for p in validate_debit_result(REQ, changed))
    twice = RET.replace("D|3|C3", "D|2|C2").replace("6222003|3000", "6222002|2000")
    assert any("answered twice" in p[2] for p in validate_debit_result(REQ, twice))


def test_the_debit_engines_handler_is_found():
    pytest.importorskip("engines.files")
    from engines.files import apply_result_file

    assert watch_mod.handler_for("debit_result") is apply_result_file


def test_debit_result_without_and_with_a_handler(world, tmp_path, monkeypatch):
    monkeypatch.setattr(watch_mod, "DEFAULT_HANDLER_MODULES", {})
    monkeypatch.setattr(watch_mod, "_HANDLERS", {})
    w = DropWatcher(world.engine, tmp_path / "drop", actor="system:test")
    (tmp_path / "drop" / "requests").mkdir()
    (tmp_path / "drop" / "requests" / "01020000_B42.req").write_text(REQ, encoding="gbk")
    drop(w, "01020000_B42.ret", RET.replace("|1|2000\n", "|1|2001\n").encode())
    (r,) = w.poll_once()
    assert r.outcome == "rejected"
    error = (w.rejected / "01020000_B42.ret.error.txt").read_text(encoding="utf-8")
    assert "no handler registered" in error and "line 1, field declined_sum: header says 2001, the lines give 2000" in error
    calls = []
    register_handler("debit_result", lambda engine, path, actor: (calls.append(path.name) or True, "applied 3 results", []))
    try:
        drop(w, "01020000_B43.ret", RET.replace("B42", "B43").encode())
        (r,) = w.poll_once()
        assert r.outcome == "processed" and calls == ["01020000_B43.ret"]
    finally:
        register_handler("debit_result", None)
    assert "debit_result" not in watch_mod._HANDLERS


def test_polling_loop_stops(world, tmp_path):
    w = DropWatcher(world.engine, tmp_path / "drop", interval_s=0.05)
    seen, stop = [], threading.Event()
    thread = threading.Thread(target=poll_forever, args=(w, 0.05, stop, seen.append))
    thread.start()
    drop(w, f"{BANK}_{DAY:%Y%m%d}.txt", bank_bytes(world, tmp_path))
    for _ in range(200):
        if seen:
            break
        stop.wait(0.05)
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and seen and seen[0].outcome == "processed"


def test_watch_cli_once(world, tmp_path):
    d = tmp_path / "drop"
    (d / "incoming").mkdir(parents=True)
    (d / "incoming" / f"{BANK}_{DAY:%Y%m%d}.txt").write_bytes(bank_bytes(world, tmp_path))
    (d / "incoming" / "statement.xml.part").write_bytes(b"<half")
    claimed = gridpay("watch", "--dir", d, "--once", "--url", world.url, "--actor", "alice")
    assert claimed.returncode == 2 and "not a system: name" in claimed.stderr    # a person cannot claim a name
    assert (d / "incoming" / f"{BANK}_{DAY:%Y%m%d}.txt").exists()
    out = gridpay("watch", "--dir", d, "--once", "--url", world.url, "--actor", "system:recon-watch-b", check=True)
    assert f"processed: {BANK}_{DAY:%Y%m%d}.txt (bank)" in out.stdout and "1 file(s): 1 processed" in out.stdout
    assert (d / "incoming" / "statement.xml.part").exists()
    assert (d / "processed" / f"{BANK}_{DAY:%Y%m%d}.txt").exists()
    assert any(p.suffix == ".html" for p in (d / "reports").iterdir())


@pytest_twisted.ensureDeferred
async def test_watcher_runs_on_the_twisted_reactor(sqlite_url, tmp_path):
    from twisted.internet import reactor, task

    world = build_world(sqlite_url)
    w = DropWatcher(world.engine, tmp_path / "drop", interval_s=0.05)
    w.start(reactor)
    try:
        drop(w, f"{BANK}_{DAY:%Y%m%d}.txt", bank_bytes(world, tmp_path))
        for _ in range(200):
            if (w.processed / f"{BANK}_{DAY:%Y%m%d}.txt").exists():
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        assert (w.processed / f"{BANK}_{DAY:%Y%m%d}.txt").exists()
    finally:
        await w.stop()
        world.engine.dispose()


@pytest_twisted.ensureDeferred
async def test_stopping_the_watcher_waits_for_the_poll_in_flight(world, tmp_path):
    """A poll runs in the thread pool; stop() fires only when it has ended, so whoever stops the
    watcher (the gateway's drain, a test dropping its schema) leaves nothing writing behind."""
    from twisted.internet import reactor, task

    w = DropWatcher(world.engine, tmp_path / "drop", interval_s=0.05)
    entered, release, ended = threading.Event(), threading.Event(), []

    def slow_poll():
        entered.set()
        release.wait(10)
        ended.append(True)
        return []

    w.poll_once = slow_poll
    w.start(reactor)
    for _ in range(200):
        if entered.is_set():
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    stopped, fired = w.stop(), []
    stopped.addCallback(fired.append)
    await task.deferLater(reactor, 0.2, lambda: None)
    assert not fired, "stop() fired while the poll was still running"
    release.set()
    await stopped
    assert ended == [True]
    await w.stop()          # stopping again is harmless


def test_a_bank_file_waits_in_incoming_until_its_business_date_has_ended(world, tmp_path, caplog):
    """Its day ends at the cut-off (23:00 Asia/Shanghai, 15:00 UTC): before, the file is held, not
    rejected, and said so once; the first poll after reconciles it."""
    from datetime import datetime, time, timedelta, timezone

    from config.clock import ManualClock

    day_ends = datetime.combine(DAY, time(15, 0), tzinfo=timezone.utc)
    clock = ManualClock(day_ends - timedelta(hours=1))
    assert clock.end_of(DAY) == day_ends
    w = DropWatcher(world.engine, tmp_path / "drop", actor="system:test", clock=clock)
    name = f"{BANK}_{DAY:%Y%m%d}.txt"
    waiting = drop(w, name, bank_bytes(world, tmp_path))
    caplog.set_level("INFO", logger="gridpay.recon.watch")
    assert w.poll_once() == [] and w.poll_once() == []
    assert waiting.exists() and not list(w.rejected.iterdir()) and not list(w.processed.iterdir())
    assert [r.getMessage() for r in caplog.records if "held" in r.getMessage()] == [
        f"bank file {name} held: business date {DAY} ends at {day_ends:%Y-%m-%d %H:%M} UTC "
        f"(local {DAY} 23:00); it waits in incoming/ until then"]
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(recon_runs)).scalar_one() == 0
    clock.set(day_ends)
    [done] = w.poll_once()
    assert (done.name, done.outcome) == (name, "processed") and not waiting.exists()


def test_gridpay_watch_holds_a_bank_file_of_a_day_not_ended_unless_set_not_to(world, tmp_path):
    """The real ``gridpay watch --once``, on the system's clock: a file of a business date that has
    not ended (tomorrow's: whenever the test runs, it has not) waits; with
    ``watch.hold_bank_files_until_day_ended = false`` it is reconciled at once."""
    from datetime import timedelta

    from config.clock import Clock

    today = Clock().business_date() + timedelta(days=1)
    d = tmp_path / "drop"
    (d / "incoming").mkdir(parents=True)
    waiting = d / "incoming" / f"{BANK}_{today:%Y%m%d}.txt"
    waiting.write_bytes(bank_bytes(world, tmp_path, day=today))
    args = ("watch", "--dir", d, "--once", "--url", world.url)
    out = gridpay(*args, check=True)
    assert "0 file(s)" in out.stdout and f"bank file {waiting.name} held" in out.stderr, out.stdout + out.stderr
    assert waiting.exists()
    now = gridpay(*args, check=True, env={**os.environ, "GRIDPAY_WATCH__HOLD_BANK_FILES_UNTIL_DAY_ENDED": "false"})
    assert f"processed: {waiting.name} (bank)" in now.stdout and not waiting.exists(), now.stdout + now.stderr
