"""The one error type of the wire layer.

Everything that cannot be framed, decoded or validated raises :class:`MessageError`. It carries
what the gateway needs to answer: the field at fault, the reason in plain words (sent back in
field 48 ``ER``) and whatever of the MTI and fields 7, 11 and 32 could still be read.
"""
from __future__ import annotations

# Fields that identify a request (docs/spec/INTERFACE.md §4.7); without them a request cannot be answered (§6).
IDENTITY_FIELDS = ("7", "11", "32")
ER_MAX_BYTES = 200


class MessageError(Exception):
    """A message (or frame) that cannot be decoded or does not follow the interface."""

    response_code = "30"

    def __init__(self, reason: str, field: int | None = None, mti: str | None = None,
                 identity: dict[str, str] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.mti = mti
        self.identity = dict(identity or {})

    def salvage(self, mti: str | None, fields: dict[str, str]) -> "MessageError":
        """Record the MTI and identity fields read before the fault; returns self."""
        if self.mti is None:
            self.mti = mti
        for key in IDENTITY_FIELDS:
            if key in fields and key not in self.identity:
                self.identity[key] = fields[key]
        return self

    @property
    def answerable(self) -> bool:
        """True when the MTI and fields 7, 11 and 32 are known, so a response can be sent."""
        return self.mti is not None and all(k in self.identity for k in IDENTITY_FIELDS)

    @property
    def er(self) -> str:
        """The reason cut to fit field 48 tag ``ER`` (at most 200 GBK bytes)."""
        raw = self.reason.encode("gbk", "replace")[:ER_MAX_BYTES]
        return raw.decode("gbk", "ignore")


class UnsupportedError(MessageError):
    """Unknown MTI, processing code or network management code: answered ``40``, not ``30``."""

    response_code = "40"


class FramingError(MessageError):
    """The byte stream cannot be split into frames (bad or too large length header).

    The connection has lost its place in the stream; nothing after this can be read.
    """


def field_error(field: int | str, problem: str) -> MessageError:
    return MessageError(f"field {field}: {problem}", field=int(field))
