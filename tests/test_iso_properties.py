"""Property tests: every docs/spec/INTERFACE.md §4 shape round-trips in every dialect; nothing but MessageError escapes."""
import iso8583
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from iso8583_specs import (Framer, MessageError, Tlv, decode, encode, encode_frame, get_dialect, make_tpdu,
                           validate_request, validate_response, verify_mac)
from iso8583_specs.codec import _decode_slowly, decode_reference
from iso8583_specs.compiled import Slow
from iso8583_specs.shapes import REQUESTS, RESPONSES

DIALECTS = [
    get_dialect("ascii"),
    get_dialect("bcd"),
    get_dialect("ascii", fields="bcd"),                          # 4-digit ASCII header, BCD fields
    get_dialect("bcd", framing="ascii4-tpdu", mac="x99"),
    get_dialect("ascii", framing="bin2", mac="x99"),
]
BY_NAME = {d.name: d for d in DIALECTS}
# pytest-twisted runs tests in a greenlet that does not survive @given under parametrize, so
# the dialect is drawn by hypothesis (by name, to keep failure reports short).
ANY_DIALECT = st.sampled_from(sorted(BY_NAME)).map(BY_NAME.get)
PRESET_DIALECT = st.sampled_from(["ascii", "bcd"]).map(BY_NAME.get)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DIGITS = "0123456789"
ALNUM = DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PRINTABLE = ALNUM + " -./#"
CHINESE = "广州市天河区张三李四王五赵六钱孙周吴郑冯陈褚卫蒋沈韩杨朱秦尤许何吕施电费缴纳"


def digits(size, min_size=None):
    return st.text(DIGITS, min_size=size if min_size is None else min_size, max_size=size)


def name():
    return st.text(CHINESE + ALNUM + " ", min_size=1, max_size=30).filter(lambda s: len(s.encode("gbk")) <= 60)


TAG_VALUES = {
    "CN": st.text(ALNUM, min_size=1, max_size=20), "NM": name(), "PB": digits(12), "PM": st.sampled_from(["01", "02"]),
    "RN": st.text(ALNUM, min_size=1, max_size=20), "MK": st.text("0123456789ABCDEF", min_size=32, max_size=32),
    "KV": st.text("0123456789ABCDEF", min_size=6, max_size=6),
}
BILL = st.builds(lambda p, a, b: f"{p}{a}{b}", digits(6), digits(12), digits(12))

FIELD_VALUES = {
    3: None, 4: digits(12), 7: digits(10), 11: digits(6), 12: digits(6), 13: digits(4), 15: digits(4),
    32: digits(11, 1), 37: st.text(ALNUM, min_size=12, max_size=12), 38: st.text(ALNUM, min_size=6, max_size=6),
    39: st.just("00"), 41: st.text(PRINTABLE, min_size=8, max_size=8),
    42: st.text(PRINTABLE, min_size=15, max_size=15), 49: st.just("156"), 70: st.sampled_from(["001", "002", "301"]),
    90: digits(42), 102: digits(28, 1),
}


@st.composite
def field48(draw, shape):
    tags = list(shape.tags)
    tlv = Tlv()
    for tag in tags:
        if tag == "BI":
            continue
        if tag == "BC":
            bills = draw(st.lists(BILL, max_size=4))
            tlv.add("BC", str(len(bills)))
            for bill in bills:
                tlv.add("BI", bill)
            continue
        tlv.add(tag, draw(TAG_VALUES[tag]))
    if "BI" in tags:
        for bill in draw(st.lists(BILL, min_size=1, max_size=5)):
            tlv.add("BI", bill)
    if draw(st.booleans()):
        tlv.add("ZZ", draw(st.text(CHINESE + ALNUM, max_size=10)))   # unknown tags are carried
    if "PM" in tags and draw(st.booleans()):
        tlv.items = [(t, "03" if t == "PM" else v) for t, v in tlv.items] + [("CQ", draw(TAG_VALUES["CN"]))]
    return tlv.encode()


