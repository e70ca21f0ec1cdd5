"""Dumps for logs never show account or customer numbers."""
from iso8583_specs import decode, dump, encode, get_dialect, masked_fields
from iso8583_specs.masking import mask_field48, mask_number

DEBIT = {
    "3": "510000", "4": "000000055216", "7": "1123101530", "11": "000123", "12": "101530", "13": "1123",
    "32": "01020000", "37": "000000123456", "41": "TERM0001", "42": "BR4401000000001",
    "48": "CN0100140580211NM008张三李四BI030202609000000017568000000000000", "49": "156",
    "102": "6222021001122334455",
}


def test_mask_number_keeps_first_and_last_four_of_long_numbers():
    assert mask_number("6222021001122334") == "6222********2334"
    assert mask_number("6222021001122334455") == "6222***********4455"
    assert mask_number("0140580211") == "********11"
    assert mask_number("1234") == "****"


def test_field48_masks_customer_number_and_name_but_keeps_lengths():
    masked = mask_field48(DEBIT["48"])
    assert masked.startswith("CN010********11NM008张***BI030")
    assert "0140580211" not in masked and "李四" not in masked
    assert mask_field48("garbage") == "*******"


def test_dump_of_a_message_hides_account_and_customer():
    message = decode(get_dialect("bcd"), encode(get_dialect("bcd"), "0200", DEBIT, bytes(range(16))))
    text = dump(message)
    assert text.startswith("0200 3=510000 4=000000055216")
    assert "102=6222***********4455" in text
    for secret in ("6222021001122334455", "0140580211", "张三"):
        assert secret not in text and secret not in repr(message)
    assert "128=" in text


def test_masked_fields_leaves_the_original_alone():
    fields = dict(DEBIT)
    masked = masked_fields(fields)
    assert fields == DEBIT and masked["102"] != DEBIT["102"] and masked["4"] == DEBIT["4"]
