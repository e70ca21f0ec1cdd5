"""The stream framer, frame encoding and TPDUs."""
import pytest

from iso8583_specs import (FramingError, Framer, MessageError, encode_frame, get_dialect, make_tpdu,
                           response_tpdu)
from iso8583_specs.framing import get_framing

ASCII4, BIN2_TPDU = get_framing("ascii4"), get_framing("bin2-tpdu")
TPDU = make_tpdu("0001", "0000")


def test_partial_frames_wait_for_the_rest():
    framer = Framer(ASCII4)
    assert list(framer.feed(b"00")) == []
    assert list(framer.feed(b"05AB")) == []
    frames = list(framer.feed(b"CDE00"))
    assert [f.message for f in frames] == [b"ABCDE"]
    assert framer.buffered == 2


def test_several_frames_in_one_chunk():
    data = encode_frame(ASCII4, b"one") + encode_frame(ASCII4, b"two") + encode_frame(ASCII4, b"three")[:5]
    framer = Framer(ASCII4)
    assert [f.message for f in framer.feed(data)] == [b"one", b"two"]
    assert [f.message for f in framer.feed(b"hree")] == [b"three"]


def test_byte_by_byte_equals_all_at_once():
    data = b"".join(encode_frame(BIN2_TPDU, bytes([i]) * i, TPDU) for i in range(1, 20))
    framer = Framer(BIN2_TPDU)
    frames = [f for i in range(len(data)) for f in framer.feed(data[i:i + 1])]
    assert frames == list(Framer(BIN2_TPDU).feed(data))
    assert [len(f.message) for f in frames] == list(range(1, 20))
    assert all(f.tpdu == TPDU for f in frames)


def test_zero_length_frame_is_a_keepalive():
    framer = Framer(ASCII4)
    frames = list(framer.feed(b"0000" + encode_frame(ASCII4, b"x") + b"0000"))
    assert [f.keepalive for f in frames] == [True, False, True]
    tpdu_framer = Framer(BIN2_TPDU)
    assert [f.keepalive for f in tpdu_framer.feed(b"\x00\x00")] == [True]


def test_length_above_maximum_is_rejected_and_sticks():
    framer = Framer(ASCII4, max_frame=100)
    with pytest.raises(FramingError) as info:
        list(framer.feed(b"0101" + b"x" * 101))
    assert "exceeds the maximum 100" in info.value.reason
    assert isinstance(info.value, MessageError)
    with pytest.raises(FramingError):
        list(framer.feed(b"0001x"))


def test_binary_length_above_maximum_is_rejected():
    with pytest.raises(FramingError):
        list(Framer(BIN2_TPDU, max_frame=4096).feed(b"\x10\x01"))


def test_frames_before_a_bad_header_are_delivered():
    framer = Framer(ASCII4)
    got = []
    with pytest.raises(FramingError):
        for frame in framer.feed(encode_frame(ASCII4, b"ok") + b"00x1"):
            got.append(frame.message)
    assert got == [b"ok"]


@pytest.mark.parametrize("header", [b"00x1", b" 123", b"-001", b"+012", b"\xff\xff\xff\xff"])
def test_non_digit_ascii_header_is_rejected(header):
    with pytest.raises(FramingError):
        list(Framer(ASCII4).feed(header + b"data"))


def test_tpdu_framing_needs_room_for_the_tpdu():
    with pytest.raises(FramingError):
        list(Framer(BIN2_TPDU).feed(b"\x00\x03abc"))


@pytest.mark.parametrize("framing", ["bin2-tpdu", "ascii4-tpdu"])
@pytest.mark.parametrize("tpdu", ["6100010000", "0000010000", "FF00010000"])
def test_a_tpdu_not_starting_60_is_a_framing_error_that_sticks(framing, tpdu):
    # docs/spec/INTERFACE.md §2.2: the TPDU is 60 + two NIIs; without the 60 the stream has lost its place
    framing = get_framing(framing)
    framer = Framer(framing)
    with pytest.raises(FramingError) as info:
        list(framer.feed(encode_frame(framing, b"0800", bytes.fromhex(tpdu))))
    assert f"TPDU starts {tpdu[:2]}, not 60" in info.value.reason
    with pytest.raises(FramingError):
        list(framer.feed(encode_frame(framing, b"0800", TPDU)))


def test_a_bad_tpdu_fails_as_soon_as_its_first_byte_arrives():
    framer = Framer(BIN2_TPDU)
    assert list(framer.feed(b"\x00\x40")) == []
    with pytest.raises(FramingError):
        list(framer.feed(b"\x61"))
    assert framer.buffered == 0


def test_frames_before_a_bad_tpdu_are_delivered():
    framer = Framer(BIN2_TPDU)
    got = []
    with pytest.raises(FramingError):
        for frame in framer.feed(encode_frame(BIN2_TPDU, b"ok", TPDU)
                                 + encode_frame(BIN2_TPDU, b"no", bytes.fromhex("6100010000"))):
            got.append(frame.message)
    assert got == [b"ok"]


def test_tpdu_is_yielded_apart_and_swapped_for_the_response():
    frame = next(iter(Framer(BIN2_TPDU).feed(encode_frame(BIN2_TPDU, b"0800", TPDU))))
    assert frame.tpdu == bytes.fromhex("6000010000") and frame.message == b"0800"
    assert response_tpdu(frame.tpdu) == bytes.fromhex("6000000001")
    assert response_tpdu(response_tpdu(frame.tpdu)) == frame.tpdu


@pytest.mark.parametrize("tpdu", [b"", bytes.fromhex("6100010000"), bytes.fromhex("60000100")])
def test_bad_tpdu_is_a_message_error(tpdu):
    with pytest.raises(MessageError):
        response_tpdu(tpdu)


def test_encode_frame_headers():
    assert encode_frame(ASCII4, b"abc") == b"0003abc"
    assert encode_frame(get_framing("bin2"), b"abc") == b"\x00\x03abc"
    assert encode_frame(get_framing("ascii4-tpdu"), b"abc", TPDU) == b"0008" + TPDU + b"abc"
    with pytest.raises(MessageError):
        encode_frame(BIN2_TPDU, b"abc")
    with pytest.raises(MessageError):
        encode_frame(ASCII4, b"x" * 10000)


def test_make_tpdu_checks_niis():
    with pytest.raises(ValueError):
        make_tpdu("1", "0000")


def test_dialect_framer_uses_its_framing():
    framer = get_dialect("bcd").framer(max_frame=64)
    assert framer.framing.tpdu and framer.max_frame == 64
