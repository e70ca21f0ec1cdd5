"""Dialects as data: a framing + a field encoding + a MAC method, each chosen by name.

The presets are the two dialects of docs/spec/INTERFACE.md §2; a bank whose link mixes parts (say a 4-digit ASCII
length header with BCD fields, or X9.9 MACs) names the parts in its configuration.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from .fields import FIELD_SET_NAMES, FieldSet, field_set
from .framing import Framer, Framing, get_framing, make_tpdu
from .mac import MacFunction, mac_method

if TYPE_CHECKING:
    from config.settings import BankConfig

# preset name: (framing, field encoding, MAC method)
PRESETS: dict[str, tuple[str, str, str]] = {
    "ascii": ("ascii4", "ascii", "x919"),
    "bcd": ("bin2-tpdu", "bcd", "x919"),
}


@dataclass(frozen=True)
class Dialect:
    name: str
    framing: Framing
    fields: FieldSet
    mac_name: str
    mac: MacFunction = field(repr=False, compare=False)

    def framer(self, max_frame: int = 4096) -> Framer:
        return Framer(self.framing, max_frame)


def _field_set(name: str) -> FieldSet:
    if name not in FIELD_SET_NAMES:
        raise ValueError(f"unknown field encoding {name!r}; known: {', '.join(FIELD_SET_NAMES)}")
    return field_set(name)


def get_dialect(name: str, framing: str | None = None, fields: str | None = None,
                mac: str | None = None) -> Dialect:
    """A preset dialect (``ascii``, ``bcd``), with any of its three parts replaced by name."""
    if name not in PRESETS:
        raise ValueError(f"unknown dialect {name!r}; known: {', '.join(PRESETS)}")
    base_framing, base_fields, base_mac = PRESETS[name]
    return _dialect(name, framing or base_framing, fields or base_fields, mac or base_mac)


@lru_cache(maxsize=None)
def _dialect(preset: str, framing: str, fields: str, mac: str) -> Dialect:
    parts = (framing, fields, mac)
    label = preset if parts == PRESETS[preset] else f"{preset}({'/'.join(parts)})"
    return Dialect(label, get_framing(framing), _field_set(fields), mac, mac_method(mac))


def dialect_for_bank(bank: "BankConfig") -> Dialect:
    return get_dialect(bank.dialect, framing=bank.framing, fields=bank.fields, mac=bank.mac)


def framer_for_bank(bank: "BankConfig") -> Framer:
    return dialect_for_bank(bank).framer(bank.max_frame)


def request_tpdu(bank: "BankConfig") -> bytes:
    """TPDU of a request the gateway sends to the bank (debit channel): to the bank's NII."""
    return make_tpdu(bank.nii_bank, bank.nii_gateway)
