"""The exception every ledger layer raises when it says no before changing anything.

Operator commands (imports, corrections, refunds, reconciliation resolutions), the drop watcher's
checks of an entry and the debit engine's result files all refuse the same way: ``Refused`` with
the reason the caller shows as it is, nothing applied.
"""
from __future__ import annotations


class Refused(Exception):
    """Refused, nothing applied; the message says why. ``lines``: the report's lines behind it
    (``(line, field, reason)``), when the refusal is about a file's lines."""

    def __init__(self, reason: str, lines=()):
        super().__init__(reason)
        self.lines = list(lines)
