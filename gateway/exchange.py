"""One request's way through the gateway: the state every participant reads and adds to."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

from iso8583_specs.shapes import REPEAT_OF

CONTENT_EXCLUDED = {"64", "128"}


def content_digest(mti: str, fields: dict[str, str]) -> str:
    """What makes two requests with one identity "the same request": MTI (repeats folded) and content."""
    content = {k: v for k, v in fields.items() if k not in CONTENT_EXCLUDED}
    blob = json.dumps([REPEAT_OF.get(mti, mti), content], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Exchange:
    frame: bytes                     # the ISO message as received (no length header, no TPDU)
    tpdu: bytes | None
    received: float                  # monotonic time of the last byte
    received_at: datetime            # wall clock, aware UTC
    mti: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    message: object = None           # iso8583_specs.codec.Message once decoded
    bank: str = ""                   # bank code from field 32
    # the answer, filled in as participants decide
    code: str | None = None          # response code (39), None while undecided
    detail: str = ""                 # plain-words reason, sent as 48 ER where docs/spec/INTERFACE.md §5 allows
    reply: dict[str, str] = field(default_factory=dict)      # fields set by the transaction
    reply_tlv: list[tuple[str, str]] = field(default_factory=list)
    mac: bool = True                 # False: answer without MAC (no key, §4.1)
    echo_all: bool = True            # False: echo only what identifies the request (a 30 answer)
    replayed: bool = False
    silent: bool = False             # no response at all (§6: cannot find 7, 11, 32)
    close_after: bool = False
    kind: str = ""                   # inquiry | payment | reversal | network

    def decide(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail

    @property
    def decided(self) -> bool:
        return self.code is not None or self.silent

    @property
    def processing_code(self) -> str:
        return self.fields.get("3", "")

    def first(self, tag: str) -> str | None:
        """The first value of a field 48 tag (None when absent or field 48 is unreadable)."""
        try:
            return self.message.tlv.get(tag) if self.message is not None else None
        except Exception:  # noqa: BLE001 - a malformed 48 was already answered with 30
            return None
