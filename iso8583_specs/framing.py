"""Frames on the byte stream (docs/spec/INTERFACE.md §2): a length header, an optional 5-byte TPDU, the ISO message."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

from .errors import FramingError, MessageError

TPDU_ID = 0x60
TPDU_LEN = 5


@dataclass(frozen=True)
class Framing:
    name: str
    header: str          # "ascii4": 4 ASCII decimal digits; "bin2": 2-byte unsigned big-endian
    tpdu: bool = False

    @property
    def header_len(self) -> int:
        return HEADER_KINDS[self.header][0]

    @property
    def max_length(self) -> int:
        return HEADER_KINDS[self.header][1]


# header kind: (width in bytes, largest length it can express)
HEADER_KINDS = {"ascii4": (4, 9999), "bin2": (2, 65535)}

FRAMINGS: dict[str, Framing] = {
    "ascii4": Framing("ascii4", "ascii4"),
    "bin2": Framing("bin2", "bin2"),
    "bin2-tpdu": Framing("bin2-tpdu", "bin2", tpdu=True),
    "ascii4-tpdu": Framing("ascii4-tpdu", "ascii4", tpdu=True),
}


def get_framing(name: str) -> Framing:
    try:
        return FRAMINGS[name]
    except KeyError:
        raise ValueError(f"unknown framing {name!r}; known: {', '.join(FRAMINGS)}") from None


class Frame(NamedTuple):
    """One frame: the ISO message and, for TPDU framings, the raw 5-byte TPDU.

    A zero-length frame is a keep-alive: ``keepalive`` is true and there is nothing to decode.
    """

    message: bytes
    tpdu: bytes | None = None

    @property
    def keepalive(self) -> bool:
        return self.tpdu is None and not self.message


KEEPALIVE = Frame(b"", None)


class Framer:
    """Splits a byte stream into frames as the bytes arrive.

    ``feed(data)`` buffers the bytes and returns an iterator over the frames now complete.
    A bad length header (not digits, above ``max_frame``, too short for the TPDU) or, in TPDU
    framings, a TPDU that does not start with ``60`` raises :class:`FramingError` once the
    iterator reaches it, after every frame complete before it: iterate, handling each frame,
    rather than ``list()`` it inside the ``try``. The stream has then lost its place, and every
    later ``feed`` raises the same error: close the connection.
    """

    def __init__(self, framing: Framing, max_frame: int = 4096):
        self.framing = framing
        self.max_frame = max_frame
        self.failed: FramingError | None = None
        self._buffer = bytearray()
        self._header_len = framing.header_len
        self._ascii = framing.header == "ascii4"

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> Iterator[Frame]:
        if self.failed:
            raise self.failed
        self._buffer += data
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        buf, hlen = self._buffer, self._header_len
        while len(buf) >= hlen and not self.failed:
            length = self._length(bytes(buf[:hlen]))
            if length == 0:
                del buf[:hlen]
                yield KEEPALIVE
                continue
            if self.framing.tpdu and len(buf) > hlen:
                self._check_tpdu_id(buf[hlen])
            if len(buf) < hlen + length:
                return
            body = bytes(buf[hlen:hlen + length])
            del buf[:hlen + length]
            yield Frame(body[TPDU_LEN:], body[:TPDU_LEN]) if self.framing.tpdu else Frame(body)

    def _length(self, header: bytes) -> int:
        if self._ascii:
            if not header.isdigit():
                self._fail(f"length header {header!r} is not {self._header_len} digits")
            length = int(header)
        else:
            length = int.from_bytes(header, "big")
        if length > self.max_frame:
            self._fail(f"frame length {length} exceeds the maximum {self.max_frame}")
        if self.framing.tpdu and 0 < length < TPDU_LEN:
            self._fail(f"frame length {length} cannot hold the {TPDU_LEN}-byte TPDU")
        return length

    def _check_tpdu_id(self, first: int) -> None:
        # With a 2-byte binary header any two bytes are a plausible length: the TPDU's 60 is the
        # one mark that the stream is where the header said. Without it nothing after can be
        # trusted, this frame's extent included (§2.2, §6).
        if first != TPDU_ID:
            self._fail(f"TPDU starts {first:02X}, not {TPDU_ID:02X}")

    def _fail(self, reason: str) -> None:
        self._buffer.clear()
        self.failed = FramingError(f"frame: {reason}")
        raise self.failed


def encode_frame(framing: Framing, message: bytes, tpdu: bytes | None = None) -> bytes:
    """Length header (+ TPDU) + message."""
    if framing.tpdu:
        if tpdu is None or len(tpdu) != TPDU_LEN:
            raise MessageError(f"frame: the {framing.name} framing needs a {TPDU_LEN}-byte TPDU")
        body = tpdu + message
    else:
        body = message
    size = len(body)
    if size > framing.max_length:
        raise MessageError(f"frame: {size} bytes do not fit a {framing.header} length header")
    header = b"%04d" % size if framing.header == "ascii4" else size.to_bytes(2, "big")
    return header + body


def make_tpdu(dest_nii: str, src_nii: str) -> bytes:
    """``60`` + destination NII + source NII, each NII 4 BCD digits (e.g. ``"0001"``)."""
    for nii in (dest_nii, src_nii):
        if not (len(nii) == 4 and nii.isascii() and nii.isdigit()):
            raise ValueError(f"an NII is 4 digits, got {nii!r}")
    return bytes.fromhex(f"60{dest_nii}{src_nii}")


def response_tpdu(tpdu: bytes) -> bytes:
    """The TPDU of a response: the request's, with the two NIIs swapped (§2.2)."""
    if len(tpdu) != TPDU_LEN or tpdu[0] != TPDU_ID:
        raise MessageError(f"TPDU: {tpdu.hex().upper()} is not 60 + two NIIs")
    return tpdu[:1] + tpdu[3:5] + tpdu[1:3]