@st.composite
def message(draw, table):
    (mti, code), shape = draw(st.sampled_from(sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))))
    fields = {}
    wanted = set(shape.fields) | ({48} if shape.tags else set())
    wanted |= set(draw(st.sets(st.sampled_from([15, 38, 41, 42, 102]), max_size=2))) if code else set()
    for number in sorted(wanted):
        if number == 3:
            fields["3"] = code
        elif number == 48:
            fields["48"] = draw(field48(shape))
        else:
            fields[str(number)] = draw(FIELD_VALUES[number])
    for number, value, _tags in shape.field_rules:   # 0810 sign-on: MK, KV
        if fields.get(str(number)) == value:
            fields["48"] = Tlv([("MK", draw(TAG_VALUES["MK"])), ("KV", draw(TAG_VALUES["KV"]))]).encode()
    return mti, fields, shape


KEY = st.binary(min_size=16, max_size=16)


def round_trip(dialect, mti, fields, shape, key):
    mac_key = key if shape.mac else None
    iso_bytes = encode(dialect, mti, fields, mac_key)
    tpdu = make_tpdu("0001", "0000") if dialect.framing.tpdu else None
    frames = list(Framer(dialect.framing, 65535).feed(encode_frame(dialect.framing, iso_bytes, tpdu)))
    assert len(frames) == 1 and frames[0].message == iso_bytes and frames[0].tpdu == tpdu
    decoded = decode(dialect, iso_bytes)
    mac_field = "128" if any(int(k) > 64 for k in fields) else "64"
    assert decoded.mti == mti
    assert {k: v for k, v in decoded.fields.items() if k != mac_field} == fields
    if mac_key:
        assert verify_mac(dialect, iso_bytes, mac_key)
        assert mac_field in decoded.fields
    assert encode(dialect, mti, decoded.fields) == iso_bytes
    return decoded


@SETTINGS
@given(dialect=ANY_DIALECT, request=message(REQUESTS), key=KEY)
def test_every_request_shape_round_trips(dialect, request, key):
    mti, fields, shape = request
    validate_request(round_trip(dialect, mti, fields, shape, key))


@SETTINGS
@given(dialect=ANY_DIALECT, response=message(RESPONSES), key=KEY)
def test_every_response_shape_round_trips(dialect, response, key):
    mti, fields, shape = response
    validate_response(round_trip(dialect, mti, fields, shape, key))


@SETTINGS
@given(dialect=PRESET_DIALECT, request=message(REQUESTS))
def test_fast_path_matches_pyiso8583(dialect, request):
    mti, fields, _shape = request
    iso_bytes = encode(dialect, mti, fields)
    spec = dialect.fields.spec
    assert bytes(iso8583.encode({"t": mti, **fields}, spec)[0]) == iso_bytes
    doc, _ = iso8583.decode(iso_bytes, spec)
    assert dialect.fields.compiled.decode(iso_bytes)[2] == {k: v for k, v in doc.items() if k not in "tp1"}


# Bytes that int() and the length readers treat specially: signs, whitespace, "_", digits.
TRICKY_BYTE = st.sampled_from(list(b"+- \t\n\x0b_0123456789\x00\xff"))


@st.composite
def mutated_request(draw, dialect):
    """A valid request with a few bytes overwritten, inserted or deleted (lengths hit often)."""
    mti, fields, _shape = draw(message(REQUESTS))
    raw = bytearray(encode(dialect, mti, fields))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw)))
        byte = draw(st.one_of(TRICKY_BYTE, st.integers(0, 255)))
        action = draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "insert" or at == len(raw):
            raw.insert(at, byte)
        elif action == "set":
            raw[at] = byte
        else:
            del raw[at]
    return bytes(raw)


