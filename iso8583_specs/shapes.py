"""The message catalogue of docs/spec/INTERFACE.md §4, as data, and the checks pyiso8583 does not make.

It is the one source of the protocol's tables: what each request and response must carry
(``REQUESTS``, ``RESPONSES``), the transaction kind and channel of each request, the response
MTI of a request and the repeat MTIs, the fields an answer echoes, the network management
codes, and field 90's layout (``OriginalData``). Adding a transaction is one entry here.

``validate_request`` / ``validate_response`` raise :class:`MessageError` (answer ``30``) for a
missing mandatory field or bad content, and :class:`UnsupportedError` (answer ``40``) for an
unknown MTI, processing code or network management code. Fields the table marks absent are
tolerated when present; unknown field 48 tags are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .codec import Message, mac_field_for
from .errors import MessageError, UnsupportedError
from .tlv import FIELD_MAX_BYTES, Tlv, byte_length


@dataclass(frozen=True)
class Shape:
    name: str
    fields: tuple[int, ...]                          # mandatory fields, MAC aside
    tags: tuple[str, ...] = ()                       # mandatory field 48 tags
    mac: bool = True                                 # MAC field (64 or 128) mandatory
    echo: tuple[int, ...] = ()                       # response fields equal to the request's
    tag_rules: tuple[tuple[str, str, str], ...] = ()  # (tag, value, then this tag is mandatory)
    field_rules: tuple[tuple[int, str, tuple[str, ...]], ...] = ()  # (field, value, then tags)
    counts: tuple[tuple[str, str], ...] = ()          # (tag, repeated tag it counts, listed or not)
    kind: str = ""                                   # inquiry | payment | debit | reversal | network
    channel: str = ""                                # counter | debit; "" for network management (both)


_NET = (7, 11, 12, 13, 32)
_FIN = (3, 7, 11, 12, 13, 32, 37, 41, 42, 49)
_ECHO = (3, 7, 11, 12, 13, 32, 37, 41, 42, 49)

# (MTI, processing code or None) -> shape; the columns of the §4 table.
REQUESTS: dict[tuple[str, str | None], Shape] = {
    ("0800", None): Shape("network management", _NET + (70,), mac=False, kind="network"),
    ("0100", "310000"): Shape("bill inquiry", _FIN + (48,), ("CN",), kind="inquiry", channel="counter"),
    ("0200", "500000"): Shape("counter payment", _FIN + (4, 48), ("CN", "PM"),
                              tag_rules=(("PM", "03", "CQ"),), kind="payment", channel="counter"),
    ("0200", "510000"): Shape("direct debit", _FIN + (4, 48, 102), ("CN", "BI"), kind="debit", channel="debit"),
    **{(mti, "500000"): Shape("payment reversal", _FIN + (4, 48, 90), ("CN",), kind="reversal", channel="counter")
       for mti in ("0400", "0401", "0420", "0421")},
    **{(mti, "510000"): Shape("debit reversal", _FIN + (4, 48, 90), ("CN",), kind="reversal", channel="debit")
       for mti in ("0420", "0421")},
}

_RESP = _FIN + (15, 39)
# Approved responses ("00"); any other response code needs only ALWAYS (+ MAC).
RESPONSES: dict[tuple[str, str | None], Shape] = {
    ("0810", None): Shape("network management response", _NET + (15, 39, 70), mac=False,
                          echo=_NET + (70,), field_rules=((70, "001", ("MK", "KV")),)),
    ("0110", "310000"): Shape("bill inquiry response", _RESP + (4, 48), ("CN", "NM", "BC", "PB"),
                              echo=_ECHO, counts=(("BC", "BI"),)),
    ("0210", "500000"): Shape("counter payment response", _RESP + (4, 48), ("CN", "RN", "PB"),
                              echo=_ECHO + (4,)),
    ("0210", "510000"): Shape("direct debit response", _RESP + (4, 38, 102), echo=_ECHO + (4, 102)),
    **{(mti, "500000"): Shape("payment reversal response", _RESP + (4, 90), echo=_ECHO + (4, 90))
       for mti in ("0410", "0430")},
    ("0430", "510000"): Shape("debit reversal response", _RESP + (4, 90), echo=_ECHO + (4, 90)),
}
ALWAYS = (7, 11, 32, 39)  # "A response always carries fields 7, 11, 32 and 39"
NO_KEY = "91"             # sent without a MAC: there is no key to compute it (§4.1)
# A repeat MTI counts as the request it repeats (docs/spec/INTERFACE.md §4.7).
REPEAT_OF = {"0401": "0400", "0421": "0420"}


def response_mti(mti: str) -> str:
    """0200 → 0210, 0421 → 0430: the third digit says request (0) or response (1); repeats answer as originals."""
    base = REPEAT_OF.get(mti, mti)
    return base[:2] + str(int(base[2]) + 1) + "0"


REQUEST_MTIS = frozenset(m for m, _ in REQUESTS)
RESPONSE_MTIS = frozenset(m for m, _ in RESPONSES)
RESPONSE_TO = {mti: response_mti(mti) for mti in sorted(REQUEST_MTIS)}


def transactions(channel: str) -> dict[tuple[str, str], str]:
    """(MTI, processing code) -> transaction kind, for the requests a channel takes."""
    return {key: shape.kind for key, shape in REQUESTS.items() if shape.channel == channel}


def response_mtis(channel: str) -> frozenset[str]:
    """The MTIs that answer a channel's transactions (network management aside)."""
    return frozenset(response_mti(mti) for (mti, _), shape in REQUESTS.items() if shape.channel == channel)


