"""Field 48 private data (docs/spec/INTERFACE.md §5): ``TAG`` (2 ASCII characters) + ``LEN`` (3 ASCII digits, GBK byte
count of the value) + value. Tags may repeat; unknown tags are kept, in order."""
from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple

from .errors import MessageError

FIELD = 48
MAX_VALUE_BYTES = 999
FIELD_MAX_BYTES = 999   # the whole of field 48 (ans ..999, §3)


def _error(problem: str) -> MessageError:
    return MessageError(f"field 48: {problem}", field=FIELD)


def _is_tag(tag: str) -> bool:
    return len(tag) == 2 and tag.isascii() and tag.isalnum()


class Tlv:
    """An ordered list of (tag, value) elements of field 48."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        self.items: list[tuple[str, str]] = list(items)

    @classmethod
    def parse(cls, text: str) -> "Tlv":
        if text.isascii():
            return cls(_parse_ascii(text))
        try:
            raw = text.encode("gbk")
        except UnicodeEncodeError:
            raise _error("not GBK text") from None
        return cls(_parse_bytes(raw))

    def get(self, tag: str, default: str | None = None) -> str | None:
        for t, value in self.items:
            if t == tag:
                return value
        return default

    def getall(self, tag: str) -> list[str]:
        return [value for t, value in self.items if t == tag]

    def add(self, tag: str, value: str) -> "Tlv":
        self.items.append((tag, value))
        return self

    def encode(self) -> str:
        return "".join(_element(tag, value) for tag, value in self.items)

    __str__ = encode

    def __contains__(self, tag: object) -> bool:
        return any(t == tag for t, _ in self.items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tlv) and self.items == other.items

    def __repr__(self) -> str:
        return f"Tlv({self.items!r})"


def build_tlv(items: Iterable[tuple[str, str]]) -> str:
    return Tlv(items).encode()


def byte_length(text: str) -> int:
    """Length of ``text`` in GBK bytes, as every length of the contract counts."""
    return len(text) if text.isascii() else len(text.encode("gbk"))


def _element(tag: str, value: str) -> str:
    if not _is_tag(tag):
        raise _error(f"bad TLV tag {tag!r}")
    size = byte_length(value)
    if size > MAX_VALUE_BYTES:
        raise _error(f"{tag} value of {size} bytes is too long")
    return f"{tag}{size:03d}{value}"


def _parse_ascii(text: str) -> list[tuple[str, str]]:
    items, pos, end = [], 0, len(text)
    while pos < end:
        tag, size = _header(text[pos:pos + 5], pos)
        pos += 5
        if pos + size > end:
            raise _error(f"TLV value of {tag} runs past the end")
        items.append((tag, text[pos:pos + size]))
        pos += size
    return items


def _parse_bytes(raw: bytes) -> list[tuple[str, str]]:
    items, pos, end = [], 0, len(raw)
    while pos < end:
        tag, size = _header(raw[pos:pos + 5].decode("latin-1"), pos)
        pos += 5
        if pos + size > end:
            raise _error(f"TLV value of {tag} runs past the end")
        try:
            items.append((tag, raw[pos:pos + size].decode("gbk")))
        except UnicodeDecodeError:
            raise _error(f"TLV value of {tag} is not whole GBK characters") from None
        pos += size
    return items


def _header(head: str, pos: int) -> tuple[str, int]:
    if len(head) < 5:
        raise _error(f"TLV truncated at byte {pos}")
    tag, size = head[:2], head[2:]
    if not _is_tag(tag):
        raise _error(f"bad TLV tag at byte {pos}")
    if not (size.isascii() and size.isdigit()):
        raise _error(f"TLV length of {tag} not numeric")
    return tag, int(size)


class Bill(NamedTuple):
    """One ``BI`` element: period YYYYMM, principal and penalty in fen."""

    period: str
    principal: int
    penalty: int

    def encode(self) -> str:
        if not (len(self.period) == 6 and self.period.isdigit()):
            raise _error(f"BI period {self.period!r} is not YYYYMM")
        if not (0 <= self.principal < 10**12 and 0 <= self.penalty < 10**12):
            raise _error("BI amount out of range")
        return f"{self.period}{self.principal:012d}{self.penalty:012d}"

    @classmethod
    def parse(cls, value: str) -> "Bill":
        if not (len(value) == 30 and value.isascii() and value.isdigit()):
            raise _error("BI must be 30 digits")
        return cls(value[:6], int(value[6:18]), int(value[18:]))