def outcome(decoder, dialect, data):
    """(MTI, fields) or "error": what a decoder makes of ``data``."""
    try:
        message = decoder(dialect, data)
    except MessageError:
        return "error"
    return message.mti, message.fields


@settings(max_examples=600, deadline=None)
@given(dialect=PRESET_DIALECT, data=st.data())
def test_fast_path_and_pyiso8583_agree_on_every_input(dialect, data):
    raw = data.draw(st.one_of(st.binary(max_size=200), mutated_request(dialect)))
    try:
        fast = dialect.fields.compiled.decode(raw)
    except Slow:
        fast = None
    if fast is not None:  # what the fast path decodes, pyiso8583 (with the codec's checks) decodes alike
        mti, _bitmap, fields = _decode_slowly(dialect.fields, raw)
        assert (mti, fields) == (fast[0], fast[2])
    assert outcome(decode, dialect, raw) == outcome(decode_reference, dialect, raw)


@settings(max_examples=600, deadline=None)
@given(dialect=ANY_DIALECT, data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_arbitrary_bytes_raise_only_message_errors(dialect, data, cuts):
    framer = Framer(dialect.framing, max_frame=512)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    try:
        for start, end in zip(bounds, bounds[1:]):
            for frame in framer.feed(data[start:end]):
                if not frame.keepalive:
                    _decode_quietly(dialect, frame.message)
    except MessageError:
        pass
    _decode_quietly(dialect, data)
    verify_mac(dialect, data, bytes(16))


def _decode_quietly(dialect, data):
    try:
        message = decode(dialect, data)
        validate_request(message)
    except MessageError:
        pass


@settings(max_examples=200, deadline=None)
@given(dialect=ANY_DIALECT, request=message(REQUESTS), key=KEY, where=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_a_flipped_byte_fails_the_mac(dialect, request, key, where, flip):
    mti, fields, shape = request
    assume(shape.mac)
    iso_bytes = bytearray(encode(dialect, mti, fields, key))
    iso_bytes[where % len(iso_bytes)] ^= flip
    assert not verify_mac(dialect, bytes(iso_bytes), key)
    try:
        decode(dialect, bytes(iso_bytes))
    except MessageError:
        pass


@settings(max_examples=100, deadline=None)
@given(dialect=ANY_DIALECT, request=message(REQUESTS), key=KEY, chunk=st.integers(1, 50))
def test_frames_split_anywhere_come_out_whole(dialect, request, key, chunk):
    mti, fields, shape = request
    iso_bytes = encode(dialect, mti, fields, key)
    tpdu = make_tpdu("0001", "0000") if dialect.framing.tpdu else None
    stream = encode_frame(dialect.framing, iso_bytes, tpdu) * 3
    framer = Framer(dialect.framing, 4096)
    frames = [f for i in range(0, len(stream), chunk) for f in framer.feed(stream[i:i + chunk])]
    assert [f.message for f in frames] == [iso_bytes] * 3 and framer.buffered == 0


@settings(max_examples=300, deadline=None)
@given(request=message(REQUESTS), prefix=st.text("+- \t_0123456789", min_size=2, max_size=2))
def test_a_length_prefix_is_read_only_when_it_is_digits(request, prefix):
    mti, fields, _shape = request
    dialect = BY_NAME["ascii"]
    raw = encode(dialect, mti, fields)
    # field 32 (LLVAR) follows the MTI, the bitmap(s) and the fixed fields below 32
    at = 4 + (32 if any(int(k) > 64 for k in fields) else 16)
    at += sum(dialect.fields.spec[k]["max_len"] for k in fields if int(k) < 32)
    assert raw[at:at + 2] == b"%02d" % len(fields["32"])
    raw = raw[:at] + prefix.encode() + raw[at + 2:]
    expected = "error" if not prefix.isdigit() else outcome(decode_reference, dialect, raw)
    assert outcome(decode, dialect, raw) == outcome(decode_reference, dialect, raw) == expected
