"""Running an import: a file or a file set in one transaction, chunk by chunk, with its report."""
from __future__ import annotations

import contextlib
import csv
import functools
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from sqlalchemy import Engine

from config.clock import SYSTEM_CLOCK, Clock
from ledger.progress import NoProgress
from ledger.imports.agreements_file import _AgreementsFile
from ledger.imports.applying import _Context, _Rejected
from ledger.imports.bills_file import _BillsFile
from ledger.imports.customers_file import _CustomersFile
from ledger.imports.formats import (
    CHUNK_LINES, HEADERS, ImportResult, KINDS, LineError, SET_FILE_NAMES, SQLITE_CACHE_KIB,
)
from ledger.imports.line_checks import _check_agreement_item, _check_bill_item, _check_customer_item
from ledger.imports.reading import _Reader, _scan
from runtime.bulk_sql import generic_plans


_FILES = {"customers": _CustomersFile, "bills": _BillsFile, "agreements": _AgreementsFile}


def _chunks(reader: _Reader, check, key_of) -> Iterator[tuple[list, int]]:
    """The checked lines of a file in chunks of CHUNK_LINES, with the number of lines read so far.
    A key met again within a chunk ends it, so that a chunk's lookups see its earlier lines written."""
    items: list = []
    keys: set[str] = set()
    for line, row in reader:
        item = check(line, row)
        if item is None:
            continue
        key = key_of(item)
        if key in keys or len(items) >= CHUNK_LINES:
            yield items, reader.line_num - 1
            items, keys = [], set()
        items.append(item)
        keys.add(key)
    if items:
        yield items, reader.line_num


_KEY_OF = {"customers": lambda item: item[1], "bills": lambda item: item[1][2],
           "agreements": lambda item: "\t".join(item[1][:3])}


def _import_one(ctx: _Context, kind: str, path: Path, result: ImportResult, lines: int, progress) -> None:
    """Pass 1 of one file: check its lines and write its good rows, CHUNK_LINES at a time."""
    read_errors: list[LineError] = []   # the fields' (a line's check counts the errors it adds)
    reader = _Reader(path, kind, read_errors)
    importer = _FILES[kind](ctx, result, path, reader)
    check = {"customers": _check_customer_item, "bills": _check_bill_item, "agreements": _check_agreement_item}[kind]
    progress.start(f"{result.file_name}: checking and applying", total=lines, unit="lines")
    chunks = _chunks(reader, functools.partial(check, errors=read_errors), _KEY_OF[kind])
    try:
        for items, read in chunks:
            with generic_plans(ctx.conn):  # a chunk's lookups by key and its rows' foreign-key checks
                importer.chunk(items)
            progress.set_done(read)
    finally:
        chunks.close()
    result.errors.extend(read_errors)
    result.lines = reader.records
    importer.finish()
    progress.set_done(lines)
    if not result.errors:
        importer.record()
    progress.finish()


def import_files(engine: Engine, files: Mapping[str, str | Path], actor: str, *,
                 clock: Clock = SYSTEM_CLOCK, now: datetime | None = None,
                 known_banks: Mapping[str, str] | Iterable[str] | None = None,
                 progress=None) -> dict[str, ImportResult]:
    """Import a file set ({kind: path}) in the order customers, agreements, bills (``KINDS``), all
    in one transaction: either every file is applied or none is. Bills and agreements may name
    customers of the customers file of the same set. ``known_banks`` (codes, or codes to names),
    when given, limits the banks an agreement may name to these and those already in the banks
    table; a bank not yet in the banks table is added. ``progress``: a ``ledger.progress.Progress`` advanced as
    the files are read (default: none). Returns a result per file; look at ``.errors``."""
    if not actor or not actor.strip():
        raise ValueError("an import names who makes it (actor)")
    unknown = set(files) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown import kind(s) {', '.join(sorted(unknown))}: one of {', '.join(KINDS)}")
    progress = progress or NoProgress()
    at = now or clock.now()
    business_date = clock.business_date(at)
    if known_banks is not None and not isinstance(known_banks, Mapping):
        known_banks = {code: "" for code in known_banks}
    paths = {kind: Path(files[kind]) for kind in KINDS if kind in files}
    results, scans = {}, {}
    for kind, path in paths.items():   # pass 0: sha256, encoding, size
        results[kind] = r = ImportResult(kind=kind, file_name=path.name[:255])
        scan = scans[kind] = _scan(path, r.errors)
        r.sha256 = scan.sha256
    try:
        with engine.begin() as conn:
            ctx = _Context(conn, actor, at, business_date, known_banks)
            cache = None
            if conn.dialect.name == "sqlite":
                cache = conn.exec_driver_sql("PRAGMA cache_size").scalar()
                conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            try:
                for kind, path in paths.items():
                    if not results[kind].errors:   # a file that is not UTF-8 is not read further
                        _import_one(ctx, kind, path, results[kind], scans[kind].lines, progress)
                if any(r.errors for r in results.values()):
                    raise _Rejected
            finally:
                if cache is not None:
                    with contextlib.suppress(Exception):   # never in place of the error that got us here
                        conn.exec_driver_sql(f"PRAGMA cache_size = {int(cache)}")
    except _Rejected:
        for r in results.values():
            r.import_id = None
            r.applied = r.skipped = r.created = r.updated = r.prepaid_applied = r.notices = 0
            r.banks_added = []
            r.errors.sort()
    return results


def import_file(engine: Engine, kind: str, path: str | Path, actor: str, **kwargs) -> ImportResult:
    """Import one file (customers, bills or agreements); see ``import_files``."""
    if kind not in HEADERS:
        raise ValueError(f"unknown import kind {kind!r}: one of {', '.join(KINDS)}")
    return import_files(engine, {kind: path}, actor, **kwargs)[kind]


def set_files(directory: str | Path) -> dict[str, Path]:
    """The files of a set in a directory: customers.csv, bills.csv, agreements.csv (those present)."""
    directory = Path(directory)
    return {kind: directory / name for kind, name in SET_FILE_NAMES.items() if (directory / name).is_file()}


def write_report(results: Iterable[ImportResult], path: str | Path) -> None:
    """The rejection report as CSV (UTF-8 with BOM, for spreadsheets): file,line,column,reason."""
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "line", "column", "reason"])
        for r in results:
            for e in r.errors:
                writer.writerow([r.file_name, e.line, e.column, e.reason])
