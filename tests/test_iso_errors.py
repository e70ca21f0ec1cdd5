"""Errors: one type, the field at fault, plain words, and the identity salvaged."""
import json
from pathlib import Path

import pytest

from config.settings import BankConfig
from iso8583_specs import (MessageError, Tlv, UnsupportedError, decode, dialect_for_bank, encode,
                           get_dialect, read_sign_on_field48, request_tpdu, sign_on_field48,
                           validate_request, validate_response)
from iso8583_specs.codec import Message

VECTORS = json.loads((Path(__file__).with_name("spec") / "vectors.json")
                     .read_text(encoding="utf-8"))["vectors"]
ASCII, BCD = get_dialect("ascii"), get_dialect("bcd")
KEY = bytes.fromhex("89B07B35A1B3F47E4C7D2A0B91E3C5D7")
IDENTITY = {"7": "1123101530", "11": "000123", "32": "01020000"}


def vector(dialect, mti, name_part=""):
    return next(v for v in VECTORS if v["dialect"] == dialect and v["mti"] == mti and name_part in v["name"])


def payment(**changes):
    fields = dict(vector("ascii", "0200", "counter")["fields"])
    fields.pop("64")
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def iso_of(dialect, mti, fields):
    return encode(dialect, mti, fields, KEY)


def test_letters_in_field4_ascii_salvage_identity():
    raw = iso_of(ASCII, "0200", payment()).replace(b"000000056216", b"0000000562AB")
    with pytest.raises(MessageError) as info:
        decode(ASCII, raw)
    err = info.value
    assert (err.field, err.reason, err.mti, err.identity) == (4, "field 4: not numeric", "0200", IDENTITY)
    assert err.answerable and err.response_code == "30"
    assert err.er == "field 4: not numeric"


def test_non_bcd_nibbles_in_field4_bcd_salvage_identity():
    raw = bytearray(iso_of(BCD, "0200", payment()))
    at = raw.index(bytes.fromhex("000000056216"))
    raw[at + 5] = 0xAB
    with pytest.raises(MessageError) as info:
        decode(BCD, bytes(raw))
    assert (info.value.field, info.value.mti, info.value.identity) == (4, "0200", IDENTITY)


def test_undecodable_bytes_in_a_fixed_field_before_32_still_salvage_32():
    raw = iso_of(ASCII, "0200", payment()).replace(b"000000056216", b"00000005\xff216")
    with pytest.raises(MessageError) as info:
        decode(ASCII, raw)
    assert info.value.field == 4 and info.value.identity == IDENTITY and info.value.answerable


def test_broken_length_of_field_32_is_not_answerable():
    raw = iso_of(ASCII, "0200", payment()).replace(b"0801020000", b"0X01020000")
    with pytest.raises(MessageError) as info:
        decode(ASCII, raw)
    err = info.value
    assert err.field == 32 and "length" in err.reason
    assert err.identity == {"7": "1123101530", "11": "000123"} and not err.answerable


def test_truncated_message_salvages_what_came_before():
    raw = iso_of(ASCII, "0200", payment())
    with pytest.raises(MessageError) as info:
        decode(ASCII, raw[:-30])
    assert info.value.identity == IDENTITY and info.value.field is not None


@pytest.mark.parametrize("raw", [b"", b"02", b"0200", b"02000000", b"\x00" * 40])
def test_garbage_is_a_message_error(raw):
    with pytest.raises(MessageError):
        decode(ASCII, raw)
    with pytest.raises(MessageError):
        decode(BCD, raw)


def test_extra_bytes_after_last_field():
    with pytest.raises(MessageError) as info:
        decode(ASCII, iso_of(ASCII, "0200", payment()) + b"X")
    assert info.value.reason.startswith("message:") and info.value.identity == IDENTITY


def test_missing_mandatory_field():
    message = decode(ASCII, iso_of(ASCII, "0200", payment(**{"37": None})))
    with pytest.raises(MessageError) as info:
        validate_request(message)
    assert (info.value.field, info.value.reason) == (37, "field 37: missing")
    assert info.value.identity == IDENTITY and info.value.mti == "0200"


def test_missing_mac_is_a_missing_field():
    message = decode(ASCII, encode(ASCII, "0200", payment()))
    with pytest.raises(MessageError) as info:
        validate_request(message)
    assert info.value.field == 64
    validate_request(message, require_mac=False)


