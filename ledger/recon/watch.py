"""The drop directory: files arrive in ``incoming/``, are recognised, processed once, and moved.

Layout (created if missing)::

    DROP/incoming/    files to process
    DROP/processed/   files applied (or harmlessly repeated, see below)
    DROP/rejected/    files not applied, each next to ``<name>.error.txt`` naming every bad line,
                      field and reason (or why the file was set aside)
    DROP/reports/     the reconciliation reports (CSV + HTML) of every run
    DROP/requests/    (optional) batch debit request files, to check result files against

**Complete-file rule.** A file is taken only under its final name: a writer writes it under a
temporary name — starting with ``.`` or ending in ``.part``, ``.tmp`` or ``.partial`` — in
``incoming/`` (the same file system) and renames it to its final name when complete; rename is
atomic, so a file seen under its final name is whole. Temporary names are never touched.

**Recognised by name and content** (anything else is rejected as not recognised):

- bank transaction file (docs/spec/INTERFACE.md §7.1): ``{bank}_{YYYYMMDD}.txt`` starting ``H|`` → ``reconcile_bank_file``;
- batch debit result (§7.2): ``{bank}_{batch}.ret`` starting ``H|`` → the handler registered for
  ``debit_result`` (``register_handler``; the debit engine's ``engines.files`` registers
  ``apply_result_file`` when imported, and is imported on first need). Without one the file is
  rejected ("no handler"), with the §7.2 checks against ``requests/{bank}_{batch}.req`` if present;
- finance statement (§7.3): camt.053 XML, or CSV with the statement header → ``reconcile_statement``;
- billing system files: CSV with the customers / bills / agreements header →
  ``ledger.imports.import_file``.

Files are taken billing files first, then bank files, debit results, and finance statements
last (a remittance is matched against the bank's run of its date), by name within a kind.

**A bank's day file waits for its day's end.** A bank file of a business date that has not ended
on the clock (``Clock.end_of``: the cut-off) is held: left in ``incoming/``, logged once, and
reconciled by the first poll after the cut-off (payments of that date may still come in until then).
``hold_until_day_ended=False`` (setting ``watch.hold_bank_files_until_day_ended``) reconciles it
when it arrives.

**Hostile files** (``ledger.recon.drop_files``): only regular files of ``incoming/`` itself, with
one name (no symbolic or hard links; directories, FIFOs, sockets and devices are never opened), a
name that is UTF-8, printable and at most 200 bytes, and at most ``max_file_bytes`` (checked before
anything beyond the first 4 KiB is read, and while reading) are taken; anything else is moved as it is to ``rejected/`` with a
report, unread. A file whose handling fails is set aside with the error; if even that fails it is
logged and left, and the other files go on.

**Once.** A file whose SHA-256 was processed before is moved to ``rejected/`` as a duplicate, with
an ``.error.txt`` naming the earlier file; so is a bank file the reconciler reports as already
reconciled. Every file taken is recorded in ``recon_drop_files``.

``DropWatcher(engine, drop).poll_once()`` processes what is there now (``take`` one entry of
``pending()``: the console's start button takes one file so); ``start(reactor)`` /
``stop()`` poll on a Twisted reactor (each poll in a thread: a large file does not block the
reactor); ``poll_forever(watcher, interval, stop_event)`` is a plain polling loop.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from sqlalchemy import Engine, insert, select

from config.clock import SYSTEM_CLOCK, Clock
from ledger.recon.drop_files import (
    MAX_FILE_BYTES, NOTHING, Refused, digest, head, name_problem, open_taken, read_all, shown, stored_name,
)
from ledger.recon.report_labels import ReportsDir
from ledger.recon_tables import recon_drop_files

log = logging.getLogger("gridpay.recon.watch")

TEMP_SUFFIXES = (".part", ".tmp", ".partial")
BANK_NAME = re.compile(r"^\d{1,11}_(\d{8})\.txt$")
RET_NAME = re.compile(r"^(\d{1,11})_([^.]+)\.ret$")
ORDER = {"customers": 0, "bills": 1, "agreements": 2, "bank": 3, "debit_result": 4, "finance": 5, "unknown": 6}
IN_MEMORY = ("bank", "finance")     # their readers take the file's bytes; the others read it themselves, streaming

# kind -> handler(engine, path, actor) -> (ok, message, errors[(line, field, reason)])
_HANDLERS: dict[str, Callable] = {}
# modules that register a kind's handler when imported (the debit engine's §7.2 result files)
DEFAULT_HANDLER_MODULES: dict[str, str] = {"debit_result": "engines.files"}


def handler_for(kind: str) -> Callable | None:
    """The registered handler, importing the module known to provide it the first time."""
    if kind not in _HANDLERS and kind in DEFAULT_HANDLER_MODULES:
        import importlib

        try:
            importlib.import_module(DEFAULT_HANDLER_MODULES[kind])
        except ModuleNotFoundError as exc:
            if exc.name is None or not DEFAULT_HANDLER_MODULES[kind].startswith(exc.name):
                raise
    return _HANDLERS.get(kind)


def register_handler(kind: str, handler: Callable | None) -> None:
    """Register (or with None remove) the handler for a kind; ``debit_result`` is the one others provide."""
    if handler is None:
        _HANDLERS.pop(kind, None)
    else:
        _HANDLERS[kind] = handler


@dataclass
class DropResult:
    name: str
    kind: str
    outcome: str                 # processed | rejected | duplicate
    message: str
    moved_to: Path | None = None
    errors: list[tuple] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)
    ref: str = ""


@dataclass(frozen=True)
class Candidate:
    """An entry of incoming/ to take (``refusal`` None) or to set aside unread with ``refusal`` as its reason."""
    kind: str
    path: Path
    refusal: str | None = None


def is_temporary(name: str) -> bool:
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES)


def recognise(name: str, head: bytes) -> str:
    from ledger.imports import HEADERS
    from ledger.recon.camt import sniff

    starts_h = head.startswith(b"H|")
    if BANK_NAME.match(name) and starts_h:
        return "bank"
    if RET_NAME.match(name) and starts_h:
        return "debit_result"
    if sniff(head) is not None:
        return "finance"
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    cols = tuple(c.strip().strip('"') for c in first.split(","))
    for kind, header in HEADERS.items():
        if cols == header:
            return kind
    return "unknown"


class DropWatcher:
    def __init__(self, engine: Engine, drop_dir: str | Path, *, actor: str = "system:recon-watch",
                 clock: Clock = SYSTEM_CLOCK, rules=None, reports_dir: str | Path | None = None,
                 settle_debits: bool = False, interval_s: float = 5.0, max_file_bytes: int = MAX_FILE_BYTES,
                 report_options=None, hold_until_day_ended: bool = True):
        self.engine = engine
        self.hold_until_day_ended = hold_until_day_ended
        self._held: set[str] = set()      # names of the bank files logged as held
        self.drop = Path(drop_dir)
        self.actor = actor
        self.clock = clock
        self.rules = rules
        self.settle_debits = settle_debits
        self.interval_s = interval_s
        self.max_file_bytes = max_file_bytes
        self.incoming, self.processed, self.rejected = (self.drop / d for d in ("incoming", "processed", "rejected"))
        # the runs' reports: in the language, local time and bank names of ``report_options`` (report_labels)
        self.reports = ReportsDir(reports_dir or self.drop / "reports", report_options)
        self.requests = self.drop / "requests"
        self._busy = threading.Lock()
        self._loop = None
        for d in (self.incoming, self.processed, self.rejected, self.reports.path):
            d.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ one pass
    def pending(self) -> list[Candidate]:
        found = []
        with os.scandir(self.incoming) as entries:
            for entry in entries:
                if not is_temporary(entry.name):
                    candidate = self._look(Path(entry.path))
                    if candidate is not None:
                        found.append(candidate)
        return sorted(found, key=lambda c: (ORDER[c.kind], c.path.name))

    @staticmethod
    def _look(path: Path) -> Candidate | None:
        """What an entry is, from its name, its lstat and its first bytes (None: gone since listed)."""
        problem = name_problem(path.name)
        if problem:
            return Candidate("unknown", path, f"{problem}: rename it and put it in again; {NOTHING}")
        try:
            return Candidate(recognise(path.name, head(path)), path)
        except Refused as exc:
            return Candidate("unknown", path, str(exc))
        except FileNotFoundError:
            return None
        except OSError as exc:
            return Candidate("unknown", path, f"cannot be read: {exc.strerror}; {NOTHING}")

    def poll_once(self) -> list[DropResult]:
        """Process every complete file in incoming/ now; returns what became of each."""
        if not self._busy.acquire(blocking=False):
            return []
        try:
            out = [result for result in map(self.take, (c for c in self.pending() if not self._holds(c)))
                   if result is not None]
            self._write_feed_files()
            return out
        finally:
            self._busy.release()

    def _holds(self, c: Candidate) -> bool:
        """A bank file whose business date has not ended on the clock waits in incoming/ (logged once)."""
        if c.kind != "bank" or c.refusal is not None or not self.hold_until_day_ended:
            return False
        try:
            business_date = datetime.strptime(BANK_NAME.match(c.path.name).group(1), "%Y%m%d").date()
        except ValueError:
            return False       # not a date: the reconciler rejects it with its reasons
        ends = self.clock.end_of(business_date)
        if self.clock.now() >= ends:
            self._held.discard(c.path.name)
            return False
        if c.path.name not in self._held:
            self._held.add(c.path.name)
            log.info("bank file %s held: business date %s ends at %s (local %s); it waits in incoming/ until then",
                     shown(c.path.name), business_date, f"{ends:%Y-%m-%d %H:%M} UTC",
                     f"{self.clock.local(ends):%Y-%m-%d %H:%M}")
        return True

    def take(self, c: Candidate) -> DropResult | None:
        """Process one entry of ``pending()`` (a poll's step, and the console's start button); a file
        whose handling fails is set aside with the error. None: it is gone (another took it) or could
        not even be set aside (logged; tried again next poll)."""
        try:
            return self.process(c.kind, c.path, c.refusal)
        except FileNotFoundError:
            log.info("%s is gone from incoming/ (taken by another process)", shown(c.path.name))
            return None
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            log.exception("cannot process %s", shown(c.path.name))
            return self._set_aside(c, exc)

    def _write_feed_files(self) -> None:
        """The billing feed's daily files of the days that ended (docs/billing-feed.md): this
        watcher is the drop directory's one process, so it writes them."""
        from ledger.billing_feed.daily_export import write_due_files

        try:
            for written in write_due_files(self.engine, self.drop, clock=self.clock, now=self.clock.now(),
                                           actor=self.actor):
                log.info("billing feed file %s written (%d rows)", written.path.name, written.count)
        except Exception:  # noqa: BLE001 - the files of the drop go on; the next poll tries again
            log.exception("cannot write the billing feed's daily files")

    def _set_aside(self, c: Candidate, exc: Exception) -> DropResult | None:
        """A file whose handling failed goes to rejected/ with the error; if even that fails it stays
        where it is (and is tried again next poll) and the other files go on."""
        reason = f"internal error: {type(exc).__name__}: {exc}"
        try:
            return self._finish(c.path, c.kind, "", "rejected", reason, [(0, "-", reason)])
        except Exception as again:  # noqa: BLE001 - logged; the other files go on
            log.error("cannot set %s aside either (%s: %s); the other files go on", shown(c.path.name),
                      type(again).__name__, again)
            return None

    def process(self, kind: str, path: Path, refusal: str | None = None) -> DropResult:
        if refusal is not None:
            return self._finish(path, kind, "", "rejected", refusal)
        data = None
        try:
            with open_taken(path, self.max_file_bytes) as fh:
                if kind in IN_MEMORY:
                    data = read_all(fh, self.max_file_bytes)
                    sha = hashlib.sha256(data).hexdigest()
                else:
                    sha = digest(fh, self.max_file_bytes)
        except Refused as exc:
            return self._finish(path, kind, "", "rejected", str(exc))
        dc = recon_drop_files.c
        with self.engine.connect() as conn:
            earlier = conn.execute(select(dc.file_name, dc.processed_at, dc.ref).where(
                dc.file_sha256 == sha, dc.outcome == "processed").order_by(dc.id)).first()
        if earlier is not None:
            return self._finish(path, kind, sha, "duplicate",
                                f"duplicate: same SHA-256 as {earlier.file_name}, processed "
                                f"{earlier.processed_at:%Y-%m-%d %H:%M:%S} ({earlier.ref}); set aside, nothing applied")
        handler = getattr(self, f"_do_{kind}", None)
        if kind in ("customers", "bills", "agreements"):
            handler = self._do_import
        if handler is None:
            return self._finish(path, kind, sha, "rejected", "not recognised: expected a bank file {bank}_{YYYYMMDD}.txt, a "
                                "batch debit result {bank}_{batch}.ret, a camt.053 or CSV finance statement, or a "
                                "customers/bills/agreements CSV", [(1, "-", "file kind not recognised by name and content")])
        try:
            outcome, message, errors, reports, ref = handler(kind, path, data)
        except Refused as exc:
            return self._finish(path, kind, sha, "rejected", str(exc))
        return self._finish(path, kind, sha, outcome, message, errors, reports, ref)

    def _do_bank(self, kind, path, data):
        from ledger.recon.matching import reconcile_bank_file

        r = reconcile_bank_file(self.engine, path, actor=self.actor, clock=self.clock, reports_dir=self.reports,
                                settle_debits=self.settle_debits, data=data)
        errors = [(e.line, e.field, e.reason) for e in r.bank_file.errors] if r.bank_file else []
        if r.bank_file and r.bank_file.more_errors:
            errors.append(("", "-", f"... and {r.bank_file.more_errors} more errors"))
        outcome = {"applied": "processed", "duplicate": "duplicate"}.get(r.status, "rejected")
        return outcome, r.message, errors, r.reports, f"run:{r.run_id}" if r.run_id else ""

    def _do_finance(self, kind, path, data):
        from ledger.recon.finance import reconcile_statement

        r = reconcile_statement(self.engine, path, actor=self.actor, rules=self.rules, reports_dir=self.reports, data=data)
        outcome = {"applied": "processed", "duplicate": "duplicate"}.get(r.status, "rejected")
        return outcome, r.message, r.errors, r.reports, f"run:{r.run_id}" if r.run_id else ""

    def _do_import(self, kind, path, data):
        from ledger.imports import import_file

        r = import_file(self.engine, kind, path, self.actor, clock=self.clock)
        errors = [(e.line, e.column, e.reason) for e in r.errors]
        return ("processed" if r.ok else "rejected"), r.summary(), errors, [], f"import:{r.import_id}" if r.import_id else ""

    def _do_debit_result(self, kind, path, data):
        handler = handler_for("debit_result")
        if handler is not None:
            ok, message, errors = handler(self.engine, path, self.actor)
            return ("processed" if ok else "rejected"), message, list(errors), [], ""
        from ledger.recon.debit_files import validate_debit_result

        m = RET_NAME.match(path.name)
        request = self.requests / f"{m.group(1)}_{m.group(2)}.req"
        errors = [(0, "-", "no handler registered for batch debit result files (§7.2): the debit engine provides "
                           "it (ledger.recon.watch.register_handler('debit_result', ...)); nothing was applied")]
        if request.is_file():
            problems = validate_debit_result(self._read(request), self._read(path))
            errors += problems or [(0, "-", f"checked against {request.name}: every request line answered once, totals agree")]
        else:
            errors.append((0, "-", f"request file requests/{request.name} not found: not checked"))
        return "rejected", "no handler for batch debit result files; nothing was applied", errors, [], ""

    def _read(self, path: Path) -> bytes:
        with open_taken(path, self.max_file_bytes) as fh:
            return read_all(fh, self.max_file_bytes)

    # ------------------------------------------------------------------ moving and recording
    def _free(self, directory: Path, name: str) -> Path:
        target = directory / name
        if not os.path.lexists(target) and not os.path.lexists(directory / f"{name}.error.txt"):
            return target
        stamp = self.clock.local().strftime("%Y%m%d%H%M%S%f")
        return directory / f"{name}.{stamp}"

    def _finish(self, path: Path, kind: str, sha: str, outcome: str, message: str, errors=(), reports=(), ref="") -> DropResult:
        """Move the entry (itself: a link is moved, not followed) to processed/ or rejected/ under its
        stored name, write the report of a file not processed, record it."""
        target_dir = self.processed if outcome == "processed" else self.rejected
        target = self._free(target_dir, stored_name(path.name))
        name = shown(path.name)
        path.replace(target)
        if outcome != "processed":
            stored = [f"stored as: {target.name}"] if target.name != path.name else []
            self._report(target, [f"file: {name}", *stored, f"kind: {kind}", f"SHA-256: {sha or '(not read)'}",
                                  f"outcome: {outcome}", f"reason: {message}", ""], errors)
        with self.engine.begin() as conn:
            conn.execute(insert(recon_drop_files), {"file_sha256": sha, "file_name": name[:255], "kind": kind,
                                                    "outcome": outcome, "ref": ref[:40], "detail": message[:400],
                                                    "processed_at": self.clock.now()})
        log.info("%s %s (%s): %s", outcome, name, kind, message)
        return DropResult(name, kind, outcome, message, target, list(errors), list(reports), ref)

    @staticmethod
    def _report(target: Path, head_lines: list[str], errors) -> None:
        lines = head_lines + [f"line {ln}, field {fld}: {reason}" if ln not in (0, "") else f"{fld}: {reason}"
                              if fld != "-" else reason for ln, fld, reason in errors]
        tmp = target.with_name(f".{target.name}.error.txt.part")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="backslashreplace")
        tmp.replace(target.with_name(f"{target.name}.error.txt"))

    # ------------------------------------------------------------------ running
    def start(self, reactor=None):
        """Poll every interval_s on a Twisted reactor; each poll runs in the reactor's thread pool."""
        from twisted.internet import task, threads

        if reactor is None:
            from twisted.internet import reactor  # noqa: F811

        def tick():
            return threads.deferToThreadPool(reactor, reactor.getThreadPool(), self.poll_once).addErrback(
                lambda f: log.error("drop poll failed: %s", f.getErrorMessage()))

        self._loop = task.LoopingCall(tick)
        self._loop.clock = reactor
        self._stopped = self._loop.start(self.interval_s, now=True)
        return self._stopped

    def stop(self):
        """No further polls; the Deferred fires once a poll in flight in the thread pool has ended
        (its files recorded), so a caller that waits for it leaves nothing writing behind it."""
        from twisted.internet import defer

        if self._loop is None:
            return defer.succeed(None)
        stopped = defer.Deferred()
        self._stopped.addBoth(lambda _: stopped.callback(None))
        if self._loop.running:
            self._loop.stop()
        self._loop = None
        return stopped


def poll_forever(watcher: DropWatcher, interval_s: float | None = None, stop: threading.Event | None = None,
                 on_result: Callable[[DropResult], None] | None = None) -> None:
    """A plain polling loop until ``stop`` is set."""
    stop = stop or threading.Event()
    interval_s = watcher.interval_s if interval_s is None else interval_s
    while not stop.is_set():
        try:
            for result in watcher.poll_once():
                if on_result:
                    on_result(result)
        except Exception:  # noqa: BLE001 - e.g. incoming/ unreadable for a while: the loop goes on
            log.exception("drop poll failed")
        stop.wait(interval_s)


__all__ = ["DropWatcher", "DropResult", "poll_forever", "register_handler", "recognise", "is_temporary"]
