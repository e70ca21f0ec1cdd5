"""Hostile drop files (issue 16: defects 6, 7, 8 and the watcher's standing defences): each is set
aside in rejected/ with a clear report, applies nothing, and never stops the watcher for the other
files (docs/reconciliation.md, "What the watcher takes"). Real files in a tmp drop directory, a real
database; ``gridpay watch`` as a process where the defect is about the process."""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import pytest_twisted
from sqlalchemy import func, select

from ledger.recon import watch as watch_mod
from ledger.recon.watch import DropWatcher, poll_forever, register_handler
from ledger.recon_tables import recon_drop_files, recon_runs
from ledger.schema import customers, imports
from test_recon_support import BANK, DAY, GRIDPAY, world, write_bank_file  # noqa: F401 - world is a fixture
from test_recon_watch import RET

BANK_FILE = f"{BANK}_{DAY:%Y%m%d}.txt"
CUSTOMER_HEADER = "customer_no,customer_name,customer_type,status,prepay_allowed,mobile\n"
STATEMENT_HEADER = "booking_date,value_date,amount,direction,method,cheque_no,reference,counterparty\n"
CAMT_NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"


# Runs a console script (argv[2:]) and writes its own peak RSS (VmHWM, KiB) to argv[1] at exit. The
# child's ru_maxrss would not do: Linux carries the forking process's RSS into it at exec, so a
# large pytest process would read as the watcher's peak.
REPORT_PEAK_RSS = """
import atexit, runpy, sys
peak_file, script = sys.argv[1], sys.argv[2]
def report():
    status = open("/proc/self/status").read()
    open(peak_file, "w").write(status.split("VmHWM:")[1].split()[0])
atexit.register(report)
sys.argv = sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def customers_csv(no: str, name: str = "张三") -> bytes:
    return f"{CUSTOMER_HEADER}{no},{name},R,A,Y,13800000000\n".encode()


@pytest.fixture
def watcher(world, tmp_path):
    return DropWatcher(world.engine, tmp_path / "drop", actor="system:test")


def put(incoming: Path, name: str | bytes, data: bytes) -> None:
    """Write under a temporary name, then rename into place (the complete-file rule); a bytes name as given."""
    tmp = os.path.join(os.fsencode(incoming), b".writing.part")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.rename(tmp, os.path.join(os.fsencode(incoming), os.fsencode(name)))


def applied(engine) -> tuple[int, int, int]:
    """What a file could have applied: reconciliation runs, imports, customers."""
    with engine.connect() as conn:
        return tuple(conn.execute(select(func.count()).select_from(t)).scalar_one()
                     for t in (recon_runs, imports, customers))


def rejected_names(w: DropWatcher) -> list[bytes]:
    """rejected/'s entries as the file system has them (bytes), reports excluded."""
    return sorted(n for n in os.listdir(os.fsencode(w.rejected)) if not n.endswith(b".error.txt"))


def report_of(w: DropWatcher, result) -> str:
    """The result's .error.txt: it must exist and be UTF-8."""
    return Path(f"{result.moved_to}.error.txt").read_bytes().decode("utf-8")


