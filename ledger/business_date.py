"""The utility's business date: local date, rolled forward at the cut-off time."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class BusinessCalendar:
    timezone: str = "Asia/Shanghai"
    cutoff: str = "23:00"  # from this local time on, it is the next business date

    def business_date(self, at: datetime) -> date:
        assert at.tzinfo is not None, "business dates are computed from aware datetimes"
        local = at.astimezone(ZoneInfo(self.timezone))
        hours, minutes = (int(x) for x in self.cutoff.split(":"))
        rolled = local.time() >= time(hours, minutes)
        return local.date() + timedelta(days=1) if rolled else local.date()

    def local(self, at: datetime) -> datetime:
        return at.astimezone(ZoneInfo(self.timezone))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
