"""Field definitions (docs/spec/INTERFACE.md §3) and how each field encoding lays them out on the wire (§2), as data.

A *field set* is one pyiso8583 spec built from two tables: :data:`FIELDS` (what each field is:
format class, size, fixed or LLVAR/LLLVAR) and :data:`ENCODINGS` (how a field encoding writes
each format class). Adding a field encoding means adding an entry to :data:`ENCODINGS`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Callable

from iso8583.specs import default_ascii

from .compiled import CompiledSpec

FIXED, LLVAR, LLLVAR = 0, 2, 3

# number: (format class, size, length kind, name). Sizes count digits for n, bytes otherwise.
FIELDS: dict[int, tuple[str, int, int, str]] = {
    3: ("n", 6, FIXED, "processing code"),
    4: ("n", 12, FIXED, "amount"),
    7: ("n", 10, FIXED, "transmission date and time"),
    11: ("n", 6, FIXED, "STAN"),
    12: ("n", 6, FIXED, "local time"),
    13: ("n", 4, FIXED, "local date"),
    15: ("n", 4, FIXED, "settlement date"),
    32: ("n", 11, LLVAR, "acquiring institution id"),
    37: ("an", 12, FIXED, "retrieval reference number"),
    38: ("an", 6, FIXED, "authorization id"),
    39: ("an", 2, FIXED, "response code"),
    41: ("ans", 8, FIXED, "terminal id"),
    42: ("ans", 15, FIXED, "card acceptor id"),
    48: ("ans", 999, LLLVAR, "private data"),
    49: ("n", 3, FIXED, "currency code"),
    64: ("b", 8, FIXED, "MAC"),
    70: ("n", 3, FIXED, "network management code"),
    90: ("n", 42, FIXED, "original data elements"),
    102: ("ans", 28, LLVAR, "account id"),
    128: ("b", 8, FIXED, "MAC"),
}
MAC_FIELDS = ("64", "128")

# Per field encoding: MTI and bitmap specs, length header widths, and per format class the
# pyiso8583 properties ("fixed"/"var" variants where they differ). "hex_mac": the 8 MAC bytes
# travel as 16 hexadecimal characters.
_TEXT = {"data_enc": "gbk"}
ENCODINGS: dict[str, dict] = {
    "ascii": {
        "t": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 4},
        "p": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 16},
        "len_enc": "ascii",
        "len_type": {LLVAR: 2, LLLVAR: 3},
        "n": {"fixed": {"data_enc": "ascii"}, "var": {"data_enc": "ascii"}},
        "an": {"fixed": _TEXT, "var": _TEXT},
        "ans": {"fixed": _TEXT, "var": _TEXT},
        "b": {"fixed": {"data_enc": "ascii"}, "var": {"data_enc": "ascii"}},
        "hex_mac": True,
    },
    "bcd": {
        "t": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 2},
        "p": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 8},
        "len_enc": "bcd",
        "len_type": {LLVAR: 1, LLLVAR: 2},
        "n": {"fixed": {"data_enc": "b", "len_count": "nibbles", "left_pad": "0"},
              "var": {"data_enc": "b", "len_count": "nibbles", "right_pad": "0"}},
        "an": {"fixed": _TEXT, "var": _TEXT},
        "ans": {"fixed": _TEXT, "var": _TEXT},
        "b": {"fixed": {"data_enc": "b"}, "var": {"data_enc": "b"}},
        "hex_mac": False,
    },
}

HEX = re.compile(r"[0-9A-Fa-f]*").fullmatch
# an: ASCII letters and digits, and the spaces §2 fills fixed fields with; ans: any text but
# control characters (field 48 and the names in it are GBK). A NUL that got past these would
# reach the database, which PostgreSQL refuses for a whole batch.
ALPHANUMERIC = re.compile(r"[0-9A-Za-z ]*").fullmatch
CONTROL = re.compile(r"[\x00-\x1f\x7f]").search


def _printable(value: str) -> bool:
    return CONTROL(value) is None


# content checks pyiso8583 does not make: format class -> (test, what is wrong)
CONTENT_CHECKS: dict[str, tuple[Callable[[str], object], str]] = {
    "n": (str.isdigit, "not numeric"),
    "an": (ALPHANUMERIC, "not letters and digits"),
    "ans": (_printable, "holds a control character"),
    "b": (HEX, "not hexadecimal"),
}


def _fill_text(value: str, size: int) -> str:
    short = size - len(value.encode("gbk", "replace"))
    return value + " " * short if short > 0 else value


# Fixed fields given short are filled as §2 lays them out: numeric zero-filled on the left,
# text space-filled on the right.
FILLERS: dict[str, Callable[[str, int], str]] = {
    "n": lambda value, size: value.rjust(size, "0"),
    "an": _fill_text,
    "ans": _fill_text,
}


@dataclass(frozen=True)
class FieldSet:
    """One field encoding: the pyiso8583 spec plus what the codec needs to know about it."""

    name: str
    spec: dict = field(repr=False)
    tolerant_spec: dict = field(repr=False)   # decodes any byte as text, for salvaging
    checks: dict = field(repr=False)          # field key -> (test, problem)
    writers: dict = field(repr=False)         # field key -> (filler or None, size, check or None)
    compiled: CompiledSpec = field(repr=False, default=None)
    hex_mac: bool = False
    mti_len: int = 4
    bitmap_len: int = 16

    @property
    def mac_len(self) -> int:
        return 16 if self.hex_mac else 8

    def mac_wire(self, mac: bytes) -> bytes:
        return mac.hex().upper().encode("ascii") if self.hex_mac else mac


def _field_spec(enc: dict, fmt: str, size: int, kind: int, name: str) -> dict:
    props = enc[fmt]["fixed" if kind == FIXED else "var"]
    max_len = size * 2 if (fmt == "b" and enc["hex_mac"]) else size
    spec = {"data_enc": "", "len_enc": enc["len_enc"], "len_type": 0, "max_len": max_len, "desc": name}
    spec.update(props)
    if kind != FIXED:
        spec["len_type"] = enc["len_type"][kind]
    return spec


def _outside_field(enc: dict, number: int) -> dict:
    """A field the interface does not use: ISO 8583:1987 lengths, read as text."""
    base = default_ascii.get(str(number), {"len_type": 3, "max_len": 999, "desc": "not in ISO 8583:1987"})
    kind = base["len_type"]
    return _field_spec(enc, "ans", base["max_len"], kind if kind in (FIXED, LLVAR, LLLVAR) else LLLVAR,
                       base.get("desc", ""))


@cache
def field_set(name: str) -> FieldSet:
    enc = ENCODINGS[name]
    spec: dict = {"h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0},
                  "t": enc["t"], "p": enc["p"], "1": enc["p"]}
    for number in range(2, 193):
        if number in FIELDS:
            spec[str(number)] = _field_spec(enc, *FIELDS[number])
        elif number != 65:
            spec[str(number)] = _outside_field(enc, number)
    tolerant = {k: v if k in ("p", "1") or v["data_enc"] == "b" else {**v, "data_enc": "latin-1"}
                for k, v in spec.items()}
    checks = {str(n): CONTENT_CHECKS[f[0]] for n, f in FIELDS.items() if f[0] in CONTENT_CHECKS}
    # the fields encode() accepts: 2..128 but 65 (the tertiary bitmap indicator)
    writers = {str(n): (None, 0, None) for n in range(2, 129) if n != 65}
    writers.update({str(n): (FILLERS.get(f[0]) if f[2] == FIXED else None, f[1], checks.get(str(n)))
                    for n, f in FIELDS.items()})
    return FieldSet(name, spec, tolerant, checks, writers, CompiledSpec(spec), enc["hex_mac"],
                    mti_len=4 if enc["t"]["data_enc"] != "b" else 2,
                    bitmap_len=16 if enc["p"]["data_enc"] != "b" else 8)


FIELD_SET_NAMES = tuple(ENCODINGS)
