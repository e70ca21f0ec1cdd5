"""What the drop watcher takes from ``incoming/`` and how it reads it (docs/reconciliation.md,
"What the watcher takes").

- **Names.** A name is taken when it is UTF-8, at most ``MAX_NAME_BYTES`` bytes, has no control or
  format character (newline, tab, bidirectional overrides, ...) and no backslash, and neither starts
  with ``-`` nor starts or ends with white space. Any other name is refused without reading the file,
  which is set aside under ``stored_name`` (bounded, printable, unique); reports, logs and the
  database show it as ``shown`` (escaped, bounded).
- **Entries.** Only a regular file that is an entry of ``incoming/`` itself with one name: a symbolic
  link (to anything, even inside the drop directory) is never followed, and a hard link (a second
  name of a file that may live anywhere on the file system) is refused like one; directories, FIFOs,
  sockets and devices are refused without being opened, so none can block the watcher.
- **Size.** At most ``MAX_FILE_BYTES`` (the watcher's ``max_file_bytes``): checked on the opened file
  before anything beyond its first 4 KiB (its kind) is read, and again while reading it, a block at a
  time, so a file that grows after the check is refused too: memory stays bounded whatever arrives.

Refusing moves the entry itself (``rename`` never follows a link nor opens a file) to ``rejected/``.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from ledger.errors import Refused

MIB = 1024 * 1024
MAX_FILE_BYTES = 256 * MIB   # the default of watch.max_file_mib
# room left under the file system's 255 bytes for what is added to a stored name:
# ".{timestamp}" (21) when the name is taken, ".error.txt" (10), and "." + ".part" while writing it
MAX_NAME_BYTES = 200
STORED_PREFIX_BYTES = 120
SHOWN_CHARS = 300
HEAD_BYTES = 4096
READ_BLOCK = 1 << 20
NOTHING = "not read, nothing was applied"


def _odd(ch: str) -> bool:
    """A character that has no business in a file name: control, format, separators, undecodable bytes."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn") or ch == "\\"


def shown(name: str) -> str:
    """The name as reports, logs and the database show it: odd characters escaped, bounded."""
    out = []
    for ch in name:
        if "\udc80" <= ch <= "\udcff":                       # a byte that is not UTF-8 (os.fsdecode)
            out.append(f"\\x{ord(ch) - 0xdc00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif _odd(ch):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    text = "".join(out)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


def name_problem(name: str) -> str | None:
    """Why a name is refused, or None when it is taken."""
    raw = os.fsencode(name)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "the name is not UTF-8"
    if len(raw) > MAX_NAME_BYTES:
        return f"the name is {len(raw)} bytes long, at most {MAX_NAME_BYTES} are taken"
    odd = next((ch for ch in name if _odd(ch)), None)
    if odd is not None:
        return f"the name contains '{shown(odd)}' (control and format characters and backslashes are not taken)"
    if name.startswith("-"):
        return "the name starts with '-'"
    if name != name.strip():
        return "the name starts or ends with white space"
    return None


def stored_name(name: str) -> str:
    """The name an entry is set aside under: the name itself when it is taken, else a printable,
    bounded stand-in made unique by a digest of the original name's bytes."""
    if name_problem(name) is None:
        return name
    raw = os.fsencode(name)
    text = "".join("_" if _odd(ch) else ch for ch in raw.decode("utf-8", "replace").replace("\ufffd", "_"))
    text = text.strip().lstrip("-.")
    prefix = text.encode("utf-8")[:STORED_PREFIX_BYTES].decode("utf-8", "ignore").rstrip()
    return f"{prefix or 'file'}~{hashlib.sha256(raw).hexdigest()[:12]}"


def _what(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def entry_problem(path: Path, st: os.stat_result, max_bytes: int | None = None) -> str | None:
    """Why an entry (its ``lstat``) is refused, or None when it is a regular file to take; the size
    is checked when ``max_bytes`` is given."""
    if stat.S_ISLNK(st.st_mode):
        try:
            target = shown(os.fsdecode(os.readlink(path)))
        except OSError:
            target = "?"
        return (f"a symbolic link (to {target}): only regular files in incoming/ are taken, a link is never "
                f"followed; put the file itself in incoming/; {NOTHING}")
    if not stat.S_ISREG(st.st_mode):
        return f"{_what(st.st_mode)}, not a regular file: only regular files are taken; {NOTHING}"
    if st.st_nlink > 1:
        return (f"a hard link (the file has {st.st_nlink} names; the others may be outside the drop directory): "
                f"only files with one name are taken; copy the file in instead; {NOTHING}")
    if max_bytes is not None and st.st_size > max_bytes:
        return _too_large(st.st_size, max_bytes)
    return None


def _too_large(size: int, max_bytes: int) -> str:
    return f"{size} bytes, more than the drop directory's limit of {max_bytes} bytes; {NOTHING}"


@contextmanager
def open_taken(path: Path, max_bytes: int | None = None) -> Iterator[BinaryIO]:
    """The entry opened for reading if it is one to take, else ``Refused``. Only an entry whose
    ``lstat`` says regular file is opened (a device is never opened); the checks are made again on
    the opened file: O_NOFOLLOW refuses a link put in its place since, O_NONBLOCK keeps a FIFO put
    there from blocking the open."""
    problem = entry_problem(path, os.lstat(path), max_bytes)
    if problem:
        raise Refused(problem)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(entry_problem(path, os.lstat(path)) or f"a symbolic link; {NOTHING}") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        problem = entry_problem(path, os.fstat(fd), max_bytes)
        if problem:
            raise Refused(problem)
        os.set_blocking(fd, True)
        yield fh


def head(path: Path) -> bytes:
    """The first bytes of an entry to take (whatever its size), for recognising its kind."""
    with open_taken(path) as fh:
        return fh.read(HEAD_BYTES)


def blocks(fh: BinaryIO, max_bytes: int) -> Iterator[bytes]:
    """The file's content from its start, a block at a time; ``Refused`` if it outgrows the limit."""
    fh.seek(0)
    seen = 0
    while block := fh.read(READ_BLOCK):
        seen += len(block)
        if seen > max_bytes:
            raise Refused(f"grew past the drop directory's limit of {max_bytes} bytes while it was read (a file "
                          f"is put in incoming/ complete, under a temporary name, then renamed); nothing was applied")
        yield block


def digest(fh: BinaryIO, max_bytes: int) -> str:
    sha = hashlib.sha256()
    for block in blocks(fh, max_bytes):
        sha.update(block)
    return sha.hexdigest()


def read_all(fh: BinaryIO, max_bytes: int) -> bytes:
    """The whole content, for the readers that take bytes (at most ``max_bytes`` of them)."""
    return b"".join(blocks(fh, max_bytes))


__all__ = ["MAX_FILE_BYTES", "MAX_NAME_BYTES", "Refused", "shown", "name_problem", "stored_name", "entry_problem",
           "open_taken", "head", "digest", "read_all"]