@pytest.mark.parametrize("field48, words", [
    ("CN01001405802", "runs past the end"),
    ("CN0100140580211P", "truncated"),
    ("CNx100140580211", "not numeric"),
    ("C-010abcdefghij", "bad TLV tag"),
    ("PM00201", "CN missing"),
    ("CN021012345678901234567890PM00201", "CN must be 1 to 20"),
    ("CN000PM00201", "CN must be 1 to 20"),
    ("CN005AB-12PM00201", "CN must be 1 to 20"),
    ("CN0100140580211PM00204", "PM must be 01, 02 or 03"),
    ("CN0100140580211PM00203", "CQ missing"),
    ("CN0100140580211PM00203CQ003A B", "CQ must be"),
])
def test_bad_field48(field48, words):
    message = decode(ASCII, iso_of(ASCII, "0200", payment(**{"48": field48})))
    with pytest.raises(MessageError) as info:
        validate_request(message)
    assert info.value.field == 48 and words in info.value.reason
    assert not isinstance(info.value, UnsupportedError)


def test_unknown_tags_are_ignored_and_kept():
    message = decode(ASCII, iso_of(ASCII, "0200", payment(**{"48": "CN0100140580211ZZ003abcPM00201"})))
    validate_request(message)
    assert message.tlv.get("ZZ") == "abc"


def test_currency_and_original_data():
    with pytest.raises(MessageError, match="field 49: must be 156"):
        validate_request(decode(ASCII, iso_of(ASCII, "0200", payment(**{"49": "840"}))))
    reversal = vector("ascii", "0420")["fields"]
    with pytest.raises(MessageError, match="field 90"):
        validate_request(Message("0420", dict(reversal, **{"90": "0200" + "0" * 30})))


def test_unknown_processing_code_is_unsupported():
    message = decode(ASCII, iso_of(ASCII, "0200", payment(**{"3": "990000"})))
    with pytest.raises(UnsupportedError) as info:
        validate_request(message)
    err = info.value
    assert err.field == 3 and err.response_code == "40" and err.identity == IDENTITY
    assert isinstance(err, MessageError)


def test_unknown_mti_is_unsupported():
    with pytest.raises(UnsupportedError) as info:
        validate_request(decode(ASCII, iso_of(ASCII, "0300", payment())))
    assert info.value.mti == "0300" and info.value.answerable


def test_unknown_network_code_is_unsupported():
    fields = dict(vector("ascii", "0800")["fields"], **{"70": "999"})
    with pytest.raises(UnsupportedError):
        validate_request(Message("0800", fields))


def test_missing_processing_code_is_a_format_error():
    with pytest.raises(MessageError) as info:
        validate_request(decode(ASCII, iso_of(ASCII, "0200", payment(**{"3": None}))))
    assert info.value.field == 3 and not isinstance(info.value, UnsupportedError)


def test_declined_response_needs_only_identity_and_code():
    fields = {**IDENTITY, "39": "91"}
    assert validate_response(Message("0210", fields)) is None
    with pytest.raises(MessageError, match="field 64: missing"):
        validate_response(Message("0210", dict(fields, **{"39": "13"})))
    with pytest.raises(MessageError, match="field 39: missing"):
        validate_response(Message("0210", dict(IDENTITY)))


def test_response_echo_is_checked_against_the_request():
    request = decode(ASCII, iso_of(ASCII, "0200", payment()))
    response = dict(vector("ascii", "0210", "payment response")["fields"])
    assert validate_response(Message("0210", response), request).name == "counter payment response"
    with pytest.raises(MessageError, match="field 4: does not match the request"):
        validate_response(Message("0210", dict(response, **{"4": "000000000001"})), request)
    with pytest.raises(MessageError, match="does not answer"):
        validate_response(Message("0410", response), request)


def test_approved_sign_on_response_needs_the_key():
    fields = dict(vector("ascii", "0810")["fields"])
    validate_response(Message("0810", fields))
    with pytest.raises(MessageError, match="MK missing"):
        validate_response(Message("0810", {k: v for k, v in fields.items() if k != "48"}))
    validate_response(Message("0810", dict({k: v for k, v in fields.items() if k != "48"}, **{"70": "301"})))


