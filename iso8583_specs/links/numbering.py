"""How a sender numbers its requests: STANs (11), RRNs (37), request times (7, 12, 13), the 7/11/32 key."""
from __future__ import annotations

from datetime import datetime


class Stans:
    """STANs for one sender (unique per sender per day): 000001 … 999999, then 000001 again."""

    def __init__(self, start: int = 1):
        self.value = start - 1

    @classmethod
    def from_clock(cls, now: float) -> "Stans":
        """Start where a run begun earlier in the same second cannot be: the start moves on 20,000
        a second, faster than one process sends, so two runs of one bank never share a field 7
        and a STAN (which the gateway would rightly answer 94)."""
        return cls(clock_sequence(now, 999_999) + 1)

    def next(self) -> str:
        self.value = self.value % 999999 + 1
        return f"{self.value:06d}"


class Rrns:
    """RRNs (field 37, 12 digits) for one sender: unique per bank per business date, across runs,
    as they start from the clock (docs/spec/INTERFACE.md §4.7: an RRN used before on the business date gets 94)."""

    def __init__(self, start: int):
        self.value = start - 1

    @classmethod
    def from_clock(cls, now: float) -> "Rrns":
        return cls(clock_sequence(now, 10**12))

    def next(self) -> str:
        self.value += 1
        return f"{self.value % 10**12:012d}"


def clock_sequence(now: float, modulus: int, per_second: int = 20_000) -> int:
    """A start for a sequence that runs begun at other times (``now``: epoch seconds) do not share."""
    return int(now * per_second) % modulus


def times_at(local: datetime) -> dict[str, str]:
    """Fields 7 (MMDDhhmmss), 12 (hhmmss) and 13 (MMDD) of ``local`` as it reads: the sender's local
    time (docs/spec/INTERFACE.md §1), which its clock gives (``config.clock.Clock.local()``)."""
    return {"7": local.strftime("%m%d%H%M%S"), "12": local.strftime("%H%M%S"), "13": local.strftime("%m%d")}


def times_of(transmitted: str) -> dict[str, str]:
    """Fields 12 and 13 taken from field 7, so one stored field 7 always rebuilds the same message."""
    if not (len(transmitted) == 10 and transmitted.isdigit()):
        raise ValueError(f"field 7 is MMDDhhmmss, got {transmitted!r}")
    return {"7": transmitted, "12": transmitted[4:], "13": transmitted[:4]}


def request_key(f7: str, f11: str, f32: str) -> tuple[str, str, str]:
    """Fields 7, 11 and 32 at their wire width: what matches an answer to its request."""
    return (f7.zfill(10), f11.zfill(6), f32)
