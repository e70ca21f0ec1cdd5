"""Message dumps for logs, with account and customer numbers masked."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .errors import MessageError
from .tlv import Tlv

if TYPE_CHECKING:
    from .codec import Message


def mask_number(value: str) -> str:
    """``6222021001122334455`` -> ``6222***********4455``; short numbers keep at most 2 digits."""
    size = len(value)
    if size >= 12:
        return value[:4] + "*" * (size - 8) + value[-4:]
    if size >= 6:
        return "*" * (size - 2) + value[-2:]
    return "*" * size


def mask_name(value: str) -> str:
    return value[:1] + "*" * (len(value) - 1)


def mask_all(value: str) -> str:
    return "*" * len(value)


# fields that carry account or card numbers
FIELD_MASKS: dict[str, Callable[[str], str]] = {
    "2": mask_number, "35": mask_all, "36": mask_all, "102": mask_number, "103": mask_number,
}
# field 48 tags that carry customer numbers or names
TAG_MASKS: dict[str, Callable[[str], str]] = {"CN": mask_number, "NM": mask_name, "MK": mask_all}


def mask_field48(value: str) -> str:
    """Field 48 with sensitive tag values masked; each LEN stays as it was on the wire."""
    try:
        tlv = Tlv.parse(value)
    except MessageError:
        return mask_all(value)
    parts = []
    for tag, item in tlv:
        size = len(item.encode("gbk", "replace"))
        mask = TAG_MASKS.get(tag)
        parts.append(f"{tag}{size:03d}{mask(item) if mask else item}")
    return "".join(parts)


def masked_fields(fields: dict[str, str]) -> dict[str, str]:
    """A copy of ``fields`` safe to log."""
    out = {}
    for key, value in fields.items():
        mask = FIELD_MASKS.get(key)
        if mask is not None:
            value = mask(value)
        elif key == "48":
            value = mask_field48(value)
        out[key] = value
    return out


def dump(message: "Message") -> str:
    """One line: ``0200 3=500000 4=000000056216 ... 48=CN010******11PM00201``."""
    fields = masked_fields(message.fields)
    ordered = sorted(fields.items(), key=lambda item: int(item[0]))
    return " ".join([message.mti] + [f"{k}={v}" for k, v in ordered])
