"""Length prefixes of variable fields are digits only, on the fast path and the pyiso8583 path alike.

int() takes a sign, surrounding whitespace and underscores; a length prefix is none of those
(docs/spec/INTERFACE.md §2: "2 (LLVAR) or 3 (LLLVAR) ASCII digits of length").
"""
import iso8583
import pytest

from iso8583_specs import MessageError, decode, encode, get_dialect
from iso8583_specs.codec import _decode_slowly
from iso8583_specs.compiled import Slow

ASCII = get_dialect("ascii")
ECHO = {"7": "0314101500", "11": "000001", "12": "101500", "13": "0314", "32": "01020000", "70": "301"}
FIELD_32 = b"0801020000"


def with_field32_length(prefix: bytes) -> bytes:
    iso = encode(ASCII, "0800", ECHO)
    assert iso.count(FIELD_32) == 1
    return iso.replace(FIELD_32, prefix + FIELD_32[2:])


def with_empty_field48_length(prefix: bytes) -> bytes:
    iso = encode(ASCII, "0800", {**ECHO, "48": ""})
    assert iso.endswith(b"000301")
    return iso[:-6] + prefix + b"301"


SIGNED_OR_SPACED = [b"+8", b" 8", b"8 ", b"\t8", b"\n8", b"\x0b8"]
EMPTY_SPELLED_OTHERWISE = [b"-00", b"+00", b" 00", b"00 ", b"-0 ", b"0_0"]


@pytest.mark.parametrize("prefix", SIGNED_OR_SPACED)
def test_a_signed_or_spaced_length_is_a_format_error_of_its_field(prefix):
    raw = with_field32_length(prefix)
    assert iso8583.decode(raw, ASCII.fields.spec)[0]["32"] == "01020000"  # pyiso8583 itself takes it
    with pytest.raises(MessageError) as info:
        decode(ASCII, raw)
    err = info.value
    assert err.field == 32 and "length" in err.reason
    assert err.mti == "0800" and err.identity == {"7": "0314101500", "11": "000001"}


@pytest.mark.parametrize("prefix", EMPTY_SPELLED_OTHERWISE)
def test_a_zero_length_spelled_with_a_sign_or_space_is_a_format_error(prefix):
    raw = with_empty_field48_length(prefix)
    with pytest.raises(MessageError) as info:
        decode(ASCII, raw)
    assert info.value.field == 48 and "length" in info.value.reason


@pytest.mark.parametrize("prefix", SIGNED_OR_SPACED + [b"-1", b"-8"])
def test_the_fast_path_leaves_non_digit_lengths_to_the_checked_path(prefix):
    raw = with_field32_length(prefix)
    with pytest.raises(Slow):
        ASCII.fields.compiled.decode(raw)
    with pytest.raises(MessageError):
        _decode_slowly(ASCII.fields, raw)


def test_a_negative_length_never_moves_the_fast_decoder_backwards():
    # "-2" as field 102's length: int() gives -2, and the fast path used to step 2 bytes back and
    # read field 128 from the length itself, "decoding" what pyiso8583 rejects.
    iso = encode(ASCII, "0800", {**ECHO, "102": "77", "128": "0" * 16})
    assert iso.endswith(b"0277" + b"0" * 16)
    raw = iso[:-20] + b"-2" + b"0123456789ABCD"
    with pytest.raises(Slow):
        ASCII.fields.compiled.decode(raw)
    with pytest.raises(MessageError):
        decode(ASCII, raw)


def test_digit_lengths_still_decode_on_both_paths():
    raw = with_field32_length(b"08")
    assert ASCII.fields.compiled.decode(raw)[2]["32"] == "01020000"
    assert _decode_slowly(ASCII.fields, raw)[2]["32"] == "01020000"
    assert decode(ASCII, with_empty_field48_length(b"000")).fields["48"] == ""
