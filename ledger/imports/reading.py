"""Reading an import file: pass 0 (bytes: sha256, encoding, lines) and pass 1 (CSV records)."""
from __future__ import annotations

import codecs
import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from ledger.imports.formats import HEADERS, LineError, OPTIONAL, READ_BLOCK


# ---------------------------------------------------------------------------------------------
# Reading a file: pass 0 (its bytes) and pass 1 (its records)


@dataclass
class _Scan:
    sha256: str
    size: int
    lines: int          # physical lines (the progress's total)


def _scan(path: Path, errors: list[LineError]) -> _Scan:
    """Pass 0: the file's sha256 and number of lines, and whether it is UTF-8 with at most a
    byte-order mark at its start (an error is appended if not; the caller then reads no further)."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    offset = newlines = 0
    last = b""
    failed = False
    with open(path, "rb") as fh:
        while True:
            block = fh.read(READ_BLOCK)
            digest.update(block)
            if offset == 0 and block.startswith((b"\xff\xfe", b"\xfe\xff")):
                errors.append(LineError(1, "-", "UTF-16 byte-order mark: the file must be UTF-8"))
                failed = True
            if not failed:
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(block, not block)
                except UnicodeDecodeError as exc:
                    at = offset - pending + exc.start   # in the whole file
                    bad = (bytes(exc.object)[exc.start:exc.start + 1] or b"\0")[0]
                    line = newlines + block.count(b"\n", 0, max(0, at - offset)) + 1
                    errors.append(LineError(line, "-", f"not UTF-8 (byte 0x{bad:02x} at offset {at}); "
                                                       "the file must be UTF-8, e.g. not GBK"))
                    failed = True
                else:
                    stray = text.find("\ufeff")
                    if stray >= 0:
                        errors.append(LineError(newlines + text.count("\n", 0, stray) + 1, "-",
                                                "byte-order mark inside the file"))
                        failed = True
            if not block:
                break
            newlines += block.count(b"\n")
            offset += len(block)
            last = block[-1:]
    return _Scan(digest.hexdigest(), offset, newlines + (1 if last not in (b"", b"\n") else 0))


class _Reader:
    """Pass 1: a file's data records ``(line, fields)`` with the number of fields of the header;
    errors of quoting, header and field count are appended. ``line_num``: lines read so far.
    ``columns``: the columns the header names (known once the first record is yielded); a record
    is cut to them when a bad header names more."""

    def __init__(self, path: Path, kind: str, errors: list[LineError]):
        self.path, self.kind, self.errors = path, kind, errors
        self.records = 0
        self.reader = None
        self.columns = HEADERS[kind]

    def _header(self, line: int, row: list[str]) -> int:
        """Check the header line; the number of fields a record must have."""
        errors, header, optional = self.errors, HEADERS[self.kind], OPTIONAL[self.kind]
        n = len(header)
        found = ",".join(row)
        if tuple(row[:n]) != header:
            for i, name in enumerate(header):
                if i >= len(row) or row[i] != name:
                    errors.append(LineError(line, name, f"bad header {found!r}: expected {','.join(header)!r}"))
                    break
            return n
        extra = tuple(row[n:])
        known = 0
        while known < len(extra) and known < len(optional) and extra[known] == optional[known]:
            known += 1
        self.columns = header + extra[:known]
        if known < len(extra):
            expected = (f"optionally followed by {','.join(optional)!r}, in this order (a file may stop after "
                        f"any of them)") if optional else "and no more columns"
            errors.append(LineError(line, extra[known] or "-", f"bad header {found!r}: expected "
                                                               f"{','.join(header)!r} {expected}"))
        return len(row)

    @property
    def line_num(self) -> int:
        return self.reader.line_num if self.reader is not None else 0

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        errors, header = self.errors, HEADERS[self.kind]
        width = cut = len(header)
        with open(self.path, encoding="utf-8-sig", newline="") as fh:
            self.reader = reader = csv.reader(fh, strict=True)
            previous_end = 0
            header_seen = False
            while True:
                start = previous_end + 1
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    message = str(exc)
                    if "unexpected end of data" in message:
                        message = "a quoted field is not closed before the end of the file"
                    errors.append(LineError(start, "-", f"bad CSV quoting: {message}"))
                    previous_end = reader.line_num
                    header_seen = True
                    continue
                previous_end = reader.line_num
                if not header_seen:
                    header_seen = True
                    width = self._header(start, row)
                    cut = len(self.columns)
                    continue
                if not row or row == [""]:
                    continue  # blank line
                self.records += 1
                if len(row) != width:
                    errors.append(LineError(start, "-", f"{len(row)} field(s), expected {width}"))
                    continue
                yield start, (row if cut == width else row[:cut])
        if not header_seen:
            errors.append(LineError(1, "-", f"empty file: the header line {','.join(header)!r} is required"))


