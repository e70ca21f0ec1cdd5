"""Fuzz targets of the wire layer: the framer, the decoder and the field 48 TLV parser.

Each target takes the fuzzer's bytes and returns quietly when the code under test behaved: only
the errors the wire layer promises (FramingError, MessageError) may come out of it, and the
properties below hold. Anything else escapes: an AssertionError for a broken property, or the
unexpected exception itself. The targets need no fuzzer: tests/test_fuzz.py replays the seed
corpus and every input in tests/fuzz_regressions/ through them.
"""
from __future__ import annotations

from typing import Callable

from iso8583_specs import (FramingError, MessageError, Tlv, decode, encode, get_dialect, validate_request,
                           validate_response, verify_mac)
from iso8583_specs.codec import _decode_slowly, decode_reference
from iso8583_specs.compiled import Slow
from iso8583_specs.framing import FRAMINGS, TPDU_ID, TPDU_LEN, Framer, encode_frame
from iso8583_specs.tlv import Bill

FRAMING_NAMES = sorted(FRAMINGS)        # ascii4, ascii4-tpdu, bin2, bin2-tpdu
MAX_FRAMES = (64, 512, 4096, 65535)
DIALECTS = (get_dialect("ascii"), get_dialect("bcd"))
MAC_KEY = bytes(range(16))


# --- framer -------------------------------------------------------------------------------

def framer(data: bytes) -> None:
    """``data[0]``: framing (low 2 bits) and max_frame (next 2); ``data[1]``: the size of the
    pieces the stream arrives in; the rest: the stream.

    The same frames and the same failure whether the stream comes whole or in pieces; the frames
    re-encoded are exactly the bytes they were cut from; a TPDU starts with 60; a failed framer
    stays failed."""
    if len(data) < 2:
        return
    framing = FRAMINGS[FRAMING_NAMES[data[0] & 3]]
    max_frame = MAX_FRAMES[data[0] >> 2 & 3]
    step = 1 + data[1] % 64
    stream = data[2:]
    whole = _cut(Framer(framing, max_frame), [stream])
    pieces = _cut(Framer(framing, max_frame), [stream[i:i + step] for i in range(0, len(stream), step)])
    assert whole == pieces, f"whole: {whole!r}\nin pieces of {step}: {pieces!r}"
    frames, failure, buffered = whole
    cut = b"".join(_reencode(framing, frame) for frame in frames)
    assert stream.startswith(cut), "the frames re-encoded are not the bytes they came from"
    if failure is None:
        assert len(cut) + buffered == len(stream), "bytes lost between frames"
    for frame in frames:
        assert len(frame.message) + (TPDU_LEN if frame.tpdu else 0) <= max_frame
        if framing.tpdu and not frame.keepalive:
            assert len(frame.tpdu) == TPDU_LEN and frame.tpdu[0] == TPDU_ID, f"TPDU {frame.tpdu.hex()}"


def _cut(stream_framer: Framer, pieces: list[bytes]) -> tuple[list, str | None, int]:
    """(frames, the failure's reason or None, bytes still buffered)."""
    frames = []
    try:
        for piece in pieces:
            frames.extend(stream_framer.feed(piece))
    except FramingError as err:
        try:
            list(stream_framer.feed(b""))
        except FramingError:
            return frames, err.reason, stream_framer.buffered
        raise AssertionError("a failed framer took more bytes") from None
    return frames, None, stream_framer.buffered


def _reencode(framing, frame) -> bytes:
    if frame.keepalive:
        return b"0000" if framing.header == "ascii4" else b"\x00\x00"
    return encode_frame(framing, frame.message, frame.tpdu)


# --- decoder ------------------------------------------------------------------------------

def decoder(data: bytes) -> None:
    """``data[0]``: the dialect (low bit: ascii or bcd fields); the rest: one ISO message.

    The fast path and pyiso8583 agree (same message or both an error); a decoded message
    validates, parses its field 48, checks its MAC and encodes with nothing but MessageError,
    and what it encodes to decodes to the same message."""
    if not data:
        return
    dialect = DIALECTS[data[0] & 1]
    iso = data[1:]
    _fast_path_agrees(dialect, iso)
    message = _decoded(decode, dialect, iso)
    got, reference = _view(message), _view(_decoded(decode_reference, dialect, iso))
    assert got == reference, f"fast path: {got!r}\npyiso8583: {reference!r}"
    if message is None:
        return
    for check in (validate_request, validate_response, lambda m: m.tlv):
        _quietly(check, message)
    assert verify_mac(dialect, iso, MAC_KEY) in (True, False)
    try:
        again = encode(dialect, message.mti, message.fields)
    except MessageError:
        return
    assert _view(_decoded(decode, dialect, again)) == got, "decode(encode(message)) is another message"


def _fast_path_agrees(dialect, iso: bytes) -> None:
    try:
        mti, _bitmap, fields = dialect.fields.compiled.decode(iso)
    except Slow:
        return
    try:
        slow = _decode_slowly(dialect.fields, iso)
    except MessageError as err:
        raise AssertionError(f"the fast path decoded what pyiso8583 rejects: {err.reason}") from None
    assert (slow[0], slow[2]) == (mti, fields), f"fast: {(mti, fields)!r}\npyiso8583: {(slow[0], slow[2])!r}"


def _decoded(decode_with, dialect, iso: bytes):
    try:
        return decode_with(dialect, iso)
    except MessageError:
        return None


def _view(message) -> tuple | str:
    return "error" if message is None else (message.mti, message.fields)


def _quietly(check: Callable, message) -> None:
    try:
        check(message)
    except MessageError:
        pass


# --- field 48 -------------------------------------------------------------------------------

def tlv(data: bytes) -> None:
    """The bytes as field 48's GBK text: parsed, it encodes back to the same text; a ``BI`` that
    parses encodes back to the same 30 digits."""
    text = data.decode("gbk", "replace")
    try:
        parsed = Tlv.parse(text)
    except MessageError:
        return
    assert parsed.encode() == text, f"{text!r} parsed to {parsed!r}, which encodes to {parsed.encode()!r}"
    for value in parsed.getall("BI"):
        try:
            bill = Bill.parse(value)
        except MessageError:
            continue
        assert bill.encode() == value


TARGETS: dict[str, Callable[[bytes], None]] = {"framer": framer, "decoder": decoder, "tlv": tlv}
