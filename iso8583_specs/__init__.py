"""The ISO 8583 wire layer of gridpay: dialects as data, framing, codec, field 48, MAC and keys.

See ``docs/wire.md``.
"""
from .codec import Message, decode, encode, mac_field_for, verify_mac
from .dialects import PRESETS, Dialect, dialect_for_bank, framer_for_bank, get_dialect, request_tpdu
from .errors import FramingError, MessageError, UnsupportedError
from .framing import FRAMINGS, KEEPALIVE, Frame, Framer, encode_frame, make_tpdu, response_tpdu
from .keys import (check_value, decrypt_key, encrypt_key, generate_mak, read_sign_on_field48,
                   sign_on_field48)
from .mac import METHODS as MAC_METHODS
from .masking import dump, masked_fields
from .shapes import validate_request, validate_response
from .tlv import Bill, Tlv, build_tlv

__all__ = [
    "Bill", "Dialect", "FRAMINGS", "Frame", "Framer", "FramingError", "KEEPALIVE", "MAC_METHODS",
    "Message", "MessageError", "PRESETS", "Tlv", "UnsupportedError", "build_tlv", "check_value",
    "decode", "decrypt_key", "dialect_for_bank", "dump", "encode", "encode_frame", "encrypt_key",
    "framer_for_bank", "generate_mak", "get_dialect", "mac_field_for", "make_tpdu", "masked_fields",
    "read_sign_on_field48", "request_tpdu", "response_tpdu", "sign_on_field48", "validate_request",
    "validate_response", "verify_mac",
]