def mtis_of(channel: str, kind: str) -> frozenset[str]:
    return frozenset(mti for (mti, _), shape in REQUESTS.items() if shape.channel == channel and shape.kind == kind)


def echoed(mti: str, code: str | None) -> tuple[str, ...]:
    """The request fields an approved response to (``mti``, processing ``code``) carries back, in order."""
    return tuple(str(n) for n in sorted(RESPONSES[(mti, code)].echo))


IDENTITY = ("7", "11", "32")   # what matches an answer to its request (§1, §4.7)
SIGN_ON, SIGN_OFF, ECHO = "001", "002", "301"
NETWORK_ECHO = echoed("0810", None)   # what an 0810 carries back of its 0800
# every field some response carries back of its request, in order
ECHOED_ANY = tuple(str(n) for n in sorted(set().union(*(shape.echo for shape in RESPONSES.values()))))
NETWORK_CODES = {SIGN_ON: "sign-on", SIGN_OFF: "sign-off", ECHO: "echo"}


class OriginalData(NamedTuple):
    """Field 90 (§3): the original's MTI, 11, 7 and 32 (zero-filled to 11), then 11 zeros."""
    mti: str
    stan: str
    transmitted: str
    bank: str

    def encode(self) -> str:
        return f"{self.mti}{self.stan.zfill(6)}{self.transmitted.zfill(10)}{self.bank.zfill(11)}{'0' * 11}"

    @classmethod
    def parse(cls, value: str) -> "OriginalData":
        """The parts of a 42-character field 90 (checked by ``validate_request``)."""
        return cls(value[:4], value[4:10], value[10:20], value[20:31])

    @staticmethod
    def well_formed(value: str) -> bool:
        return len(value) == 42 and value.isascii() and value.isdigit()


# field 48 tag -> (class, min, max length in bytes); "choice" lists the allowed values.
TAG_FORMATS: dict[str, tuple] = {
    "CN": ("alnum", 1, 20), "NM": ("text", 0, 60), "BC": ("digits", 1, 999),
    "BI": ("digits", 30, 30), "PB": ("digits", 12, 12), "PM": ("choice", "01", "02", "03"),
    "CQ": ("alnum", 1, 20), "RN": ("alnum", 1, 20), "MK": ("hex", 32, 32), "KV": ("hex", 6, 6),
    "ER": ("text", 0, 200),
}
_CLASS_WORDS = {"alnum": "ASCII letters or digits", "digits": "digits", "hex": "hexadecimal characters",
                "text": "bytes"}
_HEXCHARS = frozenset("0123456789ABCDEFabcdef")
# field -> (allowed values) checked whenever present
FIELD_VALUES: dict[int, tuple[str, ...]] = {49: ("156",)}


def processing_code(message: Message) -> str | None:
    return message.fields.get("3")


def request_shape(message: Message) -> Shape:
    mti = message.mti
    if mti not in REQUEST_MTIS:
        raise UnsupportedError(f"MTI {mti}: not supported", mti=mti)
    if mti == "0800":
        return REQUESTS[(mti, None)]
    code = message.fields.get("3")
    if code is None:
        raise MessageError("field 3: missing", field=3)
    shape = REQUESTS.get((mti, code))
    if shape is None:
        raise UnsupportedError(f"field 3: processing code {code} not supported with MTI {mti}", field=3)
    return shape


def validate_request(message: Message, *, require_mac: bool = True) -> Shape:
    """Check a request against §4; returns its shape."""
    try:
        shape = request_shape(message)
        _check(message, shape, require_mac)
    except MessageError as exc:
        raise exc.salvage(message.mti, message.fields) from None
    return shape


def validate_response(message: Message, request: Message | None = None, *,
                      require_mac: bool = True) -> Shape | None:
    """Check a response against §4 (and its echoed fields against ``request`` when given).

    An approved response ("00") must carry its whole shape; any other code only fields 7, 11,
    32 and 39 and, except "91", the MAC. Returns the shape (None for a non-approved response)."""
    try:
        return _check_response(message, request, require_mac)
    except MessageError as exc:
        raise exc.salvage(message.mti, message.fields) from None


