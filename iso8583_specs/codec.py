"""ISO messages to and from bytes, and MAC verification on the bytes as received (docs/spec/INTERFACE.md §4.2)."""
from __future__ import annotations

import hmac

import iso8583
from iso8583.decoder import DecodeError
from iso8583.encoder import EncodeError

from .compiled import Slow
from .dialects import Dialect
from .errors import IDENTITY_FIELDS, MessageError
from .fields import HEX, MAC_FIELDS, FieldSet
from .tlv import Tlv

MAX_FIELD = 128


class Message:
    """An ISO message: ``mti`` and ``fields`` (field number as string -> decoded text; MAC
    fields as uppercase hex; no bitmaps). ``raw`` holds the bytes it was decoded from."""

    __slots__ = ("mti", "fields", "raw", "_tlv")

    def __init__(self, mti: str, fields: dict[str, str], raw: bytes | None = None):
        self.mti = mti
        self.fields = fields
        self.raw = raw
        self._tlv: Tlv | None = None

    @property
    def tlv(self) -> Tlv:
        """Field 48 parsed (raises MessageError if it is malformed); empty when absent."""
        if self._tlv is None:
            self._tlv = Tlv.parse(self.fields["48"]) if "48" in self.fields else Tlv()
        return self._tlv

    def get(self, number: int | str, default: str | None = None) -> str | None:
        return self.fields.get(str(number), default)

    @property
    def identity(self) -> tuple[str | None, ...]:
        """Fields 7, 11, 32: what matches a response to its request (§1, §4.7)."""
        return tuple(self.fields.get(k) for k in IDENTITY_FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and (self.mti, self.fields) == (other.mti, other.fields)

    def __repr__(self) -> str:
        from .masking import dump
        return f"<Message {dump(self)}>"


_SECONDARY = frozenset(str(n) for n in range(65, MAX_FIELD + 1))


def mac_field_for(keys) -> str:
    """64 when no field above 64 is present (no secondary bitmap), else 128; keys are strings."""
    return "64" if _SECONDARY.isdisjoint(keys) else "128"


def decode(dialect: Dialect, iso: bytes) -> Message:
    fs = dialect.fields
    iso = bytes(iso)
    try:
        mti, bitmap, doc = fs.compiled.decode(iso)
    except Slow:
        mti, bitmap, doc = _decode_slowly(fs, iso)
    _check_content(fs, mti, bitmap, doc)
    return Message(mti, doc, iso)


def decode_reference(dialect: Dialect, iso: bytes) -> Message:
    """:func:`decode` through pyiso8583 alone, never the fast path: what the fast path must
    equal (the property tests and ``scripts/fuzz.py`` compare the two on every input)."""
    fs = dialect.fields
    iso = bytes(iso)
    mti, bitmap, doc = _decode_slowly(fs, iso)
    _check_content(fs, mti, bitmap, doc)
    return Message(mti, doc, iso)


def _decode_slowly(fs: FieldSet, iso: bytes) -> tuple[str, str, dict[str, str]]:
    """pyiso8583 itself: its error, with what could be salvaged, or the decoded fields."""
    try:
        doc, enc = iso8583.decode(iso, fs.spec)
    except DecodeError as exc:
        raise _length_error(fs, exc.doc_dec, exc.doc_enc) or _salvaged(fs, iso, exc) from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise MessageError(f"message: cannot be decoded ({exc})") from None
    error = _length_error(fs, doc, enc)
    if error is not None:
        raise error
    mti = doc.pop("t")
    return mti, doc.pop("p") + doc.pop("1", ""), doc


def _length_error(fs: FieldSet, doc: dict[str, str], enc: dict) -> MessageError | None:
    """The first text length prefix that is not all digits, which pyiso8583 reads with int()
    (a sign, spaces, "_"); what came before it is salvaged."""
    before: dict[str, str] = {}
    for key, parts in enc.items():
        spec = fs.spec[key]
        if spec["len_type"] and spec["len_enc"] not in ("b", "bcd"):
            text = parts["len"].decode("latin-1")
            if not (text.isascii() and text.isdigit()):
                error = MessageError(f"field {key}: length {text!r} is not digits", field=int(key))
                found = _readable(fs, before, None)
                return error.salvage(found.get("t"), found)
        if key in doc:
            before[key] = doc[key]
    return None


def _check_content(fs: FieldSet, mti: str, bitmap: str, doc: dict[str, str]) -> None:
    if not (mti.isdigit() and len(mti) == 4):
        raise MessageError("MTI: not 4 digits").salvage(None, doc)
    if fs.bitmap_len == 16 and not HEX(bitmap):  # bytes.fromhex, used by pyiso8583, skips spaces
        raise MessageError("bitmap: not hexadecimal").salvage(mti, doc)
    checks = fs.checks
    for key, value in doc.items():
        check = checks.get(key)
        if check is not None and not check[0](value):
            raise MessageError(f"field {key}: {check[1]}", field=int(key)).salvage(mti, doc)
    if len(bitmap) > 32:  # hex text of primary + secondary + tertiary bitmaps
        raise MessageError("field 65: tertiary bitmap not supported", field=65).salvage(mti, doc)


def _salvaged(fs: FieldSet, iso: bytes, exc: DecodeError) -> MessageError:
    """The decode failure as a MessageError, with the MTI and fields 7, 11, 32 if readable."""
    error = MessageError(_plain(exc), field=int(exc.field) if exc.field.isdigit() else None)
    found = _readable(fs, exc.doc_dec, exc.field)
    if any(k not in found for k in IDENTITY_FIELDS) or "t" not in found:
        # A field that only fails to decode as text still has a known extent: read on past it.
        try:
            found = {**_readable(fs, iso8583.decode(iso, fs.tolerant_spec)[0], None), **found}
        except DecodeError as again:
            found = {**_readable(fs, again.doc_dec, again.field), **found}
        except (ValueError, TypeError, KeyError, IndexError):
            pass
    return error.salvage(found.get("t"), found)


def _readable(fs: FieldSet, doc: dict[str, str], failed: str | None) -> dict[str, str]:
    """MTI and identity fields of a (partial) decode that are well-formed."""
    found = {}
    mti = doc.get("t", "")
    if failed != "t" and len(mti) == 4 and mti.isascii() and mti.isdigit():
        found["t"] = mti
    for key in IDENTITY_FIELDS:
        value = doc.get(key)
        if key != failed and value and value.isascii() and value.isdigit():
            found[key] = value
    return found


_PLAIN = (
    ("Extra data after last field", "extra bytes after the last field"),
    ("Failed to decode field length, ", "length "),
    ("Failed to decode field, invalid data", "not valid text"),
    ("Failed to encode field, invalid data", "not GBK text"),
    ("Failed to decode field, ", ""),
    ("Failed to encode field, ", ""),
    ("Field data is ", "data is "),
    ("Field length is ", "length is "),
)


def _plain_words(text: str) -> str:
    for prefix, words in _PLAIN:
        if text.startswith(prefix):
            return words + text[len(prefix):]
    return text[:1].lower() + text[1:]


def _plain(exc: DecodeError) -> str:
    text = _plain_words(exc.msg)
    where = {"t": "MTI", "p": "bitmap", "1": "secondary bitmap"}.get(exc.field, f"field {exc.field}")
    if exc.msg.startswith("Extra data"):
        where = "message"
    return f"{where}: {text}"


def encode(dialect: Dialect, mti: str, fields: dict, mac_key: bytes | None = None) -> bytes:
    """The ISO bytes (no length header, no TPDU). With ``mac_key`` the MAC field (64, or 128
    when a secondary bitmap is needed) is computed over the message as sent (§4.2)."""
    fs = dialect.fields
    doc = _prepare(fs, mti, fields, drop_mac=mac_key is not None)
    if mac_key is not None:
        doc[mac_field_for(doc)] = "0" * 16
    try:
        iso = bytearray(fs.compiled.encode(mti, doc))
    except Slow:
        iso = _encode_slowly(fs, mti, doc)
    if mac_key is not None:
        size = fs.mac_len
        iso[-size:] = fs.mac_wire(dialect.mac(mac_key, bytes(iso[:-size])))
    return bytes(iso)


def _encode_slowly(fs: FieldSet, mti: str, doc: dict[str, str]) -> bytearray:
    try:
        return iso8583.encode({"t": mti, **doc}, fs.spec)[0]
    except EncodeError as exc:
        raise MessageError(f"field {exc.field}: {_plain_words(exc.msg)}",
                           field=int(exc.field) if exc.field.isdigit() else None) from None


def _prepare(fs: FieldSet, mti: str, fields: dict, drop_mac: bool) -> dict[str, str]:
    if not (isinstance(mti, str) and len(mti) == 4 and mti.isascii() and mti.isdigit()):
        raise MessageError(f"MTI: {mti!r} is not 4 digits")
    doc: dict[str, str] = {}
    writers = fs.writers
    for number, value in fields.items():
        key = number if type(number) is str else str(number)
        writer = writers.get(key)
        if writer is None:
            raise MessageError(f"field {key}: not a field this codec writes")
        if drop_mac and key in MAC_FIELDS:
            continue
        if type(value) is not str:
            raise MessageError(f"field {key}: value must be text, not {type(value).__name__}", field=int(key))
        fill, size, check = writer
        if fill is not None and len(value) < size:
            value = fill(value, size)
        if check is not None and not check[0](value):
            raise MessageError(f"field {key}: {check[1]}", field=int(key))
        doc[key] = value
    return doc


def verify_mac(dialect: Dialect, iso: bytes, key: bytes) -> bool:
    """True when the message's MAC field (64, or 128 with a secondary bitmap) is present, last,
    and equals the MAC of the bytes before it. Works on the bytes as received."""
    fs = dialect.fields
    try:
        bitmap = _bitmap(fs, iso)
        if bitmap[0] & 0x80:
            last = _bitmap(fs, iso, fs.mti_len + fs.bitmap_len)[7]
        else:
            last = bitmap[7]
    except ValueError:
        return False
    size = fs.mac_len
    if not last & 1 or len(iso) <= fs.mti_len + fs.bitmap_len + size:
        return False
    try:
        expected = fs.mac_wire(dialect.mac(key, bytes(iso[:-size])))
    except ValueError:
        return False
    return hmac.compare_digest(expected, bytes(iso[-size:]))


def _bitmap(fs: FieldSet, iso: bytes, start: int | None = None) -> bytes:
    start = fs.mti_len if start is None else start
    raw = bytes(iso[start:start + fs.bitmap_len])
    if len(raw) != fs.bitmap_len:
        raise ValueError("short")
    if fs.bitmap_len == 16:
        text = raw.decode("ascii", "replace")
        if not HEX(text):
            raise ValueError("bitmap not hexadecimal")
        raw = bytes.fromhex(text)
    return raw
