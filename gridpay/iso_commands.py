"""``gridpay iso``: decode and encode whole frames in a bank's dialect, as JSON and hex."""
from __future__ import annotations

import json
import sys
from typing import Iterable, Iterator

import click

from iso8583_specs.codec import decode, encode, verify_mac
from iso8583_specs.dialects import PRESETS, Dialect, get_dialect
from iso8583_specs.errors import MessageError
from iso8583_specs.fields import FIELD_SET_NAMES, MAC_FIELDS
from iso8583_specs.framing import FRAMINGS, TPDU_ID, TPDU_LEN, Framer, encode_frame, make_tpdu
from iso8583_specs.mac import METHODS

DEFAULT_REQUEST_TPDU = make_tpdu("0001", "0000")   # to the bank's NII 0001 from the gateway's 0000
DEFAULT_RESPONSE_TPDU = make_tpdu("0000", "0001")  # the same, NIIs swapped


def _dialect_options(command):
    options = [
        click.option("--dialect", required=True, type=click.Choice(sorted(PRESETS)),
                     help="preset dialect (docs/spec/INTERFACE.md §2): ascii or bcd"),
        click.option("--framing", type=click.Choice(sorted(FRAMINGS)),
                     help="replace the preset's framing (length header, TPDU)"),
        click.option("--fields", "field_encoding", type=click.Choice(sorted(FIELD_SET_NAMES)),
                     help="replace the preset's field encoding"),
        click.option("--mac", "mac_name", type=click.Choice(sorted(METHODS)),
                     help="replace the preset's MAC method (x919, x99)"),
        click.option("--mac-key", callback=_key, metavar="HEX",
                     help="MAC key, 32 hexadecimal characters (clear)"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _key(ctx, param, value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise click.BadParameter("not hexadecimal") from None
    if len(key) != 16:
        raise click.BadParameter(f"must be 16 bytes (32 hex characters), got {len(key)}")
    return key


def _inputs(argument: str | None) -> Iterator[str]:
    if argument is not None:
        yield argument
        return
    for line in click.get_text_stream("stdin"):
        if line.strip():
            yield line.strip()


def _error_line(exc: MessageError) -> str:
    return json.dumps({"error": exc.reason, "field": exc.field}, ensure_ascii=False)


def _run(lines: Iterable[str], handle) -> None:
    failed = False
    for line in lines:
        try:
            click.echo(handle(line))
        except MessageError as exc:
            failed = True
            click.echo(_error_line(exc))
    if failed:
        sys.exit(1)


@click.group()
def iso() -> None:
    """ISO 8583 wire tools: decode and encode frames in a bank's dialect (docs/wire.md)."""


@iso.command("decode")
@_dialect_options
@click.argument("frame_hex", required=False, metavar="[HEX]")
def decode_command(dialect, framing, field_encoding, mac_name, mac_key, frame_hex):
    """Decode a whole frame given as hex (length header and TPDU included) to one JSON object:

    {"mti": "0200", "fields": {"3": "500000", ...}, "mac_valid": true}

    Field numbers are strings; MAC fields (64, 128) are uppercase hex; "mac_valid" is null
    without --mac-key. TPDU framings add "tpdu" (10 hex digits). A zero-length frame prints
    {"keepalive": true}. Without HEX, reads one frame per line from standard input. A frame
    that cannot be decoded prints {"error": "...", "field": N} and the command exits 1 at
    the end.
    """
    chosen = get_dialect(dialect, framing, field_encoding, mac_name)
    _run(_inputs(frame_hex), lambda line: _decode_line(chosen, line, mac_key))


def _decode_line(dialect: Dialect, line: str, key: bytes | None) -> str:
    try:
        raw = bytes.fromhex(line)
    except ValueError:
        raise MessageError("input: not hexadecimal") from None
    framer = Framer(dialect.framing, max_frame=dialect.framing.max_length)
    frames = list(framer.feed(raw))
    if len(frames) != 1 or framer.buffered:
        raise MessageError(f"frame: expected one whole frame, found {len(frames)} "
                           f"and {framer.buffered} bytes left over")
    frame = frames[0]
    if frame.keepalive:
        return json.dumps({"keepalive": True})
    message = decode(dialect, frame.message)
    out: dict = {"mti": message.mti, "fields": message.fields,
                 "mac_valid": None if key is None else verify_mac(dialect, frame.message, key)}
    if frame.tpdu is not None:
        out["tpdu"] = frame.tpdu.hex().upper()
    return json.dumps(out, ensure_ascii=False)


@iso.command("encode")
@_dialect_options
@click.argument("message_json", required=False, metavar="[JSON]")
def encode_command(dialect, framing, field_encoding, mac_name, mac_key, message_json):
    """Encode a JSON message to a whole frame, printed as uppercase hex.

    Input: {"mti": "0200", "fields": {"3": "500000", ...}, "tpdu": "6000010000"}. With
    --mac-key the MAC field (64, or 128 when any field is above 64) is computed, replacing
    any given; without it, fields are written as given. Fixed fields may be given short:
    numeric ones are zero-filled on the left, text ones space-filled on the right.

    "tpdu" is used only by TPDU framings and defaults to 6000010000 for requests (to NII
    0001, the default bank NII, from 0000, the default gateway NII) and 6000000001 for
    responses (MTI third digit odd: NIIs swapped). Without JSON, reads one message per line
    from standard input. A bad message prints {"error": "...", "field": N} and the command
    exits 1 at the end.
    """
    chosen = get_dialect(dialect, framing, field_encoding, mac_name)
    _run(_inputs(message_json), lambda line: _encode_line(chosen, line, mac_key))


def _encode_line(dialect: Dialect, line: str, key: bytes | None) -> str:
    try:
        data = json.loads(line)
        mti, fields = data["mti"], dict(data["fields"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MessageError(f"input: not a message object ({exc})") from None
    if key is not None:
        for mac_field in MAC_FIELDS:
            fields.pop(mac_field, None)
    tpdu = _tpdu(data.get("tpdu"), mti) if dialect.framing.tpdu else None
    return encode_frame(dialect.framing, encode(dialect, mti, fields, key), tpdu).hex().upper()


def _tpdu(given: str | None, mti: str) -> bytes:
    if given is None:
        is_response = len(mti) == 4 and mti[2] in "13579"
        return DEFAULT_RESPONSE_TPDU if is_response else DEFAULT_REQUEST_TPDU
    try:
        tpdu = bytes.fromhex(given)
    except (ValueError, TypeError):
        tpdu = b""
    if len(tpdu) != TPDU_LEN or tpdu[0] != TPDU_ID:  # what the framer would refuse (docs/wire.md)
        raise MessageError("tpdu: must be 60 and two NIIs, 10 hexadecimal digits")
    return tpdu