def _check_response(message: Message, request: Message | None, require_mac: bool) -> Shape | None:
    mti = message.mti
    if mti not in RESPONSE_MTIS:
        raise UnsupportedError(f"MTI {mti}: not a supported response", mti=mti)
    if request is not None and RESPONSE_TO.get(request.mti) != mti:
        raise MessageError(f"MTI {mti}: does not answer a {request.mti}")
    code = message.fields.get("39")
    _require(message, ALWAYS)
    shape = None
    if code == "00":
        shape = _response_shape(message)
        _check(message, shape, require_mac)
    else:
        _check_values(message)
        mac = require_mac and mti != "0810" and code != NO_KEY
        _check_tags(message, Shape("declined response", ALWAYS, mac=mac), mac)
    if request is not None:
        _check_echo(message, request, shape.echo if shape else _ECHO + (4, 70, 90, 102))
    return shape


def _response_shape(message: Message) -> Shape:
    if message.mti == "0810":
        return RESPONSES[("0810", None)]
    code = message.fields.get("3")
    if code is None:
        raise MessageError("field 3: missing", field=3)
    shape = RESPONSES.get((message.mti, code))
    if shape is None:
        raise UnsupportedError(f"field 3: processing code {code} not supported with MTI {message.mti}",
                               field=3)
    return shape


def _check(message: Message, shape: Shape, require_mac: bool) -> None:
    _require(message, shape.fields)
    _check_values(message)
    _check_tags(message, shape, require_mac and shape.mac)


def _require(message: Message, numbers: tuple[int, ...]) -> None:
    fields = message.fields
    for number in sorted(numbers):
        if str(number) not in fields:
            raise MessageError(f"field {number}: missing", field=number)


def _check_values(message: Message) -> None:
    fields = message.fields
    for number, allowed in FIELD_VALUES.items():
        value = fields.get(str(number))
        if value is not None and value not in allowed:
            raise MessageError(f"field {number}: must be {' or '.join(allowed)}", field=number)
    original = fields.get("90")
    if original is not None and not OriginalData.well_formed(original):
        raise MessageError("field 90: must be 42 digits", field=90)
    network = fields.get("70")
    if network is not None and network not in NETWORK_CODES:
        raise UnsupportedError(f"field 70: network management code {network} not supported", field=70)


def _check_tags(message: Message, shape: Shape, mac: bool) -> None:
    if mac:
        mac_field = mac_field_for(message.fields)
        if mac_field not in message.fields:
            raise MessageError(f"field {mac_field}: missing (MAC)", field=int(mac_field))
    tlv = message.tlv
    required = list(shape.tags)
    for number, value, tags in shape.field_rules:
        if message.fields.get(str(number)) == value:
            required.extend(tags)
    for tag, value, then in shape.tag_rules:
        if tlv.get(tag) == value:
            required.append(then)
    for tag in required:
        if tag not in tlv:
            raise MessageError(f"field 48: {tag} missing", field=48)
    check_tag_formats(tlv)
    for counter, counted in shape.counts:
        check_count(tlv, message.fields["48"], counter, counted)


def check_count(tlv: Tlv, field48: str, counter: str, counted: str) -> None:
    """§4.3: ``counter`` counts every element, listed or not; fewer are listed only when field 48
    has no room for another."""
    total, listed = int(tlv.get(counter)), len(tlv.getall(counted))
    if total < listed:
        raise MessageError(f"field 48: {counter} {total} is less than the {listed} {counted} listed", field=48)
    if total > listed:
        another = 5 + TAG_FORMATS[counted][2]   # tag, length, the largest value
        if byte_length(field48) + another <= FIELD_MAX_BYTES:
            raise MessageError(f"field 48: {counter} {total} counts {counted} not listed, though another fits",
                               field=48)


def check_tag_formats(tlv: Tlv) -> None:
    """Content of the known field 48 tags (§5); unknown tags pass."""
    for tag, value in tlv:
        rule = TAG_FORMATS.get(tag)
        if rule is not None and not _tag_ok(rule, value):
            raise MessageError(f"field 48: {tag} {_rule_words(rule)}", field=48)


def _tag_ok(rule: tuple, value: str) -> bool:
    kind = rule[0]
    if kind == "choice":
        return value in rule[1:]
    size = len(value) if value.isascii() else len(value.encode("gbk", "replace"))
    if not rule[1] <= size <= rule[2]:
        return False
    if kind == "alnum":
        return value.isascii() and value.isalnum()
    if kind == "digits":
        return value.isascii() and value.isdigit()
    if kind == "hex":
        return _HEXCHARS.issuperset(value)
    return True


def _rule_words(rule: tuple) -> str:
    kind = rule[0]
    if kind == "choice":
        return "must be " + ", ".join(rule[1:-1]) + " or " + rule[-1]
    low, high = rule[1], rule[2]
    if kind == "text":
        return f"longer than {high} bytes"
    count = f"{low}" if low == high else f"{low} to {high}"
    return f"must be {count} {_CLASS_WORDS[kind]}"


def _check_echo(message: Message, request: Message, numbers: tuple[int, ...]) -> None:
    for number in sorted(numbers):
        key = str(number)
        if key in message.fields and key in request.fields and message.fields[key] != request.fields[key]:
            raise MessageError(f"field {number}: does not match the request", field=number)
