"""Value types of the API's JSON that the database does not give as such: times are always UTC with
their offset (SQLite hands them back naive; RFC 3339, which OpenAPI's ``date-time`` means, needs it)."""
from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated

from pydantic import BeforeValidator


def as_utc(value):
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return value


UtcDateTime = Annotated[datetime, BeforeValidator(as_utc)]


def json_row(row: dict) -> dict:
    """A database row as JSON-ready values: times UTC with their offset, dates ISO, the rest as is."""
    out = {}
    for name, value in row.items():
        if isinstance(value, datetime):
            value = as_utc(value).isoformat()
        elif isinstance(value, date):
            value = value.isoformat()
        out[name] = value
    return out
