"""``ledger verify`` timed per invariant: which part of it a slow verify spends its time in.

    .venv/bin/python -m scripts.bench.verify_parts DATABASE_URL

Each statement verify runs is attributed to the invariant whose code runs it (the ``# N.`` comment
above it in ledger/verify.py, or the ledger.verify_money_out / ledger.billing_feed function), and
timed from its start to the next statement's start: the database's work, the rows' fetch and the
Python that reads them.
"""
from __future__ import annotations

import re
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, event  # noqa: E402

from ledger import verify as verify_module  # noqa: E402

_HEADING = re.compile(r"^\s*# (\d+(?:, \d+)*(?:-\d+)?)\.")
MONEY_OUT = {"_remittance_failures": "13", "money_out_failures": "14, 15", "_payout_failures": "16",
             "_run_failures": "17"}


def _headings() -> list[tuple[int, str]]:
    """(line, invariant) of each ``# N.`` comment in ledger/verify.py."""
    lines = Path(verify_module.__file__).read_text().splitlines()
    return [(i + 1, m.group(1)) for i, line in enumerate(lines) if (m := _HEADING.match(line))]


def _part(headings: list[tuple[int, str]]) -> str:
    """The invariant the running statement belongs to, read from the call stack."""
    stack = traceback.extract_stack()
    for frame in reversed(stack):
        if frame.name in MONEY_OUT and frame.filename.endswith("verify_money_out.py"):
            return MONEY_OUT[frame.name]
    for frame in reversed(stack):
        if frame.filename == verify_module.__file__ and frame.name == "_verify":
            return next((n for line, n in reversed(headings) if line <= frame.lineno), "1")
    return "other"   # BEGIN


def timed_verify(engine: Engine) -> tuple[list[str], float, dict[str, float]]:
    """verify(engine): its failures, seconds in all, and seconds per invariant."""
    headings, parts = _headings(), defaultdict(float)
    last: list = []   # [part, started] of the statement running

    def close(now: float) -> None:
        if last:
            parts[last[0]] += now - last[1]

    def before(conn, cursor, statement, parameters, context, executemany):
        now = time.perf_counter()
        close(now)
        last[:] = [_part(headings), now]

    event.listen(engine, "before_cursor_execute", before)
    try:
        started = time.perf_counter()
        failures = verify_module.verify(engine)
        ended = time.perf_counter()
        close(ended)
    finally:
        event.remove(engine, "before_cursor_execute", before)
    return failures, ended - started, dict(parts)


def describe(parts: dict[str, float], top: int = 5) -> str:
    """The slowest invariants, e.g. ``9: 40.1 s, 2: 0.3 s``."""
    slow = sorted(parts.items(), key=lambda p: -p[1])[:top]
    return ", ".join(f"{n}: {s:.2f} s" for n, s in slow)


def main(argv=None) -> int:
    from ledger.db import make_engine

    url = (sys.argv[1:] if argv is None else argv)[0]
    engine = make_engine(url)
    failures, total, parts = timed_verify(engine)
    engine.dispose()
    print(f"ledger verify: {total:.2f} s, {len(failures)} failure(s)")
    for n, s in sorted(parts.items(), key=lambda p: -p[1]):
        print(f"  invariant {n}: {s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
