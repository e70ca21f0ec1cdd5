"""An archived month's files: one gzip-compressed JSON-lines file per table and a manifest.

``<directory>/<YYYY-MM>/<table>.jsonl.gz`` holds the table's removed rows, one JSON object a line
(columns by name; dates and timestamps ISO 8601, money integer fen). ``manifest.json`` lists each
file's row count and SHA-256 and the month's openings. Each file is written to a temporary name,
fsynced, renamed, and read back to check its checksum before any row is removed; a month archived
again after a crash rewrites its files.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

MANIFEST = "manifest.json"


class ArchiveFileError(Exception):
    """An archive file could not be written or did not read back as written."""


def _line(row: dict) -> bytes:
    return (json.dumps(row, ensure_ascii=False, default=str, sort_keys=True) + "\n").encode()


def _write_synced(path: Path, data: bytes) -> str:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    digest = hashlib.sha256(data).hexdigest()
    if sha256_of(path) != digest:
        raise ArchiveFileError(f"{path} does not read back as written")
    return digest


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Hashing:
    """A file object that hashes what is written through it."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _write_rows(path: Path, rows: Iterable[dict]) -> tuple[int, str]:
    """Stream ``rows`` into ``path`` (gzip, JSON lines) through a temporary name; (rows, SHA-256)."""
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "wb") as f:
        hashing = _Hashing(f)
        with gzip.GzipFile(fileobj=hashing, mode="wb", mtime=0, filename="") as z:
            for row in rows:
                z.write(_line(row))
                count += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    digest = hashing.sha.hexdigest()
    if sha256_of(path) != digest:
        raise ArchiveFileError(f"{path} does not read back as written")
    return count, digest


def write_month(directory: str | Path, month: str, tables: dict[str, Callable[[], Iterable[dict]]],
                openings: list[dict]) -> tuple[Path, str, dict[str, int]]:
    """Write the month's files, each table's rows streamed from ``tables[name]()``; returns (the
    month's directory, the manifest's SHA-256, rows written per table)."""
    where = Path(directory) / month
    where.mkdir(parents=True, exist_ok=True)
    entries = {}
    for table, rows in sorted(tables.items()):
        name = f"{table}.jsonl.gz"
        count, digest = _write_rows(where / name, rows())
        entries[table] = {"file": name, "rows": count, "sha256": digest}
    manifest = {"month": month, "tables": entries, "openings": openings}
    digest = _write_synced(where / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    _sync_dir(where)
    _sync_dir(where.parent)
    return where, digest, {t: e["rows"] for t, e in entries.items()}


def read_month(directory: str | Path, month: str) -> dict[str, list[dict]]:
    """The archived month's rows by table, each file checked against the manifest's count and SHA-256."""
    where = Path(directory) / month
    manifest = json.loads((where / MANIFEST).read_text())
    out = {}
    for table, entry in manifest["tables"].items():
        path = where / entry["file"]
        if sha256_of(path) != entry["sha256"]:
            raise ArchiveFileError(f"{path}: SHA-256 differs from the manifest's")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out[table] = [json.loads(line) for line in f]
        if len(out[table]) != entry["rows"]:
            raise ArchiveFileError(f"{path}: {len(out[table])} rows, the manifest says {entry['rows']}")
    return out