def poll(w: DropWatcher) -> dict:
    """One poll in a thread, so that a watcher blocked on a file fails the test instead of hanging it."""
    out: list = []
    thread = threading.Thread(target=lambda: out.extend(w.poll_once()), daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the watcher is blocked"
    return {r.name: r for r in out}


def wait_until(condition, limit_s: float = 120) -> None:
    """Wait for a process's effect (a guard against hanging, not a timed assertion)."""
    end = time.monotonic() + limit_s
    while not condition() and time.monotonic() < end:
        time.sleep(0.1)


# ------------------------------------------------------------------ defect 6: names, and one file never stops the others

def test_a_250_character_name_does_not_stop_gridpay_watch(world, tmp_path):
    drop = tmp_path / "drop"
    incoming = drop / "incoming"
    incoming.mkdir(parents=True)
    long_name = "c" * 246 + ".csv"      # its report, <name>.error.txt, would exceed the file system's 255 bytes
    put(incoming, long_name, f"{CUSTOMER_HEADER}C901,x,Z,A,Y,1\n".encode())
    put(incoming, BANK_FILE, write_bank_file(tmp_path, world.lines).read_bytes())   # taken after it
    log = tmp_path / "watch.log"
    with log.open("w") as out:
        proc = subprocess.Popen([GRIDPAY, "watch", "--dir", str(drop), "--interval", "0.2", "--metrics-port", "0",
                                 "--url", world.url], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (drop / "processed" / BANK_FILE).exists() or proc.poll() is not None)
        assert proc.poll() is None, f"gridpay watch exited ({proc.returncode}):\n{log.read_text()}"
        assert (drop / "processed" / BANK_FILE).exists(), log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    (stored,) = [p for p in (drop / "rejected").iterdir() if not p.name.endswith(".error.txt")]
    assert len(os.fsencode(stored.name)) <= 200 and stored.name.startswith("c" * 100)
    report = Path(f"{stored}.error.txt").read_text(encoding="utf-8")
    assert f"file: {long_name}" in report and "name" in report and "nothing was applied" in report
    assert not any(incoming.iterdir())
    assert applied(world.engine)[1:] == (0, 12), "the long-named file applied nothing"


@pytest_twisted.ensureDeferred
async def test_the_gateways_watcher_goes_on_past_a_250_character_name(world, tmp_path):
    from twisted.internet import reactor, task

    w = DropWatcher(world.engine, tmp_path / "drop", actor="system:gateway-watch", interval_s=0.05)
    put(w.incoming, "c" * 246 + ".csv", f"{CUSTOMER_HEADER}C901,x,Z,A,Y,1\n".encode())
    put(w.incoming, BANK_FILE, write_bank_file(tmp_path, world.lines).read_bytes())
    w.start(reactor)
    try:
        for _ in range(1200):
            if not any(w.incoming.iterdir()):
                break
            await task.deferLater(reactor, 0.05, lambda: None)
    finally:
        await w.stop()       # the poll in flight ends (its record written) before the schema is dropped
    assert (w.processed / BANK_FILE).exists() and not any(w.incoming.iterdir())
    assert applied(world.engine) == (1, 0, 12)


def test_a_file_that_cannot_be_handled_does_not_stop_the_others(world, watcher, monkeypatch):
    monkeypatch.setattr(watch_mod, "DEFAULT_HANDLER_MODULES", {})
    monkeypatch.setattr(watch_mod, "_HANDLERS", {})

    def vanish(engine, path, actor):
        path.unlink()      # e.g. removed by hand while it was being handled: it cannot be moved or reported
        raise RuntimeError("the result file went away")

    register_handler("debit_result", vanish)
    put(watcher.incoming, "01020000_42.ret", RET.encode())    # taken before the statement
    put(watcher.incoming, "statement.csv", f"{STATEMENT_HEADER}2026-11-24,,500,C,,,SOMETHING,x\n".encode())
    results = poll(watcher)
    assert results["statement.csv"].outcome == "processed"
    assert not any(watcher.incoming.iterdir())
    put(watcher.incoming, "customers.csv", customers_csv("C900"))
    assert poll(watcher)["customers.csv"].outcome == "processed", "the next poll works too"


def test_a_poll_that_fails_does_not_end_the_polling_loop(world, watcher, caplog):
    seen, stop = [], threading.Event()
    watcher.incoming.rmdir()          # e.g. the drop directory's share is not mounted yet
    thread = threading.Thread(target=poll_forever, args=(watcher, 0.05, stop, seen.append), daemon=True)
    thread.start()
    try:
        wait_until(lambda: "drop poll failed" in caplog.text)
        watcher.incoming.mkdir()
        put(watcher.incoming, "customers.csv", customers_csv("C900"))
        wait_until(lambda: seen)
    finally:
        stop.set()
        thread.join(60)
    assert [(r.name, r.outcome) for r in seen] == [("customers.csv", "processed")]


# ------------------------------------------------------------------ defect 7: size before reading, memory bounded

def test_a_2_gib_file_is_refused_by_its_size_without_being_read(world, tmp_path):
    drop = tmp_path / "drop"
    incoming = drop / "incoming"
    incoming.mkdir(parents=True)
    huge = incoming / BANK_FILE
    huge.write_bytes(f"H|{BANK}|{DAY:%Y%m%d}|1|5\n".encode())
    os.truncate(huge, 2 << 30)       # sparse: 2 GiB that take no disk
    put(incoming, "customers.csv", customers_csv("C900"))
    peak_file = tmp_path / "peak"
    proc = subprocess.run([sys.executable, "-c", REPORT_PEAK_RSS, str(peak_file), GRIDPAY, "watch", "--dir", str(drop),
                           "--once", "--url", world.url], capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert f"rejected: {BANK_FILE} (bank)" in output and "processed: customers.csv (customers)" in output
    report = (drop / "rejected" / f"{BANK_FILE}.error.txt").read_text(encoding="utf-8")
    assert f"{2 << 30} bytes" in report and "limit" in report and "nothing was applied" in report
    assert (drop / "rejected" / BANK_FILE).stat().st_size == 2 << 30
    assert applied(world.engine) == (0, 1, 13), "no reconciliation run; the customers file was imported"
    peak = int(peak_file.read_text()) * 1024      # VmHWM, KiB
    assert peak < (2 << 30) // 8, f"peak RSS {peak} bytes: the file was read"


def test_the_size_limit_is_the_configured_watch_max_file_mib(world, tmp_path):
    drop = tmp_path / "drop"
    incoming = drop / "incoming"
    incoming.mkdir(parents=True)
    put(incoming, "customers.csv", customers_csv("C901") + b"#" * (2 << 20))   # a little over 2 MiB
    env = {**os.environ, "GRIDPAY_WATCH__MAX_FILE_MIB": "1"}
    out = subprocess.run([GRIDPAY, "watch", "--dir", str(drop), "--once", "--url", world.url],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rejected: customers.csv (customers)" in out.stdout
    report = (drop / "rejected" / "customers.csv.error.txt").read_text(encoding="utf-8")
    assert f"limit of {1 << 20} bytes" in report or (str(1 << 20) in report and "limit" in report), report
    assert applied(world.engine) == (0, 0, 12), "nothing imported"


# ------------------------------------------------------------------ defect 8: links

def test_links_are_refused_and_never_followed(world, watcher, tmp_path):
    outside = write_bank_file(tmp_path, world.lines)                 # a good bank file outside the drop directory
    outside_bytes = outside.read_bytes()
    elsewhere = tmp_path / "customers_elsewhere.csv"
    elsewhere.write_bytes(customers_csv("C900"))
    (watcher.incoming / BANK_FILE).symlink_to(outside)
    os.link(elsewhere, watcher.incoming / "customers.csv")             # a hard link: another name of that file
    (watcher.incoming / "to_a_directory").symlink_to(tmp_path)
    (watcher.incoming / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    results = poll(watcher)
    assert sorted(results) == sorted([BANK_FILE, "customers.csv", "to_a_directory", "dangling.csv"])
    assert {r.outcome for r in results.values()} == {"rejected"}
    for name in (BANK_FILE, "to_a_directory", "dangling.csv"):
        assert "symbolic link" in report_of(watcher, results[name]) and (watcher.rejected / name).is_symlink()
    assert "hard link" in report_of(watcher, results["customers.csv"])
    assert all("nothing was applied" in report_of(watcher, r) for r in results.values())
    assert outside.read_bytes() == outside_bytes
    assert elsewhere.read_bytes() == customers_csv("C900") and tmp_path.is_dir()
    assert applied(world.engine) == (0, 0, 12)
    with world.engine.connect() as conn:       # each refusal is on record, like any file set aside
        recorded = conn.execute(select(recon_drop_files.c.file_name, recon_drop_files.c.outcome)).all()
    assert sorted(recorded) == sorted((name, "rejected") for name in results)


def test_fifos_sockets_directories_and_devices_never_block_the_watcher(world, watcher, tmp_path):
    os.mkfifo(watcher.incoming / "pipe.csv")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(watcher.incoming / "socket.csv"))
        (watcher.incoming / "folder.csv").mkdir()
        specials = ["pipe.csv", "socket.csv", "folder.csv"]
        try:
            os.mknod(watcher.incoming / "device.csv", 0o600 | stat.S_IFCHR, os.makedev(1, 3))   # /dev/null
            specials.append("device.csv")
        except PermissionError:
            pass
        put(watcher.incoming, BANK_FILE, write_bank_file(tmp_path, world.lines).read_bytes())
        results = poll(watcher)
    assert results[BANK_FILE].outcome == "processed"
    for name in specials:
        assert results[name].outcome == "rejected"
        assert "not a regular file" in report_of(watcher, results[name])
    assert not any(watcher.incoming.iterdir())
    assert applied(world.engine) == (1, 0, 12)


# ------------------------------------------------------------------ odd names

ODD_NAMES = [b"stmt-\xff\xfe.csv", b"two\nlines.csv", b"-rf.csv", "evil\u202evsc.csv".encode(),
             b"up\\..\\..\\customers.csv", b"tab\there.csv", b" spaced.csv", b"c" * 201]


def test_odd_names_are_refused_with_a_readable_report(world, watcher, tmp_path):
    for i, name in enumerate(ODD_NAMES):
        put(watcher.incoming, name, customers_csv(f"C9{i:02d}"))     # good content: only the name is wrong
    put(watcher.incoming, "..customers.csv", customers_csv("C999"))  # a temporary name: never touched
    put(watcher.incoming, BANK_FILE, write_bank_file(tmp_path, world.lines).read_bytes())
    results = poll(watcher)
    assert results.pop(BANK_FILE).outcome == "processed"
    assert len(results) == len(ODD_NAMES) and {r.outcome for r in results.values()} == {"rejected"}
    for shown, r in results.items():
        assert shown.isprintable() and "\n" not in shown
        report = report_of(watcher, r)
        assert f"file: {shown}" in report and "name" in report and "nothing was applied" in report
    for stored in rejected_names(watcher):
        text = stored.decode("utf-8")           # stored names are UTF-8, printable, bounded
        assert text.isprintable() and "\\" not in text and len(stored) <= 200
        assert not text.startswith(("-", ".", " "))
    assert os.listdir(watcher.incoming) == ["..customers.csv"]
    assert applied(world.engine) == (1, 0, 12)


# ------------------------------------------------------------------ XML bombs and wrong encodings

def camt_doc(body: str, prolog: str = '<?xml version="1.0" encoding="UTF-8"?>\n') -> str:
    return (f'{prolog}<Document xmlns="{CAMT_NS}"><BkToCstmrStmt><Stmt><Id>S1</Id>'
            f"<Ntry><Amt Ccy=\"CNY\">{body}</Amt></Ntry></Stmt></BkToCstmrStmt></Document>")


LAUGHS = ("<!DOCTYPE Document [<!ENTITY a \"ha\">"
          + "".join(f'<!ENTITY {chr(98 + i)} "&{chr(97 + i)};&{chr(97 + i)};&{chr(97 + i)};&{chr(97 + i)};">'
                    for i in range(12)) + "]>")
HOSTILE_XML = {
    "laughs.xml": camt_doc("&m;", LAUGHS).encode(),
    "external.xml": camt_doc("&x;", '<!DOCTYPE Document [<!ENTITY x SYSTEM "file:///etc/passwd">]>').encode(),
    "parameter.xml": camt_doc("1.00", '<!DOCTYPE Document [<!ENTITY % p SYSTEM "http://192.0.2.1/p.dtd"> %p;]>').encode(),
    "utf16.xml": camt_doc("1.00", '<?xml version="1.0" encoding="UTF-16"?>\n').encode("utf-16"),
    "gbk_in_utf8.xml": camt_doc("1.00</Amt><Nm>国网</Nm><Amt>").encode("gbk"),
    "declared_gbk.xml": camt_doc("1.00", '<?xml version="1.0" encoding="GBK"?>\n').encode(),
    "declared_bogus.xml": camt_doc("1.00", '<?xml version="1.0" encoding="bogus"?>\n').encode(),
    "nul.xml": camt_doc("1.00\x00").encode(),
}
BAD_ENCODINGS = {
    "gbk_customers.csv": customers_csv("C950", "国网客户").decode().encode("gbk"),
    "utf16_customers.csv": customers_csv("C951").decode().encode("utf-16"),
    "nul_customers.csv": customers_csv("C952", "张\x00三"),
    "gbk_statement.csv": f"{STATEMENT_HEADER}2026-11-24,,500,C,,,国网,张三\n".encode("gbk"),
    f"{BANK}_20261124.txt": b"\xef\xbb\xbfH|01020000|20261124|0|0\n",      # a UTF-8 byte-order mark
    f"{BANK}_20261125.txt": "H|01020000|20261125|0|0\n".encode("utf-16"),
    f"{BANK}_20261126.txt": b"H|01020000|20261126|1|5\nD|C|20261126101500|777001|R1|C1|5|S|T\x00\n",
}


@pytest.mark.parametrize("files", [HOSTILE_XML, BAD_ENCODINGS], ids=["xml", "encodings"])
def test_bombs_and_wrong_encodings_are_refused_cleanly(world, watcher, tmp_path, files):
    for name, data in files.items():
        put(watcher.incoming, name, data)
    put(watcher.incoming, BANK_FILE, write_bank_file(tmp_path, world.lines).read_bytes())
    results = poll(watcher)
    assert results.pop(BANK_FILE).outcome == "processed"
    assert sorted(results) == sorted(files)
    for name, r in results.items():
        assert r.outcome == "rejected" and "internal error" not in r.message, (name, r.message)
        report = report_of(watcher, r)
        assert f"file: {name}" in report and "reason: " in report
    assert applied(world.engine) == (1, 0, 12)
