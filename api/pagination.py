"""Cursor pagination for every list: ``?cursor=&limit=``; the answer's ``next_cursor`` (null on the
last page) is opaque to clients: base64url (no padding) of the JSON array of the last item's key.

A list's query function takes (the previous page's key, how many rows) and reads that many;
``page_of`` asks for ``limit + 1``: the extra row says there is a next page. ``limit`` defaults to ``api.page_limit_default`` and is cut to ``api.page_limit_max``.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from api.problems import Problem

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class PageRequest:
    after: tuple | None      # the previous page's last key, decoded
    limit: int


def encode_cursor(key: tuple) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, shape: tuple[type, ...]) -> tuple | None:
    """The key in ``cursor`` (None for the first page), each part of the type ``shape`` gives;
    ``bad-cursor`` problem when it is not one this service made."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Problem("bad-cursor", "the cursor is not one this list gave") from None
    if not (isinstance(key, list) and len(key) == len(shape)
            and all(type(part) is kind for part, kind in zip(key, shape))):
        raise Problem("bad-cursor", "the cursor is not one this list gave")
    return tuple(key)


CURSOR = Query(None, max_length=400, pattern=r"^[A-Za-z0-9_-]*$", description="`next_cursor` of the page before")
LIMIT = Query(None, ge=1, le=10_000, description="items per page (cut to `api.page_limit_max`)")


def page_request(api, cursor: str | None, limit: int | None, shape: tuple[type, ...]) -> PageRequest:
    """The page a list request asks for; ``api`` is the ``[api]`` settings."""
    return PageRequest(decode_cursor(cursor, shape), page_limit(limit, api.page_limit_default, api.page_limit_max))


def page_limit(limit: int | None, default: int, maximum: int) -> int:
    return min(limit or default, maximum)


def page_of(model: type, page: PageRequest, read: Callable[[Any, int], list], key_of: Callable[[Any], tuple],
            item: Callable[[Any], Any] = lambda row: row) -> Page:
    """The ``Page[model]`` of ``read(after, limit + 1)``: ``after`` is the previous page's key (its one
    part alone when the key has one part); ``item`` makes each row the model's item."""
    after = page.after[0] if page.after is not None and len(page.after) == 1 else page.after
    rows, next_cursor = one_page(read(after, page.limit + 1), page.limit, key_of)
    return Page[model](items=[item(row) for row in rows], next_cursor=next_cursor)


def one_page(rows: list, limit: int, key_of: Callable[[Any], tuple]) -> tuple[list, str | None]:
    """(the page's rows, the cursor of the next page or None) of ``limit + 1`` rows read."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(key_of(rows[-1]))