def test_bill_count_counts_every_bill_listed_or_not():
    """docs/spec/INTERFACE.md §4.3: BC may exceed the BI elements only when field 48 has no room
    for another."""
    fields = dict(vector("ascii", "0110")["fields"])
    head, tail = fields["48"].split("BI")[0], "PB012000000000000"
    bill = "BI030202609000000017568000000000000"
    for count, listed, error in ((2, 3, "BC 2 is less than the 3 BI listed"),
                                 (3, 2, "BC 3 counts BI not listed, though another fits")):
        with pytest.raises(MessageError, match=error):
            validate_response(Message("0110", dict(fields, **{"48": head.replace("BC0012", f"BC002{count:02d}")
                                                              + bill * listed + tail})))
    name = "广州市天河区珠江新城华夏路" * 2 + "花城大道"                       # 60 GBK bytes
    full = f"CN0100140580211NM060{name}BC00240" + bill * 25 + tail   # 979 bytes: a 26th BI does not fit
    validate_response(Message("0110", dict(fields, **{"48": full})))
    with pytest.raises(MessageError, match="counts BI not listed"):
        validate_response(Message("0110", dict(fields, **{"48": full.replace(bill, "", 1)})))


def test_key_check_value_mismatch():
    zmk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    value = sign_on_field48(zmk, KEY)
    assert read_sign_on_field48(zmk, value) == KEY
    with pytest.raises(MessageError, match="key check value does not match") as info:
        read_sign_on_field48(zmk, value[:-6] + "000000")
    assert info.value.field == 48
    with pytest.raises(MessageError):
        read_sign_on_field48(zmk, "KV006000000")


def test_encode_rejects_bad_content():
    with pytest.raises(MessageError, match="field 4: not numeric"):
        encode(ASCII, "0200", payment(**{"4": "12AB"}))
    with pytest.raises(MessageError, match="field 4"):
        encode(BCD, "0200", payment(**{"4": "12AB"}))
    with pytest.raises(MessageError, match="field 37"):
        encode(ASCII, "0200", payment(**{"37": "X" * 13}))
    with pytest.raises(MessageError, match="field 48"):
        encode(ASCII, "0200", payment(**{"48": "CN002😀"}))  # not GBK text
    with pytest.raises(MessageError):
        encode(ASCII, "02X0", payment())
    with pytest.raises(MessageError):
        encode(ASCII, "0200", {"200": "1"})


def test_encode_fills_fixed_fields():
    message = decode(ASCII, encode(ASCII, "0200", payment(**{"4": "100", "41": "T1"})))
    assert message.fields["4"] == "000000000100" and message.fields["41"] == "T1      "


@pytest.mark.parametrize("kwargs, words", [
    ({"name": "ebcdic"}, "known: ascii, bcd"),
    ({"name": "ascii", "framing": "bin4"}, "known: ascii4, bin2, bin2-tpdu, ascii4-tpdu"),
    ({"name": "ascii", "fields": "ebcdic"}, "known: ascii, bcd"),
    ({"name": "ascii", "mac": "cmac"}, "known: x919, x99"),
])
def test_unknown_dialect_parts(kwargs, words):
    with pytest.raises(ValueError, match=words):
        get_dialect(**kwargs)


def test_dialect_for_bank_mixes_parts_from_config():
    bank = BankConfig(dialect="ascii", fields="bcd", mac="x99", nii_bank="0007", nii_gateway="0003")
    dialect = dialect_for_bank(bank)
    assert (dialect.framing.name, dialect.fields.name, dialect.mac_name) == ("ascii4", "bcd", "x99")
    assert dialect_for_bank(BankConfig(dialect="bcd")) is get_dialect("bcd")
    assert request_tpdu(bank) == bytes.fromhex("6000070003")


def test_tlv_round_trip_counts_gbk_bytes():
    tlv = Tlv().add("CN", "0140580211").add("NM", "广州市天河区张三").add("BI", "1").add("BI", "2")
    text = tlv.encode()
    assert "NM016广州市天河区张三" in text
    assert Tlv.parse(text) == tlv and Tlv.parse(text).getall("BI") == ["1", "2"]
    with pytest.raises(MessageError):
        Tlv.parse("NM004广州市")
