"""A pyiso8583 spec compiled into per-field closures: the codec's fast path.

pyiso8583 interprets the spec dict field by field on every message; here each field's
properties are looked at once. The result must be exactly pyiso8583's: on anything unusual
(an error, a tertiary bitmap, a pad it would reject) these functions raise :class:`Slow` and the
caller runs pyiso8583 itself, which then decodes or reports the error in its own words.
``tests/test_iso_properties.py`` checks that both agree.
"""
from __future__ import annotations

from binascii import a2b_hex
from typing import Callable


class Slow(Exception):
    """Leave this message to pyiso8583."""


Decoder = Callable[[bytes, int], tuple[str, int]]
Encoder = Callable[[str], bytes]


def _length_reader(spec: dict) -> Callable[[bytes, int], int]:
    width, enc = spec["len_type"], spec["len_enc"]
    if enc == "b":
        return lambda s, i: int.from_bytes(s[i:i + width], "big")
    if enc == "bcd":
        return lambda s, i: int(s[i:i + width].hex(), 10)

    def read_text(s: bytes, i: int) -> int:
        text = s[i:i + width].decode(enc)
        # Digits only: int() would also take a sign, whitespace and "_" ("+8", " 8", "-1").
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"length {text!r} is not digits")
        return int(text)
    return read_text


def _unpad(spec: dict) -> Callable[[str], str]:
    left, right = spec.get("left_pad", "")[:1], spec.get("right_pad", "")[:1]

    def unpad(text: str) -> str:
        if left and text[:1] == left:
            return text[1:]
        if right and text[-1:] == right:
            return text[:-1]
        raise Slow
    return unpad


def field_decoder(spec: dict) -> Decoder:
    width, max_len, data_enc = spec["len_type"], spec["max_len"], spec["data_enc"]
    nibbles = spec.get("len_count", "bytes") == "nibbles"
    read_length = _length_reader(spec) if width else None
    unpad = _unpad(spec)

    def decode(s: bytes, i: int) -> tuple[str, int]:
        if width:
            if len(s) < i + width:
                raise Slow
            try:
                length = read_length(s, i)
            except (ValueError, UnicodeDecodeError):
                raise Slow from None
            if length > max_len:
                raise Slow
            i += width
            if length == 0:
                return "", i
        else:
            length = max_len
        size = (length + 1) // 2 if nibbles else length
        end = i + size
        if len(s) < end:
            raise Slow
        data = s[i:end]
        if data_enc == "b":
            text = data.hex().upper()
            return (unpad(text) if nibbles and length & 1 else text), end
        try:
            return data.decode(data_enc), end
        except UnicodeDecodeError:
            raise Slow from None
    return decode


def _length_writer(spec: dict) -> Callable[[int], bytes]:
    width, enc = spec["len_type"], spec["len_enc"]
    if enc == "b":
        return lambda n: n.to_bytes(width, "big")
    if enc == "bcd":
        return lambda n: a2b_hex(f"{n:0{width * 2}d}") if n < 10 ** (width * 2) else _slow()
    return lambda n: f"{n:0{width}d}".encode(enc) if n < 10 ** width else _slow()


def _slow():
    raise Slow


def field_encoder(spec: dict) -> Encoder:
    width, max_len, data_enc = spec["len_type"], spec["max_len"], spec["data_enc"]
    nibbles = spec.get("len_count", "bytes") == "nibbles"
    pad_left, pad_right = spec.get("left_pad", "")[:1], spec.get("right_pad", "")[:1]
    write_length = _length_writer(spec) if width else None

    def encode(value: str) -> bytes:
        try:
            if data_enc == "b":
                length = len(value) if nibbles else None
                if nibbles and length & 1:
                    value = pad_left + value if pad_left else value + pad_right
                data = a2b_hex(value)
                if length is None:
                    length = len(data)
            else:
                data = value.encode(data_enc)
                length = len(data) * 2 if nibbles else len(data)
        except (ValueError, TypeError, AttributeError):  # binascii.Error, UnicodeEncodeError
            raise Slow from None
        if not width:
            if length != max_len:
                raise Slow
            return data
        if length > max_len:
            raise Slow
        try:
            return write_length(length) + data
        except OverflowError:
            raise Slow from None
    return encode


class CompiledSpec:
    """Decode and encode whole messages with the per-field closures of one spec."""

    def __init__(self, spec: dict):
        self.binary_mti = spec["t"]["data_enc"] == "b"
        self.binary_bitmap = spec["p"]["data_enc"] == "b"
        self.mti_len = 2 if self.binary_mti else 4
        self.bitmap_len = 8 if self.binary_bitmap else 16
        self.decoders = {n: field_decoder(spec[str(n)]) for n in range(2, 129) if n != 65}
        self.encoders = {str(n): field_encoder(spec[str(n)]) for n in range(2, 129) if n != 65}

    def _bitmap(self, s: bytes, i: int) -> int:
        raw = s[i:i + self.bitmap_len]
        if len(raw) != self.bitmap_len:
            raise Slow
        if not self.binary_bitmap:
            try:
                raw = a2b_hex(raw)
            except ValueError:
                raise Slow from None
        return int.from_bytes(raw, "big")

    def decode(self, s: bytes) -> tuple[str, str, dict[str, str]]:
        """(MTI, bitmap as hex text, fields) as pyiso8583 would decode them."""
        raw_mti = s[:self.mti_len]
        if len(raw_mti) != self.mti_len:
            raise Slow
        try:
            mti = raw_mti.hex().upper() if self.binary_mti else raw_mti.decode("ascii")
        except UnicodeDecodeError:
            raise Slow from None
        i = self.mti_len
        primary = self._bitmap(s, i)
        i += self.bitmap_len
        bits = primary << 64
        if primary >> 63:
            bits |= self._bitmap(s, i)
            i += self.bitmap_len
            if bits >> 63 & 1:  # field 65: a tertiary bitmap
                raise Slow
        fields: dict[str, str] = {}
        decoders = self.decoders
        rest = bits & ~(1 << 127)  # field n is bit 128 - n; the highest set bit is the next field
        while rest:
            top = rest.bit_length() - 1
            rest ^= 1 << top
            fields[str(128 - top)], i = decoders[128 - top](s, i)
        if i != len(s):
            raise Slow
        return mti, f"{bits:032X}", fields

    def encode(self, mti: str, fields: dict[str, str]) -> bytes:
        """pyiso8583's bytes for a document of MTI + fields (keys "2".."128" but "65")."""
        numbers = sorted(map(int, fields))
        bits = 0
        for number in numbers:
            bits |= 1 << (128 - number)
        secondary = bits & ((1 << 64) - 1)
        if secondary:
            bits |= 1 << 127
        width = 16 if secondary else 8
        bitmap = bits.to_bytes(16, "big")[:width] if secondary else (bits >> 64).to_bytes(8, "big")
        if not self.binary_bitmap:
            bitmap = bitmap.hex().upper().encode("ascii")
        try:
            head = a2b_hex(mti) if self.binary_mti else mti.encode("ascii")
        except ValueError:  # binascii.Error, UnicodeEncodeError, non-ASCII text
            raise Slow from None
        if len(head) != self.mti_len:
            raise Slow
        encoders = self.encoders
        parts = [head, bitmap]
        for number in numbers:
            key = str(number)
            parts.append(encoders[key](fields[key]))
        return b"".join(parts)
