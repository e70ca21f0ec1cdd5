"""A journal entry that does not balance is refused, also under ``python -O`` (no assert)."""
from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime, timezone

import pytest

from ledger.journal import PREPAID, RECEIVABLE, Entry, UnbalancedEntry
from ledger.posting.writes import journal_rows

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)


def test_an_unbalanced_entry_is_refused_by_the_journal_writer():
    with pytest.raises(UnbalancedEntry, match="unbalanced journal entry refund 7: 5"):
        journal_rows([("refund", "refund", 7, date(2026, 11, 23), "t", [(PREPAID, 5, "C1")])], [1], NOW)
    entries, lines = journal_rows([("refund", "refund", 7, date(2026, 11, 23), "t",
                                    [(PREPAID, 5, "C1"), (RECEIVABLE, -5, "C1")])], [1], NOW)
    assert len(entries) == 1 and [line["amount"] for line in lines] == [5, -5]


def test_the_check_survives_python_O():
    code = ("from datetime import date, datetime\n"
            "from ledger.journal import Entry, UnbalancedEntry\n"
            "try:\n"
            "    Entry('x', 'y', '1', date(2026, 1, 1), 'a').debit('prepaid', 5).entry_row(datetime(2026, 1, 1))\n"
            "except UnbalancedEntry:\n"
            "    print('refused')\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "refused"


def test_money_is_integer_fen():
    with pytest.raises(TypeError):
        Entry("x", "y", "1", date(2026, 1, 1), "a").debit(PREPAID, 1.5)
